"""holocron_scrapy.db.sqlserver: settings resolution, connection strings, masking, error
classification and connect() (fake pyodbc, the real pyodbc with FreeTDS against a closed
port, and a real SQL Server when INGEST_SQLSERVER_HOST/PASSWORD are set)."""

from __future__ import annotations

import builtins
import os
import socket
import sqlite3
import sys
import time
import types

import pytest

from holocron_scrapy.db import sqlserver
from holocron_scrapy.db.odbc import format_odbc, parse_odbc
from holocron_scrapy.db.sqlserver import SqlServerSettings, connect
from holocron_scrapy.db.sqlserver_errors import is_duplicate_key, is_transient
from holocron_scrapy.errors import ConfigError, StoreError
from tests.support.sqlserver import SQLSERVER_CONFIGURED, SQLSERVER_REASON

PASSWORD = "Pa55;w{o}rd=Secr3t!"
MS = "[Microsoft][ODBC Driver 18 for SQL Server]"
ENV = {"INGEST_SQLSERVER_PASSWORD": PASSWORD}


def resolve(yaml=None, conn_str=None, **env) -> SqlServerSettings:
    return SqlServerSettings.resolve(yaml or {}, conn_str=conn_str, environ={**ENV, **env})


def pairs(conn_str: str) -> dict[str, str]:
    return {k.lower(): v for k, v in parse_odbc(conn_str)}


# -- resolution --------------------------------------------------------------------------------
def test_defaults():
    s = resolve()
    assert (s.host, s.port, s.database, s.user, s.driver, s.schema) == (
        "localhost",
        1433,
        "Holocron",
        "sa",
        "ODBC Driver 18 for SQL Server",
        "ingest",
    )
    assert s.password == PASSWORD
    assert s.fast_executemany is False
    assert s.login_timeout == 15


def test_environment_variables():
    s = resolve(
        INGEST_SQLSERVER_HOST="db.internal",
        INGEST_SQLSERVER_PORT="14330",
        INGEST_SQLSERVER_DATABASE="Lake",
        INGEST_SQLSERVER_USER="crawler",
        INGEST_SQLSERVER_DRIVER="FreeTDS",
        INGEST_SQLSERVER_SCHEMA="crawl",
        INGEST_SQLSERVER_TRUST_SERVER_CERTIFICATE="yes",
        INGEST_SQLSERVER_ENCRYPT="no",
        INGEST_SQLSERVER_LOGIN_TIMEOUT="3",
        INGEST_SQLSERVER_FAST_EXECUTEMANY="true",
    )
    assert (s.host, s.port, s.database, s.user, s.driver, s.schema) == (
        "db.internal",
        14330,
        "Lake",
        "crawler",
        "FreeTDS",
        "crawl",
    )
    assert (s.trust_server_certificate, s.encrypt, s.login_timeout, s.fast_executemany) == (True, False, 3, True)


def test_yaml_section_used_when_environment_is_silent():
    yaml = {
        "host": "sql.example.org",
        "port": 1444,
        "database": "Lake",
        "user": "bot",
        "schema": "crawl",
        "trust_server_certificate": True,
        "encrypt": True,
        "driver": "FreeTDS",
    }
    s = resolve(yaml)
    assert (s.host, s.port, s.database, s.user, s.schema, s.driver) == (
        "sql.example.org",
        1444,
        "Lake",
        "bot",
        "crawl",
        "FreeTDS",
    )
    assert s.trust_server_certificate is True and s.encrypt is True


def test_environment_wins_over_yaml():
    s = resolve({"host": "yaml-host", "database": "YamlDb"}, INGEST_SQLSERVER_HOST="env-host")
    assert s.host == "env-host" and s.database == "YamlDb"


def test_empty_environment_values_are_ignored():
    assert resolve({"host": "yaml-host"}, INGEST_SQLSERVER_HOST="  ").host == "yaml-host"


def test_password_is_required():
    with pytest.raises(ConfigError, match="INGEST_SQLSERVER_PASSWORD") as info:
        SqlServerSettings.resolve({}, environ={})
    assert info.value.key == "INGEST_SQLSERVER_PASSWORD"


def test_password_in_yaml_refused():
    with pytest.raises(ConfigError, match="not read from YAML") as info:
        resolve({"password": "YamlPw123"})
    assert "YamlPw123" not in str(info.value)
    assert info.value.key == "password"


