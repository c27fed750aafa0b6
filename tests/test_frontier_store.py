"""The work_items store contract: every backend must pass these tests.

SQLite always runs; SQL Server runs when INGEST_SQLSERVER_HOST and _PASSWORD point at a
server, and is skipped with that reason otherwise.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time

import pytest

from holocron_scrapy.errors import ConfigError, StoreError
from holocron_scrapy.frontier.store import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    PENDING,
    FailedItem,
    NewItem,
    make_owner,
    open_work_item_store,
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


@pytest.fixture(params=["sqlite", pytest.param("sqlserver", marks=pytest.mark.sqlserver)])
def store(request, tmp_path):
    """The SQL Server case runs in the throw-away schema of ``live_schema`` (skipped without a server)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'f.sqlite3'}"
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
    assert sorted(r["resource_id"] for r in rows) == ["A", "B"] and all(r["attempt"] == 2 for r in rows)


def test_reclaim_by_owner_and_out_of_attempts(store):
    store.flush([new("A")], [], [])
    for _ in range(3):
        owner = make_owner()
        store.claim(owner, 5, 600)
        assert store.lease_owners() == [owner]
        store.reclaim([owner])
    row = store.get("mediawiki:wiki:page:A")
    assert row["status"] == FAILED and "lease lost" in row["error_message"]


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
    with pytest.raises(ConfigError, match="unknown store URL scheme 'postgres'"):
        open_work_item_store("postgres://x/y")


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
