"""Which database errors are storage faults (:func:`holocron_scrapy.pipelines.faults.is_storage_error`),
checked on errors raised by the live PostgreSQL and by SQLite, raw and wrapped by SQLAlchemy.

A storage fault is the database going away or refusing writes (the crawl stops, the items are
handed back); a bad row or bad SQL is not (it is the item's own error).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url

from holocron_scrapy.pipelines.faults import describe, is_storage_error
from tests.support import postgres


def conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def raised(action: Callable[[], object]) -> BaseException:
    with pytest.raises(Exception) as caught:
        action()
    return caught.value


@pytest.fixture
def engine(postgres_url: str) -> Iterator[sa.Engine]:
    """An engine on a fresh database with one table ``t (k INTEGER PRIMARY KEY)`` holding ``k = 1``."""
    engine = sa.create_engine(postgres_url, pool_pre_ping=True)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    try:
        yield engine
    finally:
        engine.dispose()


def terminate_backends(url: str) -> None:
    with postgres.admin_connect() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (make_url(url).database,),
        )


def test_a_connection_terminated_mid_session_is_a_storage_fault(engine, postgres_url):
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        terminate_backends(postgres_url)
        exc = raised(lambda: conn.exec_driver_sql("INSERT INTO t VALUES (2)"))
    assert isinstance(exc, sa.exc.OperationalError) and exc.connection_invalidated, repr(exc)
    assert is_storage_error(exc) and is_storage_error(exc.orig)
    assert describe(exc) == "terminating connection due to administrator command"  # the driver's words, one line


def test_a_database_that_refuses_connections_is_a_storage_fault(engine, postgres_url):
    name = make_url(postgres_url).database
    with postgres.admin_connect() as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
    try:
        terminate_backends(postgres_url)
        wrapped = raised(lambda: engine.connect())  # the pool's fresh connection is refused
        direct = raised(lambda: psycopg.connect(conninfo(postgres_url)))
    finally:
        with postgres.admin_connect() as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
    assert isinstance(wrapped, sa.exc.OperationalError) and is_storage_error(wrapped)
    assert isinstance(direct, psycopg.OperationalError) and is_storage_error(direct)
    assert "is not currently accepting connections" in describe(wrapped)
    assert "\n" not in describe(wrapped) and "[SQL" not in describe(wrapped)


def test_a_dropped_database_is_a_storage_fault(postgres_url):
    # A database of our own, so that the fixture's drop afterwards finds it gone without error.
    name = make_url(postgres_url).database + "_gone"
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with postgres.admin_connect() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    engine = sa.create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            with postgres.admin_connect() as admin:
                postgres.drop_database(admin, name)
            mid_session = raised(lambda: conn.exec_driver_sql("SELECT 1"))
        reconnect = raised(lambda: engine.connect())
    finally:
        engine.dispose()
        with postgres.admin_connect() as admin:
            postgres.drop_database(admin, name)
    assert is_storage_error(mid_session) and is_storage_error(reconnect)
    assert f'database "{name}" does not exist' in describe(reconnect)


def test_a_read_only_database_is_a_storage_fault(engine, postgres_url):
    name = sql.Identifier(make_url(postgres_url).database)
    with postgres.admin_connect() as admin:  # as a DBA would, for maintenance
        admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name))
    engine.dispose()  # new sessions take the setting
    with engine.connect() as conn:
        exc = raised(lambda: conn.exec_driver_sql("INSERT INTO t VALUES (3)"))
    assert isinstance(exc.orig, psycopg.errors.ReadOnlySqlTransaction), repr(exc)
    assert is_storage_error(exc) and is_storage_error(exc.orig)


def test_a_bad_row_or_bad_sql_is_not_a_storage_fault(engine, postgres_url):
    with engine.connect() as conn:
        duplicate = raised(lambda: conn.exec_driver_sql("INSERT INTO t VALUES (1)"))
        conn.rollback()
        no_table = raised(lambda: conn.exec_driver_sql("SELECT * FROM no_such_table"))
        conn.rollback()
        bad_value = raised(lambda: conn.exec_driver_sql("INSERT INTO t VALUES ('x')"))
    assert isinstance(duplicate, sa.exc.IntegrityError) and not is_storage_error(duplicate)
    assert not is_storage_error(duplicate.orig)  # psycopg's UniqueViolation
    assert isinstance(no_table, sa.exc.ProgrammingError) and not is_storage_error(no_table)
    assert isinstance(bad_value, sa.exc.DataError) and not is_storage_error(bad_value)
    with psycopg.connect(conninfo(postgres_url)) as raw:
        assert not is_storage_error(raised(lambda: raw.execute("INSERT INTO t VALUES (1)")))


def test_sqlite_errors_wrapped_by_sqlalchemy_keep_their_meaning(tmp_path):
    path = tmp_path / "records.sqlite3"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    engine.dispose()
    with engine.connect() as conn:
        duplicate = raised(lambda: conn.exec_driver_sql("INSERT INTO t VALUES (1)"))
    assert isinstance(duplicate.orig, sqlite3.IntegrityError) and not is_storage_error(duplicate)
    engine.dispose()
    read_only = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with read_only.connect() as conn:
            refused = raised(lambda: conn.exec_driver_sql("INSERT INTO t VALUES (2)"))
    finally:
        read_only.dispose()
    assert isinstance(refused, sa.exc.OperationalError) and is_storage_error(refused)
    assert describe(refused) == "attempt to write a readonly database"
