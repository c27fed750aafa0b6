"""SQL Server test support: the live-server switch and the throw-away schema of live tests.

Registered as a pytest plugin (``tests/conftest.py``) for the ``live_schema`` fixture, which gives
live tests a throw-away ``holocron_test_*`` schema, never the configured one, and skips them (with
that reason) when ``INGEST_SQLSERVER_HOST`` / ``INGEST_SQLSERVER_PASSWORD`` point at no server.
The stores' statements are checked offline by compiling them for SQL Server (tests/test_sql_tsql.py),
not through a fake driver.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from holocron_scrapy.db import sqlserver
from holocron_scrapy.db.sqlserver import SqlServerSettings

PASSWORD = "Sup3r$ecret!pw"
SQLSERVER_REASON = "SQL Server not configured: set INGEST_SQLSERVER_HOST and INGEST_SQLSERVER_PASSWORD to run"
SQLSERVER_CONFIGURED = bool(os.environ.get("INGEST_SQLSERVER_HOST") and os.environ.get("INGEST_SQLSERVER_PASSWORD"))
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


def long_url(length: int = 5000) -> str:
    """A MediaWiki batch URL of exactly *length* characters."""
    url = "https://w/api.php?action=query&titles=" + "|".join(f"Title {i:05}" for i in range(length // 12 + 1))
    return url[:length]


def fake_settings(**env: str) -> SqlServerSettings:
    return SqlServerSettings.resolve({}, environ={"INGEST_SQLSERVER_PASSWORD": PASSWORD, **env})


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
