"""The smoke test of ``scrapy db smoketest``: the schema is complete, and a work item makes a round trip.

:func:`verify_schema` checks that every migration is applied and every table exists;
:func:`round_trip` (SQLite and SQL Server, on the DB-API connection) and :func:`round_trip_engine`
(PostgreSQL, on the SQLAlchemy engine) insert, read and update a work item of the
``holocron_smoketest`` source, check that the unique dedupe key refuses a twin, and delete their own
rows, also when a step fails. Each step is reported through *step* (``print`` for the command).

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import sqlite3
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from holocron_scrapy.db import connection
from holocron_scrapy.db.migrations import MigrationRunner
from holocron_scrapy.errors import StoreError

SMOKETEST_SOURCE = "holocron_smoketest"
TABLES = {
    connection.SQLITE: ("work_items", "ingest_records", "ingest_runs", "seen_resources", "schema_migrations"),
    connection.SQLSERVER: ("work_items", "IngestRecords", "ingest_runs", "seen_resources", "schema_migrations"),
    connection.POSTGRESQL: ("work_items", "ingest_records", "ingest_runs", "seen_resources", "schema_migrations"),
}


def db_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error]
    pyodbc = sys.modules.get("pyodbc")
    if pyodbc is not None:
        errors.append(pyodbc.Error)
    sqlalchemy = sys.modules.get("sqlalchemy")
    if sqlalchemy is not None:
        errors.append(sqlalchemy.exc.SQLAlchemyError)
    return tuple(errors)


def error_text(exc: BaseException) -> str:
    """The driver's message of a SQLAlchemy error (without the statement and the link), else str(exc)."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc)


def mark(good: bool = True) -> str:
    symbol = "✓" if good else "✗"
    try:
        symbol.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "OK" if good else "FAILED"
    return symbol


def verify_schema(conn: Any, runner: MigrationRunner, dialect: str) -> str:
    """Check that every migration is applied and every table exists; return work_items' name."""
    pending = runner.pending()
    if pending:
        names = ", ".join(m.filename for m in pending)
        raise StoreError(f"pending migrations ({names}): run `scrapy db init` first")
    print(f"  - migrations applied: {', '.join(sorted(runner.applied()))}")
    if dialect == connection.SQLITE:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        table = "work_items"
    elif dialect == connection.POSTGRESQL:
        import sqlalchemy as sa

        with conn.connect() as live:
            rows = [(name,) for name in sa.inspect(live).get_table_names()]
        table = "work_items"
    else:
        from holocron_scrapy.db import sqlserver

        cursor = conn.cursor()
        cursor.execute(sqlserver.TSQL_LIST_TABLES, runner.schema)
        rows = cursor.fetchall()
        table = f"[{runner.schema}].[work_items]"
    found = {row[0] for row in rows}
    missing = [name for name in TABLES[dialect] if name not in found]
    if missing:
        raise StoreError(f"missing tables: {', '.join(missing)}")
    print(f"  - tables: {', '.join(TABLES[dialect])}")
    return table


