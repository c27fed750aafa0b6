"""The SQL Server frontier store without a server, plus live checks when one is configured.

* Offline: every T-SQL string of ``holocron_scrapy.frontier.sqlserver_store`` parses with sqlfluff
  and sqlglot (dialect tsql), uses literals for ``status`` and keeps all SQL in ``statements()``.
* The recording fake pyodbc of ``tests/support/sqlserver.py`` checks the transaction
  shape, the DATETIME2 parameters and the retry policy: deadlocks retried on the same connection,
  lost connections reconnected, other errors raised at once with the masked connection string,
  lost commits resolved before anything runs again.
* Live (``INGEST_SQLSERVER_HOST`` / ``INGEST_SQLSERVER_PASSWORD``, in a throw-away ``holocron_test_*``
  schema): racing inserts and claims from several connections. The contract suite
  ``test_frontier_store.py`` covers the rest live.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from holocron_scrapy.db import sqlserver
from holocron_scrapy.errors import ConfigError, StoreError
from holocron_scrapy.frontier import sqlserver_store
from holocron_scrapy.frontier.sqlserver_store import (
    NVARCHAR_MAX,
    SQL_WVARCHAR,
    TEXT_WIDTHS,
    SqlServerWorkItemStore,
    statements,
)
from holocron_scrapy.frontier.store import CLAIM_COLUMNS, COMPLETED, PENDING, FailedItem, NewItem, Scope, make_owner
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
STATEMENTS = sorted(statements().items())


@pytest.mark.parametrize(("name", "sql"), STATEMENTS, ids=[n for n, _ in STATEMENTS])
def test_statement_parses_with_sqlfluff(name, sql):
    assert_sqlfluff_parses(with_parameters(sql))


@pytest.mark.parametrize(("name", "sql"), STATEMENTS, ids=[n for n, _ in STATEMENTS])
def test_statement_parses_with_sqlglot(name, sql):
    assert_sqlglot_parses(with_parameters(sql))


def test_statements_use_the_given_schema_only():
    for name, sql in statements("crawl_2").items():
        assert "[crawl_2].[work_items]" in sql, name
        assert "[ingest]" not in sql, name
    with pytest.raises(ConfigError):
        statements("x]; DROP TABLE y --")


def test_every_execute_uses_an_enumerated_statement():
    assert literal_executes(sqlserver_store) == []


def test_status_predicates_are_literals_for_the_filtered_index():
    for name, sql in STATEMENTS:
        where = sql[sql.find("WHERE") :] if "WHERE" in sql else ""
        assert not re.search(r"\bstatus\s*(?:=|<>|!=)\s*\?", where), f"{name}: status compared with a parameter"
    sql = dict(STATEMENTS)
    for name in ("renew", "reclaim_expired", "min_inflight_depth", "claimed_by_lease", "oldest_lease"):
        assert "status = N'in_progress'" in sql[name], name


def test_claim_statement_shape():
    sql = statements()["claim"]
    cte, update = sql.split("UPDATE next_items", 1)
    assert "SELECT TOP (?) *" in cte and "WITH (ROWLOCK, READPAST, UPDLOCK)" in cte
    assert "ORDER BY priority DESC, seq" in cte and "status = N'pending'" in cte
    assert "SET status = N'in_progress', attempt = attempt + 1" in update
    output = update.split("OUTPUT", 1)[1]
    assert [c.strip().removeprefix("inserted.") for c in output.split(",")] == list(CLAIM_COLUMNS)


def test_insert_is_race_safe_not_exists():
    sql = statements()["insert_new"]
    assert "WHERE NOT EXISTS" in sql and "WITH (UPDLOCK, HOLDLOCK) WHERE dedupe_key = ?" in sql
    assert sql.count("?") == len(sqlserver_store.INSERT_COLUMNS) + 1


def test_sql_wvarchar_is_pyodbcs():
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc cannot load libodbc.so.2: apt-get install unixodbc")
    assert pyodbc.SQL_WVARCHAR == SQL_WVARCHAR


@pytest.fixture
def fstore(fake_pyodbc, sleeps) -> SqlServerWorkItemStore:
    settings = fake_settings()
    conn = sqlserver.connect(settings)
    return SqlServerWorkItemStore(conn, settings, max_attempts=3, retry_backoff=10.0, sleep=sleeps.append)


def naive_utcnow() -> datetime:
    """Now as the store binds it: a naive UTC datetime."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new(key: str, **kw: Any) -> NewItem:
    return NewItem(
        dedupe_key=f"mediawiki:wiki:page:{key}",
        source_system="mediawiki",
        source_name="wiki",
        resource_type="page",
        resource_id=key,
        request_uri=f"http://w/api.php?titles={key}",
        **kw,
    )


