"""The work_items store contract: every backend must pass these tests.

SQLite and PostgreSQL always run (PostgreSQL in a throw-away database of the ``postgres_url``
fixture, on the machine's server); SQL Server runs when INGEST_SQLSERVER_HOST and _PASSWORD
point at a server, and is skipped with that reason otherwise.

Also here: a real deadlock on the live PostgreSQL (the store's ack is the victim and is run
again), the bound on conflict retries, the proof that the store runs only the statements that
``statements(dialect)`` lists (what tests/test_sql_tsql.py compiles for SQL Server), and the
``sqlserver://`` / ``mssql+pyodbc://`` / YAML-section mapping onto the one store.
"""

from __future__ import annotations

import multiprocessing
import random
import re
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from holocron_scrapy.errors import ConfigError, StoreError
from holocron_scrapy.frontier.store import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    PENDING,
    CheckpointKey,
    FailedItem,
    NewItem,
    Scope,
    make_owner,
    open_work_item_store,
    quarantine_message,
    utcnow,
)


def new(key: str, priority: int = 0, source: str = "wiki", status: str = PENDING) -> NewItem:
    return NewItem(
        dedupe_key=f"mediawiki:{source}:page:{key}",
        source_system="mediawiki",
        source_name=source,
        resource_type="page",
        resource_id=key,
        request_uri=f"http://w/api.php?titles={key}",
        priority=priority,
        status=status,
    )


