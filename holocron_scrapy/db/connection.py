"""Every database connection of holocron_scrapy is opened here.

Store URLs are SQLAlchemy URLs (:func:`parse_store_url`):

* ``sqlite:///relative/path.sqlite3`` or ``sqlite:////absolute/path.sqlite3`` (embedded default);
* ``postgresql://user@host:port/database`` or ``postgresql+psycopg://...`` (psycopg 3). The
  password never stands in the URL: psycopg reads ``PGPASSWORD`` or a ``.pgpass`` file;
* ``mssql+pyodbc://user@host:port/database?driver=ODBC+Driver+18+for+SQL+Server`` (SQL Server
  through pyodbc; the password from ``INGEST_SQLSERVER_PASSWORD``), ``mssql+pyodbc://`` alone
  (everything from ``INGEST_SQLSERVER_*`` and the YAML ``sqlserver`` section),
  ``mssql+pyodbc:///?odbc_connect=<ODBC connection string>``, and the older forms ``sqlserver://``
  and ``sqlserver://?odbc_connect=...``, which mean the same.

Every SQL Server form ends as an ODBC connection string resolved by
:class:`holocron_scrapy.db.sqlserver.SqlServerSettings` (:func:`sqlserver_settings`). Settings read:
none (callers pass URLs). Environment read: ``PGPASSWORD`` (registered as a secret, so it is masked
in every log line). Stats written: none.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from holocron_scrapy import defaults
from holocron_scrapy.errors import ConfigError, StoreError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
SQLSERVER = "sqlserver"
PG_PASSWORD_ENV = "PGPASSWORD"
#: URL schemes of each dialect (lower case).
POSTGRESQL_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
SQLSERVER_SCHEMES = (SQLSERVER, "mssql", "mssql+pyodbc")
#: ``postgresql://`` query keys passed on to libpq (no ``password``: passwords come from the environment).
POSTGRESQL_QUERY_KEYS = frozenset({"sslmode", "connect_timeout", "application_name", "options", "sslrootcert"})
#: ``mssql+pyodbc://`` query keys that become attributes of the ODBC connection string.
MSSQL_QUERY_KEYS = frozenset({"driver", "encrypt", "trust_server_certificate", "odbc_connect"})
_EXPECTED = "sqlite:///PATH, postgresql://USER@HOST:PORT/DATABASE or mssql+pyodbc://USER@HOST:PORT/DATABASE"


@dataclass(frozen=True)
class StoreURL:
    dialect: str
    path: str | None = None  # absolute, for SQLite
    odbc_connect: str | None = None  # explicit ODBC string (no password), for SQL Server
    options: dict[str, Any] = field(default_factory=dict)
    url: str | None = None  # the SQLAlchemy URL (postgresql+psycopg://..., no password), for PostgreSQL

    def describe(self) -> str:
        if self.dialect == SQLITE:
            return f"sqlite:///{self.path}"
        if self.dialect == POSTGRESQL:
            return str(self.url)
        return "sqlserver://" + (" (explicit ODBC connection string)" if self.odbc_connect else "")


def dialect_of(url: str) -> str | None:
    """``sqlite``, ``postgresql`` or ``sqlserver`` for a store URL's scheme (None when unknown); no checks."""
    scheme = url.partition("://")[0].lower() if isinstance(url, str) else ""
    if scheme == SQLITE:
        return SQLITE
    if scheme in POSTGRESQL_SCHEMES:
        return POSTGRESQL
    if scheme in SQLSERVER_SCHEMES:
        return SQLSERVER
    return None


