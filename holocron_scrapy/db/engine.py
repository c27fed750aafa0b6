"""SQLAlchemy engines for the stores, with the schema brought up to date.

:func:`open_engine` is the one way a store gets a database: it parses the store URL, creates
the engine with the settings each backend needs, and applies the migrations once.

* ``sqlite:///path``: WAL, a busy timeout and foreign keys on every connection; pysqlite's own
  transaction handling is switched off and every transaction starts with ``BEGIN IMMEDIATE``,
  so a claim (read then update) holds the write lock from its first statement. The migrations
  are the ones of ``sql/sqlite/`` (:class:`holocron_scrapy.db.migrations.MigrationRunner`).
* ``postgresql://`` and ``postgresql+psycopg://`` (psycopg 3): the schema is
  :data:`holocron_scrapy.db.schema.metadata`, created in one transaction under an advisory lock,
  with every known migration version recorded in ``schema_migrations``.

Settings read: none (callers pass the URL). Stats written: none.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from holocron_scrapy import defaults
from holocron_scrapy.errors import ConfigError, StoreError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
#: Serialises concurrent schema set-ups on one PostgreSQL database (any fixed 64-bit number).
PG_SCHEMA_LOCK = 0x686F6C6F63726F6E  # "holocron"


def is_postgresql_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in ("postgresql", "postgresql+psycopg", "postgres")


def masked_url(url: str) -> str:
    """*url* with its password (if any) replaced by ``***``."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def open_engine(url: str, *, setting: str = "HOLOCRON_STATE_URL") -> sa.Engine:
    """An engine for the store *url* (``sqlite:///`` or ``postgresql://``), schema up to date."""
    if is_postgresql_url(url):
        return _postgresql_engine(url, setting=setting)
    from holocron_scrapy.db.connection import SQLITE as SQLITE_DIALECT
    from holocron_scrapy.db.connection import open_store, parse_store_url

    parsed = parse_store_url(url, setting=setting)
    if parsed.dialect != SQLITE_DIALECT:
        raise ConfigError(f"open_engine supports sqlite and postgresql URLs, got {masked_url(url)!r}", key=setting)
    path = parsed.path or ":memory:"
    if path != ":memory:":
        open_store(parsed).close()  # refuses foreign files, applies sql/sqlite/ migrations
    return sqlite_engine(path)


def sqlite_engine(path: str, *, busy_timeout_ms: int = defaults.SQLITE_BUSY_TIMEOUT_MS) -> sa.Engine:
    """An engine on the SQLite file *path* whose transactions begin with ``BEGIN IMMEDIATE``."""
    engine = sa.create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgresql_engine(url: str, *, setting: str) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"not a PostgreSQL URL: {masked_url(url)!r} ({exc})", key=setting) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parsed, pool_pre_ping=True)
    try:
        ensure_postgresql_schema(engine)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = " ".join(str(exc.orig).split()) if exc.orig is not None else str(exc)
        raise StoreError(f"cannot open PostgreSQL store {masked_url(url)}: {reason}") from None
    return engine


def ensure_postgresql_schema(engine: sa.Engine) -> None:
    """Create the tables of :mod:`holocron_scrapy.db.schema` if missing and record every known
    migration version, in one transaction under an advisory lock (concurrent starters wait)."""
    from datetime import UTC, datetime

    from holocron_scrapy.db.migrations import load_migrations
    from holocron_scrapy.db.schema import metadata, schema_migrations

    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_SCHEMA_LOCK})
        metadata.create_all(conn)
        applied = set(conn.execute(sa.select(schema_migrations.c.version)).scalars())
        now = datetime.now(UTC)
        missing = [
            {"version": m.version, "name": m.name, "applied_at": now}
            for m in load_migrations(SQLITE)
            if m.version not in applied
        ]
        if missing:
            conn.execute(schema_migrations.insert(), missing)