@pytest.fixture(params=["sqlite", "postgresql", pytest.param("sqlserver", marks=pytest.mark.sqlserver)])
def store(request, tmp_path):
    """PostgreSQL runs in a throw-away database (``postgres_url``), SQL Server in the throw-away
    schema of ``live_schema`` (skipped without a server)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'f.sqlite3'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        request.getfixturevalue("live_schema")
        url = "sqlserver://"
    s = open_work_item_store(url, max_attempts=3, retry_backoff=0.2)
    yield s
    s.close()


def test_insert_if_new_counts_only_new_keys(store):
    assert store.flush([new("A"), new("B"), new("A")], [], []) == 2
    assert store.flush([new("B"), new("C")], [], []) == 1
    assert store.counts() == {"wiki": {PENDING: 3, IN_PROGRESS: 0, COMPLETED: 0, FAILED: 0}}


def test_claim_is_best_first_and_leases(store):
    store.flush([new("low", 0), new("high", 5), new("mid", 2), new("mid2", 2)], [], [])
    owner = make_owner()
    rows = store.claim(owner, 3, 60)
    assert [r["resource_id"] for r in rows] == ["high", "mid", "mid2"]
    assert all(r["attempt"] == 1 for r in rows)
    row = store.get("mediawiki:wiki:page:high")
    assert row["status"] == IN_PROGRESS and row["lease_owner"] == owner and row["lease_expires_at"]
    assert [r["resource_id"] for r in store.claim(make_owner(), 10, 60)] == ["low"]
    assert store.claim(owner, 10, 60) == []


def test_ack_completes_and_is_never_claimed_again(store):
    store.flush([new("A")], [], [])
    (row,) = store.claim(make_owner(), 5, 60)
    store.flush([], [row["seq"]], [])
    done = store.get("mediawiki:wiki:page:A")
    assert done["status"] == COMPLETED and done["lease_owner"] is None and done["completed_at"]
    assert store.claim(make_owner(), 5, 60) == []
    assert store.flush([new("A")], [], []) == 0  # a known key is not re-added


def test_retryable_failure_backs_off_then_fails_after_max_attempts(store):
    store.flush([new("A")], [], [])
    for attempt in (1, 2):
        (row,) = store.claim(make_owner(), 5, 60)
        assert row["attempt"] == attempt
        store.flush([], [], [FailedItem(row["seq"], f"boom {attempt}")])
        after = store.get("mediawiki:wiki:page:A")
        assert after["status"] == PENDING and after["next_attempt_at"] and after["error_message"] == f"boom {attempt}"
        assert store.claim(make_owner(), 5, 60) == []  # still backing off
        assert store.outstanding(make_owner())  # but the crawl must not end
        time.sleep(0.2 * 2 ** (attempt - 1) + 0.1)
    (row,) = store.claim(make_owner(), 5, 60)
    store.flush([], [], [FailedItem(row["seq"], "boom 3")])
    assert store.get("mediawiki:wiki:page:A")["status"] == FAILED
    assert store.failure_reasons() == [("boom 3", 1)]


def test_permanent_failure_is_failed_at_once(store):
    store.flush([new("A")], [], [])
    (row,) = store.claim(make_owner(), 5, 60)
    store.flush([], [], [FailedItem(row["seq"], "HTTP 404", retryable=False)])
    assert store.get("mediawiki:wiki:page:A")["status"] == FAILED


def test_expired_lease_is_reclaimed(store):
    store.flush([new("A"), new("B")], [], [])
    dead = make_owner()
    store.claim(dead, 5, 0.05)
    time.sleep(0.1)
    assert store.claim(make_owner(), 5, 60) == []
    assert store.reclaim() == 2
    rows = store.claim(make_owner(), 5, 60)
    # a lost lease is not an attempt: the claim's increment was undone
    assert sorted(r["resource_id"] for r in rows) == ["A", "B"] and all(r["attempt"] == 1 for r in rows)
    assert store.get("mediawiki:wiki:page:A")["lease_losses"] == 1


def test_lost_leases_are_not_attempts_and_suspects_go_alone(store):
    store.flush([new("A"), new("B"), new("C")], [], [])
    for _ in range(5):  # five workers die holding the whole batch: nothing fails
        owner = make_owner()
        assert len(store.claim(owner, 5, 600)) == 3
        assert store.lease_owners() == [owner]
        assert store.reclaim([owner]) == 3
        if store.get("mediawiki:wiki:page:A")["lease_losses"] >= 2:
            break
    for key in "ABC":
        row = store.get(f"mediawiki:wiki:page:{key}")
        assert (row["status"], row["attempt"], row["lease_losses"], row["solo_lease_losses"]) == (PENDING, 0, 2, 0)
    assert store.claim(make_owner(), 5, 600) == []  # lost twice: not for a worker with work in flight
    assert store.ready_count(5) == 3 and store.outstanding(make_owner())
    (row,) = store.claim(make_owner(), 5, 600, alone=True)  # alone: the best suspect, by itself
    assert row["resource_id"] == "A" and row["lease_losses"] == 2 and row["attempt"] == 1


def test_an_item_that_kills_its_worker_alone_three_times_is_quarantined(store):
    store.flush([new("A"), new("B")], [], [])
    for _ in range(2):
        owner = make_owner()
        store.claim(owner, 5, 600)
        store.reclaim([owner])  # lost with B beside it: not alone
    for deaths in (1, 2, 3):
        owner = make_owner()
        (row,) = store.claim(owner, 5, 600, alone=True)
        assert row["resource_id"] == "A"
        assert store.reclaim([owner]) == 1
        after = store.get("mediawiki:wiki:page:A")
        assert after["solo_lease_losses"] == deaths and after["attempt"] == 0
        assert after["status"] == (FAILED if deaths == 3 else PENDING)
        assert store.get("mediawiki:wiki:page:B")["status"] == PENDING
        # B is claimed alone next, and completed: it was never the problem
        other = make_owner()
        (b,) = store.claim(other, 5, 600, alone=True)
        if b["resource_id"] == "B":
            store.flush([], [b["seq"]], [])
        else:
            store.release([b["seq"]])
    row = store.get("mediawiki:wiki:page:A")
    assert row["error_message"] == quarantine_message(3)
    assert quarantine_message(3) == "quarantined: its worker died 3 times while it was the only item in flight"
    assert row["lease_losses"] == 5
    assert store.retry_failed() == 1
    again = store.get("mediawiki:wiki:page:A")
    assert (again["status"], again["lease_losses"], again["solo_lease_losses"]) == (PENDING, 0, 0)


def test_a_solo_death_counts_only_until_the_request_was_fetched(store):
    store.flush([new("A")], [], [])
    for _ in range(2):
        owner = make_owner()
        store.claim(owner, 5, 600)  # ordinary claims (one item by chance): not solo deaths
        store.reclaim([owner])
    assert store.get("mediawiki:wiki:page:A")["solo_lease_losses"] == 0
    for _ in range(4):  # claimed alone, fetched and parsed, then the worker dies: not held against it
        owner = make_owner()
        (row,) = store.claim(owner, 5, 600, alone=True)
        assert store.get("mediawiki:wiki:page:A")["lease_solo"] == 1
        store.end_solo([row["seq"]])
        assert store.get("mediawiki:wiki:page:A")["lease_solo"] == 0
        store.reclaim([owner])
    row = store.get("mediawiki:wiki:page:A")
    assert (row["lease_losses"], row["solo_lease_losses"], row["status"]) == (6, 0, PENDING)


def test_scope_limits_claims_counts_and_reclaims(store):
    wiki, other = Scope("mediawiki", "wiki"), Scope("mediawiki", "other")
    http_wiki = Scope("http", "wiki")  # same name, other system
    store.flush([new("A"), new("B"), new("C", source="other")], [], [])
    me = make_owner()
    assert store.ready_count(10, wiki) == 2 and store.ready_count(10, other) == 1 and store.ready_count(10) == 3
    assert store.ready_count(10, http_wiki) == 0 and not store.outstanding(me, http_wiki)
    assert store.claim(me, 10, 600, scope=http_wiki) == []
    rows = store.claim(me, 10, 0.05, scope=other)
    assert [r["resource_id"] for r in rows] == ["C"]
    assert store.outstanding(make_owner(), wiki) and store.outstanding(make_owner(), other)
    assert store.lease_owners(wiki) == [] and store.lease_owners(other) == [me]
    assert store.min_inflight_depth(make_owner(), wiki) is None
    assert store.min_inflight_depth(make_owner(), other) == 0
    time.sleep(0.1)
    assert store.reclaim(scope=wiki) == 0 and store.reclaim([me], scope=wiki) == 0
    assert store.get("mediawiki:other:page:C")["status"] == IN_PROGRESS
    assert store.reclaim(scope=other) == 1
    rows = store.claim(me, 10, 600, scope=wiki, alone=True)
    assert sorted(r["resource_id"] for r in rows) == ["A", "B"]
    assert store.ready_count(10, wiki) == 0 and store.ready_count(10, other) == 1


def test_release_leases_undoes_the_attempt(store):
    store.flush([new("A")], [], [])
    owner = make_owner()
    store.claim(owner, 5, 600)
    assert store.release_leases(owner) == 1
    row = store.get("mediawiki:wiki:page:A")
    assert (row["status"], row["attempt"], row["lease_losses"]) == (PENDING, 0, 0)


def test_renew_extends_leases(store):
    store.flush([new("A")], [], [])
    owner = make_owner()
    store.claim(owner, 5, 0.05)
    assert store.renew(owner, 600) == 1
    time.sleep(0.1)
    assert store.reclaim() == 0


def test_release_returns_unattempted(store):
    store.flush([new("A")], [], [])
    (row,) = store.claim(make_owner(), 5, 60)
    store.release([row["seq"]])
    again = store.get("mediawiki:wiki:page:A")
    assert again["status"] == PENDING and again["attempt"] == 0


def test_outstanding_counts_pending_and_other_live_leases(store):
    me, other = make_owner(), make_owner()
    assert not store.outstanding(me)
    store.flush([new("A")], [], [])
    assert store.outstanding(me)
    store.claim(other, 5, 60)
    assert store.outstanding(me)
    assert not store.outstanding(other)  # its own leases don't keep a worker waiting


def test_admin_operations(store):
    store.flush([new("A"), new("B"), new("C", source="other")], [], [])
    rows = store.claim(make_owner(), 5, 60)
    by_id = {r["resource_id"]: r["seq"] for r in rows}
    store.flush([], [by_id["A"]], [FailedItem(by_id["B"], "gone", retryable=False)])
    assert store.oldest_lease()["dedupe_key"] == "mediawiki:other:page:C"
    assert store.release_leases() == 1
    assert store.retry_failed("wiki") == 1
    assert store.get("mediawiki:wiki:page:B")["status"] == PENDING
    assert store.recrawl("wiki", older_than_seconds=3600) == 0  # completed just now
    assert store.recrawl("wiki") == 1
    assert store.counts()["wiki"][PENDING] == 2


def test_completed_status_on_insert_marks_known(store):
    store.flush([new("A", status=COMPLETED)], [], [])
    assert store.get("mediawiki:wiki:page:A")["status"] == COMPLETED
    assert store.claim(make_owner(), 5, 60) == []
    assert store.recrawl("wiki") == 0  # never fetched itself: a re-crawl leaves it alone


def test_requeue_keys_resets_items_of_any_status(store):
    store.flush([new("A"), new("B"), new("C"), new("D", status=COMPLETED), new("E")], [], [])
    rows = {r["resource_id"]: r["seq"] for r in store.claim(make_owner(), 3, 60)}
    store.flush([], [rows["A"]], [FailedItem(rows["B"], "gone", retryable=False), FailedItem(rows["C"], "later")])
    keys = [f"mediawiki:wiki:page:{k}" for k in ("A", "B", "C", "D", "E", "nosuch")]
    assert store.requeue_keys(keys) == 4  # E is already pending and never attempted; nosuch is unknown
    for key in keys[:5]:
        row = store.get(key)
        assert row["status"] == PENDING and row["attempt"] == 0, key
        assert row["completed_at"] is None and row["next_attempt_at"] is None and row["lease_owner"] is None, key
    assert store.requeue_keys(keys) == 0 and store.requeue_keys([]) == 0
    assert sorted(r["resource_id"] for r in store.claim(make_owner(), 10, 60)) == ["A", "B", "C", "D", "E"]
    leased = store.get("mediawiki:wiki:page:A")
    assert store.requeue_keys([leased["dedupe_key"]]) == 1  # a leased item too
    assert store.get(leased["dedupe_key"])["lease_owner"] is None


def _insert_keys(url: str, keys: list[str], out) -> None:
    s = open_work_item_store(url)
    inserted = 0
    for key in keys:
        inserted += s.flush([new(key)], [], [])
    out.put(inserted)


def _claim_all(url: str, out) -> None:
    s = open_work_item_store(url)
    owner = make_owner()
    got = []
    while rows := s.claim(owner, 7, 60):
        got.extend(r["seq"] for r in rows)
    out.put(got)


def test_dedupe_race_between_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.sqlite3'}"
    open_work_item_store(url).close()
    keys = [f"T{i}" for i in range(300)]
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_insert_keys, args=(url, keys, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    totals = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    assert sum(totals) == 300
    conn = sqlite3.connect(tmp_path / "race.sqlite3")
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT dedupe_key) FROM work_items").fetchone() == (300, 300)


def test_concurrent_claims_are_disjoint(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.sqlite3'}"
    s = open_work_item_store(url)
    s.flush([new(f"T{i}") for i in range(500)], [], [])
    s.close()
    queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_claim_all, args=(url, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    claimed = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    flat = [seq for part in claimed for seq in part]
    assert len(flat) == len(set(flat)) == 500


def test_unknown_scheme_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown store URL scheme 'mysql'"):
        open_work_item_store("mysql://x/y")


def test_foreign_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "foreign.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.execute("INSERT INTO customers VALUES (1)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a holocron_scrapy database"):
        open_work_item_store(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_corrupt_file_is_refused_untouched(tmp_path):
    path = tmp_path / "corrupt.sqlite3"
    path.write_bytes(b"this is not a database at all" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        open_work_item_store(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(StoreError, match="cannot create directory"):
        open_work_item_store(f"sqlite:///{blocker / 'sub' / 'f.sqlite3'}")
    assert blocker.read_text() == "a file where the state directory should be"


def test_concurrent_claims_on_postgresql_are_disjoint_and_complete(postgres_url):
    """Four workers (threads, each with its own store and connections) drain one PostgreSQL frontier of
    2,000 items: FOR UPDATE SKIP LOCKED hands every item to exactly one of them, while its lease is live."""
    open_work_item_store(postgres_url).close()
    seed = open_work_item_store(postgres_url)
    assert seed.flush([new(f"T{i}", priority=i % 3) for i in range(2000)], [], []) == 2000
    seed.close()
    start = threading.Barrier(4)

    def worker() -> tuple[list[int], int]:
        s = open_work_item_store(postgres_url)
        owner, got, acked = make_owner(), [], 0
        try:
            start.wait(timeout=30)
            while rows := s.claim(owner, 25, 600):
                got.extend(r["seq"] for r in rows)
                assert all(r["attempt"] == 1 for r in rows)
                s.flush([], [r["seq"] for r in rows[::2]], [])  # ack half, keep the rest leased (live)
                acked += len(rows[::2])
        finally:
            s.close()
        return got, acked

    with ThreadPoolExecutor(4) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(worker) for _ in range(4)]]
    claimed = [got for got, _ in results]
    acked = sum(n for _, n in results)
    flat = [seq for part in claimed for seq in part]
    assert len(flat) == len(set(flat)) == 2000
    assert all(claimed), "every worker got a share"
    check = open_work_item_store(postgres_url)
    try:
        expected = {PENDING: 0, IN_PROGRESS: 2000 - acked, COMPLETED: acked, FAILED: 0}
        assert check.counts() == {"wiki": expected}
        assert check.ready_count(10) == 0 and len(check.lease_owners()) == 4
    finally:
        check.close()


def test_concurrent_inserts_on_postgresql_count_each_new_key_once(postgres_url):
    """Three workers flush the same 600 keys in different orders at once: ON CONFLICT DO NOTHING
    keeps one row per key, and the counts returned add up to the rows inserted (no deadlock)."""
    open_work_item_store(postgres_url).close()
    start = threading.Barrier(3)

    def worker(order: int) -> int:
        s = open_work_item_store(postgres_url)
        keys = [f"T{i}" for i in range(600)]
        random.Random(order).shuffle(keys)
        inserted = 0
        try:
            start.wait(timeout=30)
            for i in range(0, 600, 50):
                inserted += s.flush([new(k) for k in keys[i : i + 50]], [], [])
        finally:
            s.close()
        return inserted

    with ThreadPoolExecutor(3) as pool:
        totals = [f.result(timeout=120) for f in [pool.submit(worker, n) for n in range(3)]]
    assert sum(totals) == 600
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT dedupe_key) FROM work_items")).one() == (
                600,
                600,
            )
    finally:
        engine.dispose()


def test_a_state_file_made_by_the_previous_code_keeps_working(tmp_path):
    """A SQLite state file written the way the previous (sqlite3) store wrote it: times as UTC text,
    an item in backoff, an expired lease of a dead worker, a completed item. The new store reads the
    times as aware datetimes, reclaims, claims, acks and fails through it; the text form is kept."""
    from holocron_scrapy.db.connection import open_store, parse_store_url

    path = tmp_path / "legacy.sqlite3"
    conn = open_store(parse_store_url(f"sqlite:///{path}"))
    past, future = "2026-01-02 03:04:05.678901", "2999-01-01 00:00:00.000000"
    insert = (
        "INSERT INTO work_items (work_item_id, source_system, source_name, resource_type, resource_id,"
        " request_uri, request_method, priority, depth, status, attempt, created_at, updated_at,"
        " completed_at, dedupe_key, lease_owner, lease_expires_at, next_attempt_at)"
        " VALUES (?, 'mediawiki', 'wiki', 'page', ?, ?, 'GET', ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    rows = [
        ("ready", 1, PENDING, 0, None, None, None, None),
        ("backoff", 5, PENDING, 1, None, None, None, future),
        ("due", 0, PENDING, 1, None, None, None, past),
        ("leased", 3, IN_PROGRESS, 1, None, "otherhost:1:dead", past, None),
        ("done", 9, COMPLETED, 1, past, None, None, None),
    ]
    conn.execute("BEGIN IMMEDIATE")
    for key, priority, status, attempt, completed, owner, lease, backoff in rows:
        params = (f"id-{key}", key, f"http://w/{key}", priority, status, attempt, past, past, completed)
        conn.execute(insert, (*params, f"mediawiki:wiki:page:{key}", owner, lease, backoff))
    conn.execute("COMMIT")
    conn.close()

    store = open_work_item_store(f"sqlite:///{path}", retry_backoff=60)
    try:
        done = store.get("mediawiki:wiki:page:done")
        assert done["completed_at"] == datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        assert store.counts() == {"wiki": {PENDING: 3, IN_PROGRESS: 1, COMPLETED: 1, FAILED: 0}}
        assert store.ready_count(10) == 2  # "backoff" waits until 2999
        assert store.reclaim() == 1  # the dead worker's expired lease
        owner = make_owner()
        claimed = store.claim(owner, 10, 60)
        assert [r["resource_id"] for r in claimed] == ["leased", "ready", "due"]
        by_id = {r["resource_id"]: r for r in claimed}
        assert by_id["leased"]["attempt"] == 1 and by_id["due"]["attempt"] == 2
        store.flush(
            [new("fresh")], [by_id["leased"]["seq"], by_id["ready"]["seq"]], [FailedItem(by_id["due"]["seq"], "x")]
        )
        assert store.get("mediawiki:wiki:page:due")["status"] == PENDING
        assert store.flush([new("done"), new("ready")], [], []) == 0  # old keys still dedupe
    finally:
        store.close()
    raw = sqlite3.connect(path)
    try:
        stamps = raw.execute(
            "SELECT completed_at, lease_expires_at, next_attempt_at FROM work_items WHERE resource_id = 'due'"
            " UNION ALL SELECT completed_at, created_at, updated_at FROM work_items WHERE resource_id = 'leased'"
        ).fetchall()
        versions = [v for (v,) in raw.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        raw.close()
    text = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
    (due_done, due_lease, due_next), (leased_done, created, updated) = stamps
    assert due_done is None and due_lease is None and text.match(due_next) and due_next > past
    assert text.match(leased_done) and created == past and text.match(updated)
    assert versions[0] == "0001"


def test_postgresql_store_survives_its_connections_being_terminated(postgres_url, monkeypatch):
    """A store keeps its connections between calls; after the server dropped them (here
    pg_terminate_backend) and a pause, the next calls check out fresh, pinged connections."""
    import holocron_scrapy.frontier.sql_store as store_module
    from tests.support.postgres import admin_connect

    monkeypatch.setattr(store_module, "HOLD_IDLE_SECONDS", 0.05)
    s = open_work_item_store(postgres_url)
    try:
        s.flush([new("A"), new("B")], [], [])
        assert s.ready_count(10) == 2
        dbname = sa.engine.make_url(postgres_url).database
        with admin_connect() as admin:
            killed = admin.execute(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (dbname,)
            ).fetchone()[0]
        assert killed >= 1
        time.sleep(0.2)
        assert s.ready_count(10) == 2
        (row, _) = s.claim(make_owner(), 10, 60)
        s.flush([new("C")], [row["seq"]], [])
        assert s.counts()["wiki"] == {PENDING: 1, IN_PROGRESS: 1, COMPLETED: 1, FAILED: 0}
    finally:
        s.close()


def test_postgresql_store_analyzes_a_freshly_filled_frontier(postgres_url):
    """Without statistics PostgreSQL takes a new work_items for empty and sorts every pending row at
    each claim; the store analyzes the table once it has inserted ANALYZE_AFTER rows, and the claim's
    plan then reads the dequeue index in order."""
    from holocron_scrapy.frontier.sql_store import ANALYZE_AFTER

    s = open_work_item_store(postgres_url)
    try:

        def reltuples() -> float:
            with s.engine.connect() as conn:
                return conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE relname = 'work_items'")).scalar()

        s.flush([new(f"T{i}") for i in range(ANALYZE_AFTER - 1)], [], [])
        assert reltuples() < 0  # never analyzed
        s.flush([new("last")], [], [])
        assert reltuples() == ANALYZE_AFTER
        with s.engine.connect() as conn:
            plan = "\n".join(
                conn.execute(
                    sa.text(
                        "EXPLAIN SELECT seq FROM work_items WHERE status = 'pending' AND lease_losses < 2"
                        " ORDER BY priority DESC, seq LIMIT 50 FOR UPDATE SKIP LOCKED"
                    )
                ).scalars()
            )
        assert "Index Scan using ix_work_items_dequeue" in plan and "Sort" not in plan, plan
    finally:
        s.close()


def _lock_waiters(dbname: str) -> int:
    """Backends of *dbname* waiting on a lock (read on a fresh connection: a transaction's view of
    pg_stat_activity is a snapshot)."""
    from tests.support.postgres import admin_connect

    with admin_connect() as admin:
        query = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
        return admin.execute(query, (dbname,)).fetchone()[0]


def _deadlocks(dbname: str) -> int:
    from tests.support.postgres import admin_connect

    with admin_connect() as admin:
        return admin.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()[0]


def test_postgresql_deadlock_victim_flush_is_run_again(postgres_url):
    """A real deadlock on the live server: another transaction holds row B, the store's ack (one
    UPDATE of A and B) locks A and waits for B, then the other transaction asks for A. PostgreSQL
    breaks the cycle by failing the store's transaction (its deadlock_timeout runs out first: the
    other session's is 30 s) with DeadlockDetected; the store rolls back and runs the ack again,
    which goes through once the other transaction has committed."""
    s = open_work_item_store(postgres_url)
    dbname = sa.engine.make_url(postgres_url).database
    other = sa.create_engine(postgres_url)
    try:
        s.flush([new("A"), new("B")], [], [])
        a, b = sorted(r["seq"] for r in s.claim(make_owner(), 2, 60))
        before = _deadlocks(dbname)
        touch = sa.text("UPDATE work_items SET priority = priority WHERE seq = :seq")
        result: list[Any] = []
        with other.connect() as conn:
            tx = conn.begin()
            conn.exec_driver_sql("SET LOCAL deadlock_timeout = '30s'")
            conn.exec_driver_sql("SET LOCAL lock_timeout = '20s'")  # never hang the suite
            conn.execute(touch, {"seq": b})
            worker = threading.Thread(target=lambda: result.append(s.flush([], [a, b], [])))
            worker.start()
            for _ in range(200):  # until the store's UPDATE waits for row B
                if _lock_waiters(dbname):
                    break
                time.sleep(0.05)
            assert _lock_waiters(dbname) == 1 and not result
            conn.execute(touch, {"seq": a})  # waits for the store: a cycle, which the server breaks
            tx.commit()
            worker.join(30)
        assert result == [0]
        assert s.conflict_retries == 1
        assert _deadlocks(dbname) == before + 1
        assert {s.get(f"mediawiki:wiki:page:{k}")["status"] for k in "AB"} == {COMPLETED}
    finally:
        other.dispose()
        s.close()


def test_write_conflicts_are_retried_a_bounded_number_of_times(postgres_url, monkeypatch):
    """A transaction that keeps losing is given up after CONFLICT_ATTEMPTS runs with the driver's
    error (a real DeadlockDetected, raised by the server from a PL/pgSQL RAISE with its SQLSTATE);
    any other error is raised at once."""
    import psycopg

    from holocron_scrapy.frontier.sql_store import CONFLICT_ATTEMPTS

    s = open_work_item_store(postgres_url)
    try:
        runs: list[int] = []

        def losing(conn: sa.Connection) -> None:
            runs.append(1)
            conn.exec_driver_sql("DO $$ BEGIN RAISE EXCEPTION 'lost' USING ERRCODE = '40P01'; END $$")

        with pytest.raises(sa.exc.DBAPIError) as raised:
            s._write(losing)
        assert isinstance(raised.value.orig, psycopg.errors.DeadlockDetected)
        assert len(runs) == CONFLICT_ATTEMPTS and s.conflict_retries == CONFLICT_ATTEMPTS - 1

        runs.clear()

        def failing(conn: sa.Connection) -> None:
            runs.append(1)
            conn.exec_driver_sql("SELECT 1 / 0")

        with pytest.raises(sa.exc.DBAPIError):
            s._write(failing)
        assert len(runs) == 1
        assert s.flush([new("A")], [], []) == 1  # the store goes on
    finally:
        s.close()


def test_checkpoint_is_saved_with_its_items_in_one_transaction(store):
    key = CheckpointKey("mediawiki", "wiki", "seeds/abc")
    assert store.checkpoint(key) is None
    assert store.save_checkpoint(key, {"position": 10, "done": False}, [new("A"), new("B")]) == 2
    assert store.checkpoint(key) == {"position": 10, "done": False}
    # a second save overwrites the value; known keys are skipped, as in flush
    assert store.save_checkpoint(key, {"position": 20, "done": True}, [new("B"), new("C")]) == 1
    assert store.checkpoint(key) == {"position": 20, "done": True}
    assert store.save_checkpoint(key, {"position": 20, "done": True, "note": "é"}) == 0
    assert store.checkpoint(key)["note"] == "é"
    # checkpoints are per source and name
    assert store.checkpoint(CheckpointKey("mediawiki", "other", "seeds/abc")) is None
    assert store.checkpoint(CheckpointKey("mediawiki", "wiki", "seeds/def")) is None
    assert store.counts() == {"wiki": {PENDING: 3, IN_PROGRESS: 0, COMPLETED: 0, FAILED: 0}}
    # an insert that fails takes the checkpoint with it: neither runs ahead of the other
    with pytest.raises(sa.exc.DBAPIError):
        store.save_checkpoint(key, {"position": 30, "done": True}, [new("D"), new("E", status="bogus")])
    assert store.checkpoint(key)["position"] == 20
    assert store.get("mediawiki:wiki:page:D") is None


def test_postgresql_database_at_0006_gets_the_checkpoints_table(postgres_url):
    """An existing 0006 database (no frontier_checkpoints, no 0007 row) upgrades when a store opens it."""
    from holocron_scrapy.db.engine import postgresql_engine

    open_work_item_store(postgres_url).close()
    engine = postgresql_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE frontier_checkpoints")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version = '0007'")
        s = open_work_item_store(postgres_url)
        try:
            key = CheckpointKey("http_scrape", "site", "seeds/1")
            assert s.save_checkpoint(key, {"done": True}, [new("A")]) == 1
            assert s.checkpoint(key) == {"done": True}
        finally:
            s.close()
        with engine.connect() as conn:
            versions = list(conn.exec_driver_sql("SELECT version FROM schema_migrations ORDER BY version").scalars())
        assert versions[-3:] == ["0006", "0007", "0008"]
    finally:
        engine.dispose()


def test_postgresql_database_at_0007_gets_the_host_tables(postgres_url):
    """An existing 0007 database (no frontier_hosts / frontier_host_slots, no 0008 row) upgrades when a
    store opens it."""
    from holocron_scrapy.db.engine import postgresql_engine

    open_work_item_store(postgres_url).close()
    engine = postgresql_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE frontier_host_slots")
            conn.exec_driver_sql("DROP TABLE frontier_hosts")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version = '0008'")
        s = open_work_item_store(postgres_url)
        try:
            assert s.take_slot("h", make_owner(), delay=0.0, concurrency=1, lease_seconds=30).taken
        finally:
            s.close()
        with engine.connect() as conn:
            versions = list(conn.exec_driver_sql("SELECT version FROM schema_migrations ORDER BY version").scalars())
        assert versions[-2:] == ["0007", "0008"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_store_runs_only_the_statements_it_lists(backend, request, tmp_path):
    """``statements(dialect)`` is what the offline T-SQL check (tests/test_sql_tsql.py) compiles for
    SQL Server: every statement the store executes here must be one of them."""
    from holocron_scrapy.frontier.statements import statements

    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'f.sqlite3'}"
    s = open_work_item_store(url, retry_backoff=0.01)
    listed = {id(statement): name for name, statement in statements(s.dialect).items()}
    executed: list[Any] = []
    sa.event.listen(s.engine, "before_execute", lambda _c, clause, *_a: executed.append(clause))
    try:
        scope = Scope("mediawiki", "wiki")
        owner = make_owner()
        s.flush([new("S1"), new("S2")], [], [])
        for _ in range(2):  # lost twice: suspects, claimed alone
            s.claim(owner, 10, 60)
            s.reclaim([owner])
        s.flush([new("A"), new("B"), new("C"), new("D")], [], [])
        for scoped in (None, scope):
            for alone in (False, True):
                rows = s.claim(owner, 1, 60, scope=scoped, alone=alone)
                s.flush([], [], [FailedItem(rows[0]["seq"], "boom")])
        done = s.claim(owner, 1, 60)
        s.flush([], [done[0]["seq"]], [])
        s.claim(owner, 2, 60)
        s.end_solo([1])
        s.release([1])
        s.renew(owner, 60)
        for owners in (None, [owner]):
            for scoped in (None, scope):
                s.reclaim(owners, scope=scoped)
        for scoped in (None, scope):
            s.lease_owners(scoped)
            s.ready_count(5, scoped)
            s.min_inflight_depth(owner, scoped)
            s.outstanding(owner, scoped)
        s.counts(), s.oldest_lease(), s.failure_reasons(), s.lease_summary(), s.get("x")
        s.host_counts(utcnow()), s.workers(), s.active_blocks()  # the fleet view (no politeness table: no blocks)
        s.retry_failed(), s.retry_failed("wiki"), s.recrawl("wiki"), s.recrawl("wiki", 10)
        for who in (None, owner):
            for expired_only in (False, True):
                s.release_leases(who, expired_only=expired_only)
        s.requeue_keys(["mediawiki:wiki:page:A"])
        key = CheckpointKey("mediawiki", "wiki", "seeds/x")
        s.checkpoint(key)
        s.save_checkpoint(key, {"position": 1}, [new("Z")])
        s.save_checkpoint(key, {"position": 2})
        s.take_slot("h", "elsewhere:1:dead", delay=0.0, concurrency=1, lease_seconds=60)
        s.take_slot("h", f"{socket.gethostname()}:{2**22 + 7}:dead", delay=0.0, concurrency=2, lease_seconds=60)
        s.release_owner_slots("elsewhere:1:dead")
        slot = s.take_slot("h", owner, delay=0.0, concurrency=1, lease_seconds=60)
        s.take_slot("h", owner, delay=0.0, concurrency=1, lease_seconds=60)
        s.renew_slots(owner, 60)
        s.release_slot("h", slot.slot_id, ok=False, backoff=0.01)
        s.release_slot("h", slot.slot_id, ok=True)
        s.block_key("h", datetime.now(UTC), "test")
        s.host_states(), s.blocked_keys(), s.release_owner_slots(owner)
        # Claims that leave a blocked host's items out (all of the items above are on host w).
        s.block_key("w", datetime.now(UTC) + timedelta(seconds=60), "test")
        s.flush([on_host("v", "V1")], [], [])
        for _ in range(2):  # lost twice: a suspect
            s.claim(owner, 10, 60)
            s.reclaim([owner])
        s.flush([on_host("v", "V2")], [], [])
        for scoped in (None, scope):
            solo = s.claim(owner, 1, 60, scope=scoped, alone=True)
            other = s.claim(owner, 1, 60, scope=scoped)
            assert [r["resource_id"] for r in solo + other] == ["V1", "V2"]
            s.release([r["seq"] for r in solo + other])
    finally:
        s.close()
    unlisted = [str(c) for c in executed if id(c) not in listed and not isinstance(c, (str, sa.TextClause))]
    assert not unlisted
    missed = sorted(set(listed.values()) - {listed[id(c)] for c in executed if id(c) in listed})
    # SQLite runs the compiled SQL of its insert on the driver; ANALYZE follows the 1000th insert.
    assert missed == (["insert"] if backend == "sqlite" else ["analyze"])


# -- SQL Server: the same store on an mssql+pyodbc engine ------------------------------------------
@pytest.fixture
def raw_sqlserver(monkeypatch) -> list[Any]:
    """``sqlserver.connect`` replaced by raw connections that answer the migration runner as an empty
    schema would (opening a store migrates on one of them; nothing else connects until it is used)."""
    from holocron_scrapy.db import sqlserver
    from tests.support.sqlserver import PASSWORD
    from tests.test_db_engine import RecordingRaw

    raws: list[Any] = []

    def connect(settings: Any, wait_timeout: float = 0.0, **_kw: Any) -> Any:
        assert f"PWD={PASSWORD}" in settings.connection_string()
        raws.append(RecordingRaw())
        return raws[-1]

    monkeypatch.setattr(sqlserver, "connect", connect)
    monkeypatch.setenv("INGEST_SQLSERVER_PASSWORD", PASSWORD)
    return raws


def test_sqlserver_urls_and_sections_open_the_one_store(raw_sqlserver, monkeypatch):
    from holocron_scrapy.frontier.sql_store import SqlWorkItemStore
    from tests.support.sqlserver import PASSWORD

    monkeypatch.setenv("INGEST_SQLSERVER_SCHEMA", "crawl_env")
    s = open_work_item_store(
        "sqlserver://", sqlserver_config={"schema": "from_yaml", "host": "db.example"}, max_attempts=5
    )
    try:
        assert isinstance(s, SqlWorkItemStore) and s.dialect == "mssql" and s.max_attempts == 5
        assert s.engine.get_execution_options()["schema_translate_map"] == {None: "crawl_env"}
        assert s.describe() == "SQL Server db.example:1433 database Holocron schema crawl_env"
        assert "[crawl_env].[work_items]" in "\n".join(raw_sqlserver[0].sql) and raw_sqlserver[0].closed
        assert PASSWORD not in s.describe() + repr(s.engine) + s.engine.url.render_as_string(hide_password=False)
    finally:
        s.close()
    monkeypatch.delenv("INGEST_SQLSERVER_SCHEMA")
    for url in ("sqlserver://", "mssql+pyodbc://"):
        s = open_work_item_store(url, sqlserver_config={"schema": "from_yaml"})
        assert s.engine.get_execution_options()["schema_translate_map"] == {None: "from_yaml"}
        s.close()
    s = open_work_item_store("mssql+pyodbc://crawler@db.example:1444/Lake?driver=FreeTDS")
    assert s.describe() == "SQL Server db.example:1444 database Lake schema ingest"
    s.close()
    assert len(raw_sqlserver) == 4  # one migration connection per store, nothing else
    with pytest.raises(ConfigError, match="schema"):
        open_work_item_store("sqlserver://", sqlserver_config={"schema": "bad name"})


def _in_threads(count: int, target: Any) -> list[Any]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(target, range(count)))


@pytest.mark.sqlserver
def test_sqlserver_racing_inserts_store_each_key_once(live_schema):
    stores = [open_work_item_store("sqlserver://") for _ in range(3)]
    keys = [f"T{i}" for i in range(200)]
    try:
        totals = _in_threads(3, lambda i: sum(stores[i].flush([new(k)], [], []) for k in keys))
        assert sum(totals) == 200
        assert stores[0].counts() == {"wiki": {PENDING: 200, IN_PROGRESS: 0, COMPLETED: 0, FAILED: 0}}
    finally:
        for s in stores:
            s.close()


@pytest.mark.sqlserver
def test_sqlserver_concurrent_claims_are_disjoint_and_best_first(live_schema):
    stores = [open_work_item_store("sqlserver://") for _ in range(3)]
    try:
        stores[0].flush([new(f"T{i}", priority=i % 3) for i in range(300)], [], [])
        first = stores[0].claim(make_owner(), 5, 60)
        assert [r["priority"] for r in first] == [2] * 5
        assert [r["seq"] for r in first] == sorted(r["seq"] for r in first)

        def claim_all(i: int) -> list[int]:
            owner, got = make_owner(), []
            while rows := stores[i].claim(owner, 7, 60):
                got.extend(r["seq"] for r in rows)
            return got

        claimed = [seq for part in _in_threads(3, claim_all) for seq in part]
        assert len(claimed) == len(set(claimed)) == 295
        assert stores[1].ready_count(10) == 0
        assert stores[1].outstanding(make_owner())  # the others' live leases
    finally:
        for s in stores:
            s.close()


@pytest.mark.sqlserver
def test_sqlserver_unicode_keys_times_and_long_urls_round_trip(live_schema):
    from dataclasses import replace

    from tests.support.sqlserver import long_url

    url, key = long_url(), "東京 Base 🚀 שלום"
    s = open_work_item_store("sqlserver://")
    try:
        assert s.flush([new(key), replace(new("Batch"), request_uri=url, discovered_from=url)], [], []) == 2
        row = s.get(f"mediawiki:wiki:page:{key}")
        assert row["resource_id"] == key and abs((row["created_at"] - datetime.now(UTC)).total_seconds()) < 300
        row = s.get("mediawiki:wiki:page:Batch")
        assert row["request_uri"] == url and row["discovered_from"] == url
    finally:
        s.close()


# -- host politeness (frontier_hosts, frontier_host_slots) --------------------------------------
def on_host(host: str, key: str) -> NewItem:
    item = new(key)
    item.request_uri = f"http://{host}/api.php?titles={key}"
    return item


def test_claims_leave_the_items_of_blocked_hosts_for_later(store):
    """A worker claims what it can send: items of a host blocked now are skipped while others are
    pending, and claimed again once the block has ended."""
    store.flush([on_host("blocked:81", "A1"), on_host("blocked:81", "A2"), on_host("free", "B1")], [], [])
    store.block_key("blocked:81", datetime.now(UTC) + timedelta(seconds=0.6), "429 Retry-After")
    owner = make_owner()
    assert [r["resource_id"] for r in store.claim(owner, 10, 60)] == ["B1"]
    assert store.claim(owner, 10, 60) == []
    assert store.ready_count(10) == 2  # still pending, only not claimed now
    time.sleep(0.65)
    assert sorted(r["resource_id"] for r in store.claim(owner, 10, 60)) == ["A1", "A2"]


def test_take_slot_honours_concurrency_delay_and_release(store):
    a, b = make_owner(), make_owner()
    first = store.take_slot("h:1", a, delay=0.0, concurrency=2, lease_seconds=30)
    second = store.take_slot("h:1", b, delay=0.0, concurrency=2, lease_seconds=30)
    assert first.taken and second.taken and first.slot_id != second.slot_id
    full = store.take_slot("h:1", a, delay=0.0, concurrency=2, lease_seconds=30, recheck=0.25)
    assert not full.taken and full.reason == "full"
    assert 0 < (full.retry_at - datetime.now(UTC)).total_seconds() <= 0.3
    assert store.release_slot("h:1", first.slot_id, ok=True) is None
    assert store.take_slot("h:1", a, delay=0.0, concurrency=2, lease_seconds=30).taken
    # another key is independent
    assert store.take_slot("other:2", a, delay=0.0, concurrency=1, lease_seconds=30).taken
    states = {row["politeness_key"]: row for row in store.host_states()}
    assert states["h:1"]["live_slots"] == 2 and states["h:1"]["concurrency"] == 2
    assert states["other:2"]["live_slots"] == 1


def test_take_slot_spaces_requests_by_the_delay(store):
    owner = make_owner()
    start = datetime.now(UTC)
    got = store.take_slot("d", owner, delay=0.4, concurrency=3, lease_seconds=30)
    store.release_slot("d", got.slot_id)
    wait = store.take_slot("d", owner, delay=0.4, concurrency=3, lease_seconds=30)
    assert not wait.taken and wait.reason == "delay"
    assert 0.3 < (wait.retry_at - start).total_seconds() <= 0.6
    time.sleep(max((wait.retry_at - datetime.now(UTC)).total_seconds(), 0) + 0.01)
    assert store.take_slot("d", owner, delay=0.4, concurrency=3, lease_seconds=30).taken


def test_an_expired_slot_frees_itself(store):
    dead, live = make_owner(), make_owner()
    assert store.take_slot("k", dead, delay=0.0, concurrency=1, lease_seconds=0.3).taken
    blocked = store.take_slot("k", live, delay=0.0, concurrency=1, lease_seconds=30, recheck=5)
    assert not blocked.taken and (blocked.retry_at - datetime.now(UTC)).total_seconds() <= 0.35  # the expiry
    time.sleep(0.35)
    assert store.take_slot("k", live, delay=0.0, concurrency=1, lease_seconds=30).taken


def test_the_slot_of_a_dead_local_process_is_free_at_once(store):
    """A process of this host that no longer runs holds no slot, whatever its lease says."""
    dead = f"{socket.gethostname()}:{2**22 + 7}:deadbeef"  # above pid_max: no such process
    assert store.take_slot("z", dead, delay=0.0, concurrency=1, lease_seconds=600).taken
    assert store.take_slot("z", make_owner(), delay=0.0, concurrency=1, lease_seconds=600).taken


def test_renew_and_release_owner_slots(store):
    owner = make_owner()
    slot = store.take_slot("r", owner, delay=0.0, concurrency=1, lease_seconds=0.3)
    assert store.renew_slots(owner, 30) == 1
    time.sleep(0.35)
    assert not store.take_slot("r", make_owner(), delay=0.0, concurrency=1, lease_seconds=30).taken
    assert store.release_owner_slots(owner) == 1
    assert store.take_slot("r", make_owner(), delay=0.0, concurrency=1, lease_seconds=30).taken
    assert slot.slot_id


def test_a_block_stops_every_owner_until_it_ends(store):
    owner = make_owner()
    until = datetime.now(UTC) + timedelta(seconds=0.5)
    store.block_key("b", until, "429 Retry-After: 1")
    store.block_key("b", datetime.now(UTC), "earlier: ignored")  # a later block is kept
    grant = store.take_slot("b", owner, delay=0.0, concurrency=5, lease_seconds=30)
    assert not grant.taken and grant.reason == "blocked: 429 Retry-After: 1"
    assert abs((grant.retry_at - until).total_seconds()) < 0.001
    assert store.blocked_keys() == ["b"]
    time.sleep(0.55)
    assert store.take_slot("b", owner, delay=0.0, concurrency=5, lease_seconds=30).taken
    assert store.blocked_keys() == []


def test_repeated_failures_back_off_exponentially(store):
    owner = make_owner()
    ends = []
    for _ in range(3):
        slot = store.take_slot("f", owner, delay=0.0, concurrency=1, lease_seconds=30)
        if not slot.taken:
            time.sleep(max((slot.retry_at - datetime.now(UTC)).total_seconds(), 0) + 0.01)
            slot = store.take_slot("f", owner, delay=0.0, concurrency=1, lease_seconds=30)
        before = datetime.now(UTC)
        ends.append((store.release_slot("f", slot.slot_id, ok=False, backoff=0.1) - before).total_seconds())
    assert [round(e, 1) for e in ends] == [0.1, 0.2, 0.4]
    assert store.host_states()[0]["failures"] == 3
    time.sleep(0.45)
    slot = store.take_slot("f", owner, delay=0.0, concurrency=1, lease_seconds=30)
    store.release_slot("f", slot.slot_id, ok=True)
    assert store.host_states()[0]["failures"] == 0


def test_two_connections_race_for_one_slot(store, tmp_path):
    """Two stores (two engines, two connections) take the one slot of a key at once, 20 times: each
    round exactly one wins."""
    other = open_work_item_store(_url_of(store))
    pool = ThreadPoolExecutor(2)  # two long-lived threads (the store keeps a connection per thread)
    try:
        for round_ in range(20):
            key = f"race{round_}"
            barrier = threading.Barrier(2)

            def take(s, key=key, barrier=barrier):
                barrier.wait()
                return s.take_slot(key, make_owner(), delay=0.0, concurrency=1, lease_seconds=30)

            grants = list(pool.map(take, [store, other]))
            assert sorted(g.taken for g in grants) == [False, True], grants
    finally:
        pool.shutdown()
        other.close()


def _url_of(store) -> str:
    url = store.engine.url
    return url.render_as_string(hide_password=False).replace("postgresql+psycopg", "postgresql")
