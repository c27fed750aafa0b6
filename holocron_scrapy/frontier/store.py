"""The ``work_items`` store: insert-if-new, atomic batch claims with leases, acks.

:class:`WorkItemStore` is the contract every backend passes (``tests/test_frontier_store.py``);
:class:`SqliteWorkItemStore` is the embedded backend. All methods are synchronous and each
is one transaction; callers batch their writes through :meth:`WorkItemStore.flush`.

* A :class:`Scope` (source system and name) limits the claims, counts and reclaims of a crawl
  to its own source's items; without one they cover every item (foreign spiders).
* A lost lease (expired, or its worker died) is not an attempt: :meth:`WorkItemStore.reclaim`
  undoes the claim's ``attempt`` increment and counts ``lease_losses`` instead. An item lost
  ``solo_after`` times is only claimed alone (``claim(..., alone=True)``, the claimer has nothing
  else in flight) and is marked ``lease_solo`` until :meth:`WorkItemStore.end_solo` (its request
  was fetched and parsed). A lease lost while so marked counts in ``solo_lease_losses``: an item
  at ``quarantine_after`` of those (it killed its worker that often while it was the only item in
  flight) is failed as quarantined.
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
    "lease_losses",
)


@dataclass(frozen=True)
class Scope:
    """The source a crawl works on: its claims, counts and reclaims see only these items."""

    source_system: str
    source_name: str

    def __str__(self) -> str:
        return f"{self.source_system}/{self.source_name}"


def quarantine_message(deaths: int) -> str:
    return f"quarantined: its worker died {deaths} times while it was the only item in flight"


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


def local_owner_alive(owner: str) -> bool | None:
    """Whether the process of lease *owner* (``host:pid:token``) is running: None when it runs on
    another host (or the owner is not in that form), so only its lease expiry can tell."""
    import os

    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, as another user
        return True
    return True


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
    solo_after: int = 2
    quarantine_after: int = 3

    @abstractmethod
    def flush(self, new: list[NewItem], completed: list[int], failed: list[FailedItem]) -> int:
        """In one transaction: insert new items (skipping known keys), then mark items
        completed, then failed (back to pending after a backoff while attempts remain).
        Returns the number of items inserted."""

    @abstractmethod
    def claim(
        self, owner: str, limit: int, lease_seconds: float, *, scope: Scope | None = None, alone: bool = False
    ) -> list[dict[str, Any]]:
        """Atomically lease up to *limit* ready pending items (of *scope*), best first.

        Items whose lease was lost ``solo_after`` times are claimed only with *alone* (the
        claimer has nothing else in flight), and then alone: the best such item by itself,
        before any other item, marked ``lease_solo``."""

    @abstractmethod
    def end_solo(self, seqs: list[int]) -> None:
        """The requests of these items claimed alone were fetched and parsed: a lease lost from
        now on is no longer held against them as a solo death."""

    @abstractmethod
    def release(self, seqs: list[int]) -> None:
        """Give leased items back unattempted (e.g. claimed but never sent)."""

    @abstractmethod
    def renew(self, owner: str, lease_seconds: float) -> int:
        """Extend every lease held by *owner*."""

    @abstractmethod
    def reclaim(self, owners: list[str] | None = None, *, scope: Scope | None = None) -> int:
        """Return to pending the items (of *scope*) whose lease expired, or (with *owners*) that
        those owners hold. A lost lease is not an attempt: the claim's ``attempt`` increment is
        undone and ``lease_losses`` counted (``solo_lease_losses`` too for an item marked
        ``lease_solo``); an item at ``quarantine_after`` solo losses becomes failed with
        :func:`quarantine_message`."""

    @abstractmethod
    def lease_owners(self, scope: Scope | None = None) -> list[str]:
        """Distinct owners of in-progress items (of *scope*)."""

    @abstractmethod
    def ready_count(self, limit: int, scope: Scope | None = None) -> int:
        """Pending items (of *scope*) claimable now, counted up to *limit*."""

    @abstractmethod
    def min_inflight_depth(self, owner: str, scope: Scope | None = None) -> int | None:
        """The smallest depth among items (of *scope*) leased live by owners other than *owner*."""

    @abstractmethod
    def outstanding(self, owner: str, scope: Scope | None = None) -> bool:
        """True while any item (of *scope*) is pending (even in backoff) or leased live by another owner."""

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
        """Failed items back to pending with fresh attempt and lease-loss counts."""

    @abstractmethod
    def recrawl(self, source_name: str, older_than_seconds: float | None = None) -> int:
        """Fetched completed items (completed before the cut-off) back to pending; items only
        recorded as known (a redirect target, never fetched itself) stay completed."""

    @abstractmethod
    def release_leases(self, owner: str | None = None, *, expired_only: bool = False) -> int:
        """Every in-progress item (of *owner*, or of everyone; with *expired_only* only those whose
        lease expired) back to pending; the claim's ``attempt`` increment is undone (an
        interrupted item was not a failed attempt)."""

    @abstractmethod
    def lease_summary(self) -> list[tuple[str, int, int]]:
        """``(owner, in-progress items, of which with a live lease)`` per lease owner."""

    @abstractmethod
    def requeue_keys(self, dedupe_keys: list[str]) -> int:
        """Items with these keys (any status) back to pending as never attempted: attempt 0, no
        backoff, no lease, ``completed_at`` cleared (so a re-crawl check does not skip them as
        unchanged). Returns how many rows changed (unknown keys and items already in that state
        are not counted)."""

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

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        max_attempts: int = 3,
        retry_backoff: float = 30.0,
        solo_after: int = 2,
        quarantine_after: int = 3,
    ):
        self.conn = conn
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.solo_after = solo_after
        self.quarantine_after = quarantine_after

    def describe(self) -> str:
        """``SQLite <path>`` of the database file (for the "Frontier open:" log line)."""
        path = next((row[2] for row in self.conn.execute("PRAGMA database_list") if row[1] == "main"), "")
        return f"SQLite {path or ':memory:'}"

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

    def claim(
        self, owner: str, limit: int, lease_seconds: float, *, scope: Scope | None = None, alone: bool = False
    ) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        now = utcnow()
        where, extra = _scope_sql(scope)
        sql = (
            "UPDATE work_items SET status = 'in_progress', attempt = attempt + 1, lease_solo = {solo},"
            " lease_owner = ?, lease_expires_at = ?, updated_at = ?, next_attempt_at = NULL"
            " WHERE seq IN (SELECT seq FROM work_items WHERE status = 'pending'"
            f" AND (next_attempt_at IS NULL OR next_attempt_at <= ?) AND lease_losses {{op}} ?{where}"
            " ORDER BY priority DESC, seq LIMIT ?)"
            f" RETURNING {', '.join(CLAIM_COLUMNS)}"
        )
        lease = (owner, ts(now + timedelta(seconds=lease_seconds)), ts(now), ts(now), self.solo_after)
        with self._tx() as cur:
            rows = []
            if alone:  # a suspect (lost twice) goes alone to a worker with nothing else in flight
                rows = cur.execute(sql.format(op=">=", solo=1), (*lease, *extra, 1)).fetchall()
            if not rows:
                rows = cur.execute(sql.format(op="<", solo=0), (*lease, *extra, limit)).fetchall()
        return claimed_rows(rows)

    def end_solo(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._tx() as cur:
            cur.executemany(
                "UPDATE work_items SET lease_solo = 0 WHERE seq = ? AND lease_solo = 1", [(seq,) for seq in seqs]
            )

    def release(self, seqs: list[int]) -> None:
        if not seqs:
            return
        now = ts(utcnow())
        with self._tx() as cur:
            cur.executemany(
                "UPDATE work_items SET status = 'pending', attempt = MAX(attempt - 1, 0), lease_solo = 0,"
                " lease_owner = NULL, lease_expires_at = NULL, updated_at = ? WHERE seq = ? AND status = 'in_progress'",
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

    def reclaim(self, owners: list[str] | None = None, *, scope: Scope | None = None) -> int:
        now = ts(utcnow())
        if owners is not None and not owners:
            return 0
        scoped, extra = _scope_sql(scope)
        if owners is None:
            where, params = "lease_expires_at < ?", [now]
        else:
            marks = ", ".join("?" for _ in owners)
            where, params = f"lease_owner IN ({marks})", list(owners)
        quarantine = self.quarantine_after
        with self._tx() as cur:
            cur.execute(
                "UPDATE work_items SET attempt = MAX(attempt - 1, 0), lease_losses = lease_losses + 1,"
                " solo_lease_losses = solo_lease_losses + lease_solo,"
                " status = CASE WHEN lease_solo = 1 AND solo_lease_losses + 1 >= ? THEN 'failed' ELSE 'pending' END,"
                " error_message = CASE WHEN lease_solo = 1 AND solo_lease_losses + 1 >= ?"
                " THEN 'quarantined: its worker died ' || (solo_lease_losses + 1)"
                " || ' times while it was the only item in flight' ELSE error_message END,"
                " lease_solo = 0, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
                f" WHERE status = 'in_progress' AND {where}{scoped}",
                [quarantine, quarantine, now, *params, *extra],
            )
            return cur.rowcount

    def lease_owners(self, scope: Scope | None = None) -> list[str]:
        where, extra = _scope_sql(scope)
        rows = self.conn.execute(
            "SELECT DISTINCT lease_owner FROM work_items WHERE status = 'in_progress' AND lease_owner IS NOT NULL"
            + where,
            extra,
        ).fetchall()
        return [r[0] for r in rows]

    def ready_count(self, limit: int, scope: Scope | None = None) -> int:
        where, extra = _scope_sql(scope)
        return self.conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM work_items WHERE status = 'pending'"
            f" AND (next_attempt_at IS NULL OR next_attempt_at <= ?){where} LIMIT ?)",
            (ts(utcnow()), *extra, limit),
        ).fetchone()[0]

    def min_inflight_depth(self, owner: str, scope: Scope | None = None) -> int | None:
        where, extra = _scope_sql(scope)
        return self.conn.execute(
            "SELECT MIN(depth) FROM work_items WHERE status = 'in_progress' AND lease_owner <> ?"
            f" AND lease_expires_at >= ?{where}",
            (owner, ts(utcnow()), *extra),
        ).fetchone()[0]

    def outstanding(self, owner: str, scope: Scope | None = None) -> bool:
        where, extra = _scope_sql(scope)
        row = self.conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM work_items WHERE status = 'pending'{where})"
            " OR EXISTS (SELECT 1 FROM work_items WHERE status = 'in_progress'"
            f" AND lease_expires_at >= ? AND lease_owner <> ?{where})",
            (*extra, ts(utcnow()), owner, *extra),
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
                "UPDATE work_items SET status = 'pending', attempt = 0, lease_losses = 0, solo_lease_losses = 0,"
                " next_attempt_at = NULL, updated_at = ? WHERE status = 'failed' AND (? IS NULL OR source_name = ?)",
                (now, source_name, source_name),
            )
            return cur.rowcount

    def recrawl(self, source_name: str, older_than_seconds: float | None = None) -> int:
        now = utcnow()
        cutoff = ts(now - timedelta(seconds=older_than_seconds)) if older_than_seconds is not None else None
        with self._tx() as cur:
            cur.execute(
                "UPDATE work_items SET status = 'pending', attempt = 0, lease_losses = 0, solo_lease_losses = 0,"
                " next_attempt_at = NULL, updated_at = ? WHERE status = 'completed' AND attempt > 0"
                " AND source_name = ? AND (? IS NULL OR completed_at < ?)",
                (ts(now), source_name, cutoff, cutoff),
            )
            return cur.rowcount

    def release_leases(self, owner: str | None = None, *, expired_only: bool = False) -> int:
        now = ts(utcnow())
        with self._tx() as cur:
            cur.execute(
                "UPDATE work_items SET status = 'pending', attempt = MAX(attempt - 1, 0), lease_solo = 0,"
                " lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
                " WHERE status = 'in_progress' AND (? IS NULL OR lease_owner = ?) AND (? = 0 OR lease_expires_at < ?)",
                (now, owner, owner, int(expired_only), now),
            )
            return cur.rowcount

    def lease_summary(self) -> list[tuple[str, int, int]]:
        rows = self.conn.execute(
            "SELECT lease_owner, COUNT(*), SUM(CASE WHEN lease_expires_at >= ? THEN 1 ELSE 0 END) FROM work_items"
            " WHERE status = 'in_progress' AND lease_owner IS NOT NULL GROUP BY lease_owner ORDER BY lease_owner",
            (ts(utcnow()),),
        ).fetchall()
        return [(r[0], r[1], r[2] or 0) for r in rows]

    def requeue_keys(self, dedupe_keys: list[str]) -> int:
        keys = list(dict.fromkeys(dedupe_keys))
        if not keys:
            return 0
        now = ts(utcnow())
        changed = 0
        with self._tx() as cur:
            for key in keys:
                cur.execute(
                    "UPDATE work_items SET status = 'pending', attempt = 0, next_attempt_at = NULL,"
                    " completed_at = NULL, lease_owner = NULL, lease_expires_at = NULL, error_message = NULL,"
                    " lease_losses = 0, solo_lease_losses = 0, lease_solo = 0,"
                    " updated_at = ? WHERE dedupe_key = ? AND NOT (status = 'pending' AND attempt = 0"
                    " AND next_attempt_at IS NULL AND completed_at IS NULL AND lease_owner IS NULL)",
                    (now, key),
                )
                changed += cur.rowcount
        return changed

    def get(self, dedupe_key: str) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM work_items WHERE dedupe_key = ?", (dedupe_key,))
        row = cur.fetchone()
        return None if row is None else dict(zip((d[0] for d in cur.description), row, strict=True))

    def close(self) -> None:
        self.conn.close()


def _scope_sql(scope: Scope | None, prefix: str = "") -> tuple[str, tuple[str, ...]]:
    """The ``AND source_system = ? AND source_name = ?`` condition of *scope* and its parameters."""
    if scope is None:
        return "", ()
    return (
        f" AND {prefix}source_system = ? AND {prefix}source_name = ?",
        (scope.source_system, scope.source_name),
    )


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
    solo_after: int = 2,
    quarantine_after: int = 3,
) -> WorkItemStore:
    """Open the frontier backend named by the store *url* (schema brought up to date).

    For ``sqlserver://`` the connection settings, schema included, come from
    :meth:`SqlServerSettings.resolve` (``INGEST_SQLSERVER_*`` first, then *sqlserver_config*).
    """
    from holocron_scrapy.db.connection import SQLITE, open_store, parse_store_url

    parsed = parse_store_url(url, setting=setting)
    conn = open_store(parsed, sqlserver_config=sqlserver_config)
    if parsed.dialect == SQLITE:
        return SqliteWorkItemStore(
            conn,
            max_attempts=max_attempts,
            retry_backoff=retry_backoff,
            solo_after=solo_after,
            quarantine_after=quarantine_after,
        )
    from holocron_scrapy.db.sqlserver import SqlServerSettings
    from holocron_scrapy.frontier.sqlserver_store import SqlServerWorkItemStore

    settings = SqlServerSettings.resolve(sqlserver_config or {}, conn_str=parsed.odbc_connect)
    return SqlServerWorkItemStore(
        conn,
        settings,
        max_attempts=max_attempts,
        retry_backoff=retry_backoff,
        solo_after=solo_after,
        quarantine_after=quarantine_after,
    )
