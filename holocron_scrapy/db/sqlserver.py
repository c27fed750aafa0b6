"""SQL Server connection settings and connections (pyodbc, imported lazily).

Settings are resolved from the ``INGEST_SQLSERVER_*`` environment variables and a YAML
section (``storage.sql_server`` or ``state.sqlserver``) with keys ``host, port, database,
user, driver, schema, trust_server_certificate, encrypt, conn_str``:

* every key: the environment wins, then the YAML section, then the default (so a
  container can retarget a checked-in config without editing it);
* secrets: the password is read from
  ``INGEST_SQLSERVER_PASSWORD`` only (a ``password`` YAML key is refused) or from a full
  ODBC connection string: ``INGEST_SQLSERVER_STATE_CONN_STR``, then the *conn_str*
  argument (``sqlserver://?odbc_connect=...``), then YAML ``conn_str``. When both a
  connection string and ``INGEST_SQLSERVER_PASSWORD`` are given, the variable replaces
  the string's ``PWD``.

Extra variables: ``INGEST_SQLSERVER_TRUST_SERVER_CERTIFICATE``, ``INGEST_SQLSERVER_ENCRYPT``
(yes/no), ``INGEST_SQLSERVER_LOGIN_TIMEOUT`` (seconds per attempt, default 15) and
``INGEST_SQLSERVER_FAST_EXECUTEMANY`` (pyodbc's ``fast_executemany`` for the stores' engine,
:func:`holocron_scrapy.db.engine.sqlserver_engine`; opt-in, off by default: it crashes some drivers).
Passwords never reach logs or error messages: use :meth:`SqlServerSettings.masked`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from holocron_scrapy.db.odbc import format_odbc, is_freetds, odbc_get, parse_odbc
from holocron_scrapy.db.sqlserver_errors import error_text, is_transient, native_errors, sqlstate
from holocron_scrapy.errors import ConfigError, StoreError
from holocron_scrapy.secrets import mask_text
from holocron_scrapy.secrets import register as register_secrets

logger = logging.getLogger(__name__)

ENV_PREFIX = "INGEST_SQLSERVER_"
ENV_CONN_STR = "INGEST_SQLSERVER_STATE_CONN_STR"
ENV_PASSWORD = "INGEST_SQLSERVER_PASSWORD"
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 1433
DEFAULT_DATABASE = "Holocron"
DEFAULT_USER = "sa"
DEFAULT_DRIVER = "ODBC Driver 18 for SQL Server"
DEFAULT_SCHEMA = "ingest"
DEFAULT_LOGIN_TIMEOUT = 15
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "(local)", "."})
MASK = "***"
APP_NAME = "holocron_scrapy"

YAML_KEYS = frozenset(
    {"host", "port", "database", "user", "driver", "schema", "trust_server_certificate", "encrypt", "conn_str"}
)
_SECRET_KEYS = frozenset({"pwd", "password"})

# T-SQL executed by this module (listed by :func:`tsql_statements` for offline parsing).
TSQL_SESSION_SETUP = """\
SET ANSI_NULLS ON;
SET ANSI_PADDING ON;
SET ANSI_WARNINGS ON;
SET ARITHABORT ON;
SET CONCAT_NULL_YIELDS_NULL ON;
SET QUOTED_IDENTIFIER ON;
SET NUMERIC_ROUNDABORT OFF;"""
TSQL_CREATE_DATABASE = """\
DECLARE @database SYSNAME = ?;
IF DB_ID(@database) IS NULL
BEGIN
    DECLARE @ddl NVARCHAR(400) = N'CREATE DATABASE ' + QUOTENAME(@database);
    EXEC sys.sp_executesql @ddl;
