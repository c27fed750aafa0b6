"""holocron_scrapy.db.outage: which errors mean "the server is gone", one log line each way, the limit."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import sqlalchemy as sa

from holocron_scrapy.db.outage import OutageWatch, describe, is_connection_error, is_server_gone
from tests.support.postgres import HOST, PORT, USER
from tests.support.static_site import free_port


def raised(fn) -> BaseException:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the error under test
        return exc
    raise AssertionError("nothing raised")


def test_a_refused_or_lost_postgresql_connection_is_a_server_gone(postgres_url):
    refused = raised(lambda: psycopg.connect(host="127.0.0.1", port=free_port(), user=USER, connect_timeout=2))
    assert is_server_gone(refused) and "connection" in describe(refused).lower()
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            lost = raised(lambda: conn.exec_driver_sql("SELECT 1"))
        assert isinstance(lost, sa.exc.DBAPIError) and is_server_gone(lost)
        with engine.connect() as conn:
            bad_sql = raised(lambda: conn.exec_driver_sql("SELECT * FROM no_such_table"))
        assert not is_server_gone(bad_sql) and not is_connection_error(bad_sql)
    finally:
        engine.dispose()


def test_sqlite_errors_are_never_a_server_gone(tmp_path):
    db = tmp_path / "x.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    duplicate = raised(lambda: conn.execute("INSERT INTO t VALUES (1)"))
    missing = raised(lambda: sqlite3.connect(f"file:{tmp_path}/nothere/x.db?mode=rw", uri=True))
    assert not is_server_gone(duplicate) and not is_server_gone(missing)
    assert is_connection_error(missing) and not is_connection_error(duplicate)


@pytest.mark.parametrize("what, prefix", [("state database", "frontier"), ("records database", "records")])
def test_an_outage_logs_one_line_each_way_and_gives_up_after_the_limit(caplog, what, prefix):
    from scrapy.statscollectors import MemoryStatsCollector
    from scrapy.utils.test import get_crawler

    stats = MemoryStatsCollector(get_crawler())
    now = [100.0]
    watch = OutageWatch(10, what=what, stat_prefix=prefix, stats=stats, clock=lambda: now[0])
    gone = sqlite3.OperationalError("unable to open database file")
    assert not watch.failed(gone)
    now[0] += 5
    assert not watch.failed(gone)  # same outage: no new line
    now[0] += 6
    assert watch.failed(gone)  # 11 s > 10 s
    lines = [r.getMessage() for r in caplog.records]
    assert (
        len(lines) == 1 and f"The {what} cannot be reached (OperationalError: unable to open database file)" in lines[0]
    )
    watch.succeeded()
    assert f"The {what} is back after 11.0 s" in caplog.records[-1].getMessage() and not watch.down
    assert stats.get_value(f"{prefix}/outages") == 1 and stats.get_value(f"{prefix}/outage_seconds") == 11.0
    caplog.clear()
    watch.failed(ValueError("a bug"))
    watch.failed(ValueError("a bug"))
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1  # an error that waiting may not cure shows its traceback, once