def test_unknown_yaml_key_refused():
    with pytest.raises(ConfigError, match="unknown key") as info:
        resolve({"hots": "typo"})
    assert info.value.key == "hots"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"INGEST_SQLSERVER_PORT": "http"}, "INGEST_SQLSERVER_PORT"),
        ({"INGEST_SQLSERVER_PORT": "70000"}, "INGEST_SQLSERVER_PORT"),
        ({"INGEST_SQLSERVER_ENCRYPT": "maybe"}, "INGEST_SQLSERVER_ENCRYPT"),
        ({"INGEST_SQLSERVER_SCHEMA": "bad-schema"}, "INGEST_SQLSERVER_SCHEMA"),
        ({"INGEST_SQLSERVER_SCHEMA": "x]; DROP TABLE y --"}, "INGEST_SQLSERVER_SCHEMA"),
        ({"INGEST_SQLSERVER_LOGIN_TIMEOUT": "0"}, "INGEST_SQLSERVER_LOGIN_TIMEOUT"),
    ],
)
def test_bad_environment_values_name_the_variable(env, key):
    with pytest.raises(ConfigError) as info:
        resolve(**env)
    assert info.value.key == key
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("yaml", "key"),
    [
        ({"schema": "1abc"}, "schema"),
        ({"port": True}, "port"),
        ({"host": 5}, "host"),
        ({"trust_server_certificate": "perhaps"}, "trust_server_certificate"),
    ],
)
def test_bad_yaml_values_name_the_key(yaml, key):
    with pytest.raises(ConfigError) as info:
        resolve(yaml)
    assert info.value.key == key


# -- connection strings ------------------------------------------------------------------------
def test_connection_string_microsoft_driver():
    cs = resolve().connection_string()
    p = pairs(cs)
    assert p["driver"] == "ODBC Driver 18 for SQL Server"
    assert p["server"] == "tcp:localhost,1433"
    assert p["database"] == "Holocron" and p["uid"] == "sa"
    assert p["pwd"] == PASSWORD  # braced and escaped, parsed back intact
    assert p["encrypt"] == "yes"
    assert cs.startswith("Driver={ODBC Driver 18 for SQL Server};")


@pytest.mark.parametrize(
    ("host", "configured", "expected"),
    [
        ("localhost", None, True),
        ("127.0.0.1", None, True),
        ("LOCALHOST", None, True),
        ("db.example.org", None, False),
        ("10.0.0.5", None, False),
        ("localhost", False, False),
        ("db.example.org", True, True),
    ],
)
def test_trust_server_certificate_defaults(host, configured, expected):
    yaml = {"host": host}
    if configured is not None:
        yaml["trust_server_certificate"] = configured
    p = pairs(resolve(yaml).connection_string())
    assert (p.get("trustservercertificate") == "yes") is expected
    assert p.get("trustservercertificate") in (None, "yes")


def test_encrypt_can_be_disabled():
    assert pairs(resolve({"encrypt": False}).connection_string())["encrypt"] == "no"


def test_connection_string_freetds():
    p = pairs(resolve(INGEST_SQLSERVER_DRIVER="FreeTDS", INGEST_SQLSERVER_HOST="127.0.0.1").connection_string())
    assert (p["server"], p["port"], p["tds_version"]) == ("127.0.0.1", "1433", "7.4")
    assert "trustservercertificate" not in p and "encrypt" not in p
    p = pairs(resolve({"driver": "FreeTDS", "encrypt": True}).connection_string())
    assert p["encryption"] == "require"


def test_full_connection_string_needs_no_separate_password():
    cs = "Driver={FreeTDS};Server=db;Port=1433;Database=Lake;UID=bot;PWD=FromConnStr9;"
    s = SqlServerSettings.resolve({}, environ={"INGEST_SQLSERVER_STATE_CONN_STR": cs})
    assert s.connection_string() == format_odbc(parse_odbc(cs))
    assert s.effective_driver() == "FreeTDS"
    assert "FromConnStr9" not in s.masked() and "PWD=***" in s.masked()
    assert "FromConnStr9" not in repr(s) and "FromConnStr9" not in str(s)
    assert s.describe()["Host"] == "db" and s.describe()["Database"] == "Lake"