def parse_store_url(url: str, *, setting: str = "HOLOCRON_STATE_URL") -> StoreURL:
    """Parse a store URL; a bad one raises :class:`ConfigError` naming *setting*.

    A URL that holds a password is refused: passwords come from the environment only."""
    if not url or not isinstance(url, str):
        raise ConfigError("expected a store URL such as sqlite:///data/state.sqlite3", key=setting)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"not a URL: {_shown(url)!r} (expected {_EXPECTED})", key=setting)
    if scheme == SQLITE:
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(f"expected sqlite:///PATH, got {url!r}", key=setting)
        raw = unquote(rest[1:])  # sqlite:///rel -> "rel", sqlite:////abs -> "/abs"
        if raw == ":memory:":
            return StoreURL(SQLITE, path=":memory:")
        return StoreURL(SQLITE, path=str(Path(raw).expanduser().resolve()))
    if scheme in POSTGRESQL_SCHEMES:
        return _parse_postgresql(url, setting)
    if scheme == "mssql+pyodbc":
        return _parse_mssql(url, setting)
    if scheme in (SQLSERVER, "mssql"):
        query = parse_qs(urlsplit(url).query)
        odbc = query.get("odbc_connect", [None])[0]
        return StoreURL(SQLSERVER, odbc_connect=odbc)
    raise ConfigError(f"unknown store URL scheme {scheme!r} in {_shown(url)!r} (expected {_EXPECTED})", key=setting)


def _shown(url: str) -> str:
    from holocron_scrapy.secrets import mask_url

    return mask_url(url) if "@" in url or "?" in url else url


def _sa_url(url: str, setting: str) -> Any:
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f"not a valid store URL: {_shown(url)!r} ({exc})", key=setting) from None


def _parse_postgresql(url: str, setting: str) -> StoreURL:
    parsed = _sa_url(url, setting)
    if parsed.password is not None:
        raise ConfigError(
            "a password in the store URL is not allowed: remove it and set PGPASSWORD or put it in a "
            "~/.pgpass file (psycopg reads both)",
            key=setting,
        )
    register_postgresql_password()  # psycopg will use it: mask it from now on
    if parsed.drivername.lower() in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    unknown = sorted(set(parsed.query) - POSTGRESQL_QUERY_KEYS)
    if unknown:
        raise ConfigError(f"unknown PostgreSQL URL parameter {unknown[0]!r} in {_shown(url)!r}", key=setting)
    if not parsed.host:
        raise ConfigError(f"expected postgresql://USER@HOST:PORT/DATABASE, got {_shown(url)!r}", key=setting)
    return StoreURL(POSTGRESQL, url=parsed.render_as_string(hide_password=False))


def _parse_mssql(url: str, setting: str) -> StoreURL:
    """``mssql+pyodbc://[user@host[:port]/database][?driver=...&encrypt=yes&trust_server_certificate=yes]``
    or ``mssql+pyodbc:///?odbc_connect=...``: an ODBC connection string without the password."""
    from holocron_scrapy.db import sqlserver
    from holocron_scrapy.db.odbc import parse_odbc

    parsed = _sa_url(url, setting)
    if parsed.password is not None:
        raise ConfigError(
            f"a password in the store URL is not allowed: remove it and set {sqlserver.ENV_PASSWORD}", key=setting
        )
    query = {key: value if isinstance(value, str) else value[-1] for key, value in parsed.query.items()}
    unknown = sorted(set(query) - MSSQL_QUERY_KEYS)
    if unknown:
        allowed = ", ".join(sorted(MSSQL_QUERY_KEYS))
        raise ConfigError(f"unknown SQL Server URL parameter {unknown[0]!r} (allowed: {allowed})", key=setting)
    if "odbc_connect" in query:
        if parsed.host or parsed.database or len(query) > 1:
            raise ConfigError("odbc_connect=... must be the only part of an mssql+pyodbc:/// URL", key=setting)
        parse_odbc(query["odbc_connect"])
        return StoreURL(SQLSERVER, odbc_connect=query["odbc_connect"])
    if not parsed.host:
        if parsed.database or parsed.username or query:
            raise ConfigError(f"expected mssql+pyodbc://USER@HOST:PORT/DATABASE, got {_shown(url)!r}", key=setting)
        return StoreURL(SQLSERVER)  # everything from INGEST_SQLSERVER_* and the YAML section
    if not parsed.database or not parsed.username:
        raise ConfigError(f"expected mssql+pyodbc://USER@HOST:PORT/DATABASE, got {_shown(url)!r}", key=setting)

    def flag(key: str) -> bool | None:  # None (absent): the settings' own default
        return sqlserver._parse_bool(query[key], key) if key in query else None

    settings = sqlserver.SqlServerSettings(
        host=parsed.host,
        port=parsed.port or sqlserver.DEFAULT_PORT,
        database=parsed.database,
        user=parsed.username,
        driver=query.get("driver", sqlserver.DEFAULT_DRIVER),
        encrypt=flag("encrypt"),
        trust_server_certificate=flag("trust_server_certificate"),
    )
    return StoreURL(SQLSERVER, odbc_connect=settings.without_password())