def claim_row(seq: int, priority: int = 0) -> tuple:
    values = {"seq": seq, "priority": priority, "depth": 0, "attempt": 1}
    return tuple(values.get(c, f"{c}-{seq}") for c in CLAIM_COLUMNS)


# -- transactions and parameters ---------------------------------------------------------------------
def test_flush_is_one_transaction_new_then_completed_then_failed(fstore, fake_pyodbc):
    fake_pyodbc.responder = lambda sql, params: [(2,)] if sql.startswith("SELECT attempt") else None
    before = naive_utcnow()
    inserted = fstore.flush([new("A"), new("B", status=COMPLETED)], [7, 8], [FailedItem(9, "x" * 5000)])
    after = naive_utcnow()
    assert inserted == 2
    assert fake_pyodbc.kinds() == [
        "1:insert_new", "1:insert_new", "1:mark_completed", "1:mark_completed",
        "1:select_attempt", "1:mark_failed", "1:commit",
    ]  # fmt: skip
    (_, _, params_a, sizes_a), (_, _, params_b, _) = fake_pyodbc.executed("OUTPUT inserted.seq")
    created, completed_at = params_a[15], params_a[17]
    assert isinstance(created, datetime) and created.tzinfo is None and before <= created <= after
    assert completed_at is None and params_b[17] == params_b[15]  # completed on insert
    assert params_a[-1] == params_a[-2] == "mediawiki:wiki:page:A"
    assert sizes_a[0] == (SQL_WVARCHAR, 4000, 0) and sizes_a[7] == (SQL_WVARCHAR, 0, 0)  # request_headers: MAX
    assert sizes_a[10] is None and sizes_a[15] is None  # priority, created_at: pyodbc's own binding
    (_, _, failed, _) = fake_pyodbc.executed("SET status = ?")[0]
    status, error, _now, next_at, seq = failed
    assert (status, len(error), seq) == (PENDING, 4000, 9)
    assert timedelta(seconds=19) <= next_at - created <= timedelta(seconds=21)  # 10 s * 2 ** (2 - 1)


def test_long_urls_are_bound_as_nvarchar_max(fstore, fake_pyodbc):
    """request_uri and discovered_from are NVARCHAR(MAX) since sql/0005: bound so whatever their length."""
    url = long_url()
    fstore.flush([replace(new("A", discovered_from=url), request_uri=url), new("B")], [], [])
    (_, _, params, sizes), (_, _, _, short_sizes) = fake_pyodbc.executed("OUTPUT inserted.seq")
    for column in ("request_uri", "discovered_from"):
        i = sqlserver_store.INSERT_COLUMNS.index(column)
        assert params[i] == url and len(params[i]) == 5000
        assert sizes[i] == short_sizes[i] == (SQL_WVARCHAR, NVARCHAR_MAX, 0), column


def test_text_widths_match_the_migrated_schema():
    columns = {name: kind for name, kind, _ in tsql_tables()["work_items"]}
    for column, width in TEXT_WIDTHS.items():
        assert columns[column] == ("NVARCHAR(MAX)" if width == NVARCHAR_MAX else f"NVARCHAR({width})"), column
    text = [c for c in sqlserver_store.INSERT_COLUMNS if columns[c].startswith("NVARCHAR")]
    assert set(text) <= set(TEXT_WIDTHS)


def test_flush_counts_a_racing_duplicate_as_known(fstore, fake_pyodbc):
    fake_pyodbc.fail("execute", "OUTPUT inserted.seq", duplicate_key())
    assert fstore.flush([new("A"), new("B")], [], []) == 1
    assert fake_pyodbc.kinds()[-1] == "1:commit" and "1:rollback" not in fake_pyodbc.kinds()


def test_failed_item_out_of_attempts_is_failed_without_backoff(fstore, fake_pyodbc):
    fake_pyodbc.responder = lambda sql, params: [(3,)] if sql.startswith("SELECT attempt") else None
    fstore.flush([], [], [FailedItem(9, "boom")])
    (_, _, (status, _error, _now, next_at, _seq), _) = fake_pyodbc.executed("SET status = ?")[0]
    assert status == "failed" and next_at is None


