"""Every database connection of holocron_scrapy is opened here.

Store URLs:

* ``sqlite:///relative/path.sqlite3`` or ``sqlite:////absolute/path.sqlite3`` (embedded default);
* ``sqlserver://`` (SQL Server through pyodbc, from ``INGEST_SQLSERVER_*`` and the YAML
  ``sqlserver`` section), or ``sqlserver://?odbc_connect=<ODBC connection string>``.
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
SQLSERVER = "sqlserver"


@dataclass(frozen=True)
class StoreURL:
    dialect: str
    path: str | None = None  # absolute, for SQLite
    odbc_connect: str | None = None  # explicit ODBC string, for SQL Server
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.dialect == SQLITE:
            return f"sqlite:///{self.path}"
        return "sqlserver://" + (" (explicit ODBC connection string)" if self.odbc_connect else "")


def parse_store_url(url: str, *, setting: str = "HOLOCRON_STATE_URL") -> StoreURL:
    """Parse a store URL; a bad one raises :class:`ConfigError` naming *setting*."""
    if not url or not isinstance(url, str):
        raise ConfigError("expected a store URL such as sqlite:///data/state.sqlite3", key=setting)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"not a URL: {url!r} (expected sqlite:///PATH or sqlserver://)", key=setting)
    if scheme == SQLITE:
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(f"expected sqlite:///PATH, got {url!r}", key=setting)
        raw = unquote(rest[1:])  # sqlite:///rel -> "rel", sqlite:////abs -> "/abs"
        if raw == ":memory:":
            return StoreURL(SQLITE, path=":memory:")
        return StoreURL(SQLITE, path=str(Path(raw).expanduser().resolve()))
    if scheme in (SQLSERVER, "mssql"):
        query = parse_qs(urlsplit(url).query)
        odbc = query.get("odbc_connect", [None])[0]
        return StoreURL(SQLSERVER, odbc_connect=odbc)
    raise ConfigError(f"unknown store URL scheme {scheme!r} in {url!r} (use sqlite or sqlserver)", key=setting)


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


def open_store(url: StoreURL, *, sqlserver_config: dict[str, Any] | None = None, wait_timeout: float = 0.0) -> Any:
    """Open a DB-API connection for *url* and bring its schema up to date."""
    from holocron_scrapy.db.migrations import MigrationRunner

    if url.dialect == SQLITE:
        conn = connect_sqlite(url.path or ":memory:")
        MigrationRunner(conn, SQLITE).apply()
        return conn
    from holocron_scrapy.db import sqlserver

    settings = sqlserver.SqlServerSettings.resolve(sqlserver_config or {}, conn_str=url.odbc_connect)
    conn = sqlserver.connect(settings, wait_timeout=wait_timeout)
    MigrationRunner(conn, SQLSERVER, schema=settings.schema).apply()
    return conn