END"""
TSQL_DATABASE_ID = "SELECT DB_ID(?) AS database_id"
TSQL_SERVER_INFO = (
    "SELECT CAST(SERVERPROPERTY('ProductVersion') AS NVARCHAR(128)) AS product_version, "
    "DB_NAME() AS database_name, SUSER_SNAME() AS login_name"
)
TSQL_LIST_TABLES = (
    "SELECT t.name FROM sys.tables AS t INNER JOIN sys.schemas AS s ON s.schema_id = t.schema_id "
    "WHERE s.name = ? ORDER BY t.name"
)
#: Smoke-test statements, portable between T-SQL and SQLite: ``{table}`` is
#: ``[schema].[work_items]`` on SQL Server and ``work_items`` on SQLite.
SMOKETEST_INSERT = (
    "INSERT INTO {table} (work_item_id, source_system, source_name, resource_type, resource_id, "
    "request_uri, request_method, priority, status, attempt, created_at, updated_at, dedupe_key) "
    "VALUES (?, ?, ?, ?, ?, ?, 'GET', 0, 'pending', 0, ?, ?, ?)"
)
SMOKETEST_SELECT = "SELECT work_item_id, status, dedupe_key FROM {table} WHERE work_item_id = ?"
SMOKETEST_UPDATE = "UPDATE {table} SET status = 'completed', completed_at = ?, updated_at = ? WHERE work_item_id = ?"
SMOKETEST_DELETE = "DELETE FROM {table} WHERE work_item_id = ? AND source_system = ?"


def tsql_statements(schema: str = DEFAULT_SCHEMA) -> dict[str, str]:
    """Every T-SQL string this module (and the ``db smoketest`` command) executes."""
    table = f"[{schema}].[work_items]"
    return {
        "session_setup": TSQL_SESSION_SETUP,
        "database_id": TSQL_DATABASE_ID,
        "create_database": TSQL_CREATE_DATABASE,
        "server_info": TSQL_SERVER_INFO,
        "list_tables": TSQL_LIST_TABLES,
        "smoketest_insert": SMOKETEST_INSERT.format(table=table),
        "smoketest_select": SMOKETEST_SELECT.format(table=table),
        "smoketest_update": SMOKETEST_UPDATE.format(table=table),
        "smoketest_delete": SMOKETEST_DELETE.format(table=table),
    }


# -- settings ------------------------------------------------------------------------------
def _parse_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f"expected yes/no or true/false, got {value!r}", key=key)


def _parse_int(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"expected an integer, got {value!r}", key=key)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"expected an integer, got {value!r}", key=key) from None
    if not low <= number <= high:
        raise ConfigError(f"must be between {low} and {high}, got {number}", key=key)
    return number


@dataclass(frozen=True)
class SqlServerSettings:
    """Resolved SQL Server connection settings; ``repr``/``str`` never show the password."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    database: str = DEFAULT_DATABASE
    user: str = DEFAULT_USER
    password: str | None = field(default=None, repr=False)
    driver: str = DEFAULT_DRIVER
    schema: str = DEFAULT_SCHEMA
    trust_server_certificate: bool | None = None  # None: yes for localhost only
    encrypt: bool | None = None  # None: Encrypt=yes (Microsoft drivers), driver default (FreeTDS)
    conn_str: str | None = field(default=None, repr=False)
    login_timeout: int = DEFAULT_LOGIN_TIMEOUT
    fast_executemany: bool = False

    @classmethod
    def resolve(
        cls,
        yaml_section: Mapping[str, Any] | None = None,
        conn_str: str | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> SqlServerSettings:
        """Build settings from *yaml_section*, an explicit *conn_str* and *environ* (see module doc)."""
        from holocron_scrapy.db.migrations import validate_identifier

        section = dict(yaml_section or {})
        if "password" in section:
            raise ConfigError(
                f"passwords are not read from YAML: set {ENV_PASSWORD} (or a full connection string in {ENV_CONN_STR})",
                key="password",
            )
        unknown = sorted(set(map(str, section)) - YAML_KEYS)
        if unknown:
            raise ConfigError(f"unknown key (allowed: {', '.join(sorted(YAML_KEYS))})", key=unknown[0])

        def pick(key: str, default: Any) -> tuple[Any, str]:
            env_key = ENV_PREFIX + key.upper()
            env_value = environ.get(env_key)
            if env_value is not None and env_value.strip() != "":
                return env_value.strip(), env_key
            value = section.get(key)
            if value is not None and value != "":
                return value, key
            return default, key

        def text(key: str, default: str) -> str:
            value, source = pick(key, default)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"expected a non-empty string, got {value!r}", key=source)
            return value.strip()

        def flag(key: str) -> bool | None:
            value, source = pick(key, None)
            return None if value is None else _parse_bool(value, source)

        port_value, port_source = pick("port", DEFAULT_PORT)
        schema_value, schema_source = pick("schema", DEFAULT_SCHEMA)
        timeout_value = environ.get(ENV_PREFIX + "LOGIN_TIMEOUT") or DEFAULT_LOGIN_TIMEOUT
        fast = environ.get(ENV_PREFIX + "FAST_EXECUTEMANY")
        explicit = environ.get(ENV_CONN_STR) or conn_str or section.get("conn_str") or None
        password = environ.get(ENV_PASSWORD) or None
        if explicit is not None and not isinstance(explicit, str):
            raise ConfigError("expected an ODBC connection string", key="conn_str")
        if explicit:
            parse_odbc(explicit)  # fail early on a malformed string
        elif password is None:
            raise ConfigError(
                f"not set: export the SQL Server password (or a full ODBC connection string in {ENV_CONN_STR})",
                key=ENV_PASSWORD,
            )
        register_secrets(password, *(v for k, v in parse_odbc(explicit or "") if k.lower() in _SECRET_KEYS))
        return cls(
            host=text("host", DEFAULT_HOST),
            port=_parse_int(port_value, port_source, 1, 65535),
            database=text("database", DEFAULT_DATABASE),
            user=text("user", DEFAULT_USER),
            password=password,
            driver=text("driver", DEFAULT_DRIVER),
            schema=validate_identifier(str(schema_value).strip(), key=schema_source),
            trust_server_certificate=flag("trust_server_certificate"),
            encrypt=flag("encrypt"),
            conn_str=explicit,
            login_timeout=_parse_int(timeout_value, ENV_PREFIX + "LOGIN_TIMEOUT", 1, 3600),
            fast_executemany=_parse_bool(fast, ENV_PREFIX + "FAST_EXECUTEMANY") if fast else False,
        )

    # -- derived values ------------------------------------------------------------------
    @property
    def trusts_certificate(self) -> bool:
        if self.trust_server_certificate is not None:
            return self.trust_server_certificate
        return self.host.strip().lower() in LOCAL_HOSTS

    def effective_driver(self) -> str | None:
        """The driver the connection string names (None for a DSN without a driver)."""
        if self.conn_str:
            value = odbc_get(parse_odbc(self.conn_str), "driver")
            return value.strip("{}") if value else None
        return self.driver

    def _pairs(self, *, mask: bool) -> list[tuple[str, str]]:
        if self.conn_str:
            pairs = parse_odbc(self.conn_str)
            if self.password is not None:  # the environment wins for secrets
                pairs = [(k, v) for k, v in pairs if k.lower() not in _SECRET_KEYS] + [("PWD", self.password)]
        else:
            pairs = [("Driver", self.driver)]
            if is_freetds(self.driver):
                pairs += [
                    ("Server", self.host),
                    ("Port", str(self.port)),
                    ("TDS_Version", "7.4"),
                    ("ClientCharset", "UTF-8"),
                ]
                if self.encrypt is not None:
                    pairs.append(("Encryption", "require" if self.encrypt else "off"))
            else:
                server = self.host if "\\" in self.host else f"tcp:{self.host},{self.port}"
                pairs += [("Server", server), ("Encrypt", "no" if self.encrypt is False else "yes")]
                if self.trusts_certificate:
                    pairs.append(("TrustServerCertificate", "yes"))
            pairs += [("Database", self.database), ("UID", self.user), ("PWD", self.password or ""), ("APP", APP_NAME)]
        if mask:
            pairs = [(k, MASK if k.lower() in _SECRET_KEYS else v) for k, v in pairs]
        return pairs

    def connection_string(self) -> str:
        """The ODBC connection string, password included: never log it, log :meth:`masked`."""
        return format_odbc(self._pairs(mask=False))

    def without_password(self) -> str:
        """The connection string without any password attribute (for URLs; the password is added
        from the environment when connecting)."""
        return format_odbc([(k, v) for k, v in self._pairs(mask=False) if k.lower() not in _SECRET_KEYS])

    def masked(self) -> str:
        """The connection string with the password replaced by ``***``."""
        return format_odbc(self._pairs(mask=True))

    def redact(self, text: str) -> str:
        """*text* with the password replaced by ``***`` wherever it stands on its own (never inside a
        longer word: with the password ``x``, "does not exist" is left intact)."""
        secrets = [self.password] if self.password else []
        if self.conn_str:
            secrets += [v for k, v in parse_odbc(self.conn_str) if k.lower() in _SECRET_KEYS and v]
        return mask_text(text, extra=secrets)

    def describe(self) -> dict[str, str]:
        """Connection facts for humans (password masked)."""
        if self.conn_str:
            pairs = parse_odbc(self.conn_str)
            server = odbc_get(pairs, "server", "address", "addr") or "?"
            host, _, port = server.removeprefix("tcp:").partition(",")
            port = port or odbc_get(pairs, "port") or ""
            return {
                "Host": host,
                "Port": port,
                "Database": odbc_get(pairs, "database") or "?",
                "Username": odbc_get(pairs, "uid", "user id", "user") or "?",
                "Driver": self.effective_driver() or "?",
                "Schema": self.schema,
                "Password": MASK,
            }
        return {
            "Host": self.host,
            "Port": str(self.port),
            "Database": self.database,
            "Username": self.user,
            "Driver": self.driver,
            "Schema": self.schema,
            "Password": MASK,
        }

    def where(self) -> str:
        facts = self.describe()
        return f"{facts['Host']}:{facts['Port']}" if facts["Port"] else facts["Host"]

    def __repr__(self) -> str:
        return f"SqlServerSettings({self.masked()!r}, schema={self.schema!r})"

    __str__ = __repr__


