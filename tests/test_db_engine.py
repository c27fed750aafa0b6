"""Store URLs for every backend (holocron_scrapy.db.connection), the engines open_engine makes from them
(holocron_scrapy.db.engine: SQLite and the live PostgreSQL for real, SQL Server offline with the URL
mapping and a recording fake connection) and the one store-target resolver (holocron_scrapy.db.targets)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote_plus

import psycopg
import pytest
import sqlalchemy as sa
from scrapy.settings import Settings

from holocron_scrapy import defaults, secrets
from holocron_scrapy.config import parse_config
from holocron_scrapy.db import connection, engine, sqlserver, targets
from holocron_scrapy.db.migrations import MigrationRunner, load_migrations
from holocron_scrapy.db.odbc import parse_odbc
from holocron_scrapy.errors import ConfigError, StoreError
from holocron_scrapy.frontier.scheduler import state_url_from_settings as scheduler_state_url
from holocron_scrapy.settings_check import check_settings

PASSWORD = "Eng1ne-Pa55word!"
VERSIONS = [m.version for m in load_migrations("sqlite")]
ODBC_18 = "ODBC Driver 18 for SQL Server"


@pytest.fixture(autouse=True)
def clean_secrets(monkeypatch):
    for name in ("PGPASSWORD", "INGEST_SQLSERVER_PASSWORD", "INGEST_SQLSERVER_STATE_CONN_STR", "INGEST_SQLSERVER_HOST"):
        monkeypatch.delenv(name, raising=False)
    secrets.forget_all()
    yield
    secrets.forget_all()


# -- parsing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "dialect", "normal"),
    [
        ("postgresql://root@127.0.0.1:5432/test", "postgresql", "postgresql+psycopg://root@127.0.0.1:5432/test"),
        ("postgres://root@db.example/lake", "postgresql", "postgresql+psycopg://root@db.example/lake"),
        (
            "postgresql+psycopg://u@h:6432/d?sslmode=require",
            "postgresql",
            "postgresql+psycopg://u@h:6432/d?sslmode=require",
        ),
        ("mssql+pyodbc://", "sqlserver", None),
        ("sqlserver://", "sqlserver", None),
        ("mssql://", "sqlserver", None),
    ],
)
def test_every_backend_url_parses(url, dialect, normal):
    parsed = connection.parse_store_url(url)
    assert parsed.dialect == dialect
    assert parsed.url == normal
    assert connection.dialect_of(url) == dialect


def test_sqlite_url_unchanged(tmp_path):
    parsed = connection.parse_store_url(f"sqlite:///{tmp_path}/state.sqlite3")
    assert parsed.dialect == "sqlite" and parsed.path == str(tmp_path / "state.sqlite3")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgresql://root:hunter2@127.0.0.1/test", "PGPASSWORD"),
        ("postgresql+psycopg://root:hunter2@127.0.0.1/test", ".pgpass"),
        ("mssql+pyodbc://sa:hunter2@db/Lake", "INGEST_SQLSERVER_PASSWORD"),
    ],
)
def test_password_in_url_refused_without_showing_it(url, fragment):
    with pytest.raises(ConfigError) as caught:
        connection.parse_store_url(url, setting="state.url")
    text = str(caught.value)
    assert "state.url" in text and fragment in text and "hunter2" not in text


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://u@h/d", "unknown store URL scheme"),
        ("postgresql+psycopg2://u@h/d", "unknown store URL scheme"),
        ("postgresql:///d", "USER@HOST"),
        ("postgresql://u@h/d?sslmod=require", "sslmod"),
        ("mssql+pyodbc://db/Lake", "USER@HOST"),
        ("mssql+pyodbc://sa@db/Lake?schema=x", "unknown SQL Server URL parameter 'schema'"),
        ("mssql+pyodbc://sa@db/Lake?odbc_connect=DSN%3Dx", "only part"),
    ],
)
def test_bad_urls_name_the_problem(url, fragment):
    with pytest.raises(ConfigError, match="HOLOCRON_RECORDS_URL") as caught:
        connection.parse_store_url(url, setting="HOLOCRON_RECORDS_URL")
    assert fragment in str(caught.value)


def test_postgresql_urls_pass_config_loading_and_the_settings_check(tmp_path):
    config = parse_config(
        "storage:\n  records_url: postgresql://root@127.0.0.1:5432/lake\n"
        "state:\n  url: postgresql+psycopg://root@127.0.0.1:5432/lake\n",
        "holocron.yaml",
    )
    assert config.records_url == "postgresql://root@127.0.0.1:5432/lake"
    assert config.state_url == "postgresql+psycopg://root@127.0.0.1:5432/lake"
    check_settings(
        Settings(
            {
                "HOLOCRON_STATE_URL": "postgresql://root@127.0.0.1:5432/lake",
                "HOLOCRON_RECORDS_URL": "mssql+pyodbc://sa@db.example:1433/Lake",
            }
        )
    )


def test_password_in_the_config_file_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as caught:
        parse_config("state:\n  url: postgresql://root:hunter2@db/lake\n", "holocron.yaml")
    text = str(caught.value)
    assert "holocron.yaml" in text and "state.url" in text and "PGPASSWORD" in text and "hunter2" not in text


# -- SQL Server: one ODBC string whatever the form -----------------------------------------------------
def test_mssql_pyodbc_url_maps_to_an_odbc_string_without_password(monkeypatch):
    monkeypatch.setenv("INGEST_SQLSERVER_PASSWORD", PASSWORD)
    parsed = connection.parse_store_url(
        f"mssql+pyodbc://ingest@db.example:14330/Lake?driver={quote_plus(ODBC_18)}&encrypt=yes"
        "&trust_server_certificate=no"
    )
    pairs = dict(parse_odbc(parsed.odbc_connect))
    assert pairs == {
        "Driver": ODBC_18,
        "Server": "tcp:db.example,14330",
        "Encrypt": "yes",
        "Database": "Lake",
        "UID": "ingest",
        "APP": "holocron_scrapy",
    }
    settings = connection.sqlserver_settings(parsed, {"schema": "crawl"})
    assert settings.schema == "crawl"
    assert dict(parse_odbc(settings.connection_string()))["PWD"] == PASSWORD  # from the environment
    url = engine.sqlserver_engine_url(settings)
    assert url.drivername == "mssql+pyodbc" and PASSWORD not in url.render_as_string(hide_password=False)
    assert dict(parse_odbc(url.query["odbc_connect"])) == pairs


def test_sqlserver_forms_and_yaml_section_give_the_same_engine_url(monkeypatch):
    """``sqlserver://`` + YAML section, ``mssql+pyodbc://`` + the same section, and the explicit URL
    end at the same ODBC connection string (the engine's URL), password never in it."""
    monkeypatch.setenv("INGEST_SQLSERVER_PASSWORD", PASSWORD)
    section = {"host": "db.example", "port": 14330, "database": "Lake", "user": "ingest", "driver": ODBC_18}
    explicit = f"mssql+pyodbc://ingest@db.example:14330/Lake?driver={quote_plus(ODBC_18)}"
    urls = set()
    for url, yaml_section in (("sqlserver://", section), ("mssql+pyodbc://", section), (explicit, {})):
        settings = connection.sqlserver_settings(connection.parse_store_url(url), yaml_section)
        urls.add(engine.sqlserver_engine_url(settings).render_as_string(hide_password=False))
    assert len(urls) == 1
    assert PASSWORD not in urls.pop()


def test_odbc_connect_forms(monkeypatch):
    monkeypatch.setenv("INGEST_SQLSERVER_PASSWORD", PASSWORD)
    odbc = "Driver={FreeTDS};Server=db;Port=1433;Database=Lake;UID=sa;"
    for url in (f"sqlserver://?odbc_connect={quote_plus(odbc)}", f"mssql+pyodbc:///?odbc_connect={quote_plus(odbc)}"):
        parsed = connection.parse_store_url(url)
        assert parsed.dialect == "sqlserver" and parsed.odbc_connect == odbc


class RecordingRaw:
    """A raw SQL Server connection that answers the migration runner as an empty schema would."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.applied: list[str] | None = None
        self.closed = False

    def cursor(self) -> RecordingRaw:
        return self

    def execute(self, statement: str, *params):
        self.sql.append(statement)
        if "sp_getapplock" in statement:
            self.result = [(0,)]
        elif "OBJECT_ID(?, N'U')" in statement:
            self.result = [(1 if self.applied is not None else None,)]
        elif "SELECT version, applied_at" in statement:
            self.result = [(v, "2026-01-01 00:00:00") for v in self.applied or []]
        elif "INSERT INTO" in statement and "schema_migrations" in statement:
            self.applied = (self.applied or []) + [params[0]]
            self.result = []
        elif "CREATE TABLE" in statement and "schema_migrations" in statement:
            self.applied = self.applied or []
            self.result = []
        else:
            self.result = []
        return self

    def fetchone(self):
        return self.result[0] if self.result else None

    def fetchall(self):
        return list(self.result)

    def nextset(self):
        return False

    def commit(self):
        pass

    def rollback(self):
        pass

    def close(self):
        self.closed = True


def test_open_engine_sqlserver_migrates_on_a_raw_connection_then_connects_lazily(monkeypatch):
    monkeypatch.setenv("INGEST_SQLSERVER_PASSWORD", PASSWORD)
    raws: list[RecordingRaw] = []
    seen: list[str] = []

    def fake_connect(settings, wait_timeout=0.0, **_kw):
        seen.append(settings.connection_string())
        raws.append(RecordingRaw())
        return raws[-1]

    monkeypatch.setattr(sqlserver, "connect", fake_connect)
    eng = engine.open_engine(
        "mssql+pyodbc://ingest@db.example:1433/Lake?driver=FreeTDS", sqlserver_config={"schema": "crawl"}
    )
    try:
        assert len(raws) == 1 and raws[0].closed  # the migrations' raw connection, closed again
        migrated = "\n".join(raws[0].sql)
        assert "[crawl].[work_items]" in migrated and "[ingest]" not in migrated
        assert raws[0].applied == VERSIONS
        assert f"PWD={PASSWORD}" in seen[0]  # the password reaches the driver ...
        assert eng.dialect.name == "mssql" and eng.driver == "pyodbc"
        for text in (str(eng.url), repr(eng), eng.url.render_as_string(hide_password=False)):
            assert PASSWORD not in text  # ... and nothing else
        assert "Database%3DLake" in str(eng.url)
        assert secrets.mask_text(f"login failed, PWD={PASSWORD};") == "login failed, PWD=***;"
    finally:
        eng.dispose()
    assert len(raws) == 1  # creating the engine connected nothing


# -- SQLite ------------------------------------------------------------------------------------------
def test_open_engine_sqlite_applies_the_migrations(tmp_path):
    path = tmp_path / "state.sqlite3"
    eng = engine.open_engine(f"sqlite:///{path}")
    try:
        with eng.connect() as conn:
            versions = conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version")).scalars().all()
        assert versions == VERSIONS
    finally:
        eng.dispose()


# -- PostgreSQL (live) -------------------------------------------------------------------------------
def test_open_engine_postgresql_baseline_once(postgres_url):
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    first = engine.open_engine(plain)
    second = engine.open_engine(postgres_url)
    try:
        assert first.url.drivername == "postgresql+psycopg"
        runner = MigrationRunner(second, "postgresql")
        assert sorted(runner.applied()) == VERSIONS and runner.pending() == []
        assert engine.ensure_postgresql_schema(second) == []  # nothing recorded twice
    finally:
        first.dispose()
        second.dispose()


def test_postgresql_foreign_database_refused_and_untouched(postgres_url):
    with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int primary key)")
    with pytest.raises(StoreError, match="not a holocron_scrapy database .*customers"):
        engine.open_engine(postgres_url)
    with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert tables == ["customers"]


def test_pgpassword_is_registered_and_masked(monkeypatch):
    """A refused connection's error names the server, never the password; PGPASSWORD is a secret."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with socket_closed_port() as port:
        with pytest.raises(StoreError) as caught:
            engine.open_engine(f"postgresql://root@127.0.0.1:{port}/nowhere?connect_timeout=2")
    assert f"127.0.0.1:{port}/nowhere" in str(caught.value) and PASSWORD not in str(caught.value)
    assert secrets.mask_text(f"password={PASSWORD} rejected") == "password=*** rejected"


class socket_closed_port:
    """A loopback port nothing listens on (bound, never listening, for the duration)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


# -- one store-target resolver -------------------------------------------------------------------------
class FakeConfig:
    def __init__(self, state_url=None, records_url=defaults.RECORDS_URL):
        self.state_url, self.records_url = state_url, records_url
        self.state_sqlserver = {"schema": "state_schema"}
        self.records_sqlserver = {"schema": "records_schema"}


def resolve(store, values=None, *, cmdline=None, project=None, config=None, **kw):
    settings = Settings()
    settings.setdict(project or {}, priority="project")
    settings.setdict(cmdline or {}, priority="cmdline")
    calls = []

    def load():
        calls.append(1)
        return config or FakeConfig()

    target = targets.resolve_store_target(store, settings, config=load, **kw)
    return target, len(calls)


def test_state_rule_matches_the_crawl(tmp_path):
    jobdir_url = "sqlite:///" + str((tmp_path / "run1" / defaults.JOBDIR_STATE_FILE).resolve())
    config = FakeConfig(state_url="postgresql://root@db/state")
    # the config's state.url beats the default ...
    assert resolve("state", config=config)[0].url == "postgresql://root@db/state"
    # ... -s JOBDIR beats the config's state.url (without reading the config) ...
    target, loads = resolve("state", cmdline={"JOBDIR": str(tmp_path / "run1")}, config=config)
    assert (target.url, target.origin, loads) == (jobdir_url, "JOBDIR", 0)
    # ... an explicit -s HOLOCRON_STATE_URL beats -s JOBDIR ...
    both = {"JOBDIR": str(tmp_path / "run1"), "HOLOCRON_STATE_URL": "sqlite:///explicit.sqlite3"}
    assert resolve("state", cmdline=both, config=config)[0].url == "sqlite:///explicit.sqlite3"
    # ... the config beats a project-level JOBDIR, as in a crawl (config at spider priority) ...
    assert resolve("state", project={"JOBDIR": "x"}, config=config)[0].url == "postgresql://root@db/state"
    # ... JOBDIR beats the default; --url beats everything, and the default comes last.
    assert resolve("state", project={"JOBDIR": str(tmp_path / "run1")})[0].url == jobdir_url
    assert resolve("state", cmdline=both, url="sqlite:///opt.sqlite3")[0].origin == "--url"
    assert resolve("state")[0].url == defaults.STATE_URL


def test_the_crawl_and_the_commands_agree(tmp_path):
    """state_url_from_settings (settings with the config applied at spider priority, as a crawl has
    them) gives what resolve_store_target gives from the config directly."""
    config = FakeConfig(state_url="postgresql://root@db/state")
    for cmdline in ({}, {"JOBDIR": str(tmp_path)}, {"JOBDIR": str(tmp_path), "HOLOCRON_STATE_URL": "sqlite:///e.db"}):
        settings = Settings()
        settings.setdict(cmdline, priority="cmdline")
        settings.set("HOLOCRON_STATE_URL", config.state_url, priority="spider")
        expected = resolve("state", cmdline=cmdline, config=config)[0].url
        assert targets.state_url_from_settings(settings) == expected
        assert scheduler_state_url(settings) == expected  # the scheduler's own copy of the rule
    assert targets.state_url_from_settings({"HOLOCRON_STATE_URL": "sqlite:///a.db", "JOBDIR": "j"}) == "sqlite:///a.db"


def test_records_rule_and_sqlserver_sections():
    target, loads = resolve("records", url="sqlite:///r.sqlite3")
    assert (target.origin, target.sqlserver_config, loads) == ("--url", {}, 0)  # no config needed
    target, loads = resolve("records", cmdline={"HOLOCRON_RECORDS_URL": "postgresql://root@db/r"})
    assert (target.origin, loads) == ("HOLOCRON_RECORDS_URL", 0)
    target, _ = resolve("records", config=FakeConfig(records_url="mssql+pyodbc://"))
    assert (target.origin, target.sqlserver_config) == ("storage.records_url", {"schema": "records_schema"})
    target, _ = resolve("state", url="sqlserver://")
    assert target.sqlserver_config == {"schema": "state_schema"}  # the YAML section still applies
    target, loads = resolve("state", url="sqlserver://", cmdline={"HOLOCRON_STATE_SQLSERVER": {"schema": "explicit"}})
    assert (target.sqlserver_config, loads) == ({"schema": "explicit"}, 0)
    with pytest.raises(ConfigError, match="--url"):
        resolve("records", url="mysql://x")[0].parsed()


def test_sqlite_engine_still_refuses_foreign_files(tmp_path):
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="not a holocron_scrapy database"):
        engine.open_engine(f"sqlite:///{path}")
    assert Path(path).exists()


def test_postgresql_connections_time_out_and_keep_alive(postgres_url):
    """A vanished server fails a call within about a minute (the frontier waits it out); URL values win."""
    for url, timeout in ((postgres_url, "10"), (postgres_url + "?connect_timeout=3", "3")):
        eng = engine.postgresql_engine(url)
        try:
            with eng.connect() as conn:
                params = conn.connection.dbapi_connection.info.get_parameters()
            assert params["connect_timeout"] == timeout
            assert (params["keepalives"], params["keepalives_idle"], params["keepalives_count"]) == ("1", "30", "3")
        finally:
            eng.dispose()
