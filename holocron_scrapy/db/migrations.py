"""Versioned, idempotent schema migrations for SQLite, SQL Server and PostgreSQL.

Migration files are ``sql/NNNN_name.sql`` (T-SQL, batches separated by ``GO`` lines)
and ``sql/sqlite/NNNN_name.sql`` (SQLite). They are read with :mod:`importlib.resources`
so they work from a checkout and from inside a Scrapyd egg. Applied versions are
recorded in ``schema_migrations`` (in the configured schema on SQL Server); applying
again does nothing.

T-SQL files always name the schema ``[ingest]``; :class:`MigrationRunner` replaces it with
its validated *schema* (``INGEST_SQLSERVER_SCHEMA`` / YAML ``schema``). On SQL Server the
runner serialises concurrent starters with an application lock and applies each
migration in one transaction (``SET XACT_ABORT ON``), so a failed migration leaves nothing
behind and is retried on the next run.

PostgreSQL has no history to upgrade: its migrations are the versions of ``sql/sqlite/`` (same
numbers and names), all applied at once by the baseline, :func:`holocron_scrapy.db.engine.ensure_postgresql_schema`
(``metadata.create_all`` in one transaction under an advisory lock, every version recorded in
``schema_migrations``). For ``"postgresql"`` the runner's connection is a SQLAlchemy engine.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from holocron_scrapy.db.sqlserver import TSQL_SESSION_SETUP
from holocron_scrapy.errors import ConfigError, HolocronError, StoreError

logger = logging.getLogger(__name__)

_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
_GO = re.compile(r"^\s*GO\s*(?:--.*)?$", re.IGNORECASE)
_GO_COUNT = re.compile(r"^\s*GO\s+\d+\s*(?:--.*)?$", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_RESERVED_SCHEMAS = {"sys", "information_schema", "guest"}
DEFAULT_SCHEMA = "ingest"
SCHEMA_PLACEHOLDER = "[ingest]"
APPLOCK_TIMEOUT_MS = 60_000

# T-SQL the runner executes besides the migration files. ``{schema}`` is replaced by the
# validated schema name; ``?`` are pyodbc parameters. Listed in :func:`tsql_statements`.
TSQL_ENSURE_SCHEMA = """\
DECLARE @schema SYSNAME = ?;
IF SCHEMA_ID(@schema) IS NULL
BEGIN
    DECLARE @ddl NVARCHAR(300) = N'CREATE SCHEMA ' + QUOTENAME(@schema);
    EXEC sys.sp_executesql @ddl;
END"""
TSQL_CREATE_MIGRATIONS_TABLE = """\
IF OBJECT_ID(N'[{schema}].[schema_migrations]', N'U') IS NULL
BEGIN
    CREATE TABLE [{schema}].[schema_migrations] (
        version NVARCHAR(20) NOT NULL CONSTRAINT pk_schema_migrations PRIMARY KEY,
        name NVARCHAR(200) NOT NULL,
        applied_at DATETIME2(6) NOT NULL
    );
END"""
TSQL_MIGRATIONS_TABLE_ID = "SELECT OBJECT_ID(?, N'U') AS table_id"
TSQL_SCHEMA_TABLES = "SELECT t.name FROM sys.tables AS t WHERE t.schema_id = SCHEMA_ID(?) ORDER BY t.name"
TSQL_SELECT_APPLIED = "SELECT version, applied_at FROM [{schema}].[schema_migrations] ORDER BY version"
TSQL_INSERT_APPLIED = (
    "INSERT INTO [{schema}].[schema_migrations] (version, name, applied_at) VALUES (?, ?, SYSUTCDATETIME())"
)
TSQL_GET_APPLOCK = """\
SET NOCOUNT ON;
DECLARE @result INT;
EXEC @result = sys.sp_getapplock
    @Resource = ?, @LockMode = N'Exclusive', @LockOwner = N'Session', @LockTimeout = ?;
