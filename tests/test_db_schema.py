"""The drift test: every backend ends up with the schema of holocron_scrapy/db/schema.py.

(a) SQLite: a file made by the product (``open_store``, which applies sql/sqlite/*.sql) is reflected
    and compared with the definition: tables, columns in order, types by SQLite affinity,
    nullability, defaults, primary keys, unique constraints, indexes (columns, DESC, uniqueness,
    partial predicate), CHECKs and the payload trigger. ``metadata.create_all`` on SQLite gives the same.
(b) PostgreSQL: ``metadata.create_all`` on a fresh database of the live server, reflected and
    compared the same way (exact types, named CHECKs).
(c) SQL Server: every CREATE TABLE / CREATE INDEX compiled for the mssql dialect parses with
    sqlfluff (tsql), and its tables, columns (order, type, nullability, default), keys, CHECK names and
    indexes (columns, DESC, uniqueness, clustering, INCLUDE, filter) equal those that sql/0002..000N.sql
    end up with.

Each difference is reported with its table and column or index.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlglot
from sqlalchemy.dialects import mssql, postgresql, sqlite
from sqlglot import exp

from holocron_scrapy.db import connection, schema
from holocron_scrapy.db.migrations import split_go_batches, strip_comments
from tests.support.tsql import unparsable_statements

ROOT = Path(__file__).resolve().parents[1]
TSQL_FILES = sorted((ROOT / "sql").glob("[0-9][0-9][0-9][0-9]_*.sql"))
DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect(), "mssql": mssql.dialect()}


# -- one comparable shape per table -----------------------------------------------------------------
@dataclass
class Shape:
    columns: list[tuple[str, str, bool, str | None]] = field(default_factory=list)  # name, type, nullable, default
    primary_key: tuple[str, ...] = ()
    uniques: set[tuple[str, ...]] = field(default_factory=set)
    indexes: dict[str, tuple[tuple[str, ...], bool, str | None]] = field(default_factory=dict)  # cols, unique, where
    checks: set[str] = field(default_factory=set)


def sqlite_affinity(declared: str) -> str:
    """SQLite's type affinity rules (https://sqlite.org/datatype3.html, 3.1)."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if not upper or "BLOB" in upper:
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


_PG_SYNONYMS = {"FLOAT": "DOUBLE PRECISION"}


def type_key(type_: sa.types.TypeEngine[Any], dialect: str) -> str:
    compiled = sa.types.to_instance(type_).compile(dialect=DIALECTS[dialect])
    if dialect == "sqlite":
        return sqlite_affinity(compiled)
    if dialect == "postgresql":
        return _PG_SYNONYMS.get(compiled, compiled)
    return tsql_type(compiled)


def tsql_type(declared: str) -> str:
    """A T-SQL type in sqlglot's canonical spelling (INTEGER -> INT, NVARCHAR(max) -> NVARCHAR(MAX))."""
    return exp.DataType.build(declared, dialect="tsql").sql("tsql")