def test_claim_binds_times_and_sorts_best_first(fstore, fake_pyodbc):
    fake_pyodbc.responder = lambda sql, params: (
        [claim_row(5, 0), claim_row(3, 2), claim_row(4, 2)] if "UPDATE next_items" in sql else None
    )
    rows = fstore.claim("me", 3, 60)
    assert [r["seq"] for r in rows] == [3, 4, 5]
    (_, _, (limit, now, solo_after, owner, lease, updated), _) = fake_pyodbc.executed("UPDATE next_items")[0]
    assert (limit, solo_after, owner) == (3, 2, "me") and now == updated and lease - now == timedelta(seconds=60)
    assert fstore.claim("me", 0, 60) == []


def test_scoped_and_alone_claims_use_the_source_statements(fstore, fake_pyodbc):
    sql = statements()
    answers = {sql["claim_suspect_source"]: [], sql["claim_source"]: [claim_row(4)]}
    fake_pyodbc.responder = lambda text, params: answers.get(text)
    rows = fstore.claim("me", 3, 60, scope=Scope("mediawiki", "wiki"), alone=True)
    assert [r["seq"] for r in rows] == [4]
    (_, suspect, p1, _), (_, claim, p2, _) = fake_pyodbc.executed("UPDATE next_items")
    assert suspect == sql["claim_suspect_source"] and "lease_losses >= ?" in suspect and "TOP (1)" in suspect
    assert p1[1:4] == (2, "mediawiki", "wiki") and p1[4] == "me"
    assert claim == sql["claim_source"] and "lease_losses < ?" in claim
    assert p2[:1] == (3,) and p2[2:5] == (2, "mediawiki", "wiki") and p2[5] == "me"


def test_reclaim_counts_losses_not_attempts():
    sql = statements()
    for name in ("reclaim_expired", "reclaim_owner", "reclaim_expired_source", "reclaim_owner_source"):
        text = sql[name]
        assert "attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END" in text, name
        assert "lease_losses = lease_losses + 1" in text and "solo_lease_losses + lease_solo" in text, name
        assert "quarantined: its worker died" in text and "lease_solo = 0" in text, name
    assert sql["reclaim_owner_source"].endswith("AND source_system = ? AND source_name = ?")
    assert "lease_solo = 1" in sql["claim_suspect"] and "lease_solo = 0" in sql["claim"]


def test_reads_return_times_as_sqlite_text(fstore, fake_pyodbc):
    when = datetime(2026, 1, 19, 12, 0, 5, 123456)

    def respond(sql, params):
        if sql.startswith("SELECT TOP (1) dedupe_key"):
            return [("k", "owner", when, when)]
        if sql.startswith("SELECT * FROM"):
            return [(1, "k", when, None)]
        return None

    fake_pyodbc.responder = respond
    assert fstore.oldest_lease() == {
        "dedupe_key": "k",
        "lease_owner": "owner",
        "lease_expires_at": "2026-01-19 12:00:05.123456",
        "claimed_at": "2026-01-19 12:00:05.123456",
    }
    assert fstore.get("k") == {"c0": 1, "c1": "k", "c2": "2026-01-19 12:00:05.123456", "c3": None}


def test_reclaim_by_owner_and_admin_counts(fstore, fake_pyodbc):
    fake_pyodbc.responder = lambda sql, params: ([], 2) if sql.startswith("UPDATE") else None
    assert fstore.reclaim([]) == 0
    assert fstore.reclaim(["a", "b", "a"]) == 4  # each owner once
    assert [p[3] for _, _, p, _ in fake_pyodbc.executed("AND lease_owner = ?")] == ["a", "b"]
    assert fstore.retry_failed() == 2 and fstore.retry_failed("wiki") == 2
    assert fstore.recrawl("wiki") == 2 and fstore.recrawl("wiki", 3600) == 2
    assert fstore.release_leases() == 2 and fstore.release_leases("me") == 2
    assert fstore.renew("me", 60) == 2
    fstore.end_solo([3, 4])
    assert [p for _, _, p, _ in fake_pyodbc.executed("SET lease_solo = 0 WHERE")] == [(3,), (4,)]
    assert fstore.requeue_keys(["k1", "k2", "k1"]) == 4 and fstore.requeue_keys([]) == 0
    assert [p[1] for _, _, p, _ in fake_pyodbc.executed("completed_at = NULL")] == ["k1", "k2"]


