"""Offline checks of every T-SQL statement: the migration files in sql/*.sql, the
strings that holocron_scrapy.db.sqlserver / .migrations execute, and every statement of the two
stores (SqlWorkItemStore, SqlRecordStore) compiled on the mssql+pyodbc engine of a ``sqlserver://``
store (their hints, OUTPUT clauses, TOP (?) limits, N'...' status literals and schema checked too).

Each statement must parse with sqlfluff (dialect tsql, no unparsable segment) and with
sqlglot (read="tsql", no fallback to an unparsed ``Command``). The files must also mirror
the SQLite schema column by column, stay idempotent (no DROP, every batch guarded by IF),
name the schema only as ``[ingest]`` and keep index keys within SQL Server's size limits.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import sqlfluff
import sqlglot
from sqlglot import exp

from holocron_scrapy.db import migrations, sqlserver
from holocron_scrapy.db.migrations import MigrationRunner, split_go_batches, strip_comments
from tests.support.sqlserver import WIDENED_COLUMNS
from tests.support.tsql import unparsable_statements

ROOT = Path(__file__).resolve().parents[1]
TSQL_FILES = sorted((ROOT / "sql").glob("[0-9][0-9][0-9][0-9]_*.sql"))
SQLITE_TWIN = {"IngestRecords": "ingest_records"}


def _batches() -> list[tuple[str, str]]:
    found = []
    for path in TSQL_FILES:
        for number, batch in enumerate(split_go_batches(path.read_text("utf-8")), 1):
            found.append((f"{path.name}#{number}", batch))
    return found


def _dynamic_sql(batch: str) -> list[str]:
    """The N'...' strings handed to sp_executesql (dynamic DDL)."""
    return [m.group(1).replace("''", "'") for m in re.finditer(r"sp_executesql\s+N'((?:[^']|'')*)'", batch)]


def _code_statements() -> list[tuple[str, str]]:
    statements = {**migrations.tsql_statements(), **sqlserver.tsql_statements()}
    return sorted(statements.items())


def _with_parameters(sql: str) -> str:
    """Replace pyodbc ``?`` markers by T-SQL variables so the parsers see valid T-SQL."""
    counter = iter(range(1, 1000))
    return re.sub(r"\?", lambda _m: f"@p{next(counter)}", sql)


BATCHES = _batches()
CODE = _code_statements()
DYNAMIC = [(f"{name}:dynamic{i}", text) for name, batch in BATCHES for i, text in enumerate(_dynamic_sql(batch), 1)]


def assert_sqlfluff_parses(sql: str) -> None:
    try:
        tree = sqlfluff.parse(sql, dialect="tsql")
    except sqlfluff.api.APIParsingError as exc:  # unparsable segment
        pytest.fail(f"sqlfluff (tsql) cannot parse:\n{sql}\n{exc}")
    text = json.dumps(tree)
    assert "unparsable" not in text, sql


def assert_sqlglot_parses(sql: str) -> None:
    try:
        trees = sqlglot.parse(sql, read="tsql", error_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.ParseError as exc:
        pytest.fail(f"sqlglot (tsql) cannot parse:\n{sql}\n{exc}")
    fallbacks = [node.sql("tsql")[:80] for tree in trees if tree for node in tree.find_all(exp.Command)]
    assert not fallbacks, f"sqlglot fell back to an unparsed Command for: {fallbacks}"


def test_migration_files_exist():
    assert [p.name for p in TSQL_FILES] == [
        "0001_create_schema.sql",
        "0002_create_tables.sql",
        "0003_indexes_constraints.sql",
        "0004_seen_resources_lookup.sql",
        "0005_widen_long_text.sql",
        "0006_frontier_sources_and_lease_losses.sql",
        "0007_frontier_checkpoints.sql",
        "0008_frontier_hosts.sql",
    ]
    assert [p.name for p in TSQL_FILES] == sorted(p.name for p in (TSQL_FILES[0].parent / "sqlite").glob("*.sql"))
    assert len(BATCHES) >= 16 and DYNAMIC, "expected one GO batch per object and dynamic CREATE SCHEMA"


@pytest.mark.parametrize(("name", "sql"), BATCHES + DYNAMIC, ids=[n for n, _ in BATCHES + DYNAMIC])
def test_migration_batch_parses_with_sqlfluff(name, sql):
    assert_sqlfluff_parses(sql)


@pytest.mark.parametrize(("name", "sql"), BATCHES + DYNAMIC, ids=[n for n, _ in BATCHES + DYNAMIC])
def test_migration_batch_parses_with_sqlglot(name, sql):
    assert_sqlglot_parses(sql)


@pytest.mark.parametrize(("name", "sql"), CODE, ids=[n for n, _ in CODE])
def test_code_statement_parses_with_sqlfluff(name, sql):
    assert_sqlfluff_parses(_with_parameters(sql))


@pytest.mark.parametrize(("name", "sql"), CODE, ids=[n for n, _ in CODE])
def test_code_statement_parses_with_sqlglot(name, sql):
    assert_sqlglot_parses(_with_parameters(sql))


def test_code_statements_with_a_custom_schema_parse():
    for sql in migrations.tsql_statements("crawl_2").values():
        assert "[ingest]" not in sql
        assert_sqlglot_parses(_with_parameters(sql))


def test_substituted_batches_parse():
    runner = MigrationRunner(None, "sqlserver", schema="crawl_2")
    for migration in runner.migrations():
        for batch in runner.statements(migration):
            assert "[ingest]" not in batch
            assert_sqlglot_parses(batch)


def test_portable_smoketest_statements_parse_as_sqlite_too():
    for template in (
        sqlserver.SMOKETEST_INSERT,
        sqlserver.SMOKETEST_SELECT,
        sqlserver.SMOKETEST_UPDATE,
        sqlserver.SMOKETEST_DELETE,
    ):
        sqlglot.parse_one(template.format(table="work_items"), read="sqlite")


# -- conventions -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", TSQL_FILES, ids=[p.name for p in TSQL_FILES])
def test_no_drop_and_schema_only_as_placeholder(path):
    code = strip_comments(path.read_text("utf-8"))
    assert not re.search(r"\bDROP\b", code, re.IGNORECASE)
    assert not re.search(r"\bTRUNCATE\b", code, re.IGNORECASE)
    rest = code.replace("[ingest]", "")
    assert not re.search(r"\bingest\b", rest, re.IGNORECASE), "write the schema as [ingest] only"
    assert not re.search(r"\bdbo\.", rest, re.IGNORECASE)


@pytest.mark.parametrize(("name", "sql"), BATCHES, ids=[n for n, _ in BATCHES])
def test_every_batch_is_guarded(name, sql):
    code = strip_comments(sql).strip()
    assert re.match(r"IF\s+(NOT\s+EXISTS|OBJECT_ID|COL_LENGTH)\b", code, re.IGNORECASE), f"{name} is not idempotent"


def _alter_columns() -> list[tuple[str, str, exp.Alter, exp.AlterColumn]]:
    """(batch name, batch, ALTER TABLE, its ALTER COLUMN) of every column change in sql/*.sql."""
    found = []
    for name, batch in BATCHES:
        for tree in sqlglot.parse(batch, read="tsql"):
            for alter in tree.find_all(exp.Alter):
                found += [(name, batch, alter, a) for a in alter.args["actions"] if isinstance(a, exp.AlterColumn)]
    return found


def test_alter_column_batches_are_guarded_by_the_current_width():
    """Rerunning a widening is a no-op: the guard checks the very column it alters (-1 = MAX)."""
    found = _alter_columns()
    assert found, "expected the ALTER COLUMNs of 0005_widen_long_text.sql"
    for name, batch, alter, column in found:
        table = f"[{alter.this.db}].[{alter.this.name}]"
        guard = f"IF COL_LENGTH(N'{table}', N'{column.name}') <> -1"
        assert strip_comments(batch).strip().startswith(guard), name
        assert column.args["dtype"].sql("tsql") == "NVARCHAR(MAX)", name
        assert batch.count("ALTER TABLE") == 1, f"{name}: one ALTER per guarded batch"


def test_alter_column_keeps_the_nullability_of_create_table():
    """ALTER COLUMN resets an omitted NULL / NOT NULL: each one must restate 0002's."""
    created = {t: {c: not_null for c, _k, not_null in cols} for t, cols in tsql_tables(alter=False).items()}
    for name, _batch, alter, column in _alter_columns():
        assert column.args.get("allow_null") is not None, f"{name}: state NULL or NOT NULL"
        assert (not column.args["allow_null"]) == created[alter.this.name][column.name], name


# -- mirror of the SQLite schema -----------------------------------------------------------
def tsql_tables(*, alter: bool = True) -> dict[str, list[tuple[str, str, bool]]]:
    """table -> [(column, type, not_null)] from the CREATE TABLE statements, with the later
    ALTER COLUMNs applied unless *alter* is False: the schema after every migration."""
    tables: dict[str, list[tuple[str, str, bool]]] = {}
    for _name, batch in BATCHES:
        for tree in sqlglot.parse(batch, read="tsql"):
            for create in tree.find_all(exp.Create):
                if create.kind == "TABLE":
                    tables[create.this.this.name] = _created_columns(create)
            for change in tree.find_all(exp.Alter) if alter else ():
                _apply_alter(tables[change.this.name], change)
    return tables


def _created_columns(create: exp.Create) -> list[tuple[str, str, bool]]:
    columns = []
    for column in create.this.expressions:
        if isinstance(column, exp.ColumnDef):
            not_null = any(
                isinstance(c.kind, exp.NotNullColumnConstraint) and not c.kind.args.get("allow_null")
                for c in column.constraints
            )
            columns.append((column.name, column.kind.sql("tsql"), not_null))
    return columns


def _apply_alter(columns: list[tuple[str, str, bool]], alter: exp.Alter) -> None:
    for action in alter.args["actions"]:
        if isinstance(action, exp.AlterColumn):
            i = next(i for i, column in enumerate(columns) if column[0] == action.name)
            columns[i] = (action.name, action.args["dtype"].sql("tsql"), action.args.get("allow_null") is False)
        elif isinstance(action, exp.ColumnDef):  # ADD column
            not_null = any(
                isinstance(c.kind, exp.NotNullColumnConstraint) and not c.kind.args.get("allow_null")
                for c in action.constraints
            )
            kind = action.kind.sql("tsql") if action.kind else "COMPUTED"  # AS <expression>
            columns.append((action.name, kind, not_null))


def _sqlite_tables() -> dict[str, list[tuple[str, bool]]]:
    conn = sqlite3.connect(":memory:")
    MigrationRunner(conn, "sqlite").apply()
    query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'schema_migrations'"
    names = [r[0] for r in conn.execute(query)]
    # INTEGER PRIMARY KEY (seq) is implicitly NOT NULL in SQLite
    return {
        name: [(r[1], bool(r[3]) or bool(r[5])) for r in conn.execute(f"PRAGMA table_info({name})")] for name in names
    }


def test_tables_mirror_sqlite_column_by_column():
    tsql, lite = tsql_tables(), _sqlite_tables()
    assert sorted(SQLITE_TWIN.get(t, t) for t in tsql) == sorted(lite)
    for table, columns in tsql.items():
        twin = lite[SQLITE_TWIN.get(table, table)]
        assert [c[0] for c in columns] == [c[0] for c in twin], table
        assert [c[2] for c in columns] == [c[1] for c in twin], f"{table}: NULL / NOT NULL differ"


def test_column_types_follow_the_conventions():
    for table, columns in tsql_tables().items():
        for name, kind, _ in columns:
            if name.endswith("_at") or name == "fetched_at_utc":
                assert kind == "DATETIME2(6)", f"{table}.{name}"
            if name in ("request_headers", "request_body", "metadata", "response_headers", "payload", "summary"):
                assert kind == "NVARCHAR(MAX)", f"{table}.{name}"
            assert not kind.startswith(("VARCHAR", "TEXT", "NTEXT", "DATETIME(", "DATETIME ")), f"{table}.{name}"
    work_items = {name: kind for name, kind, _ in tsql_tables()["work_items"]}
    assert work_items["seq"] == "BIGINT"
    assert work_items["work_item_id"] == "NVARCHAR(36)"
    assert work_items["dedupe_key"] == "NVARCHAR(850)"


def test_unbounded_text_is_widened_by_0005_not_by_editing_0002():
    """Applied migrations never change: 0002 keeps its widths and 0005 widens the URL columns."""
    before = {t: {n: k for n, k, _ in cols} for t, cols in tsql_tables(alter=False).items()}
    after = {t: {n: k for n, k, _ in cols} for t, cols in tsql_tables().items()}
    assert before["IngestRecords"]["requested_id"] == "NVARCHAR(450)"
    assert before["IngestRecords"]["request_uri"] == before["work_items"]["request_uri"] == "NVARCHAR(4000)"
    # columns added later (0006) are not widenings
    widened = {(t, n) for t, cols in after.items() for n, k in cols.items() if k != before[t].get(n, k)}
    assert widened == WIDENED_COLUMNS
    assert all(after[t][n] == "NVARCHAR(MAX)" for t, n in widened)


def test_indexes_mirror_sqlite():
    conn = sqlite3.connect(":memory:")
    MigrationRunner(conn, "sqlite").apply()
    lite = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    text = "\n".join(batch for _n, batch in BATCHES)
    tsql = set(re.findall(r"CREATE\s+(?:UNIQUE\s+)?(?:NONCLUSTERED\s+|CLUSTERED\s+)?INDEX\s+(\w+)", text))
    assert lite <= tsql, f"missing on SQL Server: {sorted(lite - tsql)}"
    assert re.search(r"ix_work_items_dequeue\s+ON \[ingest\]\.\[work_items\] \(status, priority DESC, seq\)", text)
    assert re.search(
        r"UNIQUE NONCLUSTERED INDEX ix_work_items_dedupe\s+ON \[ingest\]\.\[work_items\] \(dedupe_key\)", text
    )
    assert re.search(r"ix_work_items_leases[^;]*WHERE status = N'in_progress'", text)
    assert re.search(r"CHECK \(ISJSON\(payload\) = 1\)", text)
    assert "sys.check_constraints" in text


_BYTES = {"BIGINT": 8, "INT": 4, "INTEGER": 4, "FLOAT": 8, "DATETIME2(6)": 8}


def _key_bytes(columns: dict[str, str], names: list[str]) -> int:
    total = 0
    for name in names:
        kind = columns[name.split()[0]]
        assert kind != "NVARCHAR(MAX)", f"{name} is NVARCHAR(MAX): it cannot be an index key"
        match = re.fullmatch(r"NVARCHAR\((\d+)\)", kind)
        total += int(match.group(1)) * 2 if match else _BYTES[kind]
    return total


def test_index_keys_fit_sql_server_limits():
    """1700 bytes for nonclustered keys, 900 for clustered ones (SQL Server 2016+)."""
    tables = {t: {n: k for n, k, _ in cols} for t, cols in tsql_tables().items()}
    text = "\n".join(batch for _n, batch in BATCHES)
    checked = 0
    for match in re.finditer(
        r"CREATE\s+(UNIQUE\s+)?(NONCLUSTERED|CLUSTERED)\s+INDEX\s+\w+\s+ON \[ingest\]\.\[(\w+)\] \(([^)]*)\)", text
    ):
        limit = 900 if match.group(2) == "CLUSTERED" else 1700
        size = _key_bytes(tables[match.group(3)], [c.strip() for c in match.group(4).split(",")])
        assert size <= limit, match.group(0)
        checked += 1
    for match in re.finditer(r"CREATE TABLE \[ingest\]\.\[(\w+)\].*?\n    \);", text, re.S):
        body = match.group(0)
        for key in re.finditer(r"(PRIMARY KEY|UNIQUE) (NONCLUSTERED|CLUSTERED) \(([^)]*)\)", body):
            limit = 900 if key.group(2) == "CLUSTERED" else 1700
            assert _key_bytes(tables[match.group(1)], key.group(3).split(",")) <= limit, key.group(0)
            checked += 1
    assert checked >= 15


def _indexed_columns() -> set[tuple[str, str]]:
    """(table, column) of every index key, INCLUDE column and key constraint column."""
    text = strip_comments("\n".join(batch for _n, batch in BATCHES))
    found = set()
    pattern = r"INDEX\s+\w+\s+ON \[ingest\]\.\[(\w+)\] \(([^)]*)\)(?:\s+INCLUDE \(([^)]*)\))?"
    for match in re.finditer(pattern, text):
        columns = f"{match.group(2)},{match.group(3) or ''}"
        found |= {(match.group(1), c.split()[0]) for c in columns.split(",") if c.strip()}
    for create in re.finditer(r"CREATE TABLE \[ingest\]\.\[(\w+)\](.*?)\n    \);", text, re.S):
        for key in re.finditer(r"(?:PRIMARY KEY|UNIQUE) (?:NONCLUSTERED|CLUSTERED) \(([^)]*)\)", create.group(2)):
            found |= {(create.group(1), c.strip()) for c in key.group(1).split(",")}
    return found


def test_widened_columns_are_in_no_index():
    """A column in an index (even an INCLUDE) cannot become NVARCHAR(MAX): ALTER COLUMN fails (5074)."""
    indexed = _indexed_columns()
    seen = {("work_items", "dedupe_key"), ("work_items", "next_attempt_at"), ("seen_resources", "resource_id")}
    assert seen <= indexed  # keys, INCLUDE columns and key constraints are all found
    for name, _batch, alter, column in _alter_columns():
        assert (alter.this.name, column.name) not in indexed, name


def _literal_executes(module) -> list[tuple[str, str]]:
    """(enclosing function, SQL) for every ``.execute("literal", ...)`` call in *module*."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        for node in ast.walk(func):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "execute"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append((func.name, node.args[0].value))
    return found


def test_sqlserver_code_has_no_inline_tsql():
    """All T-SQL lives in the enumerated constants checked above (SQLite literals excepted)."""
    assert _literal_executes(sqlserver) == []
    sqlite_only = {"_apply_sqlite", "_refuse_foreign_sqlite", "applied"}
    for function, sql in _literal_executes(migrations):
        assert function in sqlite_only, f"inline SQL in {function}: {sql}"
        sqlglot.parse_one(sql, read="sqlite")


# -- the stores' statements, compiled for SQL Server --------------------------------------------------
def _store_statements() -> dict[str, str]:
    """Every statement of SqlWorkItemStore and SqlRecordStore compiled on the engine a ``sqlserver://``
    store gets (mssql+pyodbc, schema ``crawl_2``; nothing is connected): T-SQL with ``@name``
    placeholders for the bound values."""
    from holocron_scrapy.db.engine import sqlserver_engine
    from holocron_scrapy.frontier.statements import statements
    from holocron_scrapy.records.store import SqlRecordStore
    from tests.support.sqlserver import fake_settings

    engine = sqlserver_engine(fake_settings(INGEST_SQLSERVER_SCHEMA="crawl_2"))
    try:
        found = {f"frontier.{name}": s for name, s in statements("mssql").items()}
        found |= {f"records.{name}": s for name, s in SqlRecordStore(engine).statements().items()}
        translate = engine.get_execution_options()["schema_translate_map"]
        out = {}
        for name, statement in found.items():
            compiled = statement.compile(
                dialect=engine.dialect, schema_translate_map=translate, render_schema_translate=True
            )
            sql = re.sub(r"TOP __\[POSTCOMPILE_\w+\]", "TOP 1", compiled.string)  # .limit(1): a literal at run time
            sql = re.sub(r"__\[POSTCOMPILE_(\w+)\]", r"@\1", sql)  # expanding IN lists
            out[name] = _with_parameters(sql)
        return out
    finally:
        engine.dispose()


STORE_SQL = _store_statements()


def test_store_statements_parse_with_sqlfluff():
    bad = unparsable_statements(STORE_SQL.items())
    assert not bad, f"sqlfluff (tsql) cannot parse the compiled statements: {bad}"


@pytest.mark.parametrize("name", sorted(STORE_SQL))
def test_store_statement_parses_with_sqlglot(name):
    assert_sqlglot_parses(STORE_SQL[name])


def test_store_statements_name_the_configured_schema_and_sql_servers_tables():
    assert len(STORE_SQL) >= 50
    for name, sql in STORE_SQL.items():
        tables = set(re.findall(r"(?:FROM|INTO|UPDATE)\s+([^\s(]\S*)", sql))
        assert tables and all(t.startswith("crawl_2.") for t in tables), (name, tables)
    assert "crawl_2.[IngestRecords]" in STORE_SQL["records.insert"]
    assert "ingest_records" not in " ".join(STORE_SQL.values())


def test_claims_skip_and_hold_the_rows_they_take():
    locks = {
        name: sql for name, sql in STORE_SQL.items() if name.startswith("frontier.claim") and name.endswith("lock")
    }
    assert len(locks) == 8  # plain, solo, and each of a source; each also leaving blocked hosts out
    for sql in locks.values():
        assert "SELECT TOP (@p1) crawl_2.work_items.seq" in sql
        assert "FROM crawl_2.work_items WITH (ROWLOCK, READPAST, UPDLOCK)" in sql
        assert "ORDER BY crawl_2.work_items.priority DESC, crawl_2.work_items.seq" in sql
    claim = STORE_SQL["frontier.claim"]
    assert "OUTPUT inserted.seq, inserted.work_item_id" in claim
    assert claim.endswith("crawl_2.work_items.status = N'pending'")  # still pending: skipped rows stay theirs


def test_inserts_if_new_and_upserts_lock_the_key_range():
    assert (
        "WHERE NOT (EXISTS (SELECT 1 \nFROM crawl_2.work_items WITH (UPDLOCK, HOLDLOCK)" in STORE_SQL["frontier.insert"]
    )
    assert "OUTPUT inserted.seq" in STORE_SQL["frontier.insert"]
    assert "FROM crawl_2.[IngestRecords] WITH (UPDLOCK, HOLDLOCK)" in STORE_SQL["records.insert"]
    assert "OUTPUT inserted.ingest_id" in STORE_SQL["records.insert"]
    for name in ("records.upsert_versions_update", "records.upsert_run_update"):
        assert "WITH (UPDLOCK, SERIALIZABLE) SET" in STORE_SQL[name]


def test_status_predicates_are_nvarchar_literals_for_the_filtered_index():
    """SQL Server matches the filtered index ``ix_work_items_leases`` (``status = N'in_progress'``) only
    to the same literal: a status is never bound, and always written N'...'."""
    frontier = {name: sql for name, sql in STORE_SQL.items() if name.startswith("frontier.")}
    for name, sql in frontier.items():
        where = sql.partition("WHERE")[2]
        assert not re.search(r"status\s*=\s*@", where), name
        assert not re.search(r"status\s*=\s*'", sql), name
    assert "crawl_2.work_items.status = N'in_progress'" in STORE_SQL["frontier.reclaim"]