def norm_sql(text: Any) -> str | None:
    """A default or predicate without casts, parentheses, quotes' N prefix, spaces or case."""
    if text is None:
        return None
    text = text.text if isinstance(text, sa.TextClause) else str(text)
    text = re.sub(r"::[a-z ]+(\[\])?", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\bN'", "'", text)
    return re.sub(r"[\s()]", "", text).lower()


def norm_default(column: sa.Column[Any]) -> str | None:
    default = column.server_default
    if not isinstance(default, sa.DefaultClause):  # None, or the Identity of work_items.seq
        return None
    arg = default.arg
    return norm_sql(arg if isinstance(arg, sa.TextClause) else f"'{arg}'")


def _applies(item: Any, dialect: str) -> bool:
    condition = getattr(item, "_ddl_if", None)
    return condition is None or condition.dialect in (None, dialect)


def _index_columns(index: sa.Index) -> tuple[str, ...]:
    names = []
    for expression in index.expressions:
        if isinstance(expression, sa.UnaryExpression):  # column DESC
            names.append(f"{expression.element.name} DESC")
        else:
            names.append(expression.name)
    return tuple(names)


def expected(dialect: str) -> dict[str, Shape]:
    """The definition's shape of every table for *dialect*."""
    shapes = {}
    for table in schema.metadata_for(dialect).sorted_tables:
        shape = Shape()
        for column in table.columns:
            shape.columns.append((column.name, type_key(column.type, dialect), column.nullable, norm_default(column)))
        shape.primary_key = tuple(c.name for c in table.primary_key.columns)
        for constraint in table.constraints:
            if isinstance(constraint, sa.UniqueConstraint):
                shape.uniques.add(tuple(c.name for c in constraint.columns))
            if isinstance(constraint, sa.CheckConstraint) and _applies(constraint, dialect):
                shape.checks.add(constraint.name if dialect != "sqlite" else norm_sql(constraint.sqltext))
        for index in table.indexes:
            where = index.dialect_options[dialect]["where"] if dialect != "mssql" else None
            shape.indexes[index.name] = (_index_columns(index), bool(index.unique), norm_sql(where))
        shapes[table.name] = shape
    return shapes


def reflected(engine: sa.Engine, dialect: str) -> dict[str, Shape]:
    """The shape of every table that *engine*'s database holds."""
    inspector = sa.inspect(engine)
    shapes = {}
    for name in inspector.get_table_names():
        shape = Shape()
        pk = inspector.get_pk_constraint(name)["constrained_columns"]
        shape.primary_key = tuple(pk)
        for column in inspector.get_columns(name):
            # SQLite's legacy lets a non-INTEGER PRIMARY KEY column hold NULL unless declared NOT NULL;
            # the stores always set keys, so a key column counts as NOT NULL.
            nullable = column["nullable"] and column["name"] not in pk
            default = norm_sql(column["default"])
            shape.columns.append((column["name"], type_key(column["type"], dialect), nullable, default))
        shape.uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)}
        for check in inspector.get_check_constraints(name):
            shape.checks.add(check["name"] if dialect == "postgresql" else norm_sql(check["sqltext"]))
        for index in inspector.get_indexes(name):
            if index.get("duplicates_constraint"):
                continue
            sorting = index.get("column_sorting", {})
            columns = tuple(f"{c} DESC" if "desc" in sorting.get(c, ()) else c for c in index["column_names"])
            where = index.get("dialect_options", {}).get(f"{dialect}_where")
            shape.indexes[index["name"]] = (columns, bool(index["unique"]), norm_sql(where))
        shapes[name] = shape
    if dialect == "sqlite":
        _sqlite_index_sorting(engine, shapes)
    return shapes


def _sqlite_index_sorting(engine: sa.Engine, shapes: dict[str, Shape]) -> None:
    """SQLAlchemy does not reflect DESC on SQLite: read it from PRAGMA index_xinfo."""
    with engine.connect() as conn:
        for shape in shapes.values():
            for name, (_columns, unique, where) in list(shape.indexes.items()):
                rows = conn.exec_driver_sql(f'PRAGMA index_xinfo("{name}")').fetchall()
                keyed = [(row[2], bool(row[3])) for row in rows if row[5]]  # (column, desc) of key columns
                shape.indexes[name] = (tuple(f"{c} DESC" if desc else c for c, desc in keyed), unique, where)


def differences(want: dict[str, Shape], got: dict[str, Shape], where: str) -> list[str]:
    """Every difference, each naming its table and column, index or constraint."""
    problems = []
    for table in sorted(set(want) | set(got)):
        if table not in got:
            problems.append(f"{where}: table {table} is missing")
            continue
        if table not in want:
            problems.append(f"{where}: table {table} is not in schema.py")
            continue
        w, g = want[table], got[table]
        w_cols, g_cols = {c[0]: c for c in w.columns}, {c[0]: c for c in g.columns}
        for name in [c[0] for c in w.columns] + [c[0] for c in g.columns if c[0] not in w_cols]:
            if name not in g_cols:
                problems.append(f"{where}: column {table}.{name} is missing")
            elif name not in w_cols:
                problems.append(f"{where}: column {table}.{name} is not in schema.py")
            else:
                for label, i in (("type", 1), ("nullable", 2), ("default", 3)):
                    if w_cols[name][i] != g_cols[name][i]:
                        problems.append(
                            f"{where}: column {table}.{name} {label}: schema.py {w_cols[name][i]!r}, "
                            f"database {g_cols[name][i]!r}"
                        )
        if [c[0] for c in w.columns] != [c[0] for c in g.columns] and set(w_cols) == set(g_cols):
            problems.append(f"{where}: table {table} column order differs: {[c[0] for c in g.columns]}")
        if w.primary_key != g.primary_key:
            problems.append(f"{where}: table {table} primary key: schema.py {w.primary_key}, database {g.primary_key}")
        if w.uniques != g.uniques:
            problems.append(f"{where}: table {table} unique constraints: schema.py {w.uniques}, database {g.uniques}")
        if w.checks != g.checks:
            problems.append(f"{where}: table {table} CHECKs: schema.py {w.checks}, database {g.checks}")
        for index in sorted(set(w.indexes) | set(g.indexes)):
            if index not in g.indexes:
                problems.append(f"{where}: index {table}.{index} is missing")
            elif index not in w.indexes:
                problems.append(f"{where}: index {table}.{index} is not in schema.py")
            elif w.indexes[index] != g.indexes[index]:
                problems.append(
                    f"{where}: index {table}.{index} (columns, unique, where): schema.py {w.indexes[index]}, "
                    f"database {g.indexes[index]}"
                )
    return problems