SET NOCOUNT OFF;
SELECT @result AS lock_result;"""
TSQL_RELEASE_APPLOCK = "EXEC sys.sp_releaseapplock @Resource = ?, @LockOwner = N'Session';"
TSQL_XACT_ABORT_ON = "SET XACT_ABORT ON;"
TSQL_XACT_ABORT_OFF = "SET XACT_ABORT OFF;"


def tsql_statements(schema: str = DEFAULT_SCHEMA) -> dict[str, str]:
    """Every T-SQL string the runner executes (besides the files), rendered for *schema*."""
    schema = validate_identifier(schema)
    templates = {
        "ensure_schema": TSQL_ENSURE_SCHEMA,
        "create_migrations_table": TSQL_CREATE_MIGRATIONS_TABLE,
        "migrations_table_id": TSQL_MIGRATIONS_TABLE_ID,
        "schema_tables": TSQL_SCHEMA_TABLES,
        "select_applied": TSQL_SELECT_APPLIED,
        "insert_applied": TSQL_INSERT_APPLIED,
        "get_applock": TSQL_GET_APPLOCK,
        "release_applock": TSQL_RELEASE_APPLOCK,
        "session_options": TSQL_SESSION_SETUP,
        "xact_abort_on": TSQL_XACT_ABORT_ON,
        "xact_abort_off": TSQL_XACT_ABORT_OFF,
    }
    return {key: text.format(schema=schema) for key, text in templates.items()}


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    dialect: str
    text: str

    @property
    def filename(self) -> str:
        return f"{self.version}_{self.name}.sql"


def validate_identifier(name: str, *, key: str = "schema") -> str:
    """Return *name* if it is a plain SQL identifier, else raise ConfigError naming *key*."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ConfigError(
            f"{name!r} is not a valid SQL identifier (letters, digits, _; not starting with a digit; "
            "at most 128 characters)",
            key=key,
        )
    return name


DIALECTS = ("sqlite", "sqlserver", "postgresql")
POSTGRESQL_BASELINE = "-- the baseline: metadata.create_all of holocron_scrapy.db.schema (see engine.py)"


