"""The SQL Server records store without a server, plus live checks when one is configured.

* Offline: every T-SQL string of ``holocron_scrapy.records.sqlserver_store`` parses with sqlfluff
  and sqlglot (dialect tsql); ``count`` only accepts real column names.
* The recording fake pyodbc of ``tests/support/sqlserver.py``: NVARCHAR input sizes (the
  payload as NVARCHAR(MAX)), DATETIME2 parameters, per-row "inserted or duplicate" results, the
  whole batch retried after a transient error or a deadlock, lost commits resolved from the
  batch's ingest ids, errors with the masked connection string.
* Live (``INGEST_SQLSERVER_HOST`` / ``INGEST_SQLSERVER_PASSWORD``, in a throw-away schema): Unicode
  round trip, a 5 MB payload, a duplicate version skipped, the ``ingest_runs`` upsert.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from holocron_scrapy.db import sqlserver
from holocron_scrapy.errors import ConfigError, StoreError
from holocron_scrapy.frontier.sqlserver_store import NVARCHAR_MAX, SQL_WVARCHAR
from holocron_scrapy.items import IngestItem
from holocron_scrapy.records import sqlserver_store
from holocron_scrapy.records.sqlserver_store import SqlServerRecordStore, count_statement, statements
from holocron_scrapy.records.store import RECORD_COLUMNS, RUN_COLUMNS, item_row
from tests.support.sqlserver import (
    PASSWORD,
    deadlock,
    duplicate_key,
    fake_settings,
    link_failure,
    literal_executes,
    long_url,
    odbc_error,
    with_parameters,
)
from tests.test_sql_tsql import assert_sqlfluff_parses, assert_sqlglot_parses, tsql_tables

# -- offline T-SQL checks ------------------------------------------------------------------------
STATEMENTS = sorted(statements().items()) + [
    ("count_by_resource", count_statement("ingest", ("source_system", "source_name", "resource_id"))),
    ("count_by_every_column", count_statement("ingest", RECORD_COLUMNS)),
]


@pytest.mark.parametrize(("name", "sql"), STATEMENTS, ids=[n for n, _ in STATEMENTS])
def test_statement_parses_with_sqlfluff(name, sql):
    assert_sqlfluff_parses(with_parameters(sql))


@pytest.mark.parametrize(("name", "sql"), STATEMENTS, ids=[n for n, _ in STATEMENTS])
def test_statement_parses_with_sqlglot(name, sql):
    assert_sqlglot_parses(with_parameters(sql))


def test_statements_use_the_given_schema_only():
    for name, sql in statements("crawl_2").items():
        assert "[crawl_2]." in sql and "[ingest]" not in sql, name
    with pytest.raises(ConfigError):
        statements("ingest]; DROP TABLE x --")


def test_every_execute_uses_an_enumerated_statement():
    assert literal_executes(sqlserver_store) == []


def test_insert_statement_dedupes_on_the_unique_version_index():
    sql = statements()["insert_record"]
    assert sql.count("?") == len(RECORD_COLUMNS) + 5
    assert "WITH (UPDLOCK, HOLDLOCK)" in sql
    assert "source_system = ? AND source_name = ? AND resource_type = ? AND resource_id = ? AND hash_sha256 = ?" in sql
    assert statements()["update_run"].count("?") == len(RUN_COLUMNS)


def test_count_refuses_unknown_columns():
    with pytest.raises(StoreError, match="unknown IngestRecords column"):
        count_statement("ingest", ("source_name", "1 = 1; DROP TABLE x --"))


# -- with the fake pyodbc -----------------------------------------------------------------------------
@pytest.fixture
def rstore(fake_pyodbc, sleeps) -> SqlServerRecordStore:
    settings = fake_settings()
    return SqlServerRecordStore(sqlserver.connect(settings), settings, sleep=sleeps.append)


def record(resource_id: str = "Star Wars", payload: Any = None, **kw: Any) -> dict[str, Any]:
    item = IngestItem(
        source_system="mediawiki",
        source_name="wikipedia",
        resource_type="page",
        resource_id=resource_id,
        request_uri="https://w/api.php",
        payload=payload if payload is not None else {"title": resource_id},
        fetched_at_utc=datetime(2026, 1, 19, 12, 0, 5, 123456, tzinfo=timezone.utc),
        **kw,
    )
    return item_row(item)


def test_insert_binds_nvarchar_and_datetime2(rstore, fake_pyodbc):
    row = record("東京 Base", payload={"text": "x" * 5000}, response_headers={"a": "b"})
    assert rstore.insert([row]) == [True]
    assert fake_pyodbc.kinds() == ["1:insert_record", "1:commit"]
    (_, _, params, sizes) = fake_pyodbc.executed("INSERT INTO")[0]
    column = {c: i for i, c in enumerate(RECORD_COLUMNS)}
    assert params[column["resource_id"]] == "東京 Base"
    assert params[column["fetched_at_utc"]] == datetime(2026, 1, 19, 12, 0, 5, 123456)  # naive UTC
    assert sizes[column["payload"]] == (SQL_WVARCHAR, 0, 0)  # NVARCHAR(MAX), streamed
    assert sizes[column["response_headers"]] == (SQL_WVARCHAR, 0, 0)
    assert sizes[column["resource_id"]] == (SQL_WVARCHAR, 4000, 0)
    assert sizes[column["status_code"]] is None and sizes[column["fetched_at_utc"]] is None
    assert params[-5:] == tuple(row[c] for c in sqlserver_store.VERSION_COLUMNS)


def test_long_urls_are_bound_as_nvarchar_max(rstore, fake_pyodbc):
    """requested_id, request_uri and content_type are NVARCHAR(MAX) since sql/0005, whatever their length."""
    url = long_url()
    rstore.insert([{**record("A"), "requested_id": url, "request_uri": url}, record("B")])
    (_, _, params, sizes), (_, _, _, short_sizes) = fake_pyodbc.executed("INSERT INTO")
    for column in ("requested_id", "request_uri", "content_type"):
        i = RECORD_COLUMNS.index(column)
        assert sizes[i] == short_sizes[i] == (SQL_WVARCHAR, NVARCHAR_MAX, 0), column
    assert params[RECORD_COLUMNS.index("requested_id")] == params[RECORD_COLUMNS.index("request_uri")] == url
    assert len(url) == 5000


def test_text_widths_match_the_migrated_schema():
    tables = {table: {name: kind for name, kind, _ in columns} for table, columns in tsql_tables().items()}
    for table, widths, written in (
        ("IngestRecords", sqlserver_store.RECORD_TEXT_WIDTHS, RECORD_COLUMNS),
        ("ingest_runs", sqlserver_store.RUN_TEXT_WIDTHS, RUN_COLUMNS),
    ):
        columns = tables[table]
        for column, width in widths.items():
            assert columns[column] == ("NVARCHAR(MAX)" if width == NVARCHAR_MAX else f"NVARCHAR({width})"), column
        assert {c for c in written if columns[c].startswith("NVARCHAR")} <= set(widths), table


def test_insert_reports_duplicates_per_row_in_one_transaction(rstore, fake_pyodbc):
    rows = [record("A"), record("B"), record("C")]
    fake_pyodbc.responder = lambda sql, params: [] if sql.startswith("INSERT") and params[4] == "B" else None
    fake_pyodbc.fail("execute", "INSERT INTO", duplicate_key())  # A loses a race with another worker
    assert rstore.insert(rows) == [False, False, True]
    assert fake_pyodbc.kinds() == ["1:insert_record"] * 3 + ["1:commit"]
    assert rstore.insert([]) == [] and fake_pyodbc.kinds()[-1] == "1:commit"


def test_insert_retries_the_whole_batch_after_a_lost_connection(rstore, fake_pyodbc, sleeps):
    fake_pyodbc.fail("execute", "INSERT INTO", link_failure())
    fake_pyodbc.responder = lambda sql, params: None
    rows = [record("A"), record("B")]
    assert rstore.insert(rows) == [True, True]
    assert fake_pyodbc.kinds() == [
        "1:insert_record", "1:rollback", "1:close",
        "2:insert_record", "2:insert_record", "2:commit",
    ]  # fmt: skip
    assert len(sleeps) == 1


def test_insert_retries_a_deadlocked_batch_on_the_same_connection(rstore, fake_pyodbc, sleeps):
    fake_pyodbc.fail("execute", "INSERT INTO", deadlock())
    rows = [record("A"), record("B")]
    # the deadlock hits the first row: the server rolled the transaction back, so both rows run again
    assert rstore.insert(rows) == [True, True]
    assert fake_pyodbc.kinds() == ["1:insert_record", "1:rollback", "1:insert_record", "1:insert_record", "1:commit"]
    assert len(fake_pyodbc.connections) == 1 and len(sleeps) == 1


def test_lost_commit_is_resolved_from_the_ingest_ids(rstore, fake_pyodbc):
    rows = [record("A"), record("B")]
    stored = {rows[0]["ingest_id"]}  # the lost commit stored A; B was a duplicate
    fake_pyodbc.fail("commit", "", link_failure())
    fake_pyodbc.responder = lambda sql, params: (
        [(1 if params[0] in stored else 0,)] if "WHERE ingest_id = ?" in sql else None
    )
    assert rstore.insert(rows) == [True, False]
    assert fake_pyodbc.kinds()[-4:] == ["1:close", "2:count_ingest_id", "2:count_ingest_id", "2:commit"]


def test_lost_commit_that_was_not_applied_runs_the_batch_again(rstore, fake_pyodbc):
    fake_pyodbc.fail("commit", "", link_failure())
    assert rstore.insert([record("A")]) == [True]
    assert fake_pyodbc.kinds()[-3:] == ["2:count_ingest_id", "2:insert_record", "2:commit"]


def test_non_transient_error_is_raised_at_once_and_masked(rstore, fake_pyodbc, sleeps):
    fake_pyodbc.fail(
        "execute",
        "INSERT INTO",
        odbc_error("22001", f"[SQL Server]String or binary data would be truncated ({PASSWORD})", 2628),
    )
    with pytest.raises(StoreError) as info:
        rstore.insert([record("A")])
    message = str(info.value)
    assert "records insert failed at localhost:1433" in message and "(2628)" in message
    assert "PWD=***" in message and PASSWORD not in message
    assert fake_pyodbc.kinds() == ["1:insert_record", "1:rollback"] and sleeps == []


def test_write_run_updates_then_inserts_in_one_transaction(rstore, fake_pyodbc):
    started = datetime(2026, 1, 19, 13, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    summary = {
        "run_id": "run_1",
        "spider": "wikipedia",
        "status": "completed",
        "started_at": started,
        "finished_at": "2026-01-19 12:05:00.000000",
        "duration_s": 300.0,
        "pages_stored": 3,
        "summary": {"downloader/request_count": 4, "note": "東京"},
    }
    fake_pyodbc.responder = lambda sql, params: ([], 0) if sql.startswith("UPDATE") else None
    rstore.write_run(summary)
    assert fake_pyodbc.kinds() == ["1:update_run", "1:insert_run", "1:commit"]
    (_, _, params, sizes) = fake_pyodbc.executed("INSERT INTO")[0]
    row = dict(zip(RUN_COLUMNS, params, strict=True))
    assert row["started_at"] == datetime(2026, 1, 19, 12, 0, 0) and row["finished_at"] == datetime(2026, 1, 19, 12, 5)
    assert json.loads(row["summary"]) == summary["summary"] and row["pages_missing"] is None
    assert sizes[RUN_COLUMNS.index("summary")] == (SQL_WVARCHAR, 0, 0)
    fake_pyodbc.responder = lambda sql, params: ([], 1) if sql.startswith("UPDATE") else None
    rstore.write_run(summary)
    assert fake_pyodbc.kinds()[-2:] == ["1:update_run", "1:commit"]  # the row existed: no insert


def test_reads(rstore, fake_pyodbc):
    fake_pyodbc.responder = lambda sql, params: (
        [("abc",)] if "TOP (1) hash_sha256" in sql else [(7,)] if sql.startswith("SELECT COUNT(*)") else None
    )
    assert rstore.latest_hash("mediawiki", "wikipedia", "page", "A") == "abc"
    assert rstore.count() == 7 and rstore.count(source_name="wikipedia", fetched_at_utc="2026-01-19 12:00:05") == 7
    (_, sql, params, _) = fake_pyodbc.executed("SELECT COUNT(*)")[-1]
    assert sql.endswith("WHERE [source_name] = ? AND [fetched_at_utc] = ?")
    assert params == ("wikipedia", datetime(2026, 1, 19, 12, 0, 5))
    fake_pyodbc.responder = lambda sql, params: []
    assert rstore.latest_hash("mediawiki", "wikipedia", "page", "B") is None
    with pytest.raises(StoreError, match="unknown IngestRecords column"):
        rstore.count(nope=1)


def test_open_record_store_takes_the_schema_from_the_settings(monkeypatch, fake_pyodbc):
    from holocron_scrapy.db import connection
    from holocron_scrapy.records.store import open_record_store

    monkeypatch.setattr(connection, "open_store", lambda parsed, **kw: fake_pyodbc.connect(""))
    monkeypatch.setenv("INGEST_SQLSERVER_PASSWORD", PASSWORD)
    monkeypatch.setenv("INGEST_SQLSERVER_SCHEMA", "records_env")
    store = open_record_store("sqlserver://", sqlserver_config={"schema": "from_yaml"})
    assert isinstance(store, SqlServerRecordStore) and store.schema == "records_env"
    assert "[records_env].[IngestRecords]" in store.sql["insert_record"]
    monkeypatch.delenv("INGEST_SQLSERVER_SCHEMA")
    assert open_record_store("sqlserver://", sqlserver_config={"schema": "from_yaml"}).schema == "from_yaml"


# -- live SQL Server --------------------------------------------------------------------------------
@pytest.fixture
def live(live_schema):
    """A records store in the throw-away schema of ``live_schema``, and a raw connection to check it."""
    from holocron_scrapy.records.store import open_record_store

    store = open_record_store("sqlserver://")
    raw = sqlserver.connect(sqlserver.SqlServerSettings.resolve({}))
    try:
        yield store, raw, live_schema
    finally:
        raw.close()
        store.close()


UNICODE = "東京 Base — Ωmega 🚀👩🏽‍🚀 שָׁלוֹם مرحبا"


@pytest.mark.sqlserver
def test_live_unicode_round_trip(live):
    store, raw, schema = live
    payload = {"title": UNICODE, "text": f"{UNICODE} " * 100, "links": [{"title": "Ωmega"}]}
    row = record(UNICODE, payload=payload, response_headers={"x-name": UNICODE})
    assert store.insert([row]) == [True]
    cur = raw.cursor()
    cur.execute(
        f"SELECT resource_id, payload, response_headers, fetched_at_utc FROM [{schema}].[IngestRecords]"
        " WHERE ingest_id = ?",
        row["ingest_id"],
    )
    resource_id, stored, headers, fetched = cur.fetchone()
    assert resource_id == UNICODE and json.loads(stored) == payload and stored == row["payload"]
    assert json.loads(headers) == {"x-name": UNICODE}
    assert fetched == datetime(2026, 1, 19, 12, 0, 5, 123456)
    assert store.latest_hash("mediawiki", "wikipedia", "page", UNICODE) == row["hash_sha256"]
    assert store.count(resource_id=UNICODE) == 1


@pytest.mark.sqlserver
def test_live_five_megabyte_payload(live):
    store, raw, schema = live
    payload = {"text": ("Ω東京🚀 lorem ipsum " * 300_000)[: 5 * 1024 * 1024]}
    row = record("Big", payload=payload)
    assert len(row["payload"]) > 5_000_000
    assert store.insert([row]) == [True]
    cur = raw.cursor()
    cur.execute(f"SELECT payload FROM [{schema}].[IngestRecords] WHERE ingest_id = ?", row["ingest_id"])
    assert cur.fetchone()[0] == row["payload"]


@pytest.mark.sqlserver
def test_live_long_urls_round_trip(live):
    store, raw, schema = live
    url = long_url()
    row = {**record("Batch"), "requested_id": url, "request_uri": url}
    assert store.insert([row]) == [True]
    cur = raw.cursor()
    query = f"SELECT requested_id, request_uri FROM [{schema}].[IngestRecords] WHERE ingest_id = ?"
    cur.execute(query, row["ingest_id"])
    assert tuple(cur.fetchone()) == (url, url)


@pytest.mark.sqlserver
def test_live_duplicate_version_is_skipped(live):
    store, _raw, _schema = live
    first, same, changed = record("A"), record("A"), record("A", payload={"title": "A", "rev": 2})
    assert same["hash_sha256"] == first["hash_sha256"] and same["ingest_id"] != first["ingest_id"]
    assert store.insert([first]) == [True]
    assert store.insert([same, changed, record("B")]) == [False, True, True]
    assert store.insert([record("C"), record("C")]) == [True, False]  # duplicates within one batch
    assert store.count() == 4 and store.count(resource_id="A") == 2


@pytest.mark.sqlserver
def test_live_write_run_upsert(live):
    store, raw, schema = live
    summary = {
        "run_id": "run_live",
        "spider": "wikipedia",
        "status": "partial",
        "started_at": datetime(2026, 1, 19, 12, 0, tzinfo=timezone.utc),
        "finished_at": None,
        "pages_stored": 1,
        "pages_unchanged": 0,
        "pages_missing": 0,
        "pages_failed": 0,
        "requests": 2,
        "summary": {"note": UNICODE},
    }
    store.write_run(summary)
    store.write_run({**summary, "status": "completed", "finished_at": "2026-01-19 12:05:00.000000", "pages_stored": 5})
    cur = raw.cursor()
    cur.execute(f"SELECT status, pages_stored, finished_at, summary FROM [{schema}].[ingest_runs]")
    rows = cur.fetchall()
    assert len(rows) == 1
    status, stored, finished, text = rows[0]
    assert (status, stored, finished) == ("completed", 5, datetime(2026, 1, 19, 12, 5))
    assert json.loads(text) == {"note": UNICODE}


def test_record_versions_updates_else_inserts(rstore, fake_pyodbc):
    known, new = record("Known", revision_id=7), record("New", etag='"abc"')
    fake_pyodbc.responder = lambda sql, params: (
        ([], 1 if params[-1].endswith(":Known") else 0) if sql.startswith("UPDATE") else None
    )
    rstore.record_versions([known, new])
    updates = fake_pyodbc.executed("UPDATE [ingest].[seen_resources]")
    inserts = fake_pyodbc.executed("INSERT INTO [ingest].[seen_resources]")
    assert len(updates) == 2 and len(inserts) == 1
    assert inserts[0][2][0] == "mediawiki:wikipedia:page:New" and inserts[0][2][7] == '"abc"'
    assert updates[0][2][1] == 7 and updates[0][2][4] == datetime(2026, 1, 19, 12, 0, 5, 123456)


def test_versions_lookup_reads_text_times(rstore, fake_pyodbc):
    fetched = datetime(2026, 1, 19, 12, 0, 5, 123456)
    fake_pyodbc.responder = lambda sql, params: (
        [(params[2], "h", 7, None, None, fetched)] if "FROM [ingest].[seen_resources]" in sql else None
    )
    found = rstore.versions("mediawiki", "wikipedia", ["A", "B", "A"])
    assert set(found) == {"A", "B"} and found["A"]["last_fetched_at"] == "2026-01-19 12:00:05.123456"
    assert found["B"]["revision_id"] == 7


@pytest.mark.sqlserver
def test_live_versions_upsert_and_lookup(live):
    store, _, _ = live
    first, later = record("V", revision_id=1), record("V", payload={"v": 2}, revision_id=2)
    store.record_versions([first])
    store.record_versions([later])
    found = store.versions("mediawiki", "wikipedia", ["V", "missing"])
    assert list(found) == ["V"] and found["V"]["revision_id"] == 2 and found["V"]["hash_sha256"] == later["hash_sha256"]


def test_insert_with_versions_is_one_transaction(rstore, fake_pyodbc):
    """A record and its ``seen_resources`` version commit together: "seen" never runs ahead of storage."""
    rows = [record("A"), record("B")]
    fake_pyodbc.responder = lambda sql, params: [] if sql.startswith("INSERT INTO [ingest].[IngestRecords]") and (
        params[4] == "B"
    ) else (([], 0) if sql.startswith("UPDATE [ingest].[seen_resources]") else None)  # fmt: skip
    assert rstore.insert(rows, record_versions=True) == [True, False]  # B: a duplicate, so no version either
    assert fake_pyodbc.kinds() == ["1:insert_record", "1:insert_record", "1:update_version", "1:insert_version",
                                   "1:commit"]  # fmt: skip
    assert fake_pyodbc.executed("INSERT INTO [ingest].[seen_resources]")[0][2][0] == "mediawiki:wikipedia:page:A"


def test_record_lookups_for_lake_verify(rstore, fake_pyodbc):
    from holocron_scrapy.records.store import META_COLUMNS

    fetched = datetime(2026, 1, 19, 12, 0, 5, 123456)

    def row(ingest_id: str) -> tuple:
        values = {**record(ingest_id), "ingest_id": ingest_id, "fetched_at_utc": fetched, "lake_path": f"p/{ingest_id}"}
        return tuple(values[c] for c in META_COLUMNS)

    pages = {"": [row("a"), row("b")], "b": [row("c")], "c": []}
    fake_pyodbc.responder = lambda sql, params: (
        pages[params[1]] or ([], 0) if "SELECT TOP (?)" in sql
        else [row(params[0])] if "WHERE ingest_id = ?" in sql
        else [row("z")] if "WHERE lake_path = ?" in sql
        else None
    )  # fmt: skip
    got = [[r["ingest_id"] for r in page] for page in rstore.iter_records("wikipedia", batch_size=2)]
    assert got == [["a", "b"], ["c"]]
    assert fake_pyodbc.executed("SELECT TOP (?)")[1][2] == (2, "b", "wikipedia", "wikipedia")  # keyset, not OFFSET
    found = rstore.records_by_ids(["x", "y", "x"])
    assert sorted(found) == ["x", "y"] and found["x"]["fetched_at_utc"] == "2026-01-19 12:00:05.123456"
    assert list(rstore.records_by_lake_path(["p/z"])) == ["p/z"]
    assert rstore.records_by_ids([]) == {}