def assert_no_drift(want: dict[str, Shape], got: dict[str, Shape], where: str) -> None:
    problems = differences(want, got, where)
    assert not problems, "schema drift:\n" + "\n".join(problems)


def sqlite_triggers(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'").fetchall())
    finally:
        conn.close()


# -- (a) SQLite --------------------------------------------------------------------------------------
def product_sqlite_file(path: Path) -> Path:
    """A SQLite file made the way the product makes it: open_store applies sql/sqlite/*.sql."""
    conn = connection.open_store(connection.parse_store_url(f"sqlite:///{path}"))
    conn.close()
    return path


def test_the_sqlite_migrations_end_at_the_definition(tmp_path):
    path = product_sqlite_file(tmp_path / "state.sqlite3")
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        assert_no_drift(expected("sqlite"), reflected(engine, "sqlite"), "sqlite migrations")
    finally:
        engine.dispose()
    assert sqlite_triggers(path) == schema.SQLITE_TRIGGERS


def test_create_all_on_sqlite_gives_the_same_file(tmp_path):
    path = tmp_path / "created.sqlite3"
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        schema.metadata.create_all(engine)
        assert_no_drift(expected("sqlite"), reflected(engine, "sqlite"), "sqlite create_all")
        with engine.connect() as conn:  # seq is the rowid, as in the migrated files
            sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'work_items'").scalar_one()
        assert re.search(r"\bseq INTEGER NOT NULL\b", sql) and "PRIMARY KEY (seq)" in sql
    finally:
        engine.dispose()
    assert sqlite_triggers(path) == schema.SQLITE_TRIGGERS


def test_the_drift_test_names_what_differs(tmp_path):
    path = product_sqlite_file(tmp_path / "state.sqlite3")
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE seen_resources ADD COLUMN stray TEXT")
    conn.execute("DROP INDEX ix_work_items_run_id")
    conn.execute("CREATE INDEX ix_work_items_run_id ON work_items (run_id DESC)")
    conn.commit()
    conn.close()
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        problems = differences(expected("sqlite"), reflected(engine, "sqlite"), "sqlite")
    finally:
        engine.dispose()
    assert problems == [
        "sqlite: column seen_resources.stray is not in schema.py",
        "sqlite: index work_items.ix_work_items_run_id (columns, unique, where): schema.py (('run_id',), False, None), "
        "database (('run_id DESC',), False, None)",
    ]


def test_sqlite_times_stay_todays_utc_text(tmp_path):
    """UtcDateTime writes exactly the text today's stores write, and reads it back as aware UTC."""
    path = product_sqlite_file(tmp_path / "state.sqlite3")
    engine = sa.create_engine(f"sqlite:///{path}")
    started = datetime(2026, 12, 2, 20, 15, 1, 250, tzinfo=timezone(timedelta(hours=2)))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(schema.ingest_runs).values(run_id="r1", spider="http", status="running", started_at=started)
            )
            raw = conn.exec_driver_sql("SELECT started_at FROM ingest_runs").scalar_one()
            back = conn.execute(sa.select(schema.ingest_runs.c.started_at)).scalar_one()
    finally:
        engine.dispose()
    assert raw == "2026-12-02 18:15:01.000250"
    assert back == started and back.tzinfo == UTC


