"""SQL Server test support: the live-server switch, the T-SQL helpers and a recording fake pyodbc.

Registered as a pytest plugin (``tests/conftest.py``) for the ``fake_pyodbc``, ``sleeps`` and
``live_schema`` fixtures. ``FakePyodbc`` records every call as ``(connection, kind, sql, params,
inputsizes)``, raises queued errors at matching statements, and answers queries, so that the stores'
transaction shape, parameter types and retry policy are checked without a server. ``live_schema``
gives live tests a throw-away ``holocron_test_*`` schema, never the configured one.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import sys
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from holocron_scrapy.db import sqlserver
from holocron_scrapy.db.sqlserver import SqlServerSettings

PASSWORD = "Sup3r$ecret!pw"
SQLSERVER_REASON = "SQL Server not configured: set INGEST_SQLSERVER_HOST and INGEST_SQLSERVER_PASSWORD to run"
SQLSERVER_CONFIGURED = bool(os.environ.get("INGEST_SQLSERVER_HOST") and os.environ.get("INGEST_SQLSERVER_PASSWORD"))
MS = "[Microsoft][ODBC Driver 18 for SQL Server]"
#: (table, column) pairs that migration 0005 widens to NVARCHAR(MAX).
WIDENED_COLUMNS = frozenset(
    {
        ("work_items", "request_uri"),
        ("work_items", "discovered_from"),
        ("IngestRecords", "requested_id"),
        ("IngestRecords", "request_uri"),
        ("IngestRecords", "content_type"),
        ("seen_resources", "etag"),
        ("seen_resources", "last_modified"),
    }
)


def with_parameters(sql: str) -> str:
    """pyodbc ``?`` markers as T-SQL variables, so that the parsers see valid T-SQL."""
    counter = iter(range(1, 1000))
    return re.sub(r"\?", lambda _m: f"@p{next(counter)}", sql)


def literal_executes(module: types.ModuleType) -> list[str]:
    """SQL string literals passed straight to ``.execute``/``.executemany`` in *module*."""
    found = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("execute", "executemany")
            and node.args
            and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
        ):
            found.append(ast.unparse(node.args[0]))
    return found


def long_url(length: int = 5000) -> str:
    """A MediaWiki batch URL of exactly *length* characters."""
    url = "https://w/api.php?action=query&titles=" + "|".join(f"Title {i:05}" for i in range(length // 12 + 1))
    return url[:length]


# -- a recording fake pyodbc ------------------------------------------------------------------------
class FakeError(Exception):
    """Stands in for pyodbc.Error: args are (SQLSTATE, message)."""


def odbc_error(state: str, message: str, number: int) -> FakeError:
    return FakeError(state, f"[{state}] {MS}{message} ({number}) (SQLExecDirectW)")


def link_failure() -> FakeError:
    return odbc_error("08S01", "Communication link failure", 10054)


def deadlock() -> FakeError:
    return odbc_error(
        "40001",
        "[SQL Server]Transaction (Process ID 57) was deadlocked on lock resources with another process and has "
        "been chosen as the deadlock victim. Rerun the transaction.",
        1205,
    )


def duplicate_key() -> FakeError:
    return odbc_error(
        "23000", "[SQL Server]Cannot insert duplicate key row in object 'ingest.work_items' with unique index", 2601
    )


class FakeCursor:
    def __init__(self, module: FakePyodbc, conn: FakeConnection):
        self.module, self.conn = module, conn
        self.rows: list[tuple] = []
        self.rowcount = -1
        self.description: list[tuple] | None = None
        self.fast_executemany = False
        self.inputsizes: Any = None

    def setinputsizes(self, sizes: Any) -> None:
        self.inputsizes = sizes

    def execute(self, sql: str, *params: Any) -> FakeCursor:
        self.conn.check_open()
        self.module.record(self.conn, "execute", sql, params, self.inputsizes)
        self.module.maybe_fail("execute", sql)
        rows, rowcount, description = self.module.respond(sql, params)
        self.rows, self.rowcount, self.description = list(rows), rowcount, description
        return self

    def executemany(self, sql: str, seq: list[tuple]) -> None:
        for params in seq:
            self.execute(sql, *params)

    def fetchall(self) -> list[tuple]:
        rows, self.rows = self.rows, []
        return rows

    def fetchone(self) -> tuple | None:
        return self.rows.pop(0) if self.rows else None

    def nextset(self) -> bool:
        return False

    def close(self) -> None:
        pass


class FakeConnection:
    def __init__(self, module: FakePyodbc, number: int):
        self.module, self.number, self.closed = module, number, False

    def check_open(self) -> None:
        if self.closed:
            raise FakeError("08003", "[08003] connection is closed (0) (SQLExecDirectW)")

    def cursor(self) -> FakeCursor:
        self.check_open()
        return FakeCursor(self.module, self)

    def commit(self) -> None:
        self.check_open()
        self.module.record(self, "commit", "", (), None)
        self.module.maybe_fail("commit", "")

    def rollback(self) -> None:
        self.module.record(self, "rollback", "", (), None)

    def close(self) -> None:
        self.module.record(self, "close", "", (), None)
        self.closed = True


class FakePyodbc(types.ModuleType):
    """Records every call as ``(connection number, kind, sql, params, inputsizes)``; ``fail(kind,
    pattern, exc)`` raises *exc* at the next matching execute/commit; ``respond`` answers queries."""

    Error = FakeError

    def __init__(self) -> None:
        super().__init__("pyodbc")
        self.log: list[tuple[int, str, str, tuple, Any]] = []
        self.failures: list[tuple[str, str, BaseException]] = []
        self.connect_failures: list[BaseException] = []
        self.connections: list[FakeConnection] = []
        self.responder: Callable[[str, tuple], Any] | None = None
        self.seq = 100

    def drivers(self) -> list[str]:
        return ["ODBC Driver 18 for SQL Server", "FreeTDS"]

    def connect(self, conn_str: str, timeout: int = 0, autocommit: bool = False) -> FakeConnection:
        if self.connect_failures:
            raise self.connect_failures.pop(0)
        conn = FakeConnection(self, len(self.connections) + 1)
        self.connections.append(conn)
        return conn

    def record(self, conn: FakeConnection, kind: str, sql: str, params: tuple, sizes: Any) -> None:
        self.log.append((conn.number, kind, sql, params, sizes))

    def fail(self, kind: str, pattern: str, exc: BaseException, times: int = 1) -> None:
        self.failures += [(kind, pattern, exc)] * times

    def maybe_fail(self, kind: str, sql: str) -> None:
        for i, (want, pattern, exc) in enumerate(self.failures):
            if want == kind and pattern in sql:
                del self.failures[i]
                raise exc

    def respond(self, sql: str, params: tuple) -> tuple[list[tuple], int, list[tuple] | None]:
        if self.responder is not None:
            answer = self.responder(sql, params)
            if answer is not None:
                rows, rowcount = answer if isinstance(answer, tuple) else (answer, len(answer))
                return rows, rowcount, [(f"c{i}",) for i in range(len(rows[0]))] if rows else None
        if sql.startswith("INSERT") and "OUTPUT inserted.seq" in sql:
            self.seq += 1
            return [(self.seq,)], 1, [("seq",)]
        if "OUTPUT inserted.ingest_id" in sql:
            return [(params[0],)], 1, [("ingest_id",)]
        if sql.startswith("SELECT COUNT(*)"):
            return [(0,)], 1, [("",)]
        if sql.startswith("SELECT attempt"):
            return [(1,)], 1, [("attempt",)]
        return [], 1, None

    # -- views of the log -----------------------------------------------------------------------
    def executed(self, pattern: str = "") -> list[tuple[int, str, tuple, Any]]:
        """(connection, sql, params, inputsizes) of every execute whose SQL contains *pattern*,
        the session setup of each connection left out."""
        return [
            (number, sql, params, sizes)
            for number, kind, sql, params, sizes in self.log
            if kind == "execute" and pattern in sql and sql != sqlserver.TSQL_SESSION_SETUP
        ]

    def kinds(self) -> list[str]:
        """``connection:statement name`` / ``connection:commit`` ... in order, leaving out each
        connection's session setup (connect() runs and commits it)."""
        names = {sql: name for name, sql in {**_frontier_statements(), **_records_statements()}.items()}
        out, in_setup = [], set()
        for number, kind, sql, _params, _sizes in self.log:
            if sql == sqlserver.TSQL_SESSION_SETUP:
                in_setup.add(number)
            elif kind == "commit" and number in in_setup:
                in_setup.discard(number)
            elif kind == "execute":
                out.append(f"{number}:{names.get(sql, sql[:30])}")
            else:
                out.append(f"{number}:{kind}")
        return out