def round_trip(conn: Any, dialect: str, table: str, *, step: Callable[[str], None]) -> None:
    """Insert, read, update a work item; check the dedupe key rejects a twin; delete own rows."""
    from holocron_scrapy.db import sqlserver
    from holocron_scrapy.db.sqlserver_errors import is_duplicate_key

    sql = {
        "insert": sqlserver.SMOKETEST_INSERT.format(table=table),
        "select": sqlserver.SMOKETEST_SELECT.format(table=table),
        "update": sqlserver.SMOKETEST_UPDATE.format(table=table),
        "delete": sqlserver.SMOKETEST_DELETE.format(table=table),
    }
    now: Any = datetime.now(UTC).replace(tzinfo=None)
    if dialect == connection.SQLITE:
        now = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    dedupe_key = f"{SMOKETEST_SOURCE}:smoketest:page:{first}"

    def run(statement: str, *params: Any) -> Any:
        cursor = conn.cursor()
        cursor.execute(statement, params)
        return cursor

    def row(work_item_id: str) -> tuple[Any, ...]:
        return (
            work_item_id,
            SMOKETEST_SOURCE,
            "smoketest",
            "page",
            work_item_id,
            f"https://example.invalid/{work_item_id}",
            now,
            now,
            dedupe_key,
        )

    ok = mark()
    try:
        step("Test 3: Testing write/read operations...")
        run(sql["insert"], *row(first))
        conn.commit()
        step(f"  - Inserted work item: {first}")
        found = run(sql["select"], first).fetchone()
        if not found or found[0] != first or found[1] != "pending":
            raise StoreError(f"smoke test row {first} could not be read back (got {found!r})")
        step("  - Retrieved work item successfully")
        run(sql["update"], now, now, first)
        conn.commit()
        found = run(sql["select"], first).fetchone()
        if not found or found[1] != "completed":
            raise StoreError(f"smoke test row {first} was not updated (got {found!r})")
        step("  - Updated status to completed")
        step(f"{ok} Write/read operations successful")
        step("Test 4: Testing deduplication...")
        try:
            run(sql["insert"], *row(second))
            conn.commit()
        except Exception as exc:
            conn.rollback()
            if not is_duplicate_key(exc):
                raise
            step("  - Second insert with the same dedupe_key correctly rejected (dedupe working)")
        else:
            raise StoreError("a second work item with the same dedupe_key was accepted: the unique index is missing")
        step(f"{ok} Deduplication working correctly")
    finally:
        try:
            for work_item_id in (first, second):
                run(sql["delete"], work_item_id, SMOKETEST_SOURCE)
            conn.commit()
            step("  - Removed the smoke-test row")
        except db_errors() as exc:  # do not hide the error that brought us here
            step(f"  - Could not remove the smoke-test row {first}: {' '.join(str(exc).split())}")


def round_trip_engine(engine: Any, *, step: Callable[[str], None]) -> None:
    """The round trip of :func:`round_trip` on a SQLAlchemy engine (PostgreSQL), through the one
    schema definition: insert, read, update, a rejected twin of the dedupe key, own rows deleted."""
    import sqlalchemy as sa

    from holocron_scrapy.db.schema import work_items

    now = datetime.now(UTC)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    dedupe_key = f"{SMOKETEST_SOURCE}:smoketest:page:{first}"

    def row(work_item_id: str) -> dict[str, Any]:
        return {
            "work_item_id": work_item_id,
            "source_system": SMOKETEST_SOURCE,
            "source_name": "smoketest",
            "resource_type": "page",
            "resource_id": work_item_id,
            "request_uri": f"https://example.invalid/{work_item_id}",
            "request_method": "GET",
            "priority": 0,
            "status": "pending",
            "attempt": 0,
            "created_at": now,
            "updated_at": now,
            "dedupe_key": dedupe_key,
        }

    def read() -> Any:
        with engine.connect() as conn:
            query = sa.select(work_items.c.work_item_id, work_items.c.status, work_items.c.dedupe_key)
            return conn.execute(query.where(work_items.c.work_item_id == first)).first()

    ok = mark()
    try:
        step("Test 3: Testing write/read operations...")
        with engine.begin() as conn:
            conn.execute(work_items.insert(), [row(first)])
        step(f"  - Inserted work item: {first}")
        found = read()
        if not found or found[0] != first or found[1] != "pending":
            raise StoreError(f"smoke test row {first} could not be read back (got {found!r})")
        step("  - Retrieved work item successfully")
        with engine.begin() as conn:
            conn.execute(
                work_items.update()
                .where(work_items.c.work_item_id == first)
                .values(status="completed", completed_at=now, updated_at=now)
            )
        found = read()
        if not found or found[1] != "completed":
            raise StoreError(f"smoke test row {first} was not updated (got {found!r})")
        step("  - Updated status to completed")
        step(f"{ok} Write/read operations successful")
        step("Test 4: Testing deduplication...")
        try:
            with engine.begin() as conn:
                conn.execute(work_items.insert(), [row(second)])
        except sa.exc.IntegrityError:
            step("  - Second insert with the same dedupe_key correctly rejected (dedupe working)")
        else:
            raise StoreError("a second work item with the same dedupe_key was accepted: the unique index is missing")
        step(f"{ok} Deduplication working correctly")
    finally:
        try:
            with engine.begin() as conn:
                conn.execute(
                    work_items.delete().where(
                        work_items.c.work_item_id.in_([first, second]), work_items.c.source_system == SMOKETEST_SOURCE
                    )
                )
            step("  - Removed the smoke-test row")
        except sa.exc.SQLAlchemyError as exc:  # do not hide the error that brought us here
            step(f"  - Could not remove the smoke-test row {first}: {' '.join(error_text(exc).split())}")