# -- (b) PostgreSQL ----------------------------------------------------------------------------------
def test_create_all_on_postgresql_gives_the_definition(postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        schema.metadata.create_all(engine)
        assert_no_drift(expected("postgresql"), reflected(engine, "postgresql"), "postgresql create_all")
        schema.metadata.create_all(engine)  # again: nothing to do, no error
    finally:
        engine.dispose()


def test_postgresql_keeps_times_and_rejects_invalid_json(postgres_url):
    engine = sa.create_engine(postgres_url)
    now = datetime(2026, 12, 2, 18, 0, 0, 123456, tzinfo=UTC)
    row = {
        "ingest_id": "i1",
        "source_system": "mediawiki",
        "source_name": "wiki",
        "resource_type": "page",
        "resource_id": "Main Page",
        "outcome": "ok",
        "request_uri": "http://127.0.0.1/w/api.php",
        "request_method": "GET",
        "fetched_at_utc": now,
        "hash_sha256": "0" * 64,
        "payload": json.dumps({"b": 1, "a": [2]}),
    }
    try:
        schema.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(schema.ingest_records).values(row))
            stored = conn.execute(sa.select(schema.ingest_records.c.fetched_at_utc, schema.ingest_records.c.payload))
            assert stored.one() == (now, row["payload"])  # the payload text is kept as sent
        with pytest.raises(sa.exc.DataError, match="json"), engine.begin() as conn:
            conn.execute(sa.insert(schema.ingest_records).values({**row, "ingest_id": "i2", "payload": "{cut"}))
        with engine.begin() as conn:
            seq = conn.execute(
                sa.insert(schema.work_items)
                .values(
                    work_item_id="w1",
                    source_system="s",
                    source_name="n",
                    resource_type="page",
                    resource_id="A",
                    request_uri="u",
                    dedupe_key="k",
                    created_at=now,
                    updated_at=now,
                )
                .returning(schema.work_items.c.seq, schema.work_items.c.status, schema.work_items.c.lease_losses)
            ).one()
        assert seq == (1, "pending", 0)
    finally:
        engine.dispose()


# -- (c) SQL Server ----------------------------------------------------------------------------------
def mssql_ddl() -> list[tuple[str, str]]:
    """(object, statement) for every CREATE TABLE / CREATE INDEX of the definition, compiled for SQL Server."""
    dialect = DIALECTS["mssql"]
    statements = []
    for table in schema.metadata_for("mssql").sorted_tables:
        statements.append((table.name, str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip()))
        for index in sorted(table.indexes, key=lambda i: i.name):
            statements.append(
                (f"{table.name}.{index.name}", str(sa.schema.CreateIndex(index).compile(dialect=dialect)))
            )
    return statements


def test_compiled_tsql_parses_with_sqlfluff():
    statements = mssql_ddl()
    assert len(statements) == len(schema.metadata.tables) + sum(len(t.indexes) for t in schema.metadata.tables.values())
    bad = unparsable_statements(statements)
    assert not bad, f"sqlfluff (tsql) cannot parse the compiled DDL of: {bad}"


@dataclass
class TsqlIndex:
    table: str
    columns: tuple[str, ...]
    unique: bool
    clustered: bool
    include: tuple[str, ...]
    where: str | None


def tsql_scripts() -> tuple[dict[str, Shape], dict[str, TsqlIndex]]:
    """Tables (columns in order, canonical type, nullability; primary key; uniques; CHECK names) and indexes after
    every sql/NNNN_*.sql, read with sqlglot (columns) and regular expressions (indexes)."""
    tables: dict[str, Shape] = {}
    batches = [b for path in TSQL_FILES for b in split_go_batches(path.read_text("utf-8"))]
    for batch in batches:
        for tree in sqlglot.parse(batch, read="tsql"):
            for create in tree.find_all(exp.Create):
                if create.kind == "TABLE":
                    shape = tables.setdefault(create.this.this.name, Shape())
                    for item in create.this.expressions:
                        if isinstance(item, exp.ColumnDef):
                            shape.columns.append(_tsql_column(item))
            for alter in tree.find_all(exp.Alter):
                columns = tables[alter.this.name].columns
                for action in alter.args["actions"]:
                    if isinstance(action, exp.ColumnDef):
                        columns.append(_tsql_column(action))
                    elif isinstance(action, exp.AlterColumn):
                        i = next(i for i, c in enumerate(columns) if c[0] == action.name)
                        kind = action.args["dtype"].sql("tsql")
                        columns[i] = (action.name, kind, action.args.get("allow_null") is not False, columns[i][3])
    text = strip_comments("\n".join(batches))
    for match in re.finditer(r"CREATE TABLE \[ingest\]\.\[(\w+)\](.*?)\n    \);", text, re.S):
        for key in re.finditer(r"(PRIMARY KEY|UNIQUE) (?:NONCLUSTERED|CLUSTERED) \(([^)]*)\)", match.group(2)):
            columns = tuple(c.strip() for c in key.group(2).split(","))
            if key.group(1) == "UNIQUE":
                tables[match.group(1)].uniques.add(columns)
            else:
                tables[match.group(1)].primary_key = columns
    for match in re.finditer(r"CREATE TABLE \[ingest\]\.\[(\w+)\](.*?)\n    \);", text, re.S):
        tables[match.group(1)].checks |= set(re.findall(r"CONSTRAINT (\w+)\s+CHECK\b", match.group(2)))
    for match in re.finditer(r"ALTER TABLE \[ingest\]\.\[(\w+)\][^;]*?ADD CONSTRAINT (\w+) CHECK\b", text):
        tables[match.group(1)].checks.add(match.group(2))
    indexes = {}
    pattern = (
        r"CREATE\s+(UNIQUE\s+)?(NONCLUSTERED|CLUSTERED)\s+INDEX\s+(\w+)\s+ON \[ingest\]\.\[(\w+)\] \(([^)]*)\)"
        r"(?:\s+INCLUDE \(([^)]*)\))?(?:\s+WHERE ([^;]*?))?\s*;?\s*END"
    )
    for m in re.finditer(pattern, text):
        split = lambda s: tuple(c.strip() for c in s.split(",")) if s else ()  # noqa: E731
        indexes[m.group(3)] = TsqlIndex(
            m.group(4),
            split(m.group(5)),
            bool(m.group(1)),
            m.group(2) == "CLUSTERED",
            split(m.group(6)),
            norm_sql(m.group(7)),
        )
    return tables, indexes


