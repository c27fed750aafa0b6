"""SQLAlchemy engines for the stores, with the schema brought up to date.

:func:`open_engine` is the one way a store gets a database: it parses the store URL, creates
the engine with the settings each backend needs, and applies the migrations once.

* ``sqlite:///path``: WAL, a busy timeout and foreign keys on every connection; pysqlite's own
  transaction handling is switched off and every transaction starts with ``BEGIN IMMEDIATE``,
  so a claim (read then update) holds the write lock from its first statement. The migrations
  are the ones of ``sql/sqlite/`` (:class:`holocron_scrapy.db.migrations.MigrationRunner`).
* ``postgresql://`` and ``postgresql+psycopg://`` (psycopg 3): the schema is
  :data:`holocron_scrapy.db.schema.metadata`, created in one transaction under an advisory lock,
  with every known migration version recorded in ``schema_migrations``. The password comes from
  ``PGPASSWORD`` or ``~/.pgpass`` (psycopg reads them), never from the URL; ``PGPASSWORD`` is
  registered as a secret, so it is masked in every log line and error.
* ``mssql+pyodbc://`` and the older ``sqlserver://`` (SQL Server through pyodbc, imported lazily):
  the connection is :func:`holocron_scrapy.db.sqlserver.connect` (retries, session options) on the
  settings of :func:`holocron_scrapy.db.connection.sqlserver_settings` (``INGEST_SQLSERVER_*``, the
  YAML section, the URL); the migrations are the T-SQL files of ``sql/``, applied by
  :class:`holocron_scrapy.db.migrations.MigrationRunner` on a raw connection. The engine's URL is
  ``mssql+pyodbc:///?odbc_connect=...`` without the password (:func:`sqlserver_engine_url`), and it
  maps the unqualified tables of :mod:`holocron_scrapy.db.schema` onto the configured schema
  (``schema_translate_map``), so the stores' statements name ``[ingest].[work_items]``.

Every engine reconnects as SQLAlchemy's pool does: ``pool_pre_ping`` on checkout (PostgreSQL, SQL
Server), and a connection that lost its server is invalidated and replaced on its next use; nothing
here sleeps. :func:`is_write_conflict` tells the stores which errors mean "run the transaction again"
(a deadlock victim or a serialization failure).

Settings read: none (callers pass the URL). Stats written: none.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from holocron_scrapy import defaults
from holocron_scrapy.errors import ConfigError, StoreError
from holocron_scrapy.secrets import mask_text

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
#: SQLAlchemy's name of the SQL Server dialect (``engine.dialect.name``).
MSSQL = "mssql"
#: SQLSTATEs of a transaction that lost a write conflict: PostgreSQL's deadlock_detected (40P01) and
#: serialization_failure (40001, also SQL Server's deadlock victim 1205).
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
#: Serialises concurrent schema set-ups on one PostgreSQL database (any fixed 64-bit number).
PG_SCHEMA_LOCK = 0x686F6C6F63726F6E  # "holocron"
#: Execution option: ``conn.execution_options(holocron_read_only=True)`` makes SQLite begin a plain
#: (deferred) ``BEGIN`` instead of ``BEGIN IMMEDIATE``, for transactions that only read.
READ_ONLY = "holocron_read_only"


def is_postgresql_url(url: str) -> bool:
    from holocron_scrapy.db.connection import POSTGRESQL, dialect_of

    return dialect_of(url) == POSTGRESQL


def masked_url(url: str) -> str:
    """*url* with its password (if any) replaced by ``***``."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def open_engine(
    url: str,
    *,
    setting: str = "HOLOCRON_STATE_URL",
    sqlserver_config: dict[str, Any] | None = None,
    wait_timeout: float = 0.0,
) -> sa.Engine:
    """An engine for the store *url* (``sqlite:///``, ``postgresql://``, ``mssql+pyodbc://`` or
    ``sqlserver://``), schema up to date. *sqlserver_config* is the YAML ``sqlserver`` section and
    *wait_timeout* how long to retry a SQL Server that is not up yet (both for SQL Server only)."""
    from holocron_scrapy.db import connection

    parsed = connection.parse_store_url(url, setting=setting)
    if parsed.dialect == connection.POSTGRESQL:
        return _postgresql_engine(str(parsed.url), setting=setting)
    if parsed.dialect == connection.SQLSERVER:
        return _sqlserver_engine(parsed, sqlserver_config, wait_timeout=wait_timeout)
    path = parsed.path or ":memory:"
    if path != ":memory:":
        connection.open_store(parsed).close()  # refuses foreign files, applies sql/sqlite/ migrations
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
        # A read (execution option READ_ONLY=True) begins deferred: a WAL reader takes no write lock.
        deferred = connection.get_execution_options().get(READ_ONLY)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


