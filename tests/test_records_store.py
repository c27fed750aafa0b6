"""The record store contract, run on every backend: SQLite, the live PostgreSQL (``postgres_url``: a
throw-away database per test) and, when ``INGEST_SQLSERVER_*`` points at one, a live SQL Server.

* Inserts: per-row "inserted" flags, a second copy of a version skipped (across batches and within
  one), a batch all or nothing, payloads stored byte for byte and refused when not JSON.
* ``seen_resources``: upserted with the inserted rows only, in the same transaction, the last
  version of a resource winning.
* Lookups: latest record / hash, records by ingest id and lake path, ``count``, versions; the
  streaming iteration of ``scrapy lake verify`` in batches; run summaries inserted then updated.
* PostgreSQL: two connections racing for one version get exactly one True between them (the second
  waits for the first's commit); a terminated backend is reconnected on the next call.
* The records pipeline and the change filter on PostgreSQL (a duplicate dropped, unchanged found).
* SQLite: reads take no write lock; a records file written by the code before SQLAlchemy (its SQL,
  kept here verbatim) is read and extended by the new store.
* The store runs only the statements ``SqlRecordStore.statements()`` lists (what
  tests/test_sql_tsql.py compiles for SQL Server); ``sqlserver://`` and the YAML section open the
  same store on SQL Server (``IngestRecords`` in the configured schema); with a live SQL Server, a
  5 MB payload, 5,000-character URLs and racing workers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from scrapy.utils.defer import deferred_f_from_coro_f

from holocron_scrapy.db import schema
from holocron_scrapy.errors import ConfigError, StoreError
from holocron_scrapy.items import IngestItem
from holocron_scrapy.records.rows import RUN_COLUMNS, item_row
from holocron_scrapy.records.store import RecordStore, SqlRecordStore, open_record_store
from holocron_scrapy.records.versions import VersionStore

SQL_BACKENDS = ["sqlite", "postgresql"]
BACKENDS = [*SQL_BACKENDS, pytest.param("sqlserver", marks=pytest.mark.sqlserver)]
UNICODE = "東京 Base — Ωmega 🚀 שָׁלוֹם"


def record(resource_id: str = "Star Wars", payload: Any = None, *, second: int = 5, **kw: Any) -> dict[str, Any]:
    item = IngestItem(
        source_system="mediawiki",
        source_name=kw.pop("source_name", "wikipedia"),
        resource_type="page",
        resource_id=resource_id,
        request_uri="https://w/api.php",
        payload=payload if payload is not None else {"title": resource_id},
        fetched_at_utc=datetime(2026, 1, 19, 12, 0, second, 123456, tzinfo=timezone.utc),
        **kw,
    )
    return item_row(item)


def url_of(request: pytest.FixtureRequest, backend: str, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'records.sqlite3'}"
    if backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    request.getfixturevalue("live_schema")
    return "sqlserver://"


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path) -> Any:
    opened = open_record_store(url_of(request, request.param, tmp_path))
    yield opened
    opened.close()


@pytest.fixture(params=BACKENDS)
def sql_store(request, tmp_path) -> Any:
    """The store with its engine (tests that read the tables back through it; SQL Server's records
    table is ``IngestRecords``: ``records_table``)."""
    opened = open_record_store(url_of(request, request.param, tmp_path))
    assert isinstance(opened, SqlRecordStore)
    assert opened.dialect == {"sqlserver": "mssql"}.get(request.param, request.param)
    yield opened
    opened.close()


def select_all(store: SqlRecordStore, table: sa.Table, *where: Any) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(table).where(*where)))


# -- inserts ---------------------------------------------------------------------------------------
def test_insert_flags_each_row_and_skips_a_stored_version(store):
    first, same, changed = record("A"), record("A"), record("A", payload={"title": "A", "rev": 2})
    assert same["hash_sha256"] == first["hash_sha256"] and same["ingest_id"] != first["ingest_id"]
    assert store.insert([]) == []
    assert store.insert([first]) == [True]
    assert store.insert([same, changed, record("B")]) == [False, True, True]
    assert store.insert([record("C"), record("C")]) == [True, False]  # duplicates within one batch
    assert store.count() == 4 and store.count(resource_id="A") == 2
    assert store.count(source_name="wikipedia", resource_id="C") == 1 and store.count(resource_id="Z") == 0
    with pytest.raises(StoreError, match="unknown"):
        store.count(nope=1)


def test_a_thousand_rows_in_one_batch_give_exact_flags(store):
    rows = [record(f"T{i}") for i in range(1200)]
    again = [record(f"T{i}") if i % 3 else record(f"T{i}", payload={"v": i}) for i in range(1200)]
    assert store.insert(rows) == [True] * 1200
    assert store.insert(again) == [i % 3 == 0 for i in range(1200)]
    assert store.count() == 1600


def test_payload_is_stored_byte_for_byte(sql_store):
    text = '{"z": 1,  "a": [3, 2, 1], "t": "' + UNICODE + '", "e": "\\u00e9\\n"}'  # key order and spacing kept
    row = {**record(UNICODE, response_headers={"x-name": UNICODE}), "payload": text}
    assert sql_store.insert([row]) == [True]
    records = sql_store.records_table
    (stored,) = select_all(sql_store, records, records.c.ingest_id == row["ingest_id"])
    assert stored.payload == text and stored.resource_id == UNICODE
    assert json.loads(stored.response_headers) == {"x-name": UNICODE}
    assert stored.fetched_at_utc == datetime(2026, 1, 19, 12, 0, 5, 123456, tzinfo=timezone.utc)


def test_a_payload_that_is_not_json_fails_the_whole_batch(sql_store):
    bad = {**record("Bad"), "payload": "{not json"}
    errors: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)
    if sql_store.dialect == "postgresql":
        import psycopg

        errors = (psycopg.DataError,)
    elif sql_store.dialect == "mssql":  # the ISJSON CHECK (error 547)
        import pyodbc

        errors = (pyodbc.IntegrityError,)
    with pytest.raises(errors):
        sql_store.insert([record("Good"), bad], record_versions=True)
    assert sql_store.count() == 0 and sql_store.versions("mediawiki", "wikipedia", ["Good"]) == {}
    assert sql_store.insert([record("Good")]) == [True]  # the store goes on after a refused batch


# -- seen_resources ----------------------------------------------------------------------------------
def test_versions_are_upserted_with_the_inserted_rows_only(store):
    a1 = record("A", revision_id=1, second=1)
    b = record("B", etag='"b"', last_modified="Mon, 19 Jan 2026 12:00:00 GMT")
    assert store.insert([a1, b], record_versions=True) == [True, True]
    found = store.versions("mediawiki", "wikipedia", ["A", "B", "A", "missing"])
    assert set(found) == {"A", "B"}
    assert found["A"] == {
        "hash_sha256": a1["hash_sha256"],
        "revision_id": 1,
        "etag": None,
        "last_modified": None,
        "last_fetched_at": "2026-01-19 12:00:01.123456",
    }
    assert found["B"]["etag"] == '"b"' and found["B"]["last_modified"] == "Mon, 19 Jan 2026 12:00:00 GMT"
    # A duplicate leaves the version alone; two new versions of one resource in one batch: the last wins.
    a2, a3 = record("A", {"v": 2}, revision_id=2, second=2), record("A", {"v": 3}, revision_id=3, second=3)
    assert store.insert([record("A", revision_id=9, second=9), a2, a3], record_versions=True) == [False, True, True]
    assert store.versions("mediawiki", "wikipedia", ["A"])["A"]["revision_id"] == 3
    assert store.versions("mediawiki", "other", ["A"]) == {}
    many = [record(f"W{i}") for i in range(1100)]  # more than one IN chunk
    store.record_versions(many)
    assert len(store.versions("mediawiki", "wikipedia", [r["resource_id"] for r in many] + ["A"])) == 1101


def test_record_versions_alone_and_through_the_version_store(store):
    versions = VersionStore(store)
    versions.upsert([record("V", revision_id=1)])
    versions.upsert([record("V", {"v": 2}, revision_id=2)])
    assert store.count() == 0  # versions only: no record
    found = versions.lookup("mediawiki", "wikipedia", ["V"])
    assert found["V"]["revision_id"] == 2 and found["V"]["hash_sha256"] == record("V", {"v": 2})["hash_sha256"]
    assert VersionStore(None).lookup("mediawiki", "wikipedia", ["V"]) == {}


# -- lookups ----------------------------------------------------------------------------------------
def test_latest_record_and_hash_are_the_newest_fetch(store):
    assert store.latest_record("mediawiki", "wikipedia", "page", "A") is None
    assert store.latest_hash("mediawiki", "wikipedia", "page", "A") is None
    old, new = record("A", {"v": 1}, second=1, lake_path="a/1.json"), record("A", {"v": 2}, second=9)
    store.insert([new, old])
    latest = store.latest_record("mediawiki", "wikipedia", "page", "A")
    assert latest["ingest_id"] == new["ingest_id"] and "payload" not in latest
    assert latest["fetched_at_utc"] == "2026-01-19 12:00:09.123456"
    assert {k: v for k, v in latest.items() if k != "fetched_at_utc"} == {
        k: v for k, v in new.items() if k in latest and k != "fetched_at_utc"
    }
    assert store.latest_hash("mediawiki", "wikipedia", "page", "A") == new["hash_sha256"]
    assert store.latest_hash("mediawiki", "wikipedia", "file", "A") is None


def test_records_by_ids_and_lake_paths(store):
    rows = [record(f"R{i}", lake_path=f"lake/R{i}.json") for i in range(1100)]  # more than one IN chunk
    store.insert(rows)
    ids = [r["ingest_id"] for r in rows[::2]] + ["missing"]
    found = store.records_by_ids(ids)
    assert set(found) == set(ids[:-1]) and found[rows[0]["ingest_id"]]["resource_id"] == "R0"
    by_path = store.records_by_lake_path(["lake/R7.json", "lake/R1099.json", "nope"])
    assert {p: r["resource_id"] for p, r in by_path.items()} == {"lake/R7.json": "R7", "lake/R1099.json": "R1099"}
    assert store.records_by_ids([]) == {} and store.records_by_lake_path([]) == {}


def test_iter_records_streams_every_record_in_batches(store):
    rows = [record(f"I{i}") for i in range(2345)] + [record(f"O{i}", source_name="other") for i in range(10)]
    store.insert(rows)
    pages = list(store.iter_records(batch_size=1000))
    assert [len(p) for p in pages] == [1000, 1000, 355]
    ids = [r["ingest_id"] for p in pages for r in p]
    assert ids == sorted(r["ingest_id"] for r in rows)
    assert all("payload" not in r and r["fetched_at_utc"] == "2026-01-19 12:00:05.123456" for p in pages for r in p)
    other = list(store.iter_records("other", batch_size=4))
    assert [len(p) for p in other] == [4, 4, 2] and {r["source_name"] for p in other for r in p} == {"other"}
    assert list(store.iter_records("nobody")) == []


def test_iteration_sees_rows_inserted_between_pages(store):
    store.insert([record("A"), record("B")])
    pages = store.iter_records(batch_size=1)
    first = next(pages)
    store.insert([{**record("Z"), "ingest_id": "ffffffff"}])  # after every id so far
    assert [len(p) for p in pages] == [1, 1] and len(first) == 1


# -- runs -------------------------------------------------------------------------------------------
def run_summary(**kw: Any) -> dict[str, Any]:
    summary = {
        "run_id": "run_1",
        "spider": "wikipedia",
        "source_system": "mediawiki",
        "source_name": "wikipedia",
        "status": "partial",
        "started_at": datetime(2026, 1, 19, 12, 0, tzinfo=timezone.utc),
        "finished_at": None,
        "duration_s": None,
        "pages_stored": 1,
        "pages_unchanged": 0,
        "pages_missing": 0,
        "pages_failed": 0,
        "requests": 2,
        "finish_reason": None,
        "summary": {"note": UNICODE},
    }
    return {**summary, **kw}


def test_write_run_inserts_then_updates(sql_store):
    sql_store.write_run(run_summary())
    done = {"status": "completed", "finished_at": "2026-01-19 12:05:00.000000", "pages_stored": 5, "duration_s": 300.5}
    sql_store.write_run(run_summary(**done, summary='{"kept": "as text"}'))
    sql_store.write_run(run_summary(run_id="run_2"))
    runs = {r.run_id: r for r in select_all(sql_store, schema.ingest_runs)}
    assert set(runs) == {"run_1", "run_2"}
    run = runs["run_1"]
    assert (run.status, run.pages_stored, run.duration_s, run.summary) == ("completed", 5, 300.5, '{"kept": "as text"}')
    assert run.started_at == datetime(2026, 1, 19, 12, 0, tzinfo=timezone.utc)
    assert run.finished_at == datetime(2026, 1, 19, 12, 5, tzinfo=timezone.utc)
    assert json.loads(runs["run_2"].summary) == {"note": UNICODE}
    assert set(RUN_COLUMNS) <= set(runs["run_2"]._fields)


# -- opening ----------------------------------------------------------------------------------------
def test_open_record_store_picks_the_store_by_url(tmp_path, postgres_url):
    lite = open_record_store(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    pg = open_record_store(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert isinstance(lite, RecordStore) and (lite.dialect, pg.dialect) == ("sqlite", "postgresql")
        assert pg.describe() == postgres_url and isinstance(lite.conn, sqlite3.Connection)
    finally:
        lite.close()
        pg.close()
    with pytest.raises(ConfigError, match="HOLOCRON_RECORDS_URL"):
        open_record_store("ftp://nowhere")


# -- PostgreSQL: races and a lost connection ---------------------------------------------------------
def _backend_waits_on_a_lock(engine: sa.Engine, pid: int) -> bool:
    with engine.connect() as conn:
        query = sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
        return conn.execute(query, {"pid": pid}).scalar() == "Lock"


@pytest.mark.parametrize("first_commits", [True, False], ids=["first-commits", "first-rolls-back"])
def test_postgresql_second_inserter_waits_for_the_first_and_gets_an_exact_flag(postgres_url, first_commits):
    one, two = open_record_store(postgres_url), open_record_store(postgres_url)
    try:
        mine, theirs = record("Race"), record("Race")  # one version, two ingest ids
        pid = two.conn.info.backend_pid
        with one.engine.connect() as conn:
            tx = conn.begin()
            conn.execute(sa.insert(schema.ingest_records), [{k: mine[k] for k in schema.ingest_records.c.keys()}])
            result: list[Any] = []
            worker = threading.Thread(target=lambda: result.append(two.insert([theirs], record_versions=True)))
            worker.start()
            for _ in range(200):  # until the second insert waits on the first's row lock
                if _backend_waits_on_a_lock(one.engine, pid):
                    break
                time.sleep(0.05)
            assert _backend_waits_on_a_lock(one.engine, pid) and not result
            tx.commit() if first_commits else tx.rollback()
            worker.join(30)
        assert result == [[not first_commits]]
        assert two.count(resource_id="Race") == 1
        # Inserted or not, the version has its record now: it is the one held (records/versions.py).
        assert bool(two.versions("mediawiki", "wikipedia", ["Race"]))
    finally:
        one.close()
        two.close()


def test_postgresql_racing_workers_store_each_version_once(postgres_url):
    stores = [open_record_store(postgres_url) for _ in range(4)]
    flags: list[list[bool]] = []
    start = threading.Barrier(len(stores))

    def work(store: RecordStore) -> None:
        rows = [record(f"P{i}") for i in range(300)]  # the same 300 versions, each worker its own ids
        start.wait()
        for chunk in range(0, 300, 50):
            flags.append(store.insert(rows[chunk : chunk + 50], record_versions=True))

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sum(map(sum, flags)) == 300 and stores[0].count() == 300
        assert len(stores[0].versions("mediawiki", "wikipedia", [f"P{i}" for i in range(300)])) == 300
    finally:
        for s in stores:
            s.close()


def test_postgresql_store_reconnects_after_its_backend_is_terminated(postgres_url):
    import psycopg

    store = open_record_store(postgres_url)
    try:
        store.insert([record("A")])
        pid = store.conn.info.backend_pid
        with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            store.count()
        assert store.count() == 1 and store.insert([record("B")]) == [True]
    finally:
        store.close()


# -- SQLite: reads take no write lock; files of the previous code ------------------------------------
def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path):
    path = tmp_path / "r.sqlite3"
    store = open_record_store(f"sqlite:///{path}")
    try:
        store.insert([record("A")], record_versions=True)
        writer = sqlite3.connect(path, isolation_level=None, timeout=0)
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a writing worker does
        try:
            assert store.latest_hash("mediawiki", "wikipedia", "page", "A") == record("A")["hash_sha256"]
            assert store.count() == 1 and list(store.versions("mediawiki", "wikipedia", ["A"])) == ["A"]
            assert [len(p) for p in store.iter_records()] == [1]
        finally:
            writer.execute("ROLLBACK")
            writer.close()
    finally:
        store.close()


# The SQL of the SQLite store before SQLAlchemy (records/store.py at 9a9d9bd), verbatim.
_OLD_INSERT = "INSERT INTO ingest_records ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
_OLD_UPSERT_VERSION = (
    "INSERT INTO seen_resources (dedupe_key, source_system, source_name, resource_type, resource_id,"
    " last_hash_sha256, last_revision_id, etag, last_modified, last_fetched_at, last_changed_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (dedupe_key) DO UPDATE SET last_hash_sha256 = excluded.last_hash_sha256,"
    " last_revision_id = excluded.last_revision_id, etag = excluded.etag,"
    " last_modified = excluded.last_modified, last_fetched_at = excluded.last_fetched_at,"
    " last_changed_at = excluded.last_changed_at"
)


def test_a_records_file_of_the_previous_code_keeps_working(tmp_path):
    from holocron_scrapy.db.connection import open_store, parse_store_url
    from holocron_scrapy.records.rows import RECORD_COLUMNS, format_time, version_params

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    conn = open_store(parse_store_url(url))  # the previous code path: sqlite3 + the sql/sqlite migrations
    old = [record("A", revision_id=1, lake_path="a.json"), record("B", etag='"b"')]
    sql = _OLD_INSERT.format(columns=", ".join(RECORD_COLUMNS), marks=", ".join("?" for _ in RECORD_COLUMNS))
    conn.execute("BEGIN IMMEDIATE")
    for row in old:
        conn.execute(sql, tuple(row[c] for c in RECORD_COLUMNS))
    conn.executemany(_OLD_UPSERT_VERSION, [version_params(r) for r in old])
    summary = {c: format_time(v) for c, v in run_summary(summary=None).items()}
    conn.execute(
        f"INSERT INTO ingest_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' for _ in RUN_COLUMNS)})",
        tuple(summary[c] for c in RUN_COLUMNS),
    )
    conn.execute("COMMIT")
    conn.close()

    store = open_record_store(url)
    try:
        latest = store.latest_record("mediawiki", "wikipedia", "page", "A")
        assert latest["ingest_id"] == old[0]["ingest_id"] and latest["fetched_at_utc"] == old[0]["fetched_at_utc"]
        assert store.versions("mediawiki", "wikipedia", ["A", "B"])["B"]["etag"] == '"b"'
        assert store.insert([record("A"), record("A", {"v": 2}, revision_id=2)], record_versions=True) == [False, True]
        assert store.versions("mediawiki", "wikipedia", ["A"])["A"]["revision_id"] == 2
        assert sum(len(p) for p in store.iter_records()) == 3
        assert store.count(fetched_at_utc=old[1]["fetched_at_utc"]) == 3
        store.write_run(run_summary(status="completed"))
        (run,) = select_all(store, schema.ingest_runs)
        assert run.status == "completed" and run.started_at == datetime(2026, 1, 19, 12, 0, tzinfo=timezone.utc)
    finally:
        store.close()
    # The times the new store writes are the text the old code wrote and read.
    raw = sqlite3.connect(tmp_path / "old.sqlite3")
    times = {row[0] for row in raw.execute("SELECT fetched_at_utc FROM ingest_records")}
    assert times == {"2026-01-19 12:00:05.123456"}
    assert raw.execute("SELECT started_at FROM ingest_runs").fetchone()[0] == "2026-01-19 12:00:00.000000"
    raw.close()


# -- the pipelines on PostgreSQL ---------------------------------------------------------------------
@deferred_f_from_coro_f
async def test_records_pipeline_and_change_filter_on_postgresql(postgres_url, tmp_path):
    import asyncio

    from scrapy.exceptions import DropItem
    from scrapy.utils.test import get_crawler

    from holocron_scrapy.pipelines.changes import ChangeFilterPipeline
    from holocron_scrapy.pipelines.records import IngestRecordsPipeline

    def item(resource_id: str, payload: Any) -> IngestItem:
        return IngestItem(
            source_system="mediawiki",
            source_name="wikipedia",
            resource_type="page",
            resource_id=resource_id,
            request_uri="https://w/api.php",
            payload=payload,
            fetched_at_utc=datetime(2026, 1, 19, 12, 0, 5, tzinfo=timezone.utc),
        )

    settings = {"HOLOCRON_RECORDS_URL": postgres_url, "HOLOCRON_LAKE_DIR": str(tmp_path / "lake")}
    crawler = get_crawler(settings_dict={**settings, "HOLOCRON_RECORDS_BATCH_SIZE": 3})
    records = IngestRecordsPipeline.from_crawler(crawler)
    records.open_spider()
    stored = await asyncio.gather(*(records.process_item(item(f"T{i}", {"v": i})) for i in range(3)))
    with pytest.raises(DropItem, match="already stored"):  # the same version again, under a new ingest id
        await records.process_item(item("T0", {"v": 0}))
    assert records.url_path() == postgres_url
    await records.close_spider()
    assert len(stored) == 3 and crawler.stats.get_value("records/written") == 3

    changes = ChangeFilterPipeline.from_crawler(get_crawler(settings_dict=settings))
    changes.open_spider()
    with pytest.raises(DropItem, match="unchanged"):
        await changes.process_item(item("T1", {"v": 1}))
    assert await changes.process_item(item("T1", {"v": 2}))
    changes.close_spider()


# -- the statements the offline T-SQL check compiles ------------------------------------------------
def test_the_store_runs_only_the_statements_it_lists(postgres_url):
    """``SqlRecordStore.statements()`` is what tests/test_sql_tsql.py compiles for SQL Server: every
    statement the store runs (on PostgreSQL all go through SQLAlchemy) is one of them."""
    store = open_record_store(postgres_url)
    assert isinstance(store, SqlRecordStore)
    listed = {str(statement.compile(store.engine)): name for name, statement in store.statements().items()}
    executed: list[Any] = []
    sa.event.listen(store.engine, "before_execute", lambda _c, clause, *_a: executed.append(clause))
    try:
        rows = [record("A"), record("B", revision_id=2)]
        store.insert(rows, record_versions=True)
        store.record_versions(rows)
        store.latest_record("mediawiki", "wikipedia", "page", "A")
        store.records_by_ids([rows[0]["ingest_id"]]), store.records_by_lake_path(["x"])
        list(store.iter_records()), list(store.iter_records("wikipedia"))
        store.count(), store.count(source_name="wikipedia", resource_id="A")
        store.versions("mediawiki", "wikipedia", ["A", "B"])
        store.write_run(run_summary())
    finally:
        store.close()
    names = [listed.get(str(clause.compile(store.engine))) for clause in executed if not isinstance(clause, str)]
    assert None not in names
    assert set(listed.values()) - set(names) <= {"held_versions"}  # helper B's lookup, run by its own tests


# -- SQL Server: the same store on an mssql+pyodbc engine ------------------------------------------
def test_sqlserver_urls_and_sections_open_the_one_store(monkeypatch):
    from holocron_scrapy.db import sqlserver
    from tests.support.sqlserver import PASSWORD
    from tests.test_db_engine import RecordingRaw

    raws: list[Any] = []
    monkeypatch.setattr(sqlserver, "connect", lambda *_a, **_kw: raws.append(RecordingRaw()) or raws[-1])
    monkeypatch.setenv("INGEST_SQLSERVER_PASSWORD", PASSWORD)
    monkeypatch.setenv("INGEST_SQLSERVER_SCHEMA", "records_env")
    store = open_record_store("sqlserver://", sqlserver_config={"schema": "from_yaml"})
    try:
        assert isinstance(store, SqlRecordStore) and store.dialect == "mssql"
        assert store.records_table.name == "IngestRecords"
        assert store.engine.get_execution_options()["schema_translate_map"] == {None: "records_env"}
        assert store.describe() == "SQL Server localhost:1433 database Holocron schema records_env"
        assert "[records_env].[IngestRecords]" in "\n".join(raws[0].sql) and len(raws) == 1
    finally:
        store.close()
    monkeypatch.delenv("INGEST_SQLSERVER_SCHEMA")
    store = open_record_store("mssql+pyodbc://", sqlserver_config={"schema": "from_yaml"})
    assert store.engine.get_execution_options()["schema_translate_map"] == {None: "from_yaml"}
    store.close()


@pytest.mark.sqlserver
def test_sqlserver_five_megabyte_payload_and_long_urls(live_schema):
    from tests.support.sqlserver import long_url

    store = open_record_store("sqlserver://")
    try:
        url = long_url()
        big = record("Big", payload={"text": ("Ω東京🚀 lorem ipsum " * 300_000)[: 5 * 1024 * 1024]})
        batch = {**record("Batch"), "requested_id": url, "request_uri": url}
        assert store.insert([big, batch]) == [True, True]
        (stored,) = select_all(store, store.records_table, store.records_table.c.ingest_id == big["ingest_id"])
        assert stored.payload == big["payload"] and len(stored.payload) > 5_000_000
        found = store.records_by_ids([batch["ingest_id"]])[batch["ingest_id"]]
        assert found["requested_id"] == url and found["request_uri"] == url
    finally:
        store.close()


@pytest.mark.sqlserver
def test_sqlserver_racing_workers_store_each_version_once(live_schema):
    from concurrent.futures import ThreadPoolExecutor

    stores = [open_record_store("sqlserver://") for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            flags = list(pool.map(lambda s: s.insert([record(f"R{i}") for i in range(50)]), stores))
        assert [sum(column) for column in zip(*flags, strict=True)] == [1] * 50
        assert stores[0].count() == 50
    finally:
        for s in stores:
            s.close()