# -- retries ----------------------------------------------------------------------------------------
def test_deadlock_is_retried_on_the_same_connection(fstore, fake_pyodbc, sleeps):
    fake_pyodbc.fail("execute", "UPDATE next_items", deadlock())
    fstore.claim("me", 5, 60)
    assert fake_pyodbc.kinds() == ["1:claim", "1:rollback", "1:claim", "1:commit"]
    assert len(fake_pyodbc.connections) == 1 and len(sleeps) == 1 and 0.5 <= sleeps[0] <= 0.75


def test_lost_connection_reconnects_and_retries(fstore, fake_pyodbc, sleeps):
    fake_pyodbc.fail("execute", "SELECT DISTINCT lease_owner", link_failure())
    fake_pyodbc.responder = lambda sql, params: [("w1",)] if "DISTINCT lease_owner" in sql else None
    assert fstore.lease_owners() == ["w1"]
    assert len(fake_pyodbc.connections) == 2 and fake_pyodbc.connections[0].closed
    assert fake_pyodbc.kinds() == ["1:lease_owners", "1:rollback", "1:close", "2:lease_owners", "2:commit"]
    setups = [n for n, kind, sql, _, _ in fake_pyodbc.log if sql == sqlserver.TSQL_SESSION_SETUP]
    assert setups == [1, 2]  # the new session gets the SET options filtered indexes need
    assert len(sleeps) == 1


def test_transient_errors_give_up_after_the_attempts(fstore, fake_pyodbc, sleeps):
    fake_pyodbc.fail("execute", "SELECT", link_failure(), times=10)
    with pytest.raises(StoreError) as info:
        fstore.counts()
    message = str(info.value)
    assert "frontier counts failed after 4 attempts" in message and "Communication link failure" in message
    assert "PWD=***" in message and PASSWORD not in message
    assert len(sleeps) == 3 and sleeps[0] < sleeps[1] < sleeps[2]


def test_non_transient_error_is_raised_at_once_with_masked_connection_string(fstore, fake_pyodbc, sleeps):
    fake_pyodbc.fail(
        "execute",
        "UPDATE",
        odbc_error("42000", f"[SQL Server]Permission denied for login using {PASSWORD}", 229),
    )
    with pytest.raises(StoreError) as info:
        fstore.renew("me", 60)
    message = str(info.value)
    assert "frontier renew failed at localhost:1433" in message and "(229)" in message
    assert "PWD=***" in message and PASSWORD not in message and info.value.__cause__ is None
    assert fake_pyodbc.kinds() == ["1:renew", "1:rollback"] and sleeps == []


def test_failed_reconnect_reports_masked_store_error(fstore, fake_pyodbc, sleeps):
    fake_pyodbc.fail("execute", "SELECT", link_failure())
    fake_pyodbc.connect_failures = [
        odbc_error("28000", f"[SQL Server]Login failed for user 'sa' (password {PASSWORD})", 18456)
    ]
    with pytest.raises(StoreError, match="login failed") as info:
        fstore.counts()
    assert PASSWORD not in str(info.value) and "PWD=***" in str(info.value)


def test_lost_claim_commit_is_recovered_not_claimed_twice(fstore, fake_pyodbc, sleeps):
    fake_pyodbc.fail("commit", "", link_failure())

    def respond(sql, params):
        if "UPDATE next_items" in sql:
            return [claim_row(5)]
        if "lease_expires_at = ? AND lease_owner = ?" in sql:
            return [claim_row(5)]
        return None

    fake_pyodbc.responder = respond
    rows = fstore.claim("me", 5, 60)
    assert [r["seq"] for r in rows] == [5]
    assert fake_pyodbc.kinds() == ["1:claim", "1:commit", "1:rollback", "1:close", "2:claimed_by_lease", "2:commit"]
    (_, _, (_, _, _, _, lease, _), _) = fake_pyodbc.executed("UPDATE next_items")[0]
    assert fake_pyodbc.executed("AND lease_owner = ?")[0][2] == (lease, "me")


def test_lost_claim_commit_that_did_not_apply_claims_again(fstore, fake_pyodbc):
    fake_pyodbc.fail("commit", "", link_failure())
    fake_pyodbc.responder = lambda sql, params: [claim_row(5)] if "UPDATE next_items" in sql else None
    assert [r["seq"] for r in fstore.claim("me", 5, 60)] == [5]
    assert fake_pyodbc.kinds()[-3:] == ["2:claimed_by_lease", "2:claim", "2:commit"]


