"""Write IngestRecords rows and run summaries; read the latest hash of a resource.

:class:`SqliteRecordStore` writes the ``ingest_records`` / ``ingest_runs`` tables of a SQLite
file; the SQL Server twin (``ingest.IngestRecords``) lives in ``records/sqlserver_store.py``.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from itemadapter import ItemAdapter

from holocron_scrapy.items import INTERNAL_FIELDS, canonical_json

RECORD_COLUMNS = (
    "ingest_id",
    "source_system",
    "source_name",
    "resource_type",
    "resource_id",
    "requested_id",
    "outcome",
    "request_uri",
    "request_method",
    "request_headers",
    "status_code",
    "content_type",
    "response_headers",
    "fetched_at_utc",
    "duration_ms",
    "hash_sha256",
    "run_id",
    "work_item_id",
    "attempt",
    "error_message",
    "lake_path",
    "payload",
)
#: Every IngestRecords column but the payload: what the lake file's metadata repeats.
META_COLUMNS = tuple(c for c in RECORD_COLUMNS if c != "payload")
RUN_COLUMNS = (
    "run_id",
    "spider",
    "source_system",
    "source_name",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "pages_stored",
    "pages_unchanged",
    "pages_missing",
    "pages_failed",
    "requests",
    "finish_reason",
    "summary",
)


def format_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


SEEN_COLUMNS = ("resource_id", "last_hash_sha256", "last_revision_id", "etag", "last_modified", "last_fetched_at")


def seen_version(row: tuple[Any, ...]) -> dict[str, Any]:
    """A ``seen_resources`` row (``SEEN_COLUMNS``) as a version dict, times as UTC text."""
    _, digest, revid, etag, modified, fetched = row
    return {
        "hash_sha256": digest,
        "revision_id": revid,
        "etag": etag,
        "last_modified": modified,
        "last_fetched_at": format_time(fetched),
    }


def version_params(row: dict[str, Any]) -> tuple[Any, ...]:
    """``seen_resources`` insert parameters of a stored row: key, identity, version, times."""
    from holocron_scrapy.frontier.keys import make_dedupe_key

    identity = (row["source_system"], row["source_name"], row["resource_type"], row["resource_id"])
    return (
        make_dedupe_key(*identity),
        *identity,
        row["hash_sha256"],
        row.get("revision_id"),
        row.get("etag"),
        row.get("last_modified"),
        row["fetched_at_utc"],
        row["fetched_at_utc"],
    )


def item_row(item: Any) -> dict[str, Any]:
    """The ``ingest_records`` row of an item (JSON columns serialised, times as UTC text), plus the
    version fields ``seen_resources`` keeps."""
    data = {k: v for k, v in ItemAdapter(item).items() if k not in INTERNAL_FIELDS}
    row = {column: data.get(column) for column in (*RECORD_COLUMNS, "revision_id", "etag", "last_modified")}
    row["payload"] = canonical_json(data.get("payload"))
    for column in ("request_headers", "response_headers"):
        if row[column] is not None:
            row[column] = json.dumps(row[column], ensure_ascii=False, sort_keys=True)
    row["fetched_at_utc"] = format_time(row["fetched_at_utc"])
    return row


class RecordStore(ABC):
    @abstractmethod
    def insert(self, rows: list[dict[str, Any]], *, record_versions: bool = False) -> list[bool]:
        """Insert *rows* in one transaction (all or none); a row whose resource already has a
        record with the same hash is skipped. With *record_versions*, the ``seen_resources``
        versions of the inserted rows (``item_row`` plus version fields) are upserted in the same
        transaction. Returns, per row, whether it was inserted."""

    @abstractmethod
    def latest_hash(self, source_system: str, source_name: str, resource_type: str, resource_id: str) -> str | None:
        """Hash of the newest stored record of a resource, or None."""

    @abstractmethod
    def latest_record(
        self, source_system: str, source_name: str, resource_type: str, resource_id: str
    ) -> dict[str, Any] | None:
        """The newest stored record of a resource (``META_COLUMNS``: every column but the
        payload; times as UTC text), or None."""

    @abstractmethod
    def records_by_ids(self, ingest_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The records (``META_COLUMNS``) with these ``ingest_id`` values (the key), by ingest id."""

    @abstractmethod
    def records_by_lake_path(self, lake_paths: list[str]) -> dict[str, dict[str, Any]]:
        """The records (``META_COLUMNS``) whose ``lake_path`` is one of *lake_paths*, by lake path
        (no index: for the few lake files too damaged to name their ingest id)."""

    @abstractmethod
    def iter_records(self, source_name: str | None = None, batch_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Every record (``META_COLUMNS``, optionally of one source) in batches of at most
        *batch_size*, in ``ingest_id`` order (keyset pagination: memory stays flat)."""

    @abstractmethod
    def write_run(self, summary: dict[str, Any]) -> None:
        """Insert or update the ``ingest_runs`` row of ``summary["run_id"]``."""

    @abstractmethod
    def versions(self, source_system: str, source_name: str, resource_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``seen_resources``: the last stored version of each resource id (any resource type):
        ``{resource_id: {hash_sha256, revision_id, etag, last_modified, last_fetched_at}}``."""

    @abstractmethod
    def record_versions(self, rows: list[dict[str, Any]]) -> None:
        """Upsert ``seen_resources`` for freshly stored rows (``item_row`` plus version fields)."""

    @abstractmethod
    def count(self, **where: Any) -> int: ...

    @abstractmethod
    def close(self) -> None: ...


_UPSERT_VERSION = (
    "INSERT INTO seen_resources (dedupe_key, source_system, source_name, resource_type, resource_id,"
    " last_hash_sha256, last_revision_id, etag, last_modified, last_fetched_at, last_changed_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (dedupe_key) DO UPDATE SET last_hash_sha256 = excluded.last_hash_sha256,"
    " last_revision_id = excluded.last_revision_id, etag = excluded.etag,"
    " last_modified = excluded.last_modified, last_fetched_at = excluded.last_fetched_at,"
    " last_changed_at = excluded.last_changed_at"
)


class SqliteRecordStore(RecordStore):
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def insert(self, rows: list[dict[str, Any]], *, record_versions: bool = False) -> list[bool]:
        if not rows:
            return []
        columns = ", ".join(RECORD_COLUMNS)
        marks = ", ".join("?" for _ in RECORD_COLUMNS)
        sql = f"INSERT INTO ingest_records ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            inserted = []
            for row in rows:
                cur.execute(sql, tuple(row[c] for c in RECORD_COLUMNS))
                inserted.append(cur.rowcount == 1)
            if record_versions:
                stored = [row for row, ok in zip(rows, inserted, strict=True) if ok]
                if stored:
                    cur.executemany(_UPSERT_VERSION, [version_params(r) for r in stored])
            cur.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return inserted

    def latest_hash(self, source_system: str, source_name: str, resource_type: str, resource_id: str) -> str | None:
        row = self.conn.execute(
            "SELECT hash_sha256 FROM ingest_records WHERE source_system = ? AND source_name = ?"
            " AND resource_type = ? AND resource_id = ? ORDER BY fetched_at_utc DESC LIMIT 1",
            (source_system, source_name, resource_type, resource_id),
        ).fetchone()
        return None if row is None else row[0]

    def latest_record(
        self, source_system: str, source_name: str, resource_type: str, resource_id: str
    ) -> dict[str, Any] | None:
        cur = self.conn.execute(
            f"SELECT {', '.join(META_COLUMNS)} FROM ingest_records WHERE source_system = ? AND source_name = ?"
            " AND resource_type = ? AND resource_id = ? ORDER BY fetched_at_utc DESC LIMIT 1",
            (source_system, source_name, resource_type, resource_id),
        )
        row = cur.fetchone()
        return None if row is None else dict(zip(META_COLUMNS, row, strict=True))

    def _records_where(self, column: str, values: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            cur = self.conn.execute(
                f"SELECT {', '.join(META_COLUMNS)} FROM ingest_records WHERE {column} IN ({marks})", chunk
            )
            for row in cur:
                record = dict(zip(META_COLUMNS, row, strict=True))
                out[record[column]] = record
        return out

    def records_by_ids(self, ingest_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._records_where("ingest_id", ingest_ids)

    def records_by_lake_path(self, lake_paths: list[str]) -> dict[str, dict[str, Any]]:
        return self._records_where("lake_path", lake_paths)

    def iter_records(self, source_name: str | None = None, batch_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        after = ""
        while True:
            rows = self.conn.execute(
                f"SELECT {', '.join(META_COLUMNS)} FROM ingest_records WHERE ingest_id > ?"
                " AND (? IS NULL OR source_name = ?) ORDER BY ingest_id LIMIT ?",
                (after, source_name, source_name, batch_size),
            ).fetchall()
            if not rows:
                return
            yield [dict(zip(META_COLUMNS, row, strict=True)) for row in rows]
            after = rows[-1][0]

    def write_run(self, summary: dict[str, Any]) -> None:
        row = {c: format_time(summary.get(c)) for c in RUN_COLUMNS}
        if not isinstance(row["summary"], (str, type(None))):
            row["summary"] = json.dumps(row["summary"], ensure_ascii=False, default=str)
        columns = ", ".join(RUN_COLUMNS)
        marks = ", ".join("?" for _ in RUN_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS if c != "run_id")
        self.conn.execute(
            f"INSERT INTO ingest_runs ({columns}) VALUES ({marks}) ON CONFLICT (run_id) DO UPDATE SET {updates}",
            tuple(row[c] for c in RUN_COLUMNS),
        )

    def versions(self, source_system: str, source_name: str, resource_ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(resource_ids), 500):
            chunk = resource_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            cur = self.conn.execute(
                f"SELECT {', '.join(SEEN_COLUMNS)} FROM seen_resources WHERE source_system = ? AND source_name = ?"
                f" AND resource_id IN ({marks}) ORDER BY last_fetched_at",
                (source_system, source_name, *chunk),
            )
            for row in cur:
                out[row[0]] = seen_version(row)
        return out

    def record_versions(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(_UPSERT_VERSION, [version_params(r) for r in rows])
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def count(self, **where: Any) -> int:
        clause = " AND ".join(f"{k} = ?" for k in where) or "1 = 1"
        return self.conn.execute(
            f"SELECT COUNT(*) FROM ingest_records WHERE {clause}", tuple(where.values())
        ).fetchone()[0]

    def close(self) -> None:
        self.conn.close()


def open_record_store(
    url: str, *, setting: str = "HOLOCRON_RECORDS_URL", sqlserver_config: dict[str, Any] | None = None
) -> RecordStore:
    """Open the records backend named by the store *url* (schema brought up to date).

    For ``sqlserver://`` the connection settings, schema included, come from
    :meth:`SqlServerSettings.resolve` (``INGEST_SQLSERVER_*`` first, then *sqlserver_config*).
    """
    from holocron_scrapy.db.connection import SQLITE, open_store, parse_store_url

    parsed = parse_store_url(url, setting=setting)
    conn = open_store(parsed, sqlserver_config=sqlserver_config)
    if parsed.dialect == SQLITE:
        return SqliteRecordStore(conn)
    from holocron_scrapy.db.sqlserver import SqlServerSettings
    from holocron_scrapy.records.sqlserver_store import SqlServerRecordStore

    settings = SqlServerSettings.resolve(sqlserver_config or {}, conn_str=parsed.odbc_connect)
    return SqlServerRecordStore(conn, settings)