def test_environment_wins_for_connection_strings_and_passwords():
    env_cs = "Driver={FreeTDS};Server=envhost;Database=A;UID=u;PWD=EnvConnPw1;"
    url_cs = "Driver={FreeTDS};Server=urlhost;Database=B;UID=u;PWD=UrlPw2;"
    yaml_cs = "Driver={FreeTDS};Server=yamlhost;Database=C;UID=u;"
    s = SqlServerSettings.resolve(
        {"conn_str": yaml_cs}, conn_str=url_cs, environ={"INGEST_SQLSERVER_STATE_CONN_STR": env_cs}
    )
    assert pairs(s.connection_string())["server"] == "envhost"
    s = SqlServerSettings.resolve({"conn_str": yaml_cs}, conn_str=url_cs, environ={})
    assert pairs(s.connection_string())["server"] == "urlhost"
    s = SqlServerSettings.resolve({"conn_str": yaml_cs}, environ=ENV)
    p = pairs(s.connection_string())
    assert p["server"] == "yamlhost" and p["pwd"] == PASSWORD  # env password added
    s = SqlServerSettings.resolve({}, conn_str=url_cs, environ=ENV)
    assert pairs(s.connection_string())["pwd"] == PASSWORD  # env password replaces the string's


def test_malformed_connection_string():
    with pytest.raises(ConfigError, match="malformed"):
        SqlServerSettings.resolve({}, conn_str="Driver={FreeTDS;Server=x", environ={})


def test_odbc_round_trip():
    original = [("Driver", "ODBC Driver 18 for SQL Server"), ("PWD", "a;b}c{d= e"), ("UID", "sa")]
    assert parse_odbc(format_odbc(original)) == original


# -- masking -----------------------------------------------------------------------------------
def test_password_never_in_repr_str_masked_or_describe():
    s = resolve()
    for text in (repr(s), str(s), s.masked(), str(s.describe()), s.where(), f"{s!r} {s!s}"):
        assert PASSWORD not in text
        assert "Pa55" not in text
    assert "PWD=***" in s.masked()
    assert s.describe()["Password"] == "***"
    assert s.redact(f"login failed with {PASSWORD}") == "login failed with ***"


# -- error classification ----------------------------------------------------------------------
class FakeError(Exception):
    pass


class IntegrityError(Exception):
    pass


@pytest.mark.parametrize(
    "args",
    [
        (
            "08S01",
            "[08S01] [FreeTDS][SQL Server]Unable to connect: Adaptive Server is unavailable (20009) (SQLDriverConnect)",
        ),
        ("08001", f"[08001] {MS}TCP Provider: Error code 0x2749 (10057) (SQLDriverConnect)"),
        ("HYT00", "[HYT00] [Microsoft][ODBC Driver 18 for SQL Server]Login timeout expired (0) (SQLDriverConnect)"),
        (
            "40001",
            "[40001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Transaction (Process ID 57) was "
            "deadlocked on lock resources with another process and has been chosen as the deadlock victim. "
            "Rerun the transaction. (1205) (SQLExecDirectW)",
        ),
        (
            "42000",
            "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Database 'x' on server 'y' is not "
            "currently available. (40613) (SQLDriverConnect)",
        ),
        (
            "42000",
            "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The service is currently busy. (40501) "
            "(SQLExecDirectW)",
        ),
        ("HY000", f"[HY000] {MS}[SQL Server]Elastic pool busy (49918) (SQLExecDirectW)"),
        ("HY000", "something (49919) (SQLExecDirectW)"),
        ("HY000", "something (49920) (SQLExecDirectW)"),
    ],
)
def test_transient_errors(args):
    assert is_transient(FakeError(*args))
    assert not is_duplicate_key(FakeError(*args))


@pytest.mark.parametrize(
    "args",
    [
        (
            "28000",
            "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'sa'. (18456) "
            "(SQLDriverConnect)",
        ),
        (
            "42S02",
            "[42S02] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Invalid object name 'x'. (208) "
            "(SQLExecDirectW)",
        ),
        (
            "01000",
            "[01000] [unixODBC][Driver Manager]Can't open lib 'ODBC Driver 18 for SQL Server' : file not found "
            "(0) (SQLDriverConnect)",
        ),
    ],
)
def test_permanent_errors(args):
    assert not is_transient(FakeError(*args))


@pytest.mark.parametrize("number", [2601, 2627])
def test_duplicate_key_errors(number):
    exc = IntegrityError(
        "23000",
        "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot insert duplicate key row in "
        "object 'ingest.work_items' with unique index 'ix_work_items_dedupe'. The duplicate key value is (1205). "
        f"({number}) (SQLExecDirectW); [01000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"
        "The statement has been terminated. (3621)",
    )
    assert is_duplicate_key(exc)
    assert not is_transient(exc)  # the key value (1205) is not an error number