def _hint(exc: BaseException) -> str:
    message = str(exc).lower()
    state = sqlstate(exc)
    numbers = native_errors(exc)
    if 4060 in numbers:  # reported together with 18456 "login failed"
        return "the database does not exist (or the login may not use it): run `scrapy db init` (it creates it)"
    if state == "28000" or 18456 in numbers:
        return f"login failed: check INGEST_SQLSERVER_USER and {ENV_PASSWORD}"
    if "certificate" in message or "ssl" in message or "tls" in message:
        return (
            "TLS/certificate problem: for a self-signed dev server set trust_server_certificate: true "
            "(or INGEST_SQLSERVER_TRUST_SERVER_CERTIFICATE=yes)"
        )
    if state in ("08001", "08S01", "HYT00"):
        return "is SQL Server running and reachable (docker compose ps; firewall; port)?"
    return ""


# -- connecting ----------------------------------------------------------------------------
def import_pyodbc() -> Any:
    """Import pyodbc, explaining the fix when it (or libodbc.so.2) is missing."""
    try:
        import pyodbc
    except ModuleNotFoundError as exc:
        if exc.name == "pyodbc":
            raise StoreError("the SQL Server backend needs pyodbc: pip install pyodbc") from exc
        raise StoreError(f"pyodbc cannot be imported ({exc})") from exc
    except ImportError as exc:
        raise StoreError(
            f"pyodbc cannot load the unixODBC driver manager ({exc}): install it with "
            "`apt-get install unixodbc` (Debian/Ubuntu) or `brew install unixodbc` (macOS)"
        ) from exc
    return pyodbc


