"""The row shapes of the record store: its columns, an item as an ``ingest_records`` row, versions.

Pure (no I/O): the record store (:mod:`holocron_scrapy.records.store`), the pipelines and the
``scrapy lake`` commands share these shapes. Times are handed out as UTC text
(``%Y-%m-%d %H:%M:%S.%f``), as the stores always gave them.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import json
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


HELD_COLUMNS = ("dedupe_key", "resource_type", *SEEN_COLUMNS)


def held_row(row: Any) -> dict[str, Any]:
    """A ``_held_query`` row: the version (``seen_version`` fields, ``dedupe_key``, ``resource_type``,
    ``resource_id``) plus its ``record`` (None when no ``ingest_records`` row has that hash)."""
    values = tuple(row)
    n = len(HELD_COLUMNS)
    version = {"dedupe_key": values[0], "resource_type": values[1], "resource_id": values[2]}
    version |= seen_version(values[2:n])
    version["record"] = None if values[n] is None else meta_record(values[n:])
    return version


def meta_record(row: Any) -> dict[str, Any]:
    """A ``META_COLUMNS`` row as a dict, its time as UTC text (as the stores always gave it)."""
    record = dict(zip(META_COLUMNS, tuple(row), strict=True))
    record["fetched_at_utc"] = format_time(record["fetched_at_utc"])
    return record


KEY_NAMES = ("source_system", "source_name", "resource_type", "resource_id")
# seen_resources as version_params() orders its values, and what an upsert replaces.
VERSION_PARAMS = (
    "dedupe_key",
    "source_system",
    "source_name",
    "resource_type",
    "resource_id",
    "last_hash_sha256",
    "last_revision_id",
    "etag",
    "last_modified",
    "last_fetched_at",
    "last_changed_at",
)
VERSION_UPDATES = VERSION_PARAMS[5:]