def test_other_integrity_errors_are_not_duplicates():
    fk = IntegrityError("23000", "[23000] ... conflicted with the FOREIGN KEY constraint (547) (SQLExecDirectW)")
    assert not is_duplicate_key(fk)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a TEXT UNIQUE NOT NULL)")
    conn.execute("INSERT INTO t VALUES ('x')")
    with pytest.raises(sqlite3.IntegrityError) as dup:
        conn.execute("INSERT INTO t VALUES ('x')")
    assert is_duplicate_key(dup.value)
    with pytest.raises(sqlite3.IntegrityError) as null:
        conn.execute("INSERT INTO t VALUES (NULL)")
    assert not is_duplicate_key(null.value)


# -- connect() with a fake pyodbc ----------------------------------------------------------
class FakePyodbc(types.ModuleType):
    class Error(Exception):
        pass

    class OperationalError(Error):
        pass

    def __init__(self, failures=(), installed=("ODBC Driver 18 for SQL Server", "FreeTDS")):
        super().__init__("pyodbc")
        self.failures = list(failures)
        self.installed = list(installed)
        self.calls: list[dict] = []
        self.executed: list[str] = []

    def drivers(self):
        return list(self.installed)

    def connect(self, conn_str, timeout=0, autocommit=False):
        self.calls.append({"conn_str": conn_str, "timeout": timeout, "autocommit": autocommit})
        if self.failures:
            raise self.failures.pop(0)
        module = self

        class Cursor:
            def execute(self, sql, *params):
                module.executed.append(sql)

            def close(self):
                pass

        class Conn:
            def cursor(self):
                return Cursor()

            def commit(self):
                pass

            def close(self):
                pass

        return Conn()


@pytest.fixture
def fake_pyodbc(monkeypatch):
    def install(**kwargs):
        module = FakePyodbc(**kwargs)
        monkeypatch.setitem(sys.modules, "pyodbc", module)
        return module

    return install


def refused(module):
    return module.OperationalError(
        "08001",
        "[08001] [Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: Error code 0x2749 (10057) (SQLDriverConnect)",
    )


def test_connect_retries_transient_errors_until_up(fake_pyodbc):
    module = fake_pyodbc()
    module.failures = [refused(module), refused(module)]
    sleeps: list[float] = []
    conn = connect(resolve(), wait_timeout=30, sleep=sleeps.append)
    assert conn is not None
    assert len(module.calls) == 3 and sleeps == [0.5, 1.0]
    assert module.calls[0]["autocommit"] is False
    assert "SET QUOTED_IDENTIFIER ON;" in module.executed[0]


def test_connect_without_wait_tries_once(fake_pyodbc):
    module = fake_pyodbc()
    module.failures = [refused(module)]
    with pytest.raises(StoreError) as info:
        connect(resolve(), sleep=lambda s: pytest.fail("must not sleep"))
    assert len(module.calls) == 1
    message = str(info.value)
    assert "localhost:1433" in message and "PWD=***" in message and PASSWORD not in message
    assert "reachable" in message


def test_login_failure_is_not_retried(fake_pyodbc):
    module = fake_pyodbc()
    module.failures = [
        module.Error(
            "28000",
            f"[28000] [SQL Server]Login failed for user 'sa'. (18456) (SQLDriverConnect) pwd was {PASSWORD}",
        )
    ]
    with pytest.raises(StoreError, match="login failed") as info:
        connect(resolve(), wait_timeout=30, sleep=lambda s: pytest.fail("must not sleep"))
    assert PASSWORD not in str(info.value)
    assert len(module.calls) == 1


def test_unknown_driver_lists_installed_drivers(fake_pyodbc):
    fake_pyodbc(installed=["FreeTDS", "PostgreSQL Unicode"])
    with pytest.raises(StoreError) as info:
        connect(resolve(INGEST_SQLSERVER_DRIVER="ODBC Driver 99 for SQL Server"))
    message = str(info.value)
    assert "'ODBC Driver 99 for SQL Server' is not installed" in message
    assert "FreeTDS, PostgreSQL Unicode" in message
    assert PASSWORD not in message


def test_unknown_driver_with_the_real_pyodbc():
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc cannot load libodbc.so.2: apt-get install unixodbc")
    with pytest.raises(StoreError) as info:
        connect(resolve(INGEST_SQLSERVER_DRIVER="No Such Driver 42"))
    installed = ", ".join(pyodbc.drivers()) or "none"
    assert f"(installed drivers: {installed})" in str(info.value)