def check_driver(settings: SqlServerSettings, pyodbc: Any) -> None:
    """Raise StoreError when the configured ODBC driver is not installed."""
    driver = settings.effective_driver()
    if not driver or ("/" in driver and Path(driver).is_file()):
        return
    installed = list(pyodbc.drivers())
    if driver not in installed:
        raise StoreError(
            f"ODBC driver {driver!r} is not installed (installed drivers: {', '.join(installed) or 'none'}); "
            "install Microsoft ODBC Driver 18 (msodbcsql18) or FreeTDS (apt-get install tdsodbc), "
            "or set INGEST_SQLSERVER_DRIVER to an installed driver — see docs/sqlserver.md"
        )


def connect(
    settings: SqlServerSettings,
    wait_timeout: float = 0.0,
    *,
    autocommit: bool = False,
    sleep: Any = time.sleep,
) -> Any:
    """Open a pyodbc connection, retrying transient errors for up to *wait_timeout* seconds.

    The session gets the SET options that filtered indexes need. Raises StoreError with the
    host, port and masked connection string (never the password).
    """
    pyodbc = import_pyodbc()
    check_driver(settings, pyodbc)
    deadline = time.monotonic() + max(0.0, float(wait_timeout))
    delay, attempts = 0.5, 0
    started = time.monotonic()
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        timeout = max(1, min(settings.login_timeout, math.ceil(remaining))) if remaining > 0 else settings.login_timeout
        try:
            conn = pyodbc.connect(settings.connection_string(), timeout=timeout, autocommit=autocommit)
            break
        except pyodbc.Error as exc:
            reason = settings.redact(error_text(exc))
            remaining = deadline - time.monotonic()
            if is_transient(exc) and remaining > 0:
                logger.info(
                    "SQL Server at %s not reachable yet (attempt %d, %.0fs left): %s",
                    settings.where(),
                    attempts,
                    remaining,
                    reason,
                )
                sleep(min(delay, remaining))
                delay = min(delay * 2, 5.0)
                continue
            hint = _hint(exc)
            waited = f" after {time.monotonic() - started:.1f}s and {attempts} attempt(s)" if attempts > 1 else ""
            raise StoreError(
                f"cannot connect to SQL Server at {settings.where()} (database {settings.describe()['Database']})"
                f"{waited}: {reason}" + (f" — {hint}" if hint else "") + f"; connection string: {settings.masked()}"
            ) from None
    try:
        cursor = conn.cursor()
        cursor.execute(TSQL_SESSION_SETUP)
        cursor.close()
        if not autocommit:
            conn.commit()
    except pyodbc.Error as exc:
        conn.close()
        raise StoreError(
            f"connected to SQL Server at {settings.where()} but the session setup failed: "
            f"{settings.redact(error_text(exc))}"
        ) from None
    return conn


def ensure_database(settings: SqlServerSettings, wait_timeout: float = 0.0, *, create: bool = True) -> bool | None:
    """Check (and with *create*, create) the configured database through ``master``.

    Returns True when the database existed, False when it was missing (and is now created
    if *create*), None when skipped: a full connection string names its own database.
    The name is passed as a parameter and quoted with QUOTENAME, so any name is safe.
    """
    if settings.conn_str:
        return None
    conn = connect(replace(settings, database="master"), wait_timeout=wait_timeout, autocommit=True)
    try:
        cursor = conn.cursor()
        cursor.execute(TSQL_DATABASE_ID, settings.database)
        existed = cursor.fetchone()[0] is not None
        if create and not existed:
            logger.info("creating database %s on %s", settings.database, settings.where())
            cursor.execute(TSQL_CREATE_DATABASE, settings.database)
            while cursor.nextset():
                pass
        return existed
    except Exception as exc:
        raise StoreError(
            f"cannot {'create' if create else 'look up'} database {settings.database!r} on {settings.where()}: "
            f"{settings.redact(error_text(exc))}"
        ) from exc
    finally:
        conn.close()
