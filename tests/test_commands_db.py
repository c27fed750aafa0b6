"""``scrapy db init|status|smoketest`` run for real in subprocesses from the repo root, on
temporary SQLite files, plus error cases (no traceback, one line, non-zero exit) and a live
SQL Server run when INGEST_SQLSERVER_HOST/PASSWORD are set."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Cmd-Test-Pa55word!"
# Used when the project settings do not enable the command module yet: Scrapy discovers
# commands before it reads -s options, so COMMANDS_MODULE must be in the settings object.
RUNNER = (
    "import sys\n"
    "from scrapy.cmdline import execute\n"
    "from scrapy.utils.project import get_project_settings\n"
    "settings = get_project_settings()\n"
    "if not settings.get('COMMANDS_MODULE'):\n"
    "    settings.set('COMMANDS_MODULE', 'holocron_scrapy.commands', priority='project')\n"
    "execute(['scrapy', *sys.argv[1:]], settings=settings)\n"
)

from holocron_scrapy.db.migrations import load_migrations  # noqa: E402
from tests.support.sqlserver import SQLSERVER_CONFIGURED, SQLSERVER_REASON  # noqa: E402

SQLITE_FILES = [m.filename for m in load_migrations("sqlite")]


def _settings_enable_commands() -> bool:
    try:
        from holocron_scrapy import settings
    except ImportError:
        return False
    return getattr(settings, "COMMANDS_MODULE", None) == "holocron_scrapy.commands"


def scrapy_db(*args: str, env: dict[str, str] | None = None, keep_sqlserver_env: bool = False):
    base = {k: v for k, v in os.environ.items() if keep_sqlserver_env or not k.startswith("INGEST_SQLSERVER_")}
    base.pop("HOLOCRON_CONFIG", None)
    base["PYTHONIOENCODING"] = "utf-8"
    base.update(env or {})
    prefix = ["-m", "scrapy"] if _settings_enable_commands() else ["-c", RUNNER]
    return subprocess.run(
        [sys.executable, *prefix, "db", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "records.sqlite3"


def url(path: Path) -> str:
    return f"sqlite:///{path}"  # absolute path: sqlite:////tmp/...


# -- happy path ------------------------------------------------------------------------------
def test_status_of_a_missing_file_lists_pending_and_creates_nothing(db_path):
    result = scrapy_db("status", "--url", url(db_path))
    assert result.returncode == 0, result.stderr
    assert "does not exist yet" in result.stdout
    for name in SQLITE_FILES:
        assert name in result.stdout
    assert not db_path.exists()


def test_init_dry_run_prints_and_creates_nothing(db_path):
    result = scrapy_db("init", "--dry-run", "--url", url(db_path))
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE IF NOT EXISTS work_items" in result.stdout
    assert f"Dry run: {len(SQLITE_FILES)} pending migration(s) would be applied" in result.stdout
    assert not db_path.exists()


def test_init_status_smoketest(db_path):
    first = scrapy_db("init", "--url", url(db_path))
    assert first.returncode == 0, first.stderr
    assert "applying 0001_create_schema.sql" in first.stdout
    assert f"Applied {len(SQLITE_FILES)} migration(s)" in first.stdout

    again = scrapy_db("init", "--url", url(db_path))
    assert again.returncode == 0, again.stderr
    assert "Nothing to do" in again.stdout and "applying" not in again.stdout

    dry = scrapy_db("init", "--dry-run", "--url", url(db_path))
    assert "Dry run: 0 pending migration(s)" in dry.stdout

    status = scrapy_db("status", "--url", url(db_path))
    assert status.returncode == 0, status.stderr
    assert "0003_indexes_constraints.sql  applied 20" in status.stdout
    assert "0005_widen_long_text.sql  applied 20" in status.stdout
    assert "Pending migrations: none" in status.stdout

    smoke = scrapy_db("smoketest", "--url", url(db_path))
    assert smoke.returncode == 0, (smoke.stdout, smoke.stderr)
    for expected in (
        "Connection established successfully",
        "Schema and tables verified",
        "Write/read operations successful",
        "Second insert with the same dedupe_key correctly rejected",
        "Deduplication working correctly",
        "Removed the smoke-test row",
        "All smoke tests passed!",
    ):
        assert expected in smoke.stdout
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT COUNT(*) FROM work_items").fetchone() == (0,)
    conn.close()


def test_smoketest_only_removes_its_own_rows(db_path):
    assert scrapy_db("init", "--url", url(db_path)).returncode == 0
    conn = sqlite3.connect(db_path)
    conn.execute(
        "INSERT INTO work_items (work_item_id, source_system, source_name, resource_type, resource_id, request_uri,"
        " created_at, updated_at, dedupe_key) VALUES ('keep', 'mediawiki', 'w', 'page', 'X', 'http://w', "
        "'2025-01-01 00:00:00.000000', '2025-01-01 00:00:00.000000', 'mediawiki:w:page:X')"
    )
    conn.commit()
    assert scrapy_db("smoketest", "--url", url(db_path)).returncode == 0
    assert conn.execute("SELECT work_item_id FROM work_items").fetchall() == [("keep",)]
    conn.close()


def test_url_from_setting(db_path):
    result = scrapy_db("init", "-s", f"HOLOCRON_RECORDS_URL={url(db_path)}")
    assert result.returncode == 0, result.stderr
    assert db_path.exists()


def test_url_from_config(tmp_path):
    records, state = tmp_path / "r.sqlite3", tmp_path / "s.sqlite3"
    config = tmp_path / "holocron.yaml"
    config.write_text(f"storage:\n  records_url: {url(records)}\nstate:\n  url: {url(state)}\n", "utf-8")
    result = scrapy_db("init", "-s", f"HOLOCRON_CONFIG={config}")
    assert result.returncode == 0, result.stderr
    assert records.exists() and not state.exists()
    result = scrapy_db("init", "--store", "state", "-s", f"HOLOCRON_CONFIG={config}")
    assert result.returncode == 0, result.stderr
    assert state.exists()


def test_state_store_follows_the_crawl_rule(tmp_path):
    """``--store state``: -s JOBDIR beats the config's state.url; -s HOLOCRON_STATE_URL beats JOBDIR."""
    state, explicit, jobdir = tmp_path / "s.sqlite3", tmp_path / "explicit.sqlite3", tmp_path / "run1"
    config = tmp_path / "holocron.yaml"
    config.write_text(f"state:\n  url: {url(state)}\n", "utf-8")
    base = ("init", "--store", "state", "-s", f"HOLOCRON_CONFIG={config}", "-s", f"JOBDIR={jobdir}")
    result = scrapy_db(*base)
    assert result.returncode == 0, result.stderr
    assert (jobdir / "frontier.sqlite3").exists() and not state.exists()
    result = scrapy_db(*base, "-s", f"HOLOCRON_STATE_URL={url(explicit)}")
    assert result.returncode == 0, result.stderr
    assert explicit.exists() and not state.exists()