def sqlserver_settings(url: StoreURL, section: dict[str, Any] | None = None) -> Any:
    """The :class:`~holocron_scrapy.db.sqlserver.SqlServerSettings` of a SQL Server store URL and its
    YAML *section* (``INGEST_SQLSERVER_*`` first; the password from the environment only)."""
    from holocron_scrapy.db.sqlserver import SqlServerSettings

    return SqlServerSettings.resolve(section or {}, conn_str=url.odbc_connect)


def register_postgresql_password(environ: Any = os.environ) -> None:
    """Register ``PGPASSWORD`` (which psycopg reads) as a secret: masked in every log line and error."""
    from holocron_scrapy.secrets import register

    register(environ.get(PG_PASSWORD_ENV))


def connect_sqlite(path: str, *, busy_timeout_ms: int = defaults.SQLITE_BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """Open (creating if needed) a holocron SQLite database in WAL mode with a busy timeout.

    A file that is not SQLite, or a SQLite file of another application, is refused
    before anything is written to it.

    The connection is in autocommit mode (``isolation_level=None``): callers open
    transactions explicitly with ``BEGIN`` / ``BEGIN IMMEDIATE``.
    """
    if path != ":memory:":
        parent = Path(path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create directory for SQLite database {path}: {exc}") from exc
        if not os.access(parent, os.W_OK):
            raise StoreError(f"cannot write SQLite database {path}: directory {parent} is not writable")
        if Path(path).exists() and not os.access(path, os.W_OK):
            raise StoreError(f"cannot write SQLite database {path}: file is not writable")
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a usable SQLite database: {exc}") from exc
    try:
        ensure_sqlite_owned(conn, path)  # before anything writes to the file
    except StoreError:
        conn.close()
        raise
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a usable SQLite database: {exc}") from exc
    if path != ":memory:" and mode.lower() != "wal":
        conn.close()
        raise StoreError(f"{path}: could not switch the SQLite database to WAL mode (got {mode})")
    return conn


def ensure_sqlite_owned(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a SQLite file that holds tables but is not a holocron_scrapy database."""
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a usable SQLite database: {exc}") from exc
    if tables and "schema_migrations" not in tables:
        sample = ", ".join(sorted(tables)[:5])
        raise StoreError(
            f"{path} is not a holocron_scrapy database (it has tables {sample} but no schema_migrations); "
            "refusing to modify it: point the store URL at another file"
        )


def open_store(url: StoreURL) -> Any:
    """Open a DB-API connection to the SQLite *url* and bring its schema up to date (the SQLite engine
    of :func:`holocron_scrapy.db.engine.open_engine` does this first; the other backends are opened
    there, through SQLAlchemy)."""
    from holocron_scrapy.db.migrations import MigrationRunner

    if url.dialect != SQLITE:
        raise StoreError(f"{url.describe()}: open it with holocron_scrapy.db.engine.open_engine")
    conn = connect_sqlite(url.path or ":memory:")
    MigrationRunner(conn, SQLITE).apply()
    return conn