def test_missing_unixodbc_explains_the_fix(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "pyodbc":
            raise ImportError("libodbc.so.2: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "pyodbc", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(StoreError, match=r"apt-get install unixodbc"):
        connect(resolve())


def test_missing_pyodbc_explains_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyodbc", None)
    with pytest.raises(StoreError, match="pip install pyodbc"):
        connect(resolve())


def test_fast_executemany_is_opt_in():
    from holocron_scrapy.db.engine import sqlserver_engine

    assert sqlserver_engine(resolve()).dialect.fast_executemany is False
    assert sqlserver_engine(resolve(INGEST_SQLSERVER_FAST_EXECUTEMANY="yes")).dialect.fast_executemany is True


def test_ensure_database_skipped_for_full_connection_strings():
    s = SqlServerSettings.resolve({}, conn_str="Driver={FreeTDS};Server=x;Database=y;UID=u;PWD=p;", environ={})
    assert sqlserver.ensure_database(s) is None


# -- the real driver against a closed port -----------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def freetds_driver() -> str:
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc cannot load libodbc.so.2: apt-get install unixodbc")
    for name in pyodbc.drivers():
        if "freetds" in name.lower():
            return name
    pytest.skip("FreeTDS ODBC driver not registered: apt-get install tdsodbc (see docs/sqlserver.md)")


def test_unreachable_server_fails_after_the_wait_timeout():
    driver, port = freetds_driver(), closed_port()
    settings = resolve(
        INGEST_SQLSERVER_HOST="127.0.0.1",
        INGEST_SQLSERVER_PORT=str(port),
        INGEST_SQLSERVER_DRIVER=driver,
        INGEST_SQLSERVER_LOGIN_TIMEOUT="2",
    )
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        connect(settings, wait_timeout=1.5)
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 15
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "attempt(s)" in message
    assert settings.masked() in message and PASSWORD not in message
    assert "\n" not in message


def test_unreachable_server_without_wait_fails_at_once():
    driver, port = freetds_driver(), closed_port()
    settings = resolve(
        INGEST_SQLSERVER_HOST="127.0.0.1",
        INGEST_SQLSERVER_PORT=str(port),
        INGEST_SQLSERVER_DRIVER=driver,
        INGEST_SQLSERVER_LOGIN_TIMEOUT="2",
    )
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
        connect(settings)
    assert time.monotonic() - started < 5


# -- live SQL Server ---------------------------------------------------------------------------
@pytest.mark.sqlserver
@pytest.mark.skipif(not SQLSERVER_CONFIGURED, reason=SQLSERVER_REASON)
def test_live_connect_and_session_options():
    settings = SqlServerSettings.resolve({})
    sqlserver.ensure_database(settings, wait_timeout=30)
    conn = connect(settings, wait_timeout=30)
    try:
        cur = conn.cursor()
        cur.execute(sqlserver.TSQL_SERVER_INFO)
        version, database, _login = cur.fetchone()
        assert version and database == settings.database
        cur.execute("SELECT SESSIONPROPERTY('QUOTED_IDENTIFIER'), SESSIONPROPERTY('ANSI_NULLS')")
        assert tuple(cur.fetchone()) == (1, 1)
    finally:
        conn.close()


@pytest.mark.sqlserver
@pytest.mark.skipif(not SQLSERVER_CONFIGURED, reason=SQLSERVER_REASON)
def test_live_wrong_password_is_not_retried():
    settings = SqlServerSettings.resolve({}, environ={**os.environ, "INGEST_SQLSERVER_PASSWORD": "Wrong-Passw0rd!"})
    started = time.monotonic()
    with pytest.raises(StoreError, match="(?i)login failed") as info:
        connect(settings, wait_timeout=20)
    assert time.monotonic() - started < 15
    assert "Wrong-Passw0rd!" not in str(info.value)


def test_missing_database_hint_beats_login_failed(fake_pyodbc):
    module = fake_pyodbc()
    module.failures = [
        module.Error(
            "42000",
            '[42000] [SQL Server]Cannot open database "Holocron" requested by the login. The login failed. '
            "(4060) (SQLDriverConnect); [28000] [SQL Server]Login failed for user 'sa'. (18456)",
        )
    ]
    with pytest.raises(StoreError, match="scrapy db init"):
        connect(resolve())