def test_lost_flush_commit_is_recovered_from_the_work_item_ids(fstore, fake_pyodbc):
    fake_pyodbc.fail("commit", "", link_failure())
    items = [new("A"), new("B")]
    fake_pyodbc.responder = lambda sql, params: (
        [(1 if params[0] == items[0].work_item_id else 0,)] if "work_item_id = ?" in sql else None
    )
    assert fstore.flush(items, [3], []) == 1  # A was inserted by the lost commit, B was a known key
    assert fake_pyodbc.kinds()[-3:] == ["2:count_work_item_id", "2:count_work_item_id", "2:commit"]


def test_a_python_error_inside_the_transaction_rolls_it_back(fstore, fake_pyodbc, sleeps):
    with pytest.raises(TypeError):
        fstore.flush([new("A")], [], [FailedItem(9, None)])  # type: ignore[arg-type]
    assert fake_pyodbc.kinds() == ["1:insert_new", "1:select_attempt", "1:rollback"] and sleeps == []
    assert fstore.flush([new("B")], [], []) == 1  # the connection is still usable


def test_closed_store_refuses_work(fstore, fake_pyodbc):
    fstore.close()
    assert fake_pyodbc.connections[0].closed
    with pytest.raises(StoreError, match="closed"):
        fstore.counts()
    fstore.close()  # twice is fine


# -- opening ----------------------------------------------------------------------------------------
def test_open_work_item_store_takes_the_schema_from_the_settings(monkeypatch, fake_pyodbc):
    from holocron_scrapy.db import connection
    from holocron_scrapy.frontier.store import open_work_item_store

    monkeypatch.setattr(connection, "open_store", lambda parsed, **kw: fake_pyodbc.connect(""))
    monkeypatch.setenv("INGEST_SQLSERVER_PASSWORD", PASSWORD)
    monkeypatch.setenv("INGEST_SQLSERVER_SCHEMA", "crawl_env")
    store = open_work_item_store("sqlserver://", sqlserver_config={"schema": "from_yaml"}, max_attempts=5)
    assert isinstance(store, SqlServerWorkItemStore)
    assert store.schema == "crawl_env" and store.max_attempts == 5
    assert "[crawl_env].[work_items]" in store.sql["claim"] and "crawl_env" in store.describe()
    monkeypatch.delenv("INGEST_SQLSERVER_SCHEMA")
    assert open_work_item_store("sqlserver://", sqlserver_config={"schema": "from_yaml"}).schema == "from_yaml"
    with pytest.raises(ConfigError, match="schema"):
        open_work_item_store("sqlserver://", sqlserver_config={"schema": "bad name"})


# -- live SQL Server (in the throw-away schema of tests/support/sqlserver.py's live_schema) ---------
def _in_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


@pytest.mark.sqlserver
def test_live_racing_inserts_store_each_key_once(live_schema):
    from holocron_scrapy.frontier.store import open_work_item_store

    stores = [open_work_item_store("sqlserver://") for _ in range(3)]
    keys = [f"T{i}" for i in range(200)]
    try:
        totals = _in_threads(3, lambda i: sum(stores[i].flush([new(k)], [], []) for k in keys))
        assert sum(totals) == 200
        assert stores[0].counts() == {"wiki": {PENDING: 200, "in_progress": 0, "completed": 0, "failed": 0}}
    finally:
        for s in stores:
            s.close()


@pytest.mark.sqlserver
def test_live_concurrent_claims_are_disjoint_and_best_first(live_schema):
    from holocron_scrapy.frontier.store import open_work_item_store

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
def test_live_times_round_trip_and_unicode_keys(live_schema):
    from holocron_scrapy.frontier.store import open_work_item_store

    store = open_work_item_store("sqlserver://", retry_backoff=0.2)
    try:
        assert store.flush([new("東京 Base 🚀 שלום")], [], []) == 1
        row = store.get("mediawiki:wiki:page:東京 Base 🚀 שלום")
        assert row["resource_id"] == "東京 Base 🚀 שלום"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", row["created_at"])
        created = datetime.strptime(row["created_at"], "%Y-%m-%d %H:%M:%S.%f")
        assert abs(created - naive_utcnow()) < timedelta(minutes=5)
    finally:
        store.close()


@pytest.mark.sqlserver
def test_live_long_urls_round_trip(live_schema):
    from holocron_scrapy.frontier.store import open_work_item_store

    url = long_url()
    store = open_work_item_store("sqlserver://")
    try:
        assert store.flush([replace(new("Batch", discovered_from=url), request_uri=url)], [], []) == 1
        row = store.get("mediawiki:wiki:page:Batch")
        assert row["request_uri"] == url and row["discovered_from"] == url
    finally:
        store.close()
