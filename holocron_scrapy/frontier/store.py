"""The ``work_items`` store: insert-if-new, atomic batch claims with leases, acks.

:class:`WorkItemStore` is the contract every backend passes (``tests/test_frontier_store.py``);
:class:`SqliteWorkItemStore` is the embedded backend. All methods are synchronous and each
is one transaction; callers batch their writes through :meth:`WorkItemStore.flush`.
"""

from __future__ import annotations

import socket
import sqlite3
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

PENDING, IN_PROGRESS, COMPLETED, FAILED = "pending", "in_progress", "completed", "failed"
STATUSES = (PENDING, IN_PROGRESS, COMPLETED, FAILED)

#: Columns a claim returns (enough to rebuild the request and to ack it).
CLAIM_COLUMNS = (
    "seq",
    "work_item_id",
    "source_system",
    "source_name",
    "resource_type",
    "resource_id",
    "request_uri",
    "request_method",
    "request_headers",
    "request_body",
    "metadata",
    "priority",
    "depth",
    "attempt",
    "dedupe_key",
    "discovered_from",
    "completed_at",
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def ts(moment: datetime) -> str:
    """The text form of a UTC instant used in every time column."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def claimed_rows(rows: list[Any]) -> list[dict[str, Any]]:
    """Claimed rows (``CLAIM_COLUMNS`` tuples) as dicts, best first (RETURNING/OUTPUT order is arbitrary)."""
    claimed = [dict(zip(CLAIM_COLUMNS, row, strict=True)) for row in rows]
    claimed.sort(key=lambda r: (-r["priority"], r["seq"]))
    return claimed


def make_owner() -> str:
    """A lease owner id: ``host:pid:token`` (the host and pid let a restart reclaim at once)."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class NewItem:
    """A work item to insert if its dedupe key is new."""

    dedupe_key: str
    source_system: str
    source_name: str
    resource_type: str
    resource_id: str
    request_uri: str
    request_method: str = "GET"
    request_headers: str | None = None
    request_body: str | None = None
    metadata: str | None = None
    priority: int = 0
    depth: int = 0
    run_id: str | None = None
    discovered_from: str | None = None
    status: str = PENDING
    work_item_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class FailedItem:
    seq: int
    error: str
    retryable: bool = True


class WorkItemStore(ABC):
    """Contract of a frontier backend. ``owner`` strings come from :func:`make_owner`."""

    max_attempts: int = 3
    retry_backoff: float = 30.0

    @abstractmethod
    def flush(self, new: list[NewItem], completed: list[int], failed: list[FailedItem]) -> int:
        """In one transaction: insert new items (skipping known keys), then mark items
        completed, then failed (back to pending after a backoff while attempts remain).
        Returns the number of items inserted."""

    @abstractmethod
    def claim(self, owner: str, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
        """Atomically lease up to *limit* ready pending items, best first."""

    @abstractmethod
    def release(self, seqs: list[int]) -> None:
        """Give leased items back unattempted (e.g. claimed but never sent)."""

    @abstractmethod
    def renew(self, owner: str, lease_seconds: float) -> int:
        """Extend every lease held by *owner*."""

    @abstractmethod
    def reclaim(self, owners: list[str] | None = None) -> int:
        """Return to pending the items whose lease expired, or (with *owners*) that those
        owners hold. Items out of attempts become failed."""

    @abstractmethod
    def lease_owners(self) -> list[str]:
        """Distinct owners of in-progress items."""

    @abstractmethod
    def ready_count(self, limit: int) -> int:
        """Pending items claimable now, counted up to *limit*."""

    @abstractmethod
    def min_inflight_depth(self, owner: str) -> int | None:
        """The smallest depth among items leased live by owners other than *owner*."""

    @abstractmethod
    def outstanding(self, owner: str) -> bool:
        """True while any item is pending (even in backoff) or leased live by another owner."""

    @abstractmethod
    def counts(self) -> dict[str, dict[str, int]]:
        """``{source_name: {status: count}}``."""

    @abstractmethod
    def oldest_lease(self) -> dict[str, Any] | None:
        """The in-progress item with the earliest lease expiry, or None."""

    @abstractmethod
    def failure_reasons(self, limit: int = 10) -> list[tuple[str, int]]:
        """Most common error messages of failed items."""

    @abstractmethod
    def retry_failed(self, source_name: str | None = None) -> int:
        """Failed items back to pending with a fresh attempt count."""

    @abstractmethod
    def recrawl(self, source_name: str, older_than_seconds: float | None = None) -> int:
        """Fetched completed items (completed before the cut-off) back to pending; items only
        recorded as known (a redirect target, never fetched itself) stay completed."""

    @abstractmethod
    def release_leases(self, owner: str | None = None) -> int:
        """Every in-progress item (of *owner*, or of everyone) back to pending."""

    @abstractmethod
    def get(self, dedupe_key: str) -> dict[str, Any] | None:
        """The row with *dedupe_key*, as a dict."""

    @abstractmethod
    def close(self) -> None: ...

    # Shared helpers --------------------------------------------------------------
    def backoff_until(self, attempt: int) -> str:
        delay = self.retry_backoff * (2 ** max(attempt - 1, 0))
        return ts(utcnow() + timedelta(seconds=delay))

    def failure_status(self, attempt: int, retryable: bool) -> str:
        return PENDING if retryable and attempt < self.max_attempts else FAILED


class SqliteWorkItemStore(WorkItemStore):
    """The embedded backend on one SQLite file (WAL, busy timeout; shared by processes)."""

    def __init__(self, conn: sqlite3.Connection, *, max_attempts: int = 3, retry_backoff: float = 30.0):
        self.conn = conn
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff

    def _tx(self, immediate: bool = True):
        return _Transaction(self.conn, immediate)

    def flush(self, new: list[NewItem], completed: list[int], failed: list[FailedItem]) -> int:
        if not (new or completed or failed):
            return 0
        now = ts(utcnow())
        with self._tx() as cur:
            before = self.conn.total_changes
            if new:
                cur.executemany(
                    "INSERT INTO work_items (work_item_id, source_system, source_name, resource_type, resource_id,"
                    " request_uri, request_method, request_headers, request_body, metadata, priority, depth,"
                    " status, attempt, run_id, discovered_from, created_at, updated_at, completed_at, dedupe_key)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (dedupe_key) DO NOTHING",
                    [
                        (
                            n.work_item_id,
                            n.source_system,
                            n.source_name,
                            n.resource_type,
                            n.resource_id,
                            n.request_uri,
                            n.request_method,
                            n.request_headers,
                            n.request_body,
                            n.metadata,
                            n.priority,
                            n.depth,
                            n.status,
                            n.run_id,
                            n.discovered_from,
                            now,
                            now,
                            now if n.status == COMPLETED else None,
                            n.dedupe_key,
                        )
                        for n in new
                    ],
                )
            inserted = self.conn.total_changes - before
            if completed:
                cur.executemany(
                    "UPDATE work_items SET status = 'completed', completed_at = ?, updated_at = ?,"
                    " lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = NULL, error_message = NULL"
                    " WHERE seq = ?",
                    [(now, now, seq) for seq in completed],
                )
            for item in failed:
                row = cur.execute("SELECT attempt FROM work_items WHERE seq = ?", (item.seq,)).fetchone()
                if row is None:
                    continue
                attempt = row[0]
                status = self.failure_status(attempt, item.retryable)
                cur.execute(
                    "UPDATE work_items SET status = ?, error_message = ?, updated_at = ?, lease_owner = NULL,"
                    " lease_expires_at = NULL, next_attempt_at = ? WHERE seq = ?",
                    (
                        status,
                        item.error[:4000],
                        now,
                        self.backoff_until(attempt) if status == PENDING else None,
                        item.seq,
                    ),
                )
        return inserted

    def claim(self, owner: str, limit: int, lease_seconds: float) -> list[dict[str, Any]]:
        now = utcnow()
        with self._tx() as cur:
            rows = cur.execute(
                "UPDATE work_items SET status = 'in_progress', attempt = attempt + 1, lease_owner = ?,"
                " lease_expires_at = ?, updated_at = ?, next_attempt_at = NULL"
                " WHERE seq IN (SELECT seq FROM work_items WHERE status = 'pending'"
                " AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
                " ORDER BY priority DESC, seq LIMIT ?)"
                f" RETURNING {', '.join(CLAIM_COLUMNS)}",
                (owner, ts(now + timedelta(seconds=lease_seconds)), ts(now), ts(now), limit),
            ).fetchall()
        return claimed_rows(rows)

    def release(self, seqs: list[int]) -> None:
        if not seqs:
            return
        now = ts(utcnow())
        with self._tx() as cur:
            cur.executemany(
                "UPDATE work_items SET status = 'pending', attempt = MAX(attempt - 1, 0), lease_owner = NULL,"
                " lease_expires_at = NULL, updated_at = ? WHERE seq = ? AND status = 'in_progress'",
                [(now, seq) for seq in seqs],
            )

    def renew(self, owner: str, lease_seconds: float) -> int:
        now = utcnow()
        with self._tx() as cur:
            cur.execute(
                "UPDATE work_items SET lease_expires_at = ? WHERE status = 'in_progress' AND lease_owner = ?",
                (ts(now + timedelta(seconds=lease_seconds)), owner),
            )
            return cur.rowcount

    def reclaim(self, owners: list[str] | None = None) -> int:
        now = ts(utcnow())
        if owners is not None and not owners:
            return 0
        with self._tx() as cur:
            if owners is None:
                where, params = "status = 'in_progress' AND lease_expires_at < ?", [now]
            else:
                marks = ", ".join("?" for _ in owners)
                where, params = f"status = 'in_progress' AND lease_owner IN ({marks})", list(owners)
            cur.execute(
                "UPDATE work_items SET status = CASE WHEN attempt >= ? THEN 'failed' ELSE 'pending' END,"
                " error_message = CASE WHEN attempt >= ? THEN 'lease lost ' || attempt || ' times (worker died?)'"
                " ELSE error_message END, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
                f" WHERE {where}",
                [self.max_attempts, self.max_attempts, now, *params],
            )
            return cur.rowcount

    def lease_owners(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT DISTINCT lease_owner FROM work_items WHERE status = 'in_progress' AND lease_owner IS NOT NULL"
        ).fetchall()
        return [r[0] for r in rows]

    def ready_count(self, limit: int) -> int:
        return self.conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM work_items WHERE status = 'pending'"
            " AND (next_attempt_at IS NULL OR next_attempt_at <= ?) LIMIT ?)",
            (ts(utcnow()), limit),
        ).fetchone()[0]

    def min_inflight_depth(self, owner: str) -> int | None:
        return self.conn.execute(
            "SELECT MIN(depth) FROM work_items WHERE status = 'in_progress' AND lease_owner <> ?"
            " AND lease_expires_at >= ?",
            (owner, ts(utcnow())),
        ).fetchone()[0]

    def outstanding(self, owner: str) -> bool:
        row = self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM work_items WHERE status = 'pending')"
            " OR EXISTS (SELECT 1 FROM work_items WHERE status = 'in_progress'"
            " AND lease_expires_at >= ? AND lease_owner <> ?)",
            (ts(utcnow()), owner),
        ).fetchone()
        return bool(row[0])

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for source, status, count in self.conn.execute(
            "SELECT source_name, status, COUNT(*) FROM work_items GROUP BY source_name, status"
        ):
            out.setdefault(source, dict.fromkeys(STATUSES, 0))[status] = count
        return out

    def oldest_lease(self) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT dedupe_key, lease_owner, lease_expires_at, updated_at FROM work_items"
            " WHERE status = 'in_progress' ORDER BY lease_expires_at LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("dedupe_key", "lease_owner", "lease_expires_at", "claimed_at"), row, strict=True))

    def failure_reasons(self, limit: int = 10) -> list[tuple[str, int]]:
        return [
            (r[0], r[1])
            for r in self.conn.execute(
                "SELECT COALESCE(error_message, '(none)'), COUNT(*) FROM work_items WHERE status = 'failed'"
                " GROUP BY 1 ORDER BY 2 DESC LIMIT ?",
                (limit,),
            )
        ]

    def retry_failed(self, source_name: str | None = None) -> int:
        now = ts(utcnow())
        with self._tx() as cur:
            cur.execute(
                "UPDATE work_items SET status = 'pending', attempt = 0, next_attempt_at = NULL, updated_at = ?"
                " WHERE status = 'failed' AND (? IS NULL OR source_name = ?)",
                (now, source_name, source_name),
            )
            return cur.rowcount

    def recrawl(self, source_name: str, older_than_seconds: float | None = None) -> int:
        now = utcnow()
        cutoff = ts(now - timedelta(seconds=older_than_seconds)) if older_than_seconds is not None else None
        with self._tx() as cur:
            cur.execute(
                "UPDATE work_items SET status = 'pending', attempt = 0, next_attempt_at = NULL, updated_at = ?"
                " WHERE status = 'completed' AND attempt > 0 AND source_name = ? AND (? IS NULL OR completed_at < ?)",
                (ts(now), source_name, cutoff, cutoff),
            )
            return cur.rowcount

    def release_leases(self, owner: str | None = None) -> int:
        now = ts(utcnow())
        with self._tx() as cur:
            cur.execute(
                "UPDATE work_items SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL,"
                " updated_at = ? WHERE status = 'in_progress' AND (? IS NULL OR lease_owner = ?)",
                (now, owner, owner),
            )
            return cur.rowcount

    def get(self, dedupe_key: str) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM work_items WHERE dedupe_key = ?", (dedupe_key,))
        row = cur.fetchone()
        return None if row is None else dict(zip((d[0] for d in cur.description), row, strict=True))

    def close(self) -> None:
        self.conn.close()


