"""holocron_scrapy.db.migrations: the runner on real SQLite files, GO splitting, schema
substitution, the SQL Server flow against a recording fake connection, and (when
INGEST_SQLSERVER_HOST/PASSWORD are set) against a real SQL Server."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import uuid

import pytest

from holocron_scrapy.db import connection, migrations
from holocron_scrapy.db.migrations import (
    Migration,
    MigrationRunner,
    load_migrations,
    split_go_batches,
    split_sqlite_statements,
    strip_comments,
    validate_identifier,
)
from holocron_scrapy.errors import ConfigError, StoreError
from tests.support.sqlserver import SQLSERVER_CONFIGURED, SQLSERVER_REASON, WIDENED_COLUMNS, drop_schema

VERSIONS = ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008"]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path):
    conn = connection.connect_sqlite(str(tmp_path / "records.sqlite3"))
    yield conn
    conn.close()


def tables(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# -- loading -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dialect", ["sqlite", "sqlserver"])
def test_load_migrations_in_version_order(dialect):
    found = load_migrations(dialect)
    assert [m.version for m in found] == VERSIONS
    assert [m.filename for m in found] == [
        "0001_create_schema.sql",
        "0002_create_tables.sql",
        "0003_indexes_constraints.sql",
        "0004_seen_resources_lookup.sql",
        "0005_widen_long_text.sql",
        "0006_frontier_sources_and_lease_losses.sql",
        "0007_frontier_checkpoints.sql",
        "0008_frontier_hosts.sql",
    ]
    assert all(m.dialect == dialect and m.text.strip() for m in found)


def test_unknown_dialect_rejected():
    with pytest.raises(ConfigError, match="dialect"):
        load_migrations("postgres")
    with pytest.raises(ConfigError, match="dialect"):
        MigrationRunner(None, "oracle")


# -- SQLite runner -----------------------------------------------------------------------------
def test_apply_runs_every_migration_in_order(db):
    lines: list[str] = []
    done = MigrationRunner(db, "sqlite").apply(echo=lines.append)
    assert [m.version for m in done] == VERSIONS
    assert lines == [f"applying {m.filename}" for m in done]
    assert {"work_items", "ingest_records", "ingest_runs", "seen_resources", "schema_migrations"} <= tables(db)
    applied = MigrationRunner(db, "sqlite").applied()
    assert sorted(applied) == VERSIONS
    assert all(len(at) == 26 and at[4] == "-" for at in applied.values())  # YYYY-MM-DD HH:MM:SS.ffffff


def test_second_run_applies_nothing(db):
    runner = MigrationRunner(db, "sqlite")
    runner.apply()
    before = runner.applied()
    lines: list[str] = []
    assert runner.apply(echo=lines.append) == []
    assert lines == []
    assert runner.applied() == before
    assert runner.pending() == []


def test_dry_run_prints_and_applies_nothing(db):
    runner = MigrationRunner(db, "sqlite")
    lines: list[str] = []
    todo = runner.apply(dry_run=True, echo=lines.append)
    assert [m.version for m in todo] == VERSIONS
    assert tables(db) == set()
    text = "\n".join(lines)
    assert "-- 0002_create_tables.sql" in text
    assert "CREATE TABLE IF NOT EXISTS work_items" in text
    assert runner.pending() == todo


def test_dry_run_after_apply_lists_nothing(db):
    runner = MigrationRunner(db, "sqlite")
    runner.apply()
    lines: list[str] = []
    assert runner.apply(dry_run=True, echo=lines.append) == []
    assert lines == []


def test_partial_state_applies_only_the_rest(db, monkeypatch):
    real = migrations.load_migrations
    monkeypatch.setattr(migrations, "load_migrations", lambda d: real(d)[:2])
    assert [m.version for m in MigrationRunner(db, "sqlite").apply()] == ["0001", "0002"]
    monkeypatch.setattr(migrations, "load_migrations", real)
    assert [m.version for m in MigrationRunner(db, "sqlite").apply()] == VERSIONS[2:]


def test_database_at_0004_gets_0005_and_0006_and_keeps_its_rows(db, monkeypatch):
    real = migrations.load_migrations
    monkeypatch.setattr(migrations, "load_migrations", lambda d: real(d)[:4])
    MigrationRunner(db, "sqlite").apply()
    long_uri = "https://w/api.php?titles=" + "|".join(f"Title {i:04}" for i in range(500))  # 5524 characters
    db.execute(
        "INSERT INTO work_items (work_item_id, source_system, source_name, resource_type, resource_id, request_uri,"
        " created_at, updated_at, dedupe_key) VALUES ('w1', 'mediawiki', 'w', 'batch', 'X', ?, 't', 't', 'k')",
        (long_uri,),
    )
    monkeypatch.setattr(migrations, "load_migrations", real)
    runner = MigrationRunner(db, "sqlite")
    assert [m.filename for m in runner.apply()] == [
        "0005_widen_long_text.sql",
        "0006_frontier_sources_and_lease_losses.sql",
        "0007_frontier_checkpoints.sql",
        "0008_frontier_hosts.sql",
    ]
    assert runner.apply() == [] and sorted(runner.applied()) == VERSIONS
    assert db.execute("SELECT request_uri FROM work_items").fetchall() == [(long_uri,)]
    assert db.execute("SELECT lease_losses, solo_lease_losses FROM work_items").fetchall() == [(0, 0)]


def test_failed_migration_rolls_back_everything(db, monkeypatch):
    broken = Migration("0099", "broken", "sqlite", "CREATE TABLE extra (a TEXT);\nTHIS IS NOT SQL;\n")
    real = migrations.load_migrations
    monkeypatch.setattr(migrations, "load_migrations", lambda d: [*real(d), broken])
    with pytest.raises(sqlite3.OperationalError):
        MigrationRunner(db, "sqlite").apply()
    assert tables(db) == set()  # one transaction: nothing half-applied


def test_user_tables_in_an_owned_database_survive(db):
    MigrationRunner(db, "sqlite").apply()
    db.execute("CREATE TABLE my_notes (note TEXT)")
    db.execute("INSERT INTO my_notes VALUES ('keep me')")
    assert MigrationRunner(db, "sqlite").apply() == []
    assert db.execute("SELECT note FROM my_notes").fetchall() == [("keep me",)]


def test_foreign_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / "foreign.sqlite3"
    foreign = sqlite3.connect(path)
    foreign.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    foreign.execute("INSERT INTO customers (name) VALUES ('Ackbar')")
    foreign.commit()
    foreign.close()
    before = digest(path)
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(StoreError, match="not a holocron_scrapy database"):
        MigrationRunner(conn, "sqlite").apply()
    conn.close()
    assert digest(path) == before
    check = sqlite3.connect(path)
    assert tables(check) == {"customers"}
    check.close()


def test_sqlite_triggers_enforce_json_payload(db):
    MigrationRunner(db, "sqlite").apply()
    row = ("id1", "mw", "wiki", "page", "X", "ok", "http://x", "GET", "2025-01-01 00:00:00.000000", "ab" * 32)
    insert = (
        "INSERT INTO ingest_records (ingest_id, source_system, source_name, resource_type, resource_id, outcome,"
        " request_uri, request_method, fetched_at_utc, hash_sha256, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    )
    db.execute(insert, (*row, '{"a": 1}'))
    with pytest.raises(sqlite3.IntegrityError, match="valid JSON"):
        db.execute(insert, ("id2", *row[1:], "{not json"))


# -- splitting ---------------------------------------------------------------------------------
def test_go_splitting_variants():
    script = "\n".join(
        [
            "SELECT 1",
            "GO",
            "SELECT 2",
            "go",
            "SELECT 3",
            "  Go  ",
            "SELECT 4",
            "GO -- end of batch 4",
            "SELECT 5",
            "GO\t",
            "",
        ]
    )
    assert split_go_batches(script) == ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4", "SELECT 5"]


def test_go_inside_string_literal_or_comment_does_not_split():
    script = "\n".join(
        [
            "INSERT INTO t VALUES (N'line one",
            "GO",
            "it''s still the string')",
            "/* a block comment",
            "GO",
            "/* nested",
            "GO",
            "*/ still comment",
            "GO",
            "*/",
            "-- GO in a line comment",
            "SELECT [GO",
            "] FROM t",
            "GO",
            "SELECT 2",
        ]
    )
    batches = split_go_batches(script)
    assert len(batches) == 2
    assert batches[0].startswith("INSERT INTO t") and batches[0].endswith("] FROM t")
    assert batches[1] == "SELECT 2"


def test_go_like_lines_that_are_not_separators():
    script = "GOTO done\nSELECT 1 AS go\ndone:\nSELECT 2"
    assert split_go_batches(script) == [script]


def test_empty_and_comment_only_batches_dropped():
    assert split_go_batches("-- header\nGO\n/* only a comment */\nGO\n\nGO\nSELECT 1\nGO\n") == ["SELECT 1"]


def test_go_with_count_rejected():
    with pytest.raises(StoreError, match="GO 5"):
        split_go_batches("SELECT 1\nGO 5\n")


def test_unterminated_string_rejected():
    with pytest.raises(StoreError, match="unterminated"):
        split_go_batches("SELECT 'oops\nGO\n")


def test_sqlite_statement_splitting_keeps_triggers_whole():
    script = (
        "-- comment; with a semicolon\nCREATE TABLE a (x TEXT);\n"
        "CREATE TRIGGER t BEFORE INSERT ON a BEGIN\n  SELECT RAISE(ABORT, 'no; way');\nEND;\n"
        "/* trailing comment */\n"
    )
    statements = split_sqlite_statements(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with pytest.raises(StoreError, match="incomplete"):
        split_sqlite_statements("CREATE TABLE b (x TEXT)")


# -- schema names ------------------------------------------------------------------------------
def test_schema_substitution():
    runner = MigrationRunner(None, "sqlserver", schema="crawl_2")
    text = "\n".join(batch for m in runner.migrations() for batch in runner.statements(m))
    assert "[ingest]" not in text
    assert "CREATE TABLE [crawl_2].[work_items]" in text
    assert "N'[crawl_2].[IngestRecords]'" in text
    assert "EXEC sys.sp_executesql N'CREATE SCHEMA [crawl_2]'" in text
    assert "IF COL_LENGTH(N'[crawl_2].[IngestRecords]', N'requested_id') <> -1" in text
    assert "ALTER TABLE [crawl_2].[work_items] ALTER COLUMN request_uri NVARCHAR(MAX) NOT NULL;" in text
    assert all(
        "[crawl_2]" in sql or "?" in sql or "SET " in sql for sql in migrations.tsql_statements("crawl_2").values()
    )


@pytest.mark.parametrize(
    "bad",
    ["", "1ingest", "bad-name", "a]b", "x; DROP TABLE y", "ingest.x", "[ingest]", "a b", "é", "x" * 129],
)
def test_bad_schema_names_rejected(bad):
    with pytest.raises(ConfigError, match="schema"):
        MigrationRunner(None, "sqlserver", schema=bad)
    with pytest.raises(ConfigError) as info:
        validate_identifier(bad, key="INGEST_SQLSERVER_SCHEMA")
    assert info.value.key == "INGEST_SQLSERVER_SCHEMA"


@pytest.mark.parametrize("reserved", ["sys", "INFORMATION_SCHEMA", "guest"])
def test_system_schemas_rejected(reserved):
    with pytest.raises(ConfigError, match="system schema"):
        MigrationRunner(None, "sqlserver", schema=reserved)


def test_good_schema_names_accepted():
    for good in ("ingest", "_x", "Crawl2025", "x" * 128):
        assert validate_identifier(good) == good


# -- SQL Server flow against a recording fake -----------------------------------------------
class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.result: list[tuple] = []

    def execute(self, sql, *params):
        self.conn.log.append(("execute", sql, params))
        if self.conn.fail_on and self.conn.fail_on in sql:
            raise RuntimeError("('42000', '[42000] [FakeDriver]Incorrect syntax near GO. (102) (SQLExecDirectW)')")
        if "sp_getapplock" in sql:
            self.result = [(self.conn.lock_result,)]
        elif "OBJECT_ID(?, N'U')" in sql:
            self.result = [(1 if self.conn.applied is not None else None,)]
        elif "FROM sys.tables" in sql:
            self.result = [(name,) for name in self.conn.schema_tables]
        elif "SELECT version, applied_at" in sql:
            self.result = [(v, "2025-01-01 00:00:00") for v in (self.conn.applied or [])]
        elif "INSERT INTO" in sql and "schema_migrations" in sql:
            self.conn.applied = (self.conn.applied or []) + [params[0]]
            self.result = []
        elif "CREATE TABLE" in sql and "schema_migrations" in sql and self.conn.applied is None:
            self.conn.applied = []
        return self

    def fetchone(self):
        return self.result[0] if self.result else None

    def fetchall(self):
        return list(self.result)

    def nextset(self):
        return False


class FakeConnection:
    def __init__(self, *, applied=None, lock_result=0, fail_on=None, schema_tables=()):
        self.log: list[tuple] = []
        self.applied = applied
        self.lock_result = lock_result
        self.fail_on = fail_on
        self.schema_tables = list(schema_tables)

    def cursor(self):
        return FakeCursor(self)

    def commit(self):
        self.log.append(("commit",))

    def rollback(self):
        self.log.append(("rollback",))

    def executed(self) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] == "execute"]


def test_sqlserver_apply_flow():
    conn = FakeConnection()
    done = MigrationRunner(conn, "sqlserver", schema="crawl").apply()
    assert [m.version for m in done] == VERSIONS
    sql = conn.executed()
    assert "SET QUOTED_IDENTIFIER ON;" in sql[0]  # filtered indexes need it
    assert sql[1] == "SET XACT_ABORT ON;"
    assert "sp_getapplock" in sql[2]
    assert conn.log[2][2] == ("holocron_scrapy.migrations.crawl", 60000)
    assert "sp_releaseapplock" in sql[-2] and sql[-1] == "SET XACT_ABORT OFF;"
    inserts = [e for e in conn.log if e[0] == "execute" and "INSERT INTO [crawl].[schema_migrations]" in e[1]]
    assert [e[2][0] for e in inserts] == VERSIONS
    assert not any("[ingest]" in s for s in sql)
    # every migration is committed on its own, after its version row
    assert sum(1 for e in conn.log if e == ("commit",)) >= len(VERSIONS) + 1


def test_sqlserver_second_run_applies_nothing():
    conn = FakeConnection(applied=list(VERSIONS), schema_tables=["schema_migrations", "work_items"])
    assert MigrationRunner(conn, "sqlserver").apply() == []
    assert not any("CREATE TABLE [ingest].[work_items]" in s for s in conn.executed())


def test_sqlserver_schema_at_0004_gets_only_the_guarded_widening():
    conn = FakeConnection(applied=VERSIONS[:4], schema_tables=["schema_migrations", "work_items"])
    assert [m.version for m in MigrationRunner(conn, "sqlserver").apply()] == ["0005", "0006", "0007", "0008"]
    alters = [sql for sql in conn.executed() if "ALTER COLUMN" in sql]
    assert len(alters) == 7
    assert all(strip_comments(sql).strip().startswith("IF COL_LENGTH(N'[ingest].[") for sql in alters)
    assert not any("CREATE TABLE [ingest].[work_items]" in sql for sql in conn.executed())


def test_sqlserver_dry_run_only_reads():
    conn = FakeConnection()
    lines: list[str] = []
    todo = MigrationRunner(conn, "sqlserver").apply(dry_run=True, echo=lines.append)
    assert [m.version for m in todo] == VERSIONS
    assert all(s.lstrip().startswith("SELECT") for s in conn.executed())
    assert lines.count("-- 0001_create_schema.sql") == 1
    assert any(line.endswith("\nGO") for line in lines)


def test_sqlserver_failed_batch_rolls_back_and_names_the_file():
    conn = FakeConnection(fail_on="ix_work_items_leases")
    with pytest.raises(StoreError, match=r"0003_indexes_constraints\.sql failed in batch 3/\d+") as info:
        MigrationRunner(conn, "sqlserver").apply()
    assert "Incorrect syntax" in str(info.value)
    assert ("rollback",) in conn.log
    assert "sp_releaseapplock" in conn.executed()[-2]
    assert conn.applied == ["0001", "0002"]


def test_sqlserver_lock_not_granted():
    conn = FakeConnection(lock_result=-1)
    with pytest.raises(StoreError, match="another process is migrating"):
        MigrationRunner(conn, "sqlserver", lock_timeout_ms=10).apply()
    assert conn.executed()[-1] == "SET XACT_ABORT OFF;"
    assert not any("CREATE" in s or "sp_releaseapplock" in s for s in conn.executed())


def test_sqlserver_foreign_schema_refused():
    conn = FakeConnection(schema_tables=["work_items"])  # e.g. an older ingest schema
    with pytest.raises(StoreError, match=r"schema \[ingest\] already holds tables"):
        MigrationRunner(conn, "sqlserver").apply()
    assert not any("CREATE" in s for s in conn.executed())


# -- live SQL Server ---------------------------------------------------------------------------
@pytest.mark.sqlserver
@pytest.mark.skipif(not SQLSERVER_CONFIGURED, reason=SQLSERVER_REASON)
def test_live_sqlserver_apply_twice():
    from holocron_scrapy.db import sqlserver

    schema = f"holocron_test_{uuid.uuid4().hex[:8]}"
    settings = sqlserver.SqlServerSettings.resolve({}, environ={**os.environ, "INGEST_SQLSERVER_SCHEMA": schema})
    sqlserver.ensure_database(settings, wait_timeout=30)
    conn = sqlserver.connect(settings, wait_timeout=30)
    try:
        runner = MigrationRunner(conn, "sqlserver", schema=schema)
        assert [m.version for m in runner.apply()] == VERSIONS
        assert runner.apply() == []
        assert sorted(runner.applied()) == VERSIONS
        cur = conn.cursor()
        cur.execute(sqlserver.TSQL_LIST_TABLES, schema)
        assert {r[0] for r in cur.fetchall()} == {
            "work_items",
            "IngestRecords",
            "ingest_runs",
            "seen_resources",
            "schema_migrations",
        }
        cur.execute(
            "SELECT OBJECT_NAME(c.object_id), c.name FROM sys.columns AS c"
            " WHERE c.max_length = -1 AND OBJECT_SCHEMA_NAME(c.object_id) = ?",
            schema,
        )
        widened = {(table, column) for table, column in cur.fetchall()}
        assert WIDENED_COLUMNS <= widened
    finally:
        conn.close()
        drop_schema(settings, schema)


# -- PostgreSQL (the live server, a throw-away database per test) -------------------------------------
def test_postgresql_migrations_are_the_sqlite_versions():
    found = load_migrations("postgresql")
    assert [m.version for m in found] == VERSIONS
    assert [m.name for m in found] == [m.name for m in load_migrations("sqlite")]
    runner = MigrationRunner(None, "postgresql")
    ddl = runner.statements(found[0])
    assert any(s.startswith("CREATE TABLE work_items") for s in ddl)
    assert any("CREATE UNIQUE INDEX" in s for s in ddl)
    assert all(runner.statements(m) == [] for m in found[1:])  # the baseline carries them all


def test_postgresql_runner_lists_then_applies_once(postgres_url):
    from holocron_scrapy.db.engine import postgresql_engine

    engine = postgresql_engine(postgres_url)
    try:
        runner = MigrationRunner(engine, "postgresql")
        assert runner.applied() == {} and [m.version for m in runner.pending()] == VERSIONS
        printed: list[str] = []
        assert [m.version for m in runner.apply(dry_run=True, echo=printed.append)] == VERSIONS
        assert runner.applied() == {}  # a dry run writes nothing
        assert any("CREATE TABLE ingest_records" in line for line in printed)
        echoed: list[str] = []
        assert [m.version for m in runner.apply(echo=echoed.append)] == VERSIONS
        assert echoed[0] == "applying 0001_create_schema.sql (baseline)"
        applied = runner.applied()
        assert sorted(applied) == VERSIONS and all(at.startswith("20") for at in applied.values())
        assert runner.pending() == [] and runner.apply() == []
    finally:
        engine.dispose()


def test_postgresql_unreachable_is_one_store_error():
    from holocron_scrapy.db.engine import postgresql_engine

    engine = postgresql_engine("postgresql+psycopg://root@127.0.0.1:1/none?connect_timeout=2")
    try:
        with pytest.raises(StoreError, match=r"cannot read schema_migrations of .*127\.0\.0\.1:1/none"):
            MigrationRunner(engine, "postgresql").applied()
    finally:
        engine.dispose()