#: libpq parameters for every PostgreSQL connection: a connect that gets no answer gives up after 10 s,
#: and TCP keepalives notice a dead peer within about a minute (30 s idle, then 3 probes 10 s apart).
PG_CONNECT_GUARDS = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def postgresql_engine(url: str) -> sa.Engine:
    """An engine on the PostgreSQL *url* (``postgresql+psycopg://``, no password), nothing created."""
    from holocron_scrapy.db.connection import register_postgresql_password

    register_postgresql_password()
    parsed = sa.engine.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    # A server that vanishes without closing the connection (a dropped network) must fail a call within
    # a minute, not after the kernel's two hours: the frontier then counts it as an outage and waits.
    # Values in the URL's query (``?connect_timeout=30``) win.
    guards = {k: v for k, v in PG_CONNECT_GUARDS.items() if k not in parsed.query}
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=guards)


def _postgresql_engine(url: str, *, setting: str) -> sa.Engine:
    try:
        engine = postgresql_engine(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"not a PostgreSQL URL: {masked_url(url)!r} ({exc})", key=setting) from None
    try:
        ensure_postgresql_schema(engine)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise StoreError(f"cannot open PostgreSQL store {masked_url(url)}: {db_error_text(exc)}") from None
    except BaseException:
        engine.dispose()
        raise
    return engine


