"""``scrapy db init|status|smoketest``: create, inspect and test the SQL store.

The store URL is ``--url``, else the one a crawl would use (:mod:`holocron_scrapy.db.targets`):
``HOLOCRON_RECORDS_URL`` then ``storage.records_url`` of the config chosen by ``HOLOCRON_CONFIG``;
with ``--store state``, of ``HOLOCRON_STATE_URL``, the config's ``state.url`` and ``JOBDIR``'s
frontier file the one set at the highest priority, then the default. ``sqlite:///PATH``,
``postgresql://USER@HOST:PORT/DATABASE`` (password from ``PGPASSWORD`` or ``~/.pgpass``) and
``mssql+pyodbc://`` / ``sqlserver://`` work; SQL Server settings come from the YAML
``storage.sql_server`` / ``state.sqlserver`` section and the ``INGEST_SQLSERVER_*`` environment
variables (see docs/sqlserver.md). Errors print one line on stderr (secrets masked) and exit with
status 1.

Settings read: ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_STATE_URL``, ``HOLOCRON_RECORDS_SQLSERVER``,
``HOLOCRON_STATE_SQLSERVER``, ``HOLOCRON_CONFIG``, ``JOBDIR``. Stats written: none.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from holocron_scrapy.db import connection
from holocron_scrapy.db.migrations import MigrationRunner
from holocron_scrapy.db.smoketest import db_errors, error_text, mark, round_trip, round_trip_engine, verify_schema
from holocron_scrapy.db.targets import load_command_config, resolve_store_target
from holocron_scrapy.errors import HolocronError, StoreError

ACTIONS = ("init", "status", "smoketest")
RULE = "=" * 60
KINDS = {connection.SQLITE: "SQLite", connection.POSTGRESQL: "PostgreSQL", connection.SQLSERVER: "SQL Server"}


@dataclass
class Target:
    """The store a command works on."""

    url: connection.StoreURL
    sqlserver_config: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return self.url.dialect


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings = {"LOG_LEVEL": "WARNING"}

    def syntax(self) -> str:
        return "init|status|smoketest [--url URL] [--store records|state] [--dry-run] [--wait-timeout S]"

    def short_desc(self) -> str:
        return "Create (init), inspect (status) or test (smoketest) the SQL store"

    def long_desc(self) -> str:
        return (
            "init applies pending schema migrations in order (--dry-run prints them); status lists "
            "applied and pending migrations; smoketest checks connection, tables, a write/read round "
            "trip and dedupe rejection, then deletes its own test row. Works on sqlite:///PATH, "
            "postgresql://USER@HOST:PORT/DATABASE (password from PGPASSWORD or ~/.pgpass) and "
            "mssql+pyodbc:// or sqlserver:// URLs (INGEST_SQLSERVER_* environment variables)."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        group = parser.add_argument_group(title="Database options")
        group.add_argument(
            "--url",
            metavar="URL",
            help="store URL: sqlite:///PATH, postgresql://USER@HOST:PORT/DB, mssql+pyodbc://... "
            "(default: the crawl's, from the settings and the config)",
        )
        group.add_argument(
            "--store",
            choices=("records", "state"),
            default="records",
            help="which configured store to use when --url is not given (default: records)",
        )
        group.add_argument("--dry-run", action="store_true", help="init: print pending migrations, apply nothing")
        group.add_argument(
            "--wait-timeout",
            type=float,
            default=0.0,
            metavar="S",
            help="keep retrying a server that is not up yet for S seconds (SQL Server)",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1 or args[0] not in ACTIONS:
            raise UsageError(f"expected one action: {', '.join(ACTIONS)}", print_help=False)
        action = args[0]
        if opts.dry_run and action != "init":
            raise UsageError("--dry-run only applies to `db init`", print_help=False)
        if opts.wait_timeout < 0:
            raise UsageError("--wait-timeout must be >= 0", print_help=False)
        try:
            target = self.target(opts)
            if target.dialect == connection.SQLSERVER and opts.wait_timeout > 0:
                print(f"(retrying connection errors for up to {opts.wait_timeout:g}s)")
            getattr(self, f"do_{action}")(target, opts)
        except _command_errors() as exc:
            self.fail(error_text(exc))

    # -- helpers -----------------------------------------------------------------------
    def fail(self, message: str) -> None:
        from holocron_scrapy.secrets import mask_text

        print(f"Error: {mask_text(' '.join(message.split()))}", file=sys.stderr)
        self.exitcode = 1

    def target(self, opts: argparse.Namespace) -> Target:
        assert self.settings is not None
        found = resolve_store_target(opts.store, self.settings, url=opts.url, config=self._config)
        return Target(found.parsed(), found.sqlserver_config)

    def _config(self) -> Any:
        assert self.settings is not None
        return load_command_config(self.settings)

    @contextmanager
    def open(self, target: Target, opts: argparse.Namespace, *, write: bool) -> Iterator[tuple[Any, MigrationRunner]]:
        """A connection and a migration runner; SQLite files are opened read-only unless *write*.
        For PostgreSQL the "connection" is a SQLAlchemy engine (the runner writes only in ``apply``)."""
        if target.dialect == connection.POSTGRESQL:
            from holocron_scrapy.db.engine import postgresql_engine

            engine = postgresql_engine(str(target.url.url))
            try:
                yield engine, MigrationRunner(engine, connection.POSTGRESQL)
            finally:
                engine.dispose()
            return
        if target.dialect == connection.SQLITE:
            conn = _open_sqlite(target.url.path or ":memory:", write=write)
            try:
                yield conn, MigrationRunner(conn, connection.SQLITE)
            finally:
                conn.close()
            return
        from holocron_scrapy.db import sqlserver

        settings = sqlserver.SqlServerSettings.resolve(target.sqlserver_config, conn_str=target.url.odbc_connect)
        conn = sqlserver.connect(settings, wait_timeout=opts.wait_timeout)
        try:
            yield conn, MigrationRunner(conn, connection.SQLSERVER, schema=settings.schema)
        finally:
            conn.close()

    def describe(self, target: Target) -> str:
        if target.dialect in (connection.SQLITE, connection.POSTGRESQL):
            return target.url.describe()
        from holocron_scrapy.db import sqlserver

        return sqlserver.SqlServerSettings.resolve(target.sqlserver_config, conn_str=target.url.odbc_connect).masked()

    # -- init --------------------------------------------------------------------------
    def do_init(self, target: Target, opts: argparse.Namespace) -> None:
        print(f"Database: {self.describe(target)}")
        if target.dialect == connection.SQLSERVER and not self._sqlserver_database(target, opts):
            return
        if target.dialect == connection.POSTGRESQL and not self._postgresql_database(target, opts):
            return
        if target.dialect == connection.SQLITE and opts.dry_run and not _sqlite_exists(target):
            print(f"(the SQLite file does not exist yet: init will create {target.url.path})")
        with self.open(target, opts, write=not opts.dry_run) as (_conn, runner):
            if opts.dry_run:
                todo = runner.apply(dry_run=True, echo=print)
                names = ", ".join(m.filename for m in todo) or "none"
                print(f"Dry run: {len(todo)} pending migration(s) would be applied: {names}")
                return
            todo = runner.apply(echo=lambda line: print(f"  {line}"))
            total = len(runner.applied())
        if todo:
            print(f"{mark()} Applied {len(todo)} migration(s); {total} applied in total")
        else:
            print(f"{mark()} Nothing to do: the schema is up to date ({total} migration(s) applied)")

    def _postgresql_database(self, target: Target, opts: argparse.Namespace) -> bool:
        """Create the database if needed (through ``postgres``); False when a dry run found it missing."""
        from holocron_scrapy.db.engine import ensure_postgresql_database

        url = str(target.url.url)
        existed = ensure_postgresql_database(url, create=not opts.dry_run)
        if existed is False and opts.dry_run:
            _print_missing_database_plan(MigrationRunner(None, connection.POSTGRESQL), sa_database(url), ";")
            return False
        if existed is False:
            print(f"  created database {sa_database(url)}")
        return True

    def _sqlserver_database(self, target: Target, opts: argparse.Namespace) -> bool:
        """Create the database if needed; False when a dry run found it missing."""
        from holocron_scrapy.db import sqlserver

        settings = sqlserver.SqlServerSettings.resolve(target.sqlserver_config, conn_str=target.url.odbc_connect)
        try:
            existed = sqlserver.ensure_database(settings, wait_timeout=opts.wait_timeout, create=not opts.dry_run)
        except StoreError as exc:
            if "login failed" not in str(exc).lower():
                raise
            # e.g. a contained database user who may not log in to master: use the database directly
            print(f"  (could not check database {settings.database} through master; connecting to it directly)")
            existed = None
        if existed is False and opts.dry_run:
            runner = MigrationRunner(None, connection.SQLSERVER, schema=settings.schema)
            _print_missing_database_plan(runner, settings.database, "\nGO")
            return False
        if existed is False:
            print(f"  created database {settings.database}")
        return True

    # -- status ------------------------------------------------------------------------
    def do_status(self, target: Target, opts: argparse.Namespace) -> None:
        print(f"Database: {self.describe(target)}")
        if target.dialect == connection.SQLITE and not _sqlite_exists(target):
            runner = MigrationRunner(None, connection.SQLITE)
            print("The SQLite file does not exist yet (run `scrapy db init`).")
            _print_status({}, runner.migrations())
            return
        with self.open(target, opts, write=False) as (_conn, runner):
            applied = runner.applied()
            _print_status(applied, runner.migrations())

    # -- smoketest ---------------------------------------------------------------------
    def do_smoketest(self, target: Target, opts: argparse.Namespace) -> None:
        ok = mark()
        _print_info(self, target)
        if target.dialect == connection.SQLITE and not _sqlite_exists(target):
            raise StoreError(f"no SQLite database at {target.url.path}: run `scrapy db init` first")
        print("Test 1: Establishing connection...")
        with self.open(target, opts, write=True) as (conn, runner):
            print(f"{ok} Connection established successfully{_server_info(conn, target)}")
            print("Test 2: Verifying schema and tables...")
            table = verify_schema(conn, runner, target.dialect)
            print(f"{ok} Schema and tables verified")
            if target.dialect == connection.POSTGRESQL:
                round_trip_engine(conn, step=print)
            else:
                round_trip(conn, target.dialect, table, step=print)
        print(RULE)
        print(f"{ok} All smoke tests passed!")
        print(f"  The {KINDS[target.dialect]} store is ready for use.")


# -- module helpers ------------------------------------------------------------------------
def _command_errors() -> tuple[type[BaseException], ...]:
    """What a command reports in one line: ours and the drivers' (looked up when an error is being
    matched, so a driver the command imported on its way is included)."""
    return (HolocronError, *db_errors())






def sa_database(url: str) -> str:
    import sqlalchemy as sa

    return str(sa.engine.make_url(url).database)




def _sqlite_exists(target: Target) -> bool:
    path = target.url.path or ":memory:"
    return path == ":memory:" or Path(path).is_file()


def _open_sqlite(path: str, *, write: bool) -> sqlite3.Connection:
    """Check ownership through a read-only connection first, so a foreign file stays untouched."""
    if path != ":memory:" and Path(path).is_file():
        try:
            probe = sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {path}: {exc}") from exc
        try:
            connection.ensure_sqlite_owned(probe, path)
        finally:
            probe.close()
        if not write:
            return sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True)
    elif not write:
        return sqlite3.connect(":memory:")  # nothing applied yet; do not create the file
    return connection.connect_sqlite(path)


def _print_status(applied: dict[str, str], migrations: list[Any]) -> None:
    known = {m.version for m in migrations}
    print("Applied migrations:" if applied else "Applied migrations: none")
    for migration in migrations:
        if migration.version in applied:
            print(f"  {migration.filename}  applied {applied[migration.version]} UTC")
    for version in sorted(set(applied) - known):
        print(f"  {version} (unknown to this code: applied {applied[version]} UTC by a newer version?)")
    pending = [m for m in migrations if m.version not in applied]
    print("Pending migrations:" if pending else "Pending migrations: none (the schema is up to date)")
    for migration in pending:
        print(f"  {migration.filename}")


def _print_info(command: Command, target: Target) -> None:
    print(RULE)
    if target.dialect == connection.SQLITE:
        print("SQLite Database Info")
        print(RULE)
        print(f"  Path:     {target.url.path}")
    elif target.dialect == connection.POSTGRESQL:
        import sqlalchemy as sa

        url = sa.engine.make_url(str(target.url.url))
        print("PostgreSQL Connection Info")
        print(RULE)
        facts = {"Host": url.host, "Port": url.port or 5432, "Database": url.database, "Username": url.username}
        facts["Password"] = (
            "***" if os.environ.get(connection.PG_PASSWORD_ENV) else "(PGPASSWORD unset: ~/.pgpass or none)"
        )
        for key, value in facts.items():
            print(f"  {key + ':':<9} {value}")
    else:
        from holocron_scrapy.db import sqlserver

        settings = sqlserver.SqlServerSettings.resolve(target.sqlserver_config, conn_str=target.url.odbc_connect)
        print("SQL Server Connection Info")
        print(RULE)
        for key, value in settings.describe().items():
            print(f"  {key + ':':<9} {value}")
    print(RULE)


def _server_info(conn: Any, target: Target) -> str:
    if target.dialect == connection.SQLITE:
        return f" (SQLite {sqlite3.sqlite_version})"
    if target.dialect == connection.POSTGRESQL:
        import sqlalchemy as sa

        with conn.connect() as live:
            version, database, login = live.execute(
                sa.text("SELECT current_setting('server_version'), current_database(), current_user")
            ).one()
        return f" (PostgreSQL {version}, database {database}, login {login})"
    from holocron_scrapy.db import sqlserver

    cursor = conn.cursor()
    cursor.execute(sqlserver.TSQL_SERVER_INFO)
    version, database, login = cursor.fetchone()
    cursor.close()
    return f" (SQL Server {version}, database {database}, login {login})"


def _print_missing_database_plan(runner: MigrationRunner, database: str, terminator: str) -> None:
    """Dry run of ``init`` on a database that does not exist: every migration it would apply."""
    print(f"-- database {database} does not exist: init would create it")
    todo = runner.migrations()
    for migration in todo:
        print(f"-- {migration.filename}")
        for statement in runner.statements(migration):
            print(f"{statement}{terminator}")
    names = ", ".join(m.filename for m in todo)
    print(f"Dry run: {len(todo)} pending migration(s) would be applied: {names}")
