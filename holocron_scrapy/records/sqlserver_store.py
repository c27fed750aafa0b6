"""IngestRecords and run summaries on SQL Server: the twin of :class:`SqlRecordStore`.

Opened by :func:`holocron_scrapy.records.store.open_record_store` for ``sqlserver://`` URLs with
:class:`~holocron_scrapy.db.sqlserver.SqlServerSettings` resolved from the ``INGEST_SQLSERVER_*``
variables and the YAML ``storage.sql_server`` section (schema: ``INGEST_SQLSERVER_SCHEMA``).

* :meth:`SqlServerRecordStore.insert` writes a batch in one transaction, one
  ``INSERT ... SELECT ... WHERE NOT EXISTS (... WITH (UPDLOCK, HOLDLOCK))`` per row against the
  unique version index ``ux_ingest_records_version``: a row whose (source_system, source_name,
  resource_type, resource_id, hash_sha256) is already stored is skipped (False), as is a row
  that loses a race with the duplicate-key error 2601/2627.
* Every text parameter is declared NVARCHAR (``setinputsizes``: SQL_WVARCHAR, 4000 characters,
  or 0 = NVARCHAR(MAX) for the JSON and URL columns and longer values), so any Unicode survives
  and multi-megabyte payloads are streamed. Times are naive UTC ``datetime`` DATETIME2 parameters.
* Transient errors and deadlocks roll the whole batch back and run it again
  (:class:`holocron_scrapy.frontier.sqlserver_store.SqlServerSession`); after a failed commit the
  batch's own ``ingest_id`` values tell whether it was applied before anything is re-run.
* :meth:`SqlServerRecordStore.write_run` upserts ``ingest_runs``: ``UPDATE ... WITH (UPDLOCK,
  SERIALIZABLE)`` then ``INSERT`` when no row was updated, in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from holocron_scrapy.db import sqlserver
from holocron_scrapy.db.migrations import validate_identifier
from holocron_scrapy.db.sqlserver import SqlServerSettings
from holocron_scrapy.errors import StoreError
from holocron_scrapy.frontier.sqlserver_store import NVARCHAR_MAX, SqlServerSession, parse_time, text_sizes
from holocron_scrapy.records.store import (
    META_COLUMNS,
    RECORD_COLUMNS,
    RUN_COLUMNS,
    RecordStore,
    format_time,
    seen_version,
    version_params,
)

#: The columns identifying one stored version of a resource (the unique ``ux_ingest_records_version``).
VERSION_COLUMNS = ("source_system", "source_name", "resource_type", "resource_id", "hash_sha256")
#: Text columns of IngestRecords / ingest_runs with their widths (NVARCHAR_MAX for NVARCHAR(MAX);
#: requested_id, request_uri and content_type since sql/0005_widen_long_text.sql).
RECORD_TEXT_WIDTHS = {
    "ingest_id": 64, "source_system": 100, "source_name": 100, "resource_type": 100, "resource_id": 450,
    "requested_id": NVARCHAR_MAX, "outcome": 50, "request_uri": NVARCHAR_MAX, "request_method": 10,
    "request_headers": NVARCHAR_MAX, "content_type": NVARCHAR_MAX, "response_headers": NVARCHAR_MAX,
    "hash_sha256": 64, "run_id": 64, "work_item_id": 36, "error_message": NVARCHAR_MAX, "lake_path": 1024,
    "payload": NVARCHAR_MAX,
}  # fmt: skip
RUN_TEXT_WIDTHS = {
    "run_id": 64, "spider": 100, "source_system": 100, "source_name": 100, "status": 50,
    "finish_reason": 200, "summary": NVARCHAR_MAX,
}  # fmt: skip
RECORD_TIME_COLUMNS = frozenset({"fetched_at_utc"})
RUN_TIME_COLUMNS = frozenset({"started_at", "finished_at"})

_TEMPLATES = {
    "insert_record": (
        "INSERT INTO {records} ({record_columns})\n"
        "OUTPUT inserted.ingest_id\n"
        "SELECT {record_marks}\n"
        "WHERE NOT EXISTS (\n"
        "    SELECT 1 FROM {records} WITH (UPDLOCK, HOLDLOCK)\n"
        "    WHERE {version_match}\n"
        ")"
    ),
    "count_ingest_id": "SELECT COUNT(*) FROM {records} WHERE ingest_id = ?",
    "latest_record": (
        "SELECT TOP (1) {meta_columns} FROM {records}"
        " WHERE source_system = ? AND source_name = ? AND resource_type = ? AND resource_id = ?"
        " ORDER BY fetched_at_utc DESC"
    ),
    "record_by_id": "SELECT {meta_columns} FROM {records} WHERE ingest_id = ?",
    "record_by_lake_path": "SELECT {meta_columns} FROM {records} WHERE lake_path = ?",
    "records_page": (
        "SELECT TOP (?) {meta_columns} FROM {records} WHERE ingest_id > ?"
        " AND (? IS NULL OR source_name = ?) ORDER BY ingest_id"
    ),
    "latest_hash": (
        "SELECT TOP (1) hash_sha256 FROM {records}"
        " WHERE source_system = ? AND source_name = ? AND resource_type = ? AND resource_id = ?"
        " ORDER BY fetched_at_utc DESC"
    ),
    "update_run": "UPDATE {runs} WITH (UPDLOCK, SERIALIZABLE) SET {run_updates} WHERE run_id = ?",
    "insert_run": "INSERT INTO {runs} ({run_columns}) VALUES ({run_marks})",
    "versions": (
        "SELECT resource_id, last_hash_sha256, last_revision_id, etag, last_modified, last_fetched_at"
        " FROM {seen} WHERE source_system = ? AND source_name = ? AND resource_id = ?"
        " ORDER BY last_fetched_at"
    ),
    "update_version": (
        "UPDATE {seen} WITH (UPDLOCK, SERIALIZABLE) SET last_hash_sha256 = ?, last_revision_id = ?, etag = ?,"
        " last_modified = ?, last_fetched_at = ?, last_changed_at = ? WHERE dedupe_key = ?"
    ),
    "insert_version": (
        "INSERT INTO {seen} (dedupe_key, source_system, source_name, resource_type, resource_id,"
        " last_hash_sha256, last_revision_id, etag, last_modified, last_fetched_at, last_changed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
}


def _tables(schema: str) -> tuple[str, str]:
    validate_identifier(schema)
    return f"[{schema}].[IngestRecords]", f"[{schema}].[ingest_runs]"


def statements(schema: str = sqlserver.DEFAULT_SCHEMA) -> dict[str, str]:
    """Every fixed T-SQL string :class:`SqlServerRecordStore` executes, for the validated *schema*
    (``count`` builds its statement with :func:`count_statement`)."""
    records, runs = _tables(schema)
    found = {
        name: template.format(
            records=records,
            runs=runs,
            seen=f"[{schema}].[seen_resources]",
            record_columns=", ".join(RECORD_COLUMNS),
            meta_columns=", ".join(META_COLUMNS),
            record_marks=", ".join("?" for _ in RECORD_COLUMNS),
            version_match=" AND ".join(f"{c} = ?" for c in VERSION_COLUMNS),
            run_updates=", ".join(f"{c} = ?" for c in RUN_COLUMNS if c != "run_id"),
            run_columns=", ".join(RUN_COLUMNS),
            run_marks=", ".join("?" for _ in RUN_COLUMNS),
        )
        for name, template in _TEMPLATES.items()
    }
    found["count_all"] = count_statement(schema, ())
    return found


def count_statement(schema: str, columns: tuple[str, ...] | list[str]) -> str:
    """``SELECT COUNT(*)`` of IngestRecords rows whose *columns* equal parameters (names checked)."""
    unknown = [c for c in columns if c not in RECORD_COLUMNS]
    if unknown:
        raise StoreError(f"unknown IngestRecords column(s): {', '.join(map(str, unknown))}")
    records, _ = _tables(schema)
    where = " AND ".join(f"[{c}] = ?" for c in columns)
    return f"SELECT COUNT(*) FROM {records}" + (f" WHERE {where}" if where else "")


def _bind(column: str, value: Any, times: frozenset[str]) -> Any:
    return parse_time(value) if column in times else value


class SqlServerRecordStore(RecordStore):
    """Records in ``[schema].[IngestRecords]`` and ``[schema].[ingest_runs]`` (schema from
    *settings*, already validated). *conn* is an open pyodbc connection with the migrations
    applied; *session_options* go to :class:`SqlServerSession`."""

    def __init__(self, conn: Any, settings: SqlServerSettings, **session_options: Any):
        self.settings = settings
        self.schema = settings.schema
        self.sql = statements(self.schema)
        self.session = SqlServerSession(conn, settings, what="records", **session_options)

    def describe(self) -> str:
        return self.session.describe("IngestRecords")

    def insert(self, rows: list[dict[str, Any]], *, record_versions: bool = False) -> list[bool]:
        if not rows:
            return []
        batch = []
        for row in rows:  # conversion errors surface before the transaction
            params = [_bind(c, row[c], RECORD_TIME_COLUMNS) for c in RECORD_COLUMNS]
            params += [row[c] for c in VERSION_COLUMNS]
            batch.append(params)
        widths = [RECORD_TEXT_WIDTHS.get(c) for c in RECORD_COLUMNS] + [RECORD_TEXT_WIDTHS[c] for c in VERSION_COLUMNS]
        sql = self.sql

        def work(cur: Any) -> list[bool]:
            inserted = []
            for params in batch:
                cur.setinputsizes(text_sizes(params, widths))
                try:
                    cur.execute(sql["insert_record"], *params)
                    inserted.append(bool(cur.fetchall()))
                except self.session.errors as exc:
                    if not sqlserver.is_duplicate_key(exc):
                        raise
                    inserted.append(False)  # lost a race on the same version: already stored
            if record_versions:  # "seen" only with the record, in the same transaction
                self._upsert_versions(cur, [row for row, ok in zip(rows, inserted, strict=True) if ok])
            return inserted

        def recover(cur: Any) -> list[bool] | None:
            # ingest_ids are this batch's own: any of them stored means the lost commit was applied.
            found = []
            for row in rows:
                cur.execute(sql["count_ingest_id"], row["ingest_id"])
                found.append(bool(cur.fetchone()[0]))
            return found if any(found) else None

        return self.session.run("insert", work, recover=recover)

    def latest_hash(self, source_system: str, source_name: str, resource_type: str, resource_id: str) -> str | None:
        def work(cur: Any) -> str | None:
            cur.execute(self.sql["latest_hash"], source_system, source_name, resource_type, resource_id)
            row = cur.fetchone()
            return None if row is None else row[0]

        return self.session.run("latest_hash", work)

    @staticmethod
    def _meta(row: Any) -> dict[str, Any]:
        """A ``META_COLUMNS`` row as a dict, its time as UTC text (as the SQLite store gives it)."""
        record = dict(zip(META_COLUMNS, tuple(row), strict=True))
        record["fetched_at_utc"] = format_time(record["fetched_at_utc"])
        return record

    def latest_record(
        self, source_system: str, source_name: str, resource_type: str, resource_id: str
    ) -> dict[str, Any] | None:
        def work(cur: Any) -> dict[str, Any] | None:
            cur.execute(self.sql["latest_record"], source_system, source_name, resource_type, resource_id)
            row = cur.fetchone()
            return None if row is None else self._meta(row)

        return self.session.run("latest_record", work)

    def _records_where(self, statement: str, column: str, values: list[str]) -> dict[str, dict[str, Any]]:
        def work(cur: Any) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for value in dict.fromkeys(values):  # one seek each (ingest_id is the key)
                cur.execute(self.sql[statement], value)
                for row in cur.fetchall():
                    record = self._meta(row)
                    out[record[column]] = record
            return out

        return self.session.run(statement, work) if values else {}

    def records_by_ids(self, ingest_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._records_where("record_by_id", "ingest_id", ingest_ids)

    def records_by_lake_path(self, lake_paths: list[str]) -> dict[str, dict[str, Any]]:
        return self._records_where("record_by_lake_path", "lake_path", lake_paths)

    def iter_records(self, source_name: str | None = None, batch_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        after = ""
        while True:

            def work(cur: Any, after: str = after) -> list[dict[str, Any]]:
                cur.execute(self.sql["records_page"], batch_size, after, source_name, source_name)
                return [self._meta(row) for row in cur.fetchall()]

            page = self.session.run("records_page", work)
            if not page:
                return
            yield page
            after = page[-1]["ingest_id"]

    def write_run(self, summary: dict[str, Any]) -> None:
        row = {c: _bind(c, summary.get(c), RUN_TIME_COLUMNS) for c in RUN_COLUMNS}
        if not isinstance(row["summary"], (str, type(None))):
            row["summary"] = json.dumps(row["summary"], ensure_ascii=False, default=str)
        updates = [c for c in RUN_COLUMNS if c != "run_id"]
        update_params = [row[c] for c in updates] + [row["run_id"]]
        update_widths = [RUN_TEXT_WIDTHS.get(c) for c in updates] + [RUN_TEXT_WIDTHS["run_id"]]
        insert_params = [row[c] for c in RUN_COLUMNS]
        insert_widths = [RUN_TEXT_WIDTHS.get(c) for c in RUN_COLUMNS]

        def work(cur: Any) -> None:
            cur.setinputsizes(text_sizes(update_params, update_widths))
            cur.execute(self.sql["update_run"], *update_params)
            if cur.rowcount == 0:
                cur.setinputsizes(text_sizes(insert_params, insert_widths))
                cur.execute(self.sql["insert_run"], *insert_params)

        self.session.run("write_run", work)

    def versions(self, source_system: str, source_name: str, resource_ids: list[str]) -> dict[str, dict[str, Any]]:
        def work(cur: Any) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for resource_id in dict.fromkeys(resource_ids):
                cur.execute(self.sql["versions"], source_system, source_name, resource_id)
                for row in cur.fetchall():
                    out[row[0]] = seen_version(tuple(row))
            return out

        return self.session.run("versions", work) if resource_ids else {}

    def record_versions(self, rows: list[dict[str, Any]]) -> None:
        """Upsert ``seen_resources`` (UPDATE under a range lock, else INSERT), one transaction."""
        if not rows:
            return

        def work(cur: Any) -> None:
            self._upsert_versions(cur, rows)

        self.session.run("record_versions", work)  # an upsert: safe to run again

    def _upsert_versions(self, cur: Any, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            key, ss, sn, rt, rid, digest, revid, etag, modified, fetched, changed = version_params(row)
            fetched, changed = parse_time(fetched), parse_time(changed)
            cur.execute(self.sql["update_version"], digest, revid, etag, modified, fetched, changed, key)
            if cur.rowcount == 0:
                cur.execute(
                    self.sql["insert_version"], key, ss, sn, rt, rid, digest, revid, etag, modified, fetched, changed
                )

    def count(self, **where: Any) -> int:
        statement = count_statement(self.schema, tuple(where))
        params = [_bind(c, v, RECORD_TIME_COLUMNS) for c, v in where.items()]

        def work(cur: Any) -> int:
            cur.execute(statement, *params)
            return cur.fetchone()[0]

        return self.session.run("count", work)

    def close(self) -> None:
        self.session.close()
