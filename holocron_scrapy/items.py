"""The one item type: a fetched resource, its metadata and its unaltered payload."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: Outcomes of a fetch, stored in ``ingest_records.outcome``.
OK, MISSING, INVALID, SPECIAL, REDIRECT_LOOP, FAILED = "ok", "missing", "invalid", "special", "redirect_loop", "failed"
#: A page the wiki deleted since it was stored (the MediaWiki sync from recent changes: mediawiki/sync.py).
DELETED = "deleted"
#: Item fields that are bookkeeping, never written to the lake or the records table.
INTERNAL_FIELDS = frozenset({"work_item_ids", "retryable"})


def canonical_json(payload: Any) -> str:
    """The payload serialised the same way every time (for hashing)."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def payload_hash(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class IngestItem:
    """One fetch of one resource (a MediaWiki page, a web page, ...)."""

    source_system: str
    source_name: str
    resource_type: str
    resource_id: str
    request_uri: str
    payload: Any
    request_method: str = "GET"
    status_code: int | None = None
    outcome: str = OK
    requested_id: str | None = None
    content_type: str | None = None
    request_headers: dict[str, str] | None = None
    response_headers: dict[str, str] | None = None
    fetched_at_utc: datetime = field(default_factory=utc_now)
    duration_ms: int | None = None
    run_id: str | None = None
    attempt: int = 1
    error_message: str | None = None
    depth: int = 0
    discovered_from: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    revision_id: int | None = None  # MediaWiki revision of the payload (incremental re-crawls)
    etag: str | None = None  # HTTP validators of the payload (conditional re-crawls)
    last_modified: str | None = None
    ingest_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    hash_sha256: str = ""
    lake_path: str | None = None
    work_item_id: str | None = None
    work_item_ids: list[int] = field(default_factory=list)
    retryable: bool = False  # for outcome "failed": may the frontier try again later?

    def __post_init__(self) -> None:
        if not self.hash_sha256:
            self.hash_sha256 = payload_hash(self.payload)

    def __repr__(self) -> str:  # logs show the identity, never the whole payload
        return (
            f"<IngestItem {self.source_system}:{self.source_name}:{self.resource_type}:{self.resource_id!r}"
            f" outcome={self.outcome} status={self.status_code} sha256={self.hash_sha256[:12]}>"
        )