def _frontier_statements() -> dict[str, str]:
    from holocron_scrapy.frontier.sqlserver_store import statements

    return statements()


def _records_statements() -> dict[str, str]:
    from holocron_scrapy.records.sqlserver_store import statements as records_statements

    return records_statements()


def fake_settings(**env: str) -> SqlServerSettings:
    return SqlServerSettings.resolve({}, environ={"INGEST_SQLSERVER_PASSWORD": PASSWORD, **env})


@pytest.fixture
def fake_pyodbc(monkeypatch) -> FakePyodbc:
    module = FakePyodbc()
    monkeypatch.setitem(sys.modules, "pyodbc", module)
    return module


@pytest.fixture
def sleeps() -> list[float]:
    return []


def drop_schema(settings: SqlServerSettings, schema: str) -> None:
    """Test cleanup only (the stores and migrations never drop anything); refuses any schema but a
    throw-away ``holocron_test_*`` one."""
    if not schema.startswith("holocron_test_"):
        raise ValueError(f"refusing to drop schema {schema!r}: not a holocron_test_* schema")
    conn = sqlserver.connect(settings)
    try:
        cur = conn.cursor()
        cur.execute("SELECT t.name FROM sys.tables AS t WHERE t.schema_id = SCHEMA_ID(?)", schema)
        for (name,) in cur.fetchall():
            cur.execute(f"DROP TABLE [{schema}].[{name}]")
        cur.execute(f"IF SCHEMA_ID(N'{schema}') IS NOT NULL EXEC (N'DROP SCHEMA [{schema}]')")
        conn.commit()
    finally:
        conn.close()


@pytest.fixture
def live_schema(monkeypatch) -> Iterator[str]:
    """A throw-away schema ``holocron_test_<hex>`` set as INGEST_SQLSERVER_SCHEMA (the stores create
    its tables when they open), dropped afterwards; skips without INGEST_SQLSERVER_HOST/PASSWORD."""
    if not SQLSERVER_CONFIGURED:
        pytest.skip(SQLSERVER_REASON)
    schema = f"holocron_test_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("INGEST_SQLSERVER_SCHEMA", schema)
    settings = SqlServerSettings.resolve({})
    sqlserver.ensure_database(settings, wait_timeout=30)
    yield schema
    drop_schema(settings, schema)