class _Transaction:
    """``with`` block around ``BEGIN IMMEDIATE`` ... ``COMMIT`` on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection, immediate: bool):
        self.conn = conn
        self.begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> sqlite3.Cursor:
        self.conn.execute(self.begin)
        return self.conn.cursor()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def open_work_item_store(
    url: str,
    *,
    setting: str = "HOLOCRON_STATE_URL",
    sqlserver_config: dict[str, Any] | None = None,
    max_attempts: int = 3,
    retry_backoff: float = 30.0,
) -> WorkItemStore:
    """Open the frontier backend named by the store *url* (schema brought up to date).

    For ``sqlserver://`` the connection settings, schema included, come from
    :meth:`SqlServerSettings.resolve` (``INGEST_SQLSERVER_*`` first, then *sqlserver_config*).
    """
    from holocron_scrapy.db.connection import SQLITE, open_store, parse_store_url

    parsed = parse_store_url(url, setting=setting)
    conn = open_store(parsed, sqlserver_config=sqlserver_config)
    if parsed.dialect == SQLITE:
        return SqliteWorkItemStore(conn, max_attempts=max_attempts, retry_backoff=retry_backoff)
    from holocron_scrapy.db.sqlserver import SqlServerSettings
    from holocron_scrapy.frontier.sqlserver_store import SqlServerWorkItemStore

    settings = SqlServerSettings.resolve(sqlserver_config or {}, conn_str=parsed.odbc_connect)
    return SqlServerWorkItemStore(conn, settings, max_attempts=max_attempts, retry_backoff=retry_backoff)
