"""What the last stored version of each resource was (``seen_resources``).

Incremental re-crawls read it to skip unchanged resources cheaply: the MediaWiki spider
compares ``lastrevid`` from one ``prop=info`` request per 50 titles, the HTTP spider sends
``If-None-Match`` / ``If-Modified-Since``. The records pipeline writes it after each stored
record. Only the SQLite backend keeps it for now; on other backends the lookups return
nothing and every re-crawled resource is fetched in full (still stored only if changed).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from holocron_scrapy.frontier.keys import make_dedupe_key as version_key


class VersionStore:
    """``seen_resources`` on a SQLite connection; a no-op on anything else."""

    def __init__(self, conn: Any):
        self.conn = conn if isinstance(conn, sqlite3.Connection) else None

    @property
    def enabled(self) -> bool:
        return self.conn is not None

    def lookup(self, source_system: str, source_name: str, resource_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The last stored version of each of *resource_ids* (any resource type), by resource id."""
        if not self.conn or not resource_ids:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(resource_ids), 500):
            chunk = resource_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            cur = self.conn.execute(
                "SELECT resource_id, last_hash_sha256, last_revision_id, etag, last_modified, last_fetched_at"
                " FROM seen_resources WHERE source_system = ? AND source_name = ?"
                f" AND resource_id IN ({marks}) ORDER BY last_fetched_at",
                (source_system, source_name, *chunk),
            )
            for rid, digest, revid, etag, modified, fetched in cur:
                out[rid] = {
                    "hash_sha256": digest,
                    "revision_id": revid,
                    "etag": etag,
                    "last_modified": modified,
                    "last_fetched_at": fetched,
                }
        return out

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        """Record the versions of freshly stored records (rows from ``item_row`` plus version fields)."""
        if not self.conn or not rows:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(
                "INSERT INTO seen_resources (dedupe_key, source_system, source_name, resource_type, resource_id,"
                " last_hash_sha256, last_revision_id, etag, last_modified, last_fetched_at, last_changed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (dedupe_key) DO UPDATE SET last_hash_sha256 = excluded.last_hash_sha256,"
                " last_revision_id = excluded.last_revision_id, etag = excluded.etag,"
                " last_modified = excluded.last_modified, last_fetched_at = excluded.last_fetched_at,"
                " last_changed_at = excluded.last_changed_at",
                [
                    (
                        version_key(r["source_system"], r["source_name"], r["resource_type"], r["resource_id"]),
                        r["source_system"],
                        r["source_name"],
                        r["resource_type"],
                        r["resource_id"],
                        r["hash_sha256"],
                        r.get("revision_id"),
                        r.get("etag"),
                        r.get("last_modified"),
                        r["fetched_at_utc"],
                        r["fetched_at_utc"],
                    )
                    for r in rows
                ],
            )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
