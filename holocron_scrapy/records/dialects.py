"""The record store's statements that differ per SQL dialect, and nothing else.

Insert-if-new is ``INSERT ... ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL
(:func:`dialect_insert`); SQL Server has no ``ON CONFLICT``, so it gets an ``INSERT ... SELECT
... WHERE NOT EXISTS`` under a key-range lock (:func:`mssql_insert_if_new`) and an
``UPDATE``-then-``INSERT`` upsert (:func:`mssql_upsert`). Everything else the store runs is one
SQLAlchemy Core statement for all three dialects (:mod:`holocron_scrapy.records.store`).

Settings read: none. Stats written: none.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from holocron_scrapy.db import schema
from holocron_scrapy.db.engine import POSTGRESQL, SQLITE
from holocron_scrapy.errors import StoreError
from holocron_scrapy.records.rows import RECORD_COLUMNS


def dbapi_cursor(conn: sa.Connection) -> Any:
    """A cursor of the DB-API connection under *conn* (the SQLite fast paths run compiled SQL on it)."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None, "a Connection in use holds its DB-API connection"
    return dbapi.cursor()


def dialect_insert(dialect: str) -> Any:
    """The ``insert`` with ``ON CONFLICT`` of *dialect* (SQLite and PostgreSQL spell it alike)."""
    if dialect == POSTGRESQL:
        return postgresql.insert
    if dialect == SQLITE:
        return sqlite.insert
    raise StoreError(f"the record store supports sqlite, postgresql and mssql engines, not {dialect!r}")


#: SQL Server's tables: the records table is ``IngestRecords``; the engine maps the schema
#: (``schema_translate_map``, :func:`holocron_scrapy.db.engine.sqlserver_engine`).
MSSQL_TABLES = schema.build_metadata(names=schema.SQLSERVER_TABLE_NAMES).tables


def mssql_insert_if_new(records: sa.Table) -> sa.Insert:
    """SQL Server's insert-if-new of one row (parameters named after ``RECORD_COLUMNS``): skipped when the
    resource has a record with that hash; the key-range lock makes a racing worker wait, then skip."""
    values = sa.select(*(sa.bindparam(c, type_=records.c[c].type) for c in RECORD_COLUMNS))
    known: sa.Select[Any] = (
        sa.select(sa.literal_column("1"))
        .select_from(records)
        .where(*(col == sa.bindparam(col.name, type_=col.type) for col in resource_key(records)))
        .where(records.c.hash_sha256 == sa.bindparam("hash_sha256", type_=records.c.hash_sha256.type))
        .with_hint(records, "WITH (UPDLOCK, HOLDLOCK)", "mssql")
    )
    insert = sa.insert(records).from_select(list(RECORD_COLUMNS), values.where(~known.exists()))
    return insert.returning(records.c.ingest_id)


def mssql_upsert(table: sa.Table, key: str, updates: tuple[str, ...]) -> tuple[sa.Update, sa.Insert]:
    """SQL Server's upsert of one row: ``UPDATE ... WITH (UPDLOCK, SERIALIZABLE)`` (parameters ``b_<column>``),
    then, when it changed no row, the ``INSERT`` (parameters named after the columns). The range lock
    makes a second upserter of the same key wait for the first, so the INSERT never races."""
    update = (
        sa.update(table)
        .where(table.c[key] == sa.bindparam(f"b_{key}", type_=table.c[key].type))
        .values({c: sa.bindparam(f"b_{c}", type_=table.c[c].type) for c in updates})
        .with_hint("WITH (UPDLOCK, SERIALIZABLE)", dialect_name="mssql")
    )
    return update, sa.insert(table)


def run_mssql_upsert(conn: sa.Connection, statements: tuple[sa.Update, sa.Insert], rows: list[dict[str, Any]]) -> None:
    update, insert = statements
    for row in rows:
        if conn.execute(update, {f"b_{k}": v for k, v in row.items()}).rowcount == 0:
            conn.execute(insert, row)


def resource_key(table: sa.Table) -> tuple[sa.Column[Any], ...]:
    return (table.c.source_system, table.c.source_name, table.c.resource_type, table.c.resource_id)