# -- PostgreSQL (the live server, a throw-away database per test) -------------------------------------
def pg_rows(pg_url: str, query: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize("store", ["records", "state"])
def test_postgresql_status_init_smoketest(postgres_url, store):
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    setting = f"HOLOCRON_{store.upper()}_URL={plain}"
    args = ("--store", store, "-s", setting)

    status = scrapy_db("status", *args)
    assert status.returncode == 0, status.stderr
    assert "Applied migrations: none" in status.stdout
    assert all(name in status.stdout for name in SQLITE_FILES)

    dry = scrapy_db("init", "--dry-run", *args)
    assert dry.returncode == 0, dry.stderr
    assert "CREATE TABLE work_items" in dry.stdout
    assert f"Dry run: {len(SQLITE_FILES)} pending migration(s) would be applied" in dry.stdout
    assert pg_rows(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []

    smoke = scrapy_db("smoketest", *args)
    assert_one_line_error(smoke, "run `scrapy db init` first")

    first = scrapy_db("init", *args)
    assert first.returncode == 0, first.stderr
    assert "applying 0001_create_schema.sql" in first.stdout
    assert f"Applied {len(SQLITE_FILES)} migration(s)" in first.stdout
    again = scrapy_db("init", "--url", postgres_url)
    assert again.returncode == 0 and "Nothing to do" in again.stdout, again.stderr

    status = scrapy_db("status", *args)
    assert status.returncode == 0, status.stderr
    assert "0006_frontier_sources_and_lease_losses.sql  applied 20" in status.stdout
    assert "Pending migrations: none" in status.stdout
    versions = [row[0] for row in pg_rows(postgres_url, "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [name[:4] for name in SQLITE_FILES]

    pg_rows(
        postgres_url,
        "INSERT INTO work_items (work_item_id, source_system, source_name, resource_type, resource_id, request_uri,"
        " request_method, priority, status, attempt, created_at, updated_at, dedupe_key) VALUES ('keep', "
        "'mediawiki', 'w', 'page', 'X', 'http://w', 'GET', 0, 'pending', 0, now(), now(), 'mediawiki:w:page:X')"
        " RETURNING work_item_id",
    )
    smoke = scrapy_db("smoketest", *args)
    assert smoke.returncode == 0, (smoke.stdout, smoke.stderr)
    for expected in (
        "PostgreSQL Connection Info",
        "Connection established successfully (PostgreSQL 1",
        "Schema and tables verified",
        "Second insert with the same dedupe_key correctly rejected",
        "Removed the smoke-test row",
        "The PostgreSQL store is ready for use.",
    ):
        assert expected in smoke.stdout
    assert pg_rows(postgres_url, "SELECT work_item_id FROM work_items") == [("keep",)]


def test_postgresql_init_creates_a_missing_database():
    from tests.support import postgres

    name = f"{postgres.PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"  # swept like the fixture's if we die
    target = postgres.url_for(name).replace("postgresql+psycopg://", "postgresql://")
    try:
        dry = scrapy_db("init", "--dry-run", "--url", target)
        assert dry.returncode == 0, dry.stderr
        assert f"database {name} does not exist: init would create it" in dry.stdout
        assert "CREATE TABLE work_items" in dry.stdout
        with postgres.admin_connect() as admin:
            assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
        result = scrapy_db("init", "--url", target)
        assert result.returncode == 0, result.stderr
        assert f"created database {name}" in result.stdout
        assert f"Applied {len(SQLITE_FILES)} migration(s)" in result.stdout
        assert len(pg_rows(target, "SELECT version FROM schema_migrations")) == len(SQLITE_FILES)
    finally:
        with postgres.admin_connect() as admin:
            postgres.drop_database(admin, name)


def test_postgresql_url_from_config(postgres_url, tmp_path):
    config = tmp_path / "holocron.yaml"
    config.write_text(f"state:\n  url: {postgres_url}\n", "utf-8")
    result = scrapy_db("init", "--store", "state", "-s", f"HOLOCRON_CONFIG={config}")
    assert result.returncode == 0, result.stderr
    assert f"Database: {postgres_url}" in result.stdout
    assert len(pg_rows(postgres_url, "SELECT version FROM schema_migrations")) == len(SQLITE_FILES)


def test_postgresql_password_never_shown(tmp_path):
    in_url = scrapy_db("status", "--url", "postgresql://root:Pg-Secret-99@127.0.0.1:5432/x")
    line = assert_one_line_error(in_url, "--url", "PGPASSWORD", ".pgpass")
    assert "Pg-Secret-99" not in line + in_url.stdout
    config = tmp_path / "holocron.yaml"
    config.write_text("storage:\n  records_url: postgresql://root:Pg-Secret-99@127.0.0.1/x\n", "utf-8")
    in_config = scrapy_db("status", "-s", f"HOLOCRON_CONFIG={config}")
    line = assert_one_line_error(in_config, "storage.records_url", "PGPASSWORD")
    assert "Pg-Secret-99" not in line
    # a refused connection: one line naming the server, the password (PGPASSWORD) masked
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        refused = scrapy_db(
            "status", "--url", f"postgresql://root@127.0.0.1:{port}/x", env={"PGPASSWORD": "Pg-Secret-99"}
        )
    line = assert_one_line_error(refused, f"127.0.0.1:{port}/x")
    assert "Pg-Secret-99" not in refused.stdout + refused.stderr


# -- errors ----------------------------------------------------------------------------------
def test_smoketest_before_init(db_path):
    result = scrapy_db("smoketest", "--url", url(db_path))
    assert_one_line_error(result, "run `scrapy db init` first")
    assert not db_path.exists()


def test_foreign_database_refused_and_untouched(tmp_path):
    path = tmp_path / "foreign.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = digest(path)
    for action in ("init", "status", "smoketest"):
        result = scrapy_db(action, "--url", url(path))
        assert_one_line_error(result, "not a holocron_scrapy database")
    assert digest(path) == before


def test_bad_url():
    assert_one_line_error(scrapy_db("status", "--url", "mysql://x/y"), "--url", "unknown store URL scheme")
    assert_one_line_error(scrapy_db("status", "--url", "not a url"), "not a URL")


def test_bad_config_file(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("storage: [unclosed\n", "utf-8")
    assert_one_line_error(scrapy_db("status", "-s", f"HOLOCRON_CONFIG={config}"), "malformed YAML")


def test_usage_errors(db_path):
    unknown = scrapy_db("migrate", "--url", url(db_path))
    assert unknown.returncode == 2 and "expected one action: init, status, smoketest" in unknown.stderr
    assert scrapy_db("--url", url(db_path)).returncode == 2
    assert scrapy_db("status", "--dry-run", "--url", url(db_path)).returncode == 2
    assert scrapy_db("init", "--wait-timeout", "-1", "--url", url(db_path)).returncode == 2
    assert "Traceback" not in unknown.stderr


def test_sqlserver_without_password():
    result = scrapy_db("status", "--url", "sqlserver://")
    assert_one_line_error(result, "INGEST_SQLSERVER_PASSWORD")


def test_sqlserver_unknown_driver_lists_installed():
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc cannot load libodbc.so.2: apt-get install unixodbc")
    env = {"INGEST_SQLSERVER_PASSWORD": PASSWORD, "INGEST_SQLSERVER_DRIVER": "No Such Driver 7"}
    line = assert_one_line_error(scrapy_db("status", "--url", "sqlserver://", env=env), "'No Such Driver 7'")
    assert f"installed drivers: {', '.join(pyodbc.drivers()) or 'none'}" in line


def test_sqlserver_unreachable_after_wait_timeout():
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc cannot load libodbc.so.2: apt-get install unixodbc")
    driver = next((d for d in pyodbc.drivers() if "freetds" in d.lower()), None)
    if driver is None:
        pytest.skip("FreeTDS ODBC driver not registered: apt-get install tdsodbc (see docs/sqlserver.md)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "INGEST_SQLSERVER_PASSWORD": PASSWORD,
        "INGEST_SQLSERVER_DRIVER": driver,
        "INGEST_SQLSERVER_HOST": "127.0.0.1",
        "INGEST_SQLSERVER_PORT": str(port),
    }
    for action in ("init", "status", "smoketest"):
        result = scrapy_db(action, "--url", "sqlserver://", "--wait-timeout", "1", env=env)
        assert_one_line_error(result, f"127.0.0.1:{port}", "PWD=***")
        assert PASSWORD not in result.stdout + result.stderr


# -- live SQL Server -------------------------------------------------------------------------
@pytest.mark.sqlserver
@pytest.mark.skipif(not SQLSERVER_CONFIGURED, reason=SQLSERVER_REASON)
def test_live_sqlserver_commands():
    from holocron_scrapy.db import sqlserver

    schema = f"holocron_cmd_{uuid.uuid4().hex[:8]}"
    env = {"INGEST_SQLSERVER_SCHEMA": schema}
    try:
        dry = scrapy_db(
            "init", "--dry-run", "--url", "sqlserver://", "--wait-timeout", "30", env=env, keep_sqlserver_env=True
        )
        assert dry.returncode == 0, dry.stderr
        assert f"CREATE TABLE [{schema}].[work_items]" in dry.stdout
        init = scrapy_db("init", "--url", "sqlserver://", "--wait-timeout", "30", env=env, keep_sqlserver_env=True)
        assert init.returncode == 0, init.stderr
        assert f"Applied {len(SQLITE_FILES)} migration(s)" in init.stdout
        again = scrapy_db("init", "--url", "sqlserver://", env=env, keep_sqlserver_env=True)
        assert "Nothing to do" in again.stdout
        status = scrapy_db("status", "--url", "sqlserver://", env=env, keep_sqlserver_env=True)
        assert "Pending migrations: none" in status.stdout
        smoke = scrapy_db("smoketest", "--url", "sqlserver://", env=env, keep_sqlserver_env=True)
        assert smoke.returncode == 0, (smoke.stdout, smoke.stderr)
        assert "All smoke tests passed!" in smoke.stdout and "Password: ***" in smoke.stdout
        assert os.environ["INGEST_SQLSERVER_PASSWORD"] not in smoke.stdout + smoke.stderr
    finally:
        settings = sqlserver.SqlServerSettings.resolve({}, environ={**os.environ, "INGEST_SQLSERVER_SCHEMA": schema})
        conn = sqlserver.connect(settings, wait_timeout=30)
        cur = conn.cursor()
        cur.execute("SELECT t.name FROM sys.tables AS t WHERE t.schema_id = SCHEMA_ID(?)", schema)
        for (name,) in cur.fetchall():  # test cleanup only: migrations never drop anything
            cur.execute(f"DROP TABLE [{schema}].[{name}]")
        cur.execute(f"IF SCHEMA_ID(N'{schema}') IS NOT NULL EXEC (N'DROP SCHEMA [{schema}]')")
        conn.commit()
        conn.close()


# -- the SQL Server branch of the smoke test, against a recording fake ------------------------
class DuplicateKey(Exception):
    pass


class FakeServer:
    """Just enough of a pyodbc connection for the smoke test's round trip."""

    def __init__(self, *, enforce_unique: bool = True):
        self.rows: dict[str, list] = {}
        self.log: list[tuple] = []
        self.enforce_unique = enforce_unique

    def cursor(self):
        return FakeServerCursor(self)

    def commit(self):
        self.log.append(("commit",))

    def rollback(self):
        self.log.append(("rollback",))


class FakeServerCursor:
    def __init__(self, server):
        self.server, self.result = server, None

    def execute(self, sql, params):
        self.server.log.append((sql, params))
        rows = self.server.rows
        if sql.startswith("INSERT"):
            key = params[-1]
            if self.server.enforce_unique and any(r[2] == key for r in rows.values()):
                raise DuplicateKey("23000", "[23000] Cannot insert duplicate key row ... (2601) (SQLExecDirectW)")
            rows[params[0]] = [params[0], "pending", key]
        elif sql.startswith("SELECT"):
            self.result = tuple(rows[params[0]]) if params[0] in rows else None
        elif sql.startswith("UPDATE"):
            rows[params[2]][1] = "completed"
        elif sql.startswith("DELETE"):
            rows.pop(params[0], None)
        return self

    def fetchone(self):
        return self.result


def test_sqlserver_round_trip_flow():
    from datetime import datetime

    from holocron_scrapy.db.connection import SQLSERVER
    from holocron_scrapy.db.smoketest import round_trip

    server = FakeServer()
    lines: list[str] = []
    round_trip(server, SQLSERVER, "[crawl].[work_items]", step=lines.append)
    statements = [entry[0] for entry in server.log if len(entry) == 2]
    assert all("[crawl].[work_items]" in sql for sql in statements)
    inserts = [entry for entry in server.log if entry[0].startswith("INSERT")]
    assert len(inserts) == 2 and isinstance(inserts[0][1][6], datetime)  # DATETIME2 gets a datetime
    assert inserts[0][1][1] == "holocron_smoketest"
    deletes = [entry[1] for entry in server.log if entry[0].startswith("DELETE")]
    assert all(params[1] == "holocron_smoketest" for params in deletes)
    assert server.rows == {}
    assert ("rollback",) in server.log and server.log[-1] == ("commit",)
    assert any("correctly rejected" in line for line in lines)


def test_sqlserver_round_trip_detects_missing_unique_index():
    from holocron_scrapy.db.connection import SQLSERVER
    from holocron_scrapy.db.smoketest import round_trip
    from holocron_scrapy.errors import StoreError

    server = FakeServer(enforce_unique=False)
    with pytest.raises(StoreError, match="same dedupe_key was accepted"):
        round_trip(server, SQLSERVER, "[ingest].[work_items]", step=lambda line: None)
    assert server.rows == {}  # both rows removed although the test failed