def _tsql_column(column: exp.ColumnDef) -> tuple[str, str, bool, str | None]:
    not_null = any(
        isinstance(c.kind, exp.NotNullColumnConstraint) and not c.kind.args.get("allow_null")
        for c in column.constraints
    )
    default = next((c.kind.this for c in column.constraints if isinstance(c.kind, exp.DefaultColumnConstraint)), None)
    return column.name, column.kind.sql("tsql"), not not_null, norm_sql(default.sql("tsql")) if default else None


def test_the_definition_matches_the_tsql_scripts_column_by_column():
    """Columns (order, type, nullability, default), keys and CHECKs by name; indexes are below."""
    scripts, _ = tsql_scripts()
    for shape in scripts.values():
        shape.columns = [(name, tsql_type(kind), nullable, default) for name, kind, nullable, default in shape.columns]
    want = expected("mssql")
    del want["schema_migrations"]  # created by the migration runner (TSQL_CREATE_MIGRATIONS_TABLE), not a file
    for shape in want.values():
        shape.indexes = {}
    assert_no_drift(want, scripts, "sql/*.sql")


def test_the_definition_has_the_indexes_of_the_tsql_scripts():
    _, scripts = tsql_scripts()
    defined = {}
    for table in schema.metadata_for("mssql").sorted_tables:
        for index in table.indexes:
            options = index.dialect_options["mssql"]
            where = options["where"]
            defined[index.name] = TsqlIndex(
                table.name,
                _index_columns(index),
                bool(index.unique),
                bool(options["clustered"]),
                tuple(options["include"] or ()),
                norm_sql(where),
            )
    problems = [f"sql/*.sql: index {name} is missing from schema.py" for name in sorted(set(scripts) - set(defined))]
    problems += [f"schema.py: index {name} is not in sql/*.sql" for name in sorted(set(defined) - set(scripts))]
    problems += [
        f"index {name}: schema.py {defined[name]}, sql/*.sql {scripts[name]}"
        for name in sorted(set(defined) & set(scripts))
        if defined[name] != scripts[name]
    ]
    assert not problems, "\n".join(problems)
    assert len(defined) >= 13 and len(scripts) >= 13


def test_sqlserver_names_and_schema():
    md = schema.metadata_for("mssql", schema="crawl_2")
    assert sorted(t.name for t in md.sorted_tables) == sorted(
        schema.SQLSERVER_TABLE_NAMES.get(name, name) for name in schema.metadata.tables
    )
    records = md.tables["crawl_2.IngestRecords"]
    assert {c.name for c in records.constraints if c.name} == {"pk_IngestRecords", "ck_IngestRecords_payload_json"}
    ddl = str(sa.schema.CreateTable(records).compile(dialect=DIALECTS["mssql"]))
    assert "crawl_2.[IngestRecords]" in ddl and "ISJSON(payload) = 1" in ddl and "::json" not in ddl
    assert "NTEXT" not in ddl and "NVARCHAR(max)" in ddl
