"""What the last stored version of each resource was (``seen_resources``).

Incremental re-crawls read it to skip unchanged resources cheaply: the MediaWiki spider
compares ``lastrevid`` from one ``prop=info`` request per 50 titles, the HTTP spider sends
``If-None-Match`` / ``If-Modified-Since``. The records pipeline writes it after each stored
record. Every record store (SQLite, PostgreSQL, SQL Server) keeps it.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

from typing import Any

from holocron_scrapy.records.store import RecordStore


class VersionStore:
    """``seen_resources`` through a record store; empty (disabled) without one."""

    def __init__(self, store: RecordStore | None):
        self.store = store

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def lookup(self, source_system: str, source_name: str, resource_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The last stored version of each of *resource_ids* (any resource type), by resource id."""
        if self.store is None or not resource_ids:
            return {}
        return self.store.versions(source_system, source_name, resource_ids)

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        """Record the versions of freshly stored records (rows from ``item_row`` plus version fields)."""
        if self.store is not None and rows:
            self.store.record_versions(rows)