def load_migrations(dialect: str) -> list[Migration]:
    """All migrations of *dialect* ("sqlite", "sqlserver" or "postgresql"), in version order.

    PostgreSQL's are the SQLite versions, each carried out by the baseline (no file of its own)."""
    if dialect not in DIALECTS:
        raise ConfigError(f"unknown SQL dialect {dialect!r}", key="dialect")
    if dialect == "postgresql":
        return [Migration(m.version, m.name, dialect, POSTGRESQL_BASELINE) for m in load_migrations("sqlite")]
    folder = resources.files("holocron_scrapy").joinpath("sql")
    if dialect == "sqlite":
        folder = folder.joinpath("sqlite")
    found: dict[str, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if not (match and entry.is_file()):
            continue
        migration = Migration(match.group(1), match.group(2), dialect, entry.read_text("utf-8"))
        if migration.version in found:
            raise StoreError(
                f"two {dialect} migrations share version {migration.version}: "
                f"{found[migration.version].filename} and {migration.filename}"
            )
        found[migration.version] = migration
    if not found:
        raise StoreError(f"no {dialect} migrations found in the holocron_scrapy package")
    return [found[version] for version in sorted(found)]


# -- splitting scripts -------------------------------------------------------------------
def _scan(text: str, *, nested_comments: bool) -> tuple[list[bool], str]:
    """Lex *text* once: for each line, whether it starts outside strings and comments,
    and the text with comments removed (string literals and identifiers kept).

    Understands ``'...'`` (with ``''``), ``"..."``, ``[...]`` (with ``]]``), ``-- ...`` and
    ``/* ... */`` (nested in T-SQL when *nested_comments*).
    """
    starts: list[bool] = []
    code: list[str] = []
    depth = 0  # block comment nesting
    quote: str | None = None  # closing character of the open string / identifier
    for line in text.splitlines(keepends=True):
        starts.append(depth == 0 and quote is None)
        i, n = 0, len(line)
        while i < n:
            ch, nxt = line[i], line[i + 1 : i + 2]
            if quote:
                code.append(ch)
                if ch == quote:
                    if nxt == quote:
                        code.append(nxt)
                        i += 1
                    else:
                        quote = None
            elif depth:
                if ch == "*" and nxt == "/":
                    depth -= 1
                    i += 1
                elif nested_comments and ch == "/" and nxt == "*":
                    depth += 1
                    i += 1
            elif ch == "-" and nxt == "-":
                code.append("\n" if line.endswith("\n") else "")
                break
            elif ch == "/" and nxt == "*":
                depth = 1
                code.append(" ")
                i += 1
            else:
                if ch in "'\"[":
                    quote = "]" if ch == "[" else ch
                code.append(ch)
            i += 1
    if quote or depth:
        what = "string literal or quoted identifier" if quote else "/* comment"
        raise StoreError(f"unterminated {what} in SQL script")
    return starts, "".join(code)


def strip_comments(text: str, *, nested_comments: bool = True) -> str:
    """*text* without ``--`` and ``/* */`` comments (string literals are left alone)."""
    return _scan(text, nested_comments=nested_comments)[1]


def split_go_batches(text: str) -> list[str]:
    """Split T-SQL on ``GO`` separator lines (any case, optional ``-- comment``), dropping
    empty batches. ``GO`` inside a string literal or block comment does not split;
    ``GO <count>`` (a sqlcmd extension) is rejected."""
    starts, _ = _scan(text, nested_comments=True)
    batches: list[str] = []
    current: list[str] = []
    for line, outside in zip(text.splitlines(), starts, strict=True):
        if outside and _GO.match(line):
            batches.append("\n".join(current))
            current = []
        elif outside and _GO_COUNT.match(line):
            raise StoreError(f"unsupported batch separator {line.strip()!r}: use a plain GO line")
        else:
            current.append(line)
    batches.append("\n".join(current))
    return [batch.strip() for batch in batches if _has_sql(batch, nested_comments=True)]


def split_sqlite_statements(text: str) -> list[str]:
    """Split a SQLite script into complete statements (triggers stay whole)."""
    statements, current = [], ""
    for line in text.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if _has_sql(current, nested_comments=False):
                statements.append(current.strip())
            current = ""
    if _has_sql(current, nested_comments=False):
        raise StoreError(f"incomplete SQLite statement at end of migration: {current.strip()[:80]!r}")
    return statements


def _has_sql(text: str, *, nested_comments: bool) -> bool:
    return bool(strip_comments(text, nested_comments=nested_comments).strip(" \t\r\n;"))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _as_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(value)


def _one_line(exc: BaseException) -> str:
    """One-line message; for pyodbc errors (SQLSTATE, message) the message alone."""
    args = exc.args
    if len(args) >= 2 and isinstance(args[1], str):
        text = args[1]
    else:
        text = " ".join(str(part) for part in args) if args else type(exc).__name__
    return " ".join(text.split())


def _drain(cursor: Any) -> None:
    """Consume every result of a multi-statement batch so that errors raised by later
    statements surface now (pyodbc reports them from ``nextset``)."""
    while cursor.nextset():
        pass


class MigrationRunner:
    """Applies pending migrations in order on one DB-API connection.

    *dialect* is ``"sqlite"``, ``"sqlserver"`` or ``"postgresql"``; for SQL Server the ``[ingest]``
    schema name in the files is replaced by *schema* after it has been validated. For PostgreSQL
    *conn* is a SQLAlchemy engine (or None to list migrations only).
    """

    def __init__(
        self, conn: Any, dialect: str, *, schema: str = DEFAULT_SCHEMA, lock_timeout_ms: int = APPLOCK_TIMEOUT_MS
    ):
        if dialect not in DIALECTS:
            raise ConfigError(f"unknown SQL dialect {dialect!r}", key="dialect")
        validate_identifier(schema)
        if schema.lower() in _RESERVED_SCHEMAS:
            raise ConfigError(f"{schema!r} is a system schema; choose another one", key="schema")
        self.conn = conn
        self.dialect = dialect
        self.schema = schema
        self.lock_timeout_ms = int(lock_timeout_ms)
        self._sql = tsql_statements(schema)

    # -- introspection ---------------------------------------------------------------
    def migrations(self) -> list[Migration]:
        return load_migrations(self.dialect)

    def statements(self, migration: Migration) -> list[str]:
        """The statements (SQLite) or ``GO`` batches (T-SQL, schema substituted) of *migration*."""
        if self.dialect == "sqlite":
            return split_sqlite_statements(migration.text)
        if self.dialect == "postgresql":
            return postgresql_baseline_ddl() if migration.version == self.migrations()[0].version else []
        return split_go_batches(migration.text.replace(SCHEMA_PLACEHOLDER, f"[{self.schema}]"))

    def applied(self) -> dict[str, str]:
        """Map of applied version -> applied_at in UTC ({} before the first run)."""
        if self.dialect == "postgresql":
            return self._applied_postgresql()
        if self.dialect == "sqlite":
            exists = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            if not exists:
                return {}
            rows = self.conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
        else:
            try:
                cur = self.conn.cursor()
                cur.execute(self._sql["migrations_table_id"], f"[{self.schema}].[schema_migrations]")
                if cur.fetchone()[0] is None:
                    return {}
                cur.execute(self._sql["select_applied"])
                rows = cur.fetchall()
            except HolocronError:
                raise
            except Exception as exc:
                raise StoreError(f"cannot read [{self.schema}].[schema_migrations]: {_one_line(exc)}") from exc
        return {str(version): _as_text(at) for version, at in rows}

    def pending(self) -> list[Migration]:
        done = self.applied()
        return [m for m in self.migrations() if m.version not in done]

    # -- applying --------------------------------------------------------------------
    def apply(self, *, dry_run: bool = False, echo: Callable[[str], None] | None = None) -> list[Migration]:
        """Apply every pending migration; with *dry_run* only report (and echo) them."""
        if dry_run:
            todo = self.pending()
            for migration in todo:
                if echo:
                    echo(f"-- {migration.filename}")
                    for statement in self.statements(migration):
                        echo(statement + ("\nGO" if self.dialect == "sqlserver" else ";"))
            return todo
        if self.dialect == "sqlite":
            return self._apply_sqlite(echo)
        if self.dialect == "postgresql":
            return self._apply_postgresql(echo)
        return self._apply_sqlserver(echo)

    def _applied_postgresql(self) -> dict[str, str]:
        import sqlalchemy as sa

        from holocron_scrapy.db.schema import schema_migrations

        try:
            with self.conn.connect() as conn:
                if not sa.inspect(conn).has_table(schema_migrations.name):
                    return {}
                rows = conn.execute(sa.select(schema_migrations.c.version, schema_migrations.c.applied_at)).all()
        except sa.exc.DBAPIError as exc:
            where = self.conn.url.render_as_string(hide_password=True)
            raise StoreError(f"cannot read schema_migrations of {where}: {_one_line(exc.orig or exc)}") from None
        return {str(version): _as_text(at) for version, at in rows}

    def _apply_postgresql(self, echo: Callable[[str], None] | None) -> list[Migration]:
        from holocron_scrapy.db.engine import ensure_postgresql_schema

        recorded = ensure_postgresql_schema(self.conn)  # pending ones are read again under the lock
        done = [m for m in self.migrations() if m.version in recorded]
        if echo:
            for migration in done:
                echo(f"applying {migration.filename} (baseline)")
        return done

    def _apply_sqlite(self, echo: Callable[[str], None] | None) -> list[Migration]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")  # serialise concurrent starters
        try:
            self._refuse_foreign_sqlite()
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version TEXT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            todo = self.pending()
            for migration in todo:
                if echo:
                    echo(f"applying {migration.filename}")
                for statement in self.statements(migration):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _now()),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return todo

    def _refuse_foreign_sqlite(self) -> None:
        """Never add tables to a SQLite database that holds tables but no schema_migrations."""
        tables = sorted(
            row[0]
            for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        )
        if tables and "schema_migrations" not in tables:
            path = next((row[2] for row in self.conn.execute("PRAGMA database_list") if row[1] == "main"), "")
            raise StoreError(
                f"{path or 'the SQLite database'} is not a holocron_scrapy database (it has tables "
                f"{', '.join(tables[:5])} but no schema_migrations); refusing to modify it"
            )

    def _refuse_foreign_schema(self, cur: Any) -> None:
        """Never build on a SQL Server schema that holds tables holocron_scrapy did not create."""
        cur.execute(self._sql["schema_tables"], self.schema)
        tables = [row[0] for row in cur.fetchall()]
        if tables and "schema_migrations" not in tables:
            raise StoreError(
                f"schema [{self.schema}] already holds tables not created by holocron_scrapy "
                f"({', '.join(tables[:5])}) and no schema_migrations; refusing to modify it: "
                "choose another schema (INGEST_SQLSERVER_SCHEMA or the YAML schema key)"
            )

    def _apply_sqlserver(self, echo: Callable[[str], None] | None) -> list[Migration]:
        sql = self._sql
        resource = f"holocron_scrapy.migrations.{self.schema}"
        cur = self.conn.cursor()
        try:
            self._execute(cur, sql["session_options"])  # filtered indexes need them, whoever opened conn
            self._execute(cur, sql["xact_abort_on"])
            cur.execute(sql["get_applock"], resource, self.lock_timeout_ms)
            result = cur.fetchone()[0]
            _drain(cur)
        except Exception as exc:
            raise StoreError(f"cannot start migrating schema [{self.schema}]: {_one_line(exc)}") from exc
        if result is None or result < 0:
            self._rollback()
            self._execute(cur, sql["xact_abort_off"])
            raise StoreError(
                f"another process is migrating schema [{self.schema}] (application lock {resource!r} "
                f"not granted within {self.lock_timeout_ms / 1000:g}s, code {result})"
            )
        try:
            self._refuse_foreign_schema(cur)
            self._execute(cur, sql["ensure_schema"], self.schema)
            self._execute(cur, sql["create_migrations_table"])
            self.conn.commit()
            todo = self.pending()  # read again under the lock
            for migration in todo:
                if echo:
                    echo(f"applying {migration.filename}")
                self._apply_one(cur, migration)
            return todo
        except HolocronError:
            raise
        except Exception as exc:
            self._rollback()
            raise StoreError(f"cannot migrate schema [{self.schema}]: {_one_line(exc)}") from exc
        finally:
            try:
                self._execute(cur, sql["release_applock"], resource)
                self._execute(cur, sql["xact_abort_off"])
                self.conn.commit()
            except Exception as exc:  # the session lock dies with the connection anyway
                logger.warning("could not release migration lock %s: %s", resource, _one_line(exc), exc_info=True)

    def _apply_one(self, cur: Any, migration: Migration) -> None:
        batches = self.statements(migration)
        for number, batch in enumerate(batches, 1):
            try:
                self._execute(cur, batch)
            except Exception as exc:
                self._rollback()
                first = next((line.strip() for line in strip_comments(batch).splitlines() if line.strip()), "")
                raise StoreError(
                    f"migration {migration.filename} failed in batch {number}/{len(batches)} "
                    f"({first[:80]!r}); it was rolled back: {_one_line(exc)}"
                ) from exc
        self._execute(cur, self._sql["insert_applied"], migration.version, migration.name)
        self.conn.commit()

    @staticmethod
    def _execute(cur: Any, statement: str, *params: Any) -> None:
        cur.execute(statement, *params)
        _drain(cur)

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception as exc:
            logger.warning("rollback failed: %s", _one_line(exc), exc_info=True)


def postgresql_baseline_ddl() -> list[str]:
    """The PostgreSQL DDL of the baseline (tables and indexes of :data:`holocron_scrapy.db.schema.metadata`)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    from holocron_scrapy.db.schema import metadata

    dialect = postgresql.dialect()
    statements = []
    for table in metadata.sorted_tables:
        statements.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip())
        statements += [str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip() for index in table.indexes]
    return statements
