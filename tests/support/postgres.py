"""A throw-away PostgreSQL database per test, on the machine's server (127.0.0.1:5432, user root, trust auth).

``postgres_url`` creates a database with a unique name (``holocron_test_<pid>_<random>``), yields
its ``postgresql+psycopg://`` URL and drops it afterwards, terminating the connections a test left
open. Databases left by a killed test run (their pid is gone, nobody is connected) are dropped on
first use, so the server keeps nothing of ours. When the server is unreachable the test is skipped,
except under CI (``CI`` set), where that is a failure: ``.ci/run`` starts the server.

``crawl_database`` runs an end-to-end test twice: ``[sqlite]`` gives ``None`` (the stores are SQLite
files of the test's workspace), ``[postgresql]`` a ``postgres_url`` database that holds both the
frontier and the records (pass it as ``Workspace(tmp_path, database=...)``, tests/support/crawl.py).

Environment: ``HOLOCRON_TEST_PG_HOST`` / ``HOLOCRON_TEST_PG_PORT`` / ``HOLOCRON_TEST_PG_USER``
override the defaults.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

HOST = os.environ.get("HOLOCRON_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("HOLOCRON_TEST_PG_PORT", "5432"))
USER = os.environ.get("HOLOCRON_TEST_PG_USER", "root")
ADMIN_DB = "postgres"  # CREATE / DROP DATABASE run from here
PREFIX = "holocron_test_"
_OURS = re.compile(rf"^{PREFIX}(\d+)_[0-9a-f]+$")
_swept = False


def admin_connect() -> psycopg.Connection:
    """An autocommit connection to the ``postgres`` database (CREATE DATABASE cannot run in a transaction)."""
    return psycopg.connect(host=HOST, port=PORT, user=USER, dbname=ADMIN_DB, autocommit=True, connect_timeout=5)


def url_for(dbname: str) -> str:
    return f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{dbname}"


def drop_database(admin: psycopg.Connection, dbname: str) -> None:
    """Terminate *dbname*'s connections, then drop it (no error if it is gone)."""
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    )
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(admin: psycopg.Connection) -> list[str]:
    """Drop our test databases whose creating process has died (a killed test run) and that nobody is
    connected to; return their names."""
    dropped = []
    query = (
        "SELECT datname FROM pg_database AS d WHERE datname LIKE %s"
        " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity AS a WHERE a.datname = d.datname)"
    )
    for (name,) in admin.execute(query, (PREFIX + "%",)):
        match = _OURS.match(name)
        if match and not _pid_alive(int(match.group(1))):
            dropped.append(name)
    for name in dropped:
        drop_database(admin, name)
    return dropped


def _unreachable(exc: Exception) -> None:
    reason = f"PostgreSQL is not reachable on {HOST}:{PORT} as {USER}: {' '.join(str(exc).split())}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (.ci/run should have started it)")
    pytest.skip(f"{reason}; start it with: pg_ctlcluster --skip-systemctl-redirect <version> main start")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test: its ``postgresql+psycopg://`` URL. Dropped afterwards."""
    global _swept
    dbname = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    try:
        admin = admin_connect()
    except psycopg.OperationalError as exc:
        _unreachable(exc)
    with admin:
        if not _swept:
            sweep_orphans(admin)
            _swept = True
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield url_for(dbname)
    finally:
        # A fresh connection: the test may have restarted the server or terminated backends.
        with admin_connect() as admin:
            drop_database(admin, dbname)


@pytest.fixture(params=["sqlite", "postgresql"])
def crawl_database(request: pytest.FixtureRequest) -> str | None:
    """Where an end-to-end crawl keeps its frontier and records: ``None`` for SQLite files, else the
    URL of a throw-away PostgreSQL database (one per test) holding both."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


# A claims audit on a live work_items table, kept by the server itself: every change of an item's
# status or lease owner is logged with the server's clock, the row before and the row after, and
# the ``application_name`` of the session that made it (start each worker with its own
# ``PGAPPNAME``: libpq reads it, and the stores do not set one). Lives in its own schema
# ``claims_audit``, apart from the project's tables.
_AUDIT_DDL = """
CREATE SCHEMA claims_audit;
CREATE TABLE claims_audit.events (
    id BIGSERIAL PRIMARY KEY,
    seq BIGINT NOT NULL,
    at TIMESTAMP NOT NULL,
    actor TEXT NOT NULL,
    old_status TEXT, new_status TEXT NOT NULL,
    old_owner TEXT, new_owner TEXT,
    old_expires TIMESTAMP, new_expires TIMESTAMP
);
CREATE FUNCTION claims_audit.log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO claims_audit.events
        (seq, at, actor, old_status, new_status, old_owner, new_owner, old_expires, new_expires)
    VALUES (NEW.seq, clock_timestamp() AT TIME ZONE 'UTC', current_setting('application_name'),
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.lease_owner END, NEW.lease_owner,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.lease_expires_at END, NEW.lease_expires_at);
    RETURN NULL;
END $$;
CREATE TRIGGER claims_audit_update AFTER UPDATE ON public.work_items FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.lease_owner IS DISTINCT FROM NEW.lease_owner)
    EXECUTE FUNCTION claims_audit.log();
CREATE TRIGGER claims_audit_insert AFTER INSERT ON public.work_items FOR EACH ROW
    WHEN (NEW.status = 'in_progress')
    EXECUTE FUNCTION claims_audit.log();
"""


def _conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def install_claims_audit(url: str) -> None:
    """Create the project's schema in the database of *url* (as a crawl would), then the audit."""
    from holocron_scrapy.db.engine import open_engine

    open_engine(url).dispose()
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute(_AUDIT_DDL)


def claims_audit(url: str) -> list[dict]:
    """The audit's events, oldest first."""
    from psycopg.rows import dict_row

    with psycopg.connect(_conninfo(url), row_factory=dict_row) as conn:
        return list(conn.execute("SELECT * FROM claims_audit.events ORDER BY id"))