def is_write_conflict(exc: BaseException) -> bool:
    """True when *exc* (a SQLAlchemy ``DBAPIError`` or the driver's own error) says the transaction was
    rolled back as a deadlock victim or for a serialization failure, so that running it again is right:
    psycopg's ``DeadlockDetected`` / ``SerializationFailure`` (SQLSTATE 40P01 / 40001), SQL Server's
    error 1205 (SQLSTATE 40001)."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) in CONFLICT_SQLSTATES:  # psycopg
        return True
    from holocron_scrapy.db.sqlserver_errors import native_errors, sqlstate

    return sqlstate(orig) in CONFLICT_SQLSTATES or 1205 in native_errors(orig)


def describe_engine(engine: sa.Engine) -> str:
    """The database of *engine* for log lines, without any password: ``SQLite <path>``, ``PostgreSQL
    <url>``, ``SQL Server <host:port> database <name> schema <schema>``."""
    url = engine.url
    name = engine.dialect.name
    if name == SQLITE:
        return f"SQLite {url.database or ':memory:'}"
    if name == POSTGRESQL:
        return f"PostgreSQL {url.render_as_string(hide_password=True)}"
    if name == MSSQL:
        from holocron_scrapy.db.odbc import parse_odbc

        odbc = url.query.get("odbc_connect") or ""
        pairs = {key.lower(): value for key, value in parse_odbc(odbc if isinstance(odbc, str) else odbc[0])}
        server = pairs.get("server") or pairs.get("address") or "?"
        server = server.removeprefix("tcp:").replace(",", ":") + (f":{pairs['port']}" if "port" in pairs else "")
        schema = (engine.get_execution_options().get("schema_translate_map") or {}).get(None)
        return f"SQL Server {server} database {pairs.get('database', '?')}" + (f" schema {schema}" if schema else "")
    return url.render_as_string(hide_password=True)


def db_error_text(exc: BaseException) -> str:
    """One line for a database error: the driver's message (not SQLAlchemy's statement and link), masked."""
    orig = getattr(exc, "orig", None)
    return mask_text(" ".join(str(orig if orig is not None else exc).split()))


def ensure_postgresql_schema(engine: sa.Engine) -> list[str]:
    """Create the tables of :mod:`holocron_scrapy.db.schema` if missing and record every known
    migration version, in one transaction under an advisory lock (concurrent starters wait).
    Returns the versions recorded now ([] when the schema was up to date).

    A database that holds tables but no ``schema_migrations`` is not ours: it is refused, untouched."""
    from datetime import UTC, datetime

    from holocron_scrapy.db.migrations import load_migrations
    from holocron_scrapy.db.schema import metadata, schema_migrations

    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_SCHEMA_LOCK})
        tables = sorted(sa.inspect(conn).get_table_names())
        if tables and schema_migrations.name not in tables:
            database = conn.execute(sa.text("SELECT current_database()")).scalar()
            raise StoreError(
                f"PostgreSQL database {database} is not a holocron_scrapy database (it has tables "
                f"{', '.join(tables[:5])} but no schema_migrations); refusing to modify it: "
                "point the store URL at another database"
            )
        metadata.create_all(conn)
        applied = set(conn.execute(sa.select(schema_migrations.c.version)).scalars())
        now = datetime.now(UTC)
        missing: list[dict[str, Any]] = [
            {"version": m.version, "name": m.name, "applied_at": now}
            for m in load_migrations(POSTGRESQL)
            if m.version not in applied
        ]
        if missing:
            conn.execute(schema_migrations.insert(), missing)
    return [row["version"] for row in missing]


def sqlserver_engine_url(settings: Any) -> sa.URL:
    """``mssql+pyodbc:///?odbc_connect=...``: the ODBC connection string of *settings* (a
    :class:`~holocron_scrapy.db.sqlserver.SqlServerSettings`) without its password."""
    return sa.URL.create("mssql+pyodbc", query={"odbc_connect": settings.without_password()})


def sqlserver_engine(settings: Any, *, wait_timeout: float = 0.0) -> sa.Engine:
    """An engine whose connections come from :func:`holocron_scrapy.db.sqlserver.connect` (the password
    added from the environment there, session options set); the unqualified tables of
    :mod:`holocron_scrapy.db.schema` are mapped onto ``settings.schema``. Nothing is connected until the
    engine is used. *wait_timeout* is how long a connection is retried while the server is not up (the
    ``scrapy db`` commands' ``--wait-timeout``; 0 for the stores: a lost server fails the call, and
    the next call reconnects)."""
    from holocron_scrapy.db import sqlserver

    sqlserver.import_pyodbc()  # a clear error when pyodbc is missing, before SQLAlchemy imports it
    engine = sa.create_engine(
        sqlserver_engine_url(settings),
        creator=lambda: sqlserver.connect(settings, wait_timeout=wait_timeout),
        pool_pre_ping=True,
        fast_executemany=settings.fast_executemany,  # INGEST_SQLSERVER_FAST_EXECUTEMANY opts in
    )
    return engine.execution_options(schema_translate_map={None: settings.schema})


def _sqlserver_engine(parsed: Any, sqlserver_config: dict[str, Any] | None, *, wait_timeout: float) -> sa.Engine:
    """Migrations first, with the T-SQL runner on a raw connection; then the engine."""
    from holocron_scrapy.db import connection, sqlserver
    from holocron_scrapy.db.migrations import MigrationRunner

    settings = connection.sqlserver_settings(parsed, sqlserver_config)
    raw = sqlserver.connect(settings, wait_timeout=wait_timeout)
    try:
        MigrationRunner(raw, connection.SQLSERVER, schema=settings.schema).apply()
    finally:
        raw.close()
    return sqlserver_engine(settings)


def ensure_postgresql_database(url: str, *, create: bool = True) -> bool | None:
    """Whether the database of the PostgreSQL *url* existed (True), was missing (False: created
    when *create*), or could not be checked through the ``postgres`` maintenance database (None)."""
    parsed = sa.engine.make_url(url)
    name = parsed.database
    if not name:
        return None
    admin = postgresql_engine(parsed.set(database="postgres").render_as_string(hide_password=False))
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).first()
            if found is not None:
                return True
            if create:
                conn.exec_driver_sql(f"CREATE DATABASE {conn.dialect.identifier_preparer.quote(name)}")
            return False
    except sa.exc.OperationalError:
        return None  # e.g. no right to connect to postgres: let the caller try the database itself
    finally:
        admin.dispose()
