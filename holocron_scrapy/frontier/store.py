"""The ``work_items`` store: insert-if-new, atomic batch claims with leases, acks.

:class:`WorkItemStore` is the contract every backend passes (``tests/test_frontier_store.py``);
:class:`SqlWorkItemStore` implements it once, on SQLAlchemy Core over
:data:`holocron_scrapy.db.schema.work_items`, for SQLite (``sqlite:///``, the embedded default),
PostgreSQL (``postgresql://``) and SQL Server (``mssql+pyodbc://``, ``sqlserver://``, the YAML
``sqlserver`` section); :func:`open_work_item_store` opens it on the store URL's engine. All
methods are synchronous and each is one transaction; callers batch their writes through
:meth:`WorkItemStore.flush`. A write transaction that loses a deadlock or a serialization conflict
(PostgreSQL 40P01/40001, SQL Server 1205) is run again, at most :data:`CONFLICT_ATTEMPTS` times,
at once (the other transaction has gone through); the retries are logged at INFO.

* A :class:`Scope` (source system and name) limits the claims, counts and reclaims of a crawl
  to its own source's items; without one they cover every item (foreign spiders).
* A lost lease (expired, or its worker died) is not an attempt: :meth:`WorkItemStore.reclaim`
  undoes the claim's ``attempt`` increment and counts ``lease_losses`` instead. An item lost
  ``solo_after`` times is only claimed alone (``claim(..., alone=True)``, the claimer has nothing
  else in flight) and is marked ``lease_solo`` until :meth:`WorkItemStore.end_solo` (its request
  was fetched and parsed). A lease lost while so marked counts in ``solo_lease_losses``: an item
  at ``quarantine_after`` of those (it killed its worker that often while it was the only item in
  flight) is failed as quarantined.

Checkpoints (``frontier_checkpoints``, :class:`CheckpointKey`): a source's named JSON values kept
beside its work items. :meth:`WorkItemStore.save_checkpoint` writes one in the same transaction as a
chunk of new items, which is what makes the seed intake (:mod:`holocron_scrapy.frontier.intake`)
exactly-once: a kill leaves either both or neither.

Host politeness (``frontier_hosts``, ``frontier_host_slots``; :mod:`holocron_scrapy.frontier.politeness`
uses them): :meth:`WorkItemStore.take_slot` takes a request slot of a politeness key for every worker
of the frontier at once, in one short transaction under the key's row lock (``SELECT ... FOR UPDATE``
on PostgreSQL, ``UPDLOCK, ROWLOCK`` on SQL Server, ``BEGIN IMMEDIATE`` on SQLite), or says when to
try again; :meth:`WorkItemStore.release_slot` gives it back (and counts a 429/5xx towards the
exponential backoff block); :meth:`WorkItemStore.block_key` blocks a key until a time. Slots are leases:
an expired one counts for nobody.

Settings read: none (the scheduler and commands pass the URL and the tuning). Stats written: none
(the store counts its conflict retries in :attr:`SqlWorkItemStore.conflict_retries`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from holocron_scrapy.db.engine import READ_ONLY, db_error_text, describe_engine, is_write_conflict
from holocron_scrapy.db.schema import (
    LONG_TEXT,
    UtcDateTime,
    frontier_checkpoints,
    frontier_host_slots,
    frontier_hosts,
    work_items,
)
from holocron_scrapy.errors import StoreError

logger = logging.getLogger(__name__)
T = TypeVar("T")

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


@dataclass(frozen=True)
class CheckpointKey:
    """A named checkpoint of a source (a ``frontier_checkpoints`` row): e.g. the seed intake's
    ``seeds/<digest>``; later slices keep the recent-changes sync and generator listings here."""

    source_system: str
    source_name: str
    name: str


@dataclass(frozen=True)
class SlotGrant:
    """The answer of :meth:`WorkItemStore.take_slot`: a slot (*slot_id*), or when to ask again
    (*retry_at*) and why (``blocked: <reason>``, ``full``, ``delay``)."""

    slot_id: str | None
    retry_at: datetime | None = None
    reason: str = ""

    @property
    def taken(self) -> bool:
        return self.slot_id is not None


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
        before any other item, marked ``lease_solo``.

        Items of hosts blocked now (``frontier_hosts.blocked_until``, see :meth:`block_key`) are
        left pending: a worker claims what it can send, not what it would hold until the block ends."""

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
    def host_counts(self, since: datetime) -> list[tuple[str, str, str, int, int]]:
        """``(source_name, host, status, items, attempts finished since *since*)`` per source, request
        host and status, the host as :func:`uri_host` gives it. An attempt is finished when its item
        was completed or failed (for good or into a retry backoff): ``attempt > 0``, not in progress,
        ``updated_at >= since``; items only recorded as known (attempt 0) are not requests."""

    @abstractmethod
    def workers(self) -> list[dict[str, Any]]:
        """Per lease owner of in-progress items: ``owner``, ``items``, ``live`` (leases not expired),
        ``last_claim`` (latest ``updated_at``) and ``lease_expires_at`` (the latest expiry)."""

    @abstractmethod
    def active_blocks(self) -> list[dict[str, Any]]:
        """Hosts blocked now by shared politeness (``key``, ``blocked_until``, ``reason``, from
        ``frontier_hosts``)."""

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
    def checkpoint(self, key: CheckpointKey) -> Any:
        """The JSON value of checkpoint *key*, decoded, or None when there is none."""

    @abstractmethod
    def save_checkpoint(self, key: CheckpointKey, value: Any, new: list[NewItem] | None = None) -> int:
        """In one transaction: insert *new* items (skipping known keys) and set checkpoint *key* to
        *value* (JSON), so that a checkpoint never runs ahead of (or behind) the work it records.
        Returns the number of items inserted."""

    # Host politeness (one implementation, in SqlWorkItemStore) ------------------------
    def take_slot(
        self, key: str, owner: str, *, delay: float, concurrency: int, lease_seconds: float, recheck: float = 0.25
    ) -> SlotGrant:
        """In one transaction under the row lock of politeness *key*: when the key is not blocked, has
        fewer live slots than *concurrency* and its ``next_allowed_at`` has come, lease a slot to *owner*
        for *lease_seconds* and move ``next_allowed_at`` to now + *delay* (the key's configured delay and
        concurrency are recorded as given). Otherwise return when to try again: the block's end, the
        ``next_allowed_at``, or (all slots taken) the earliest slot expiry but at most *recheck* seconds
        away (a holder usually releases long before its lease expires). When all slots are taken, those
        of a dead process on this host (:func:`local_owner_alive`) are freed first."""
        raise NotImplementedError

    def release_slot(
        self,
        key: str,
        slot_id: str,
        *,
        ok: bool | None = None,
        backoff: float = 1.0,
        backoff_cap: float = 300.0,
        block: tuple[datetime, str] | None = None,
    ) -> datetime | None:
        """Give slot *slot_id* of *key* back. *ok* True (an answer that is not a 429/5xx) resets the key's
        failure count; False (a 429/5xx without Retry-After) counts one more and blocks the key for
        ``backoff * 2 ** (failures - 1)`` seconds (at most *backoff_cap*); returns that block's end.
        *block* ``(until, reason)`` blocks the key in the same transaction (a ``Retry-After``), so that no
        worker takes the slot between the release and the block."""
        raise NotImplementedError

    def block_key(self, key: str, until: datetime, reason: str) -> None:
        """Block *key* until *until* for every worker (a later block already set is kept)."""
        raise NotImplementedError

    def renew_slots(self, owner: str, lease_seconds: float) -> int:
        """Extend every slot lease held by *owner* (a download longer than a lease keeps its slot)."""
        raise NotImplementedError

    def release_owner_slots(self, owner: str) -> int:
        """Drop every slot held by *owner* (its crawl is closing)."""
        raise NotImplementedError

    def host_states(self) -> list[dict[str, Any]]:
        """Every politeness key's row with its live slot count (``live_slots``), by key."""
        raise NotImplementedError

    def blocked_keys(self) -> list[str]:
        """The politeness keys blocked now."""
        raise NotImplementedError

    @abstractmethod
    def close(self) -> None: ...

    # Shared helpers --------------------------------------------------------------
    def backoff_until(self, attempt: int) -> str:
        delay = self.retry_backoff * (2 ** max(attempt - 1, 0))
        return ts(utcnow() + timedelta(seconds=delay))

    def failure_status(self, attempt: int, retryable: bool) -> str:
        return PENDING if retryable and attempt < self.max_attempts else FAILED


#: Rows per statement of the bulk updates (``seq IN (...)``): well under every backend's parameter limit
#: (SQL Server's is 2,100).
CHUNK = 500
#: Runs of a write transaction that loses a deadlock or serialization conflict (the first included).
CONFLICT_ATTEMPTS = 5
#: PostgreSQL: ANALYZE work_items after this many rows inserted by a store (and at each further tenfold).
ANALYZE_AFTER = 1000
#: A connection kept between calls goes back to the pool after this long unused.
HOLD_IDLE_SECONDS = 1.0
W = work_items
#: The claim's RETURNING columns, in the order of :data:`CLAIM_COLUMNS`.
CLAIM = tuple(W.c[name] for name in CLAIM_COLUMNS)


class SqlWorkItemStore(WorkItemStore):
    """The frontier on SQLAlchemy Core over :data:`holocron_scrapy.db.schema.work_items`, for SQLite,
    PostgreSQL and SQL Server.

    Each operation is one statement, the same on every backend, except the two that truly differ
    (built by :func:`_insert_sql` and :func:`_claim_sql`) and the row limit of a few reads
    (:func:`_top`: SQL Server's ``TOP (?)``):

    * insert-if-new: ``INSERT ... ON CONFLICT (dedupe_key) DO NOTHING`` (the dialect's own ``insert``),
      the rows inserted counted by ``RETURNING seq`` on PostgreSQL (whatever another worker inserted
      meanwhile) and by the executemany's row count on SQLite (one writer: the transaction began with
      ``BEGIN IMMEDIATE``); new items are inserted in key order, so concurrent flushes of overlapping
      keys take their locks in one order and cannot deadlock;
      SQL Server has no ``ON CONFLICT``: one ``INSERT ... OUTPUT inserted.seq SELECT <values> WHERE NOT
      EXISTS (SELECT 1 FROM work_items WITH (UPDLOCK, HOLDLOCK) WHERE dedupe_key = ?)`` per item (the
      key-range lock makes a second worker inserting the same key wait, then skip it);
    * the claim: on SQLite one ``UPDATE ... WHERE seq IN (SELECT ... LIMIT n) RETURNING`` under the
      write lock of ``BEGIN IMMEDIATE``; on PostgreSQL ``SELECT seq ... FOR UPDATE SKIP LOCKED`` then
      ``UPDATE ... RETURNING``, so concurrent workers claim disjoint rows without waiting on each other;
      on SQL Server the same two steps, ``SELECT TOP (?) seq ... WITH (ROWLOCK, READPAST, UPDLOCK)``
      then ``UPDATE ... OUTPUT inserted...``.

    Our own text constants (statuses) are written into the SQL as literals, ``N'pending'`` on SQL
    Server (:class:`_Text`), whose filtered index ``ix_work_items_leases`` matches only the same literal.
    On SQL Server the tables live in the configured schema: the engine of
    :func:`holocron_scrapy.db.engine.open_engine` maps the unqualified tables onto it
    (``schema_translate_map``).

    Statements are built once (bound parameters for values, our own constants such as statuses written
    into the SQL) and reused, so SQLAlchemy neither rebuilds nor re-keys them on every call; each
    thread keeps its connections between calls (:meth:`_connection`). Times are bound as aware UTC
    datetimes and compared in SQL; :class:`UtcDateTime` stores them as today's UTC text on SQLite and
    as ``TIMESTAMP(6)`` on PostgreSQL, and reads them back as aware UTC datetimes. Reads run in a
    read-only transaction (``holocron_read_only``: a deferred ``BEGIN`` on SQLite, no write lock).
    PostgreSQL gets ``ANALYZE`` after bulk inserts (:meth:`_note_inserts`).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_attempts: int = 3,
        retry_backoff: float = 30.0,
        solo_after: int = 2,
        quarantine_after: int = 3,
    ):
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql", "mssql"):
            raise StoreError(f"SqlWorkItemStore supports SQLite, PostgreSQL and SQL Server, not {self.dialect}")
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.solo_after = solo_after
        self.quarantine_after = quarantine_after
        self._insert_text = _compiled_insert(engine.dialect) if self.dialect == "sqlite" else ""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._held: list[sa.Connection] = []
        self._inserted, self._next_analyze = 0, ANALYZE_AFTER
        #: Write transactions run again after a deadlock or serialization conflict.
        self.conflict_retries = 0

    def describe(self) -> str:
        """``SQLite <path>``, ``PostgreSQL <url without password>`` or ``SQL Server <host:port> ...``
        (for the "Frontier open:" log line)."""
        return describe_engine(self.engine)

    # -- writes ---------------------------------------------------------------------------------
    def flush(self, new: list[NewItem], completed: list[int], failed: list[FailedItem]) -> int:
        if not (new or completed or failed):
            return 0
        now = utcnow()
        ordered = self._insert_order(new)
        done = sorted(set(completed))

        def work(conn: sa.Connection) -> int:
            inserted = self._insert(conn, ordered, now) if ordered else 0
            for part in _chunks(done):
                conn.execute(_COMPLETE, {"b_seqs": part, "b_now": now})
            if failed:
                self._fail(conn, failed, now)
            return inserted

        inserted = self._write(work)
        if inserted and self.dialect == "postgresql":
            self._note_inserts(inserted)
        return inserted

    def _insert_order(self, new: list[NewItem]) -> list[NewItem]:
        """The order new items are inserted in, which is their ``seq`` order: the order they were found
        on SQLite (one writer at a time: items of one priority are claimed first in, first out, as a
        spider yielded them); by dedupe key on the servers, where two workers inserting the same keys
        in different orders could deadlock on the unique index."""
        if self.dialect == "sqlite":
            return list(new)
        return sorted(new, key=lambda n: n.dedupe_key)

    def _note_inserts(self, inserted: int) -> None:
        """PostgreSQL: ``ANALYZE work_items`` once this store has inserted :data:`ANALYZE_AFTER` rows, and
        again at each further tenfold. Until autovacuum's first analyze (up to a minute, and only after
        10% of the table changed) the planner takes a freshly filled table for empty: every claim then
        sorts all pending rows instead of reading the dequeue index in order (20 ms instead of 3 ms a
        claim with 20,000 pending)."""
        self._inserted += inserted
        if self._inserted < self._next_analyze:
            return
        self._next_analyze = self._inserted * 10
        self._write(lambda conn: conn.execute(_ANALYZE))

    def _insert(self, conn: sa.Connection, new: list[NewItem], now: datetime) -> int:
        if self.dialect == "postgresql":
            return len(conn.execute(_insert_sql(self.dialect), [_insert_row(n, now) for n in new]).all())
        if self.dialect == "mssql":  # one guarded INSERT ... SELECT per item (no executemany with OUTPUT)
            insert = _insert_sql(self.dialect)
            return sum(len(conn.execute(insert, _insert_row(n, now)).all()) for n in new)
        # SQLite: the compiled statement through the driver's executemany, the time bound once (SQLAlchemy's
        # per-row parameter processing doubled the cost of an insert); its row count is the rows inserted.
        stamp = UtcDateTime().process_bind_param(now, self.engine.dialect)
        rows = [_insert_values(n, stamp) for n in new]
        return conn.exec_driver_sql(self._insert_text, rows).rowcount

    def _fail(self, conn: sa.Connection, failed: list[FailedItem], now: datetime) -> None:
        attempts: dict[int, int] = {}
        for part in _chunks(sorted({item.seq for item in failed})):
            attempts.update((seq, attempt) for seq, attempt in conn.execute(_ATTEMPTS, {"b_seqs": part}))
        params = []
        for item in failed:
            attempt = attempts.get(item.seq)
            if attempt is None:
                continue
            status = self.failure_status(attempt, item.retryable)
            backoff = timedelta(seconds=self.retry_backoff * (2 ** max(attempt - 1, 0)))
            params.append(
                {
                    "b_seq": item.seq,
                    "b_status": status,
                    "b_error": item.error[:4000],
                    "b_next": now + backoff if status == PENDING else None,
                    "b_now": now,
                }
            )
        if params:
            conn.execute(_FAIL, params)

    def claim(
        self, owner: str, limit: int, lease_seconds: float, *, scope: Scope | None = None, alone: bool = False
    ) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        now = utcnow()
        params = {
            "b_owner": owner,
            "b_until": now + timedelta(seconds=lease_seconds),
            "b_now": now,
            "b_solo_after": self.solo_after,
            **_scope_params(scope),
        }

        def work(conn: sa.Connection) -> list[Any]:
            # Items of hosts blocked now (frontier_hosts) are left for later: a worker claims what it can send.
            blocked = list(conn.execute(_BLOCKED_KEYS, {"b_now": now}).scalars())
            avoid = bool(blocked)
            if avoid:
                params.update(_avoid_params(blocked))
            rows: list[Any] = []
            if alone:  # a suspect (lost twice) goes alone to a worker with nothing else in flight
                rows = self._claim(conn, scope is not None, True, {**params, "b_limit": 1}, avoid)
            if not rows:
                rows = self._claim(conn, scope is not None, False, {**params, "b_limit": limit}, avoid)
            return rows

        return claimed_rows(self._write(work))

    def _claim(
        self, conn: sa.Connection, scoped: bool, solo: bool, params: dict[str, Any], avoid: bool = False
    ) -> list[Any]:
        lock, update = _claim_sql(self.dialect, scoped, solo, avoid)
        if lock is not None:  # PostgreSQL, SQL Server: lock the best ready rows nobody holds (held ones are skipped)
            seqs = conn.execute(lock, params).scalars().all()
            if not seqs:
                return []
            params = {**params, "b_seqs": list(seqs)}
        return list(conn.execute(update, params).all())

    def end_solo(self, seqs: list[int]) -> None:
        if not seqs:
            return
        parts = list(_chunks(sorted(set(seqs))))

        def work(conn: sa.Connection) -> None:
            for part in parts:
                conn.execute(_END_SOLO, {"b_seqs": part})

        self._write(work)

    def release(self, seqs: list[int]) -> None:
        if not seqs:
            return
        now = utcnow()
        parts = list(_chunks(sorted(set(seqs))))

        def work(conn: sa.Connection) -> None:
            for part in parts:
                conn.execute(_RELEASE, {"b_seqs": part, "b_now": now})

        self._write(work)

    def renew(self, owner: str, lease_seconds: float) -> int:
        until = utcnow() + timedelta(seconds=lease_seconds)
        return self._rowcount(_RENEW, {"b_owner": owner, "b_until": until})

    def reclaim(self, owners: list[str] | None = None, *, scope: Scope | None = None) -> int:
        if owners is not None and not owners:
            return 0
        params: dict[str, Any] = {"b_now": utcnow(), "b_quarantine": self.quarantine_after, **_scope_params(scope)}
        if owners is not None:
            params["b_owners"] = list(owners)
        return self._rowcount(_reclaim_sql(owners is not None, scope is not None), params)

    def retry_failed(self, source_name: str | None = None) -> int:
        params = {"b_now": utcnow(), "b_source": source_name}
        return self._rowcount(_retry_failed_sql(source_name is not None), params)

    def recrawl(self, source_name: str, older_than_seconds: float | None = None) -> int:
        now = utcnow()
        params: dict[str, Any] = {"b_now": now, "b_source": source_name}
        if older_than_seconds is not None:
            params["b_cutoff"] = now - timedelta(seconds=older_than_seconds)
        return self._rowcount(_recrawl_sql(older_than_seconds is not None), params)

    def release_leases(self, owner: str | None = None, *, expired_only: bool = False) -> int:
        params = {"b_now": utcnow(), "b_owner": owner}
        return self._rowcount(_release_leases_sql(owner is not None, expired_only), params)

    def requeue_keys(self, dedupe_keys: list[str]) -> int:
        keys = sorted(set(dedupe_keys))
        if not keys:
            return 0
        now = utcnow()
        parts = list(_chunks(keys))

        def work(conn: sa.Connection) -> int:
            return sum(conn.execute(_REQUEUE, {"b_keys": part, "b_now": now}).rowcount for part in parts)

        return self._write(work)

    def _rowcount(self, statement: sa.Executable, params: dict[str, Any]) -> int:
        """Run one write statement in its own transaction; the rows it changed."""
        return self._write(lambda conn: conn.execute(statement, params).rowcount)

    # -- reads ----------------------------------------------------------------------------------
    def _all(self, statement: sa.Executable, params: dict[str, Any] | None = None) -> list[Any]:
        with self._begin(read=True) as conn:
            return list(conn.execute(statement, params or {}).all())

    def _scalar(self, statement: sa.Executable, params: dict[str, Any]) -> Any:
        with self._begin(read=True) as conn:
            return conn.execute(statement, params).scalar()

    def lease_owners(self, scope: Scope | None = None) -> list[str]:
        return [row[0] for row in self._all(_lease_owners_sql(scope is not None), _scope_params(scope))]

    def ready_count(self, limit: int, scope: Scope | None = None) -> int:
        params = {"b_now": utcnow(), "b_limit": limit, **_scope_params(scope)}
        return int(self._scalar(_ready_count_sql(self.dialect, scope is not None), params) or 0)

    def min_inflight_depth(self, owner: str, scope: Scope | None = None) -> int | None:
        params = {"b_now": utcnow(), "b_owner": owner, **_scope_params(scope)}
        return self._scalar(_min_inflight_depth_sql(scope is not None), params)

    def outstanding(self, owner: str, scope: Scope | None = None) -> bool:
        params = {"b_now": utcnow(), "b_owner": owner, **_scope_params(scope)}
        return bool(self._scalar(_outstanding_sql(scope is not None), params))

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for source, status, count in self._all(_COUNTS):
            out.setdefault(source, dict.fromkeys(STATUSES, 0))[status] = count
        return out

    def oldest_lease(self) -> dict[str, Any] | None:
        rows = self._all(_OLDEST_LEASE)
        if not rows:
            return None
        return dict(zip(("dedupe_key", "lease_owner", "lease_expires_at", "claimed_at"), rows[0], strict=True))

    def failure_reasons(self, limit: int = 10) -> list[tuple[str, int]]:
        return [(row[0], int(row[1])) for row in self._all(_failure_reasons_sql(self.dialect), {"b_limit": limit})]

    def lease_summary(self) -> list[tuple[str, int, int]]:
        return [(row[0], int(row[1]), int(row[2] or 0)) for row in self._all(_LEASE_SUMMARY, {"b_now": utcnow()})]

    def host_counts(self, since: datetime) -> list[tuple[str, str, str, int, int]]:
        merged: dict[tuple[str, str, str], list[int]] = {}
        for source, netloc, status, items, recent in self._all(_HOST_COUNTS, {"b_since": since}):
            key = (source, uri_host(netloc or ""), status)  # SQL's cut of the netloc, normalised here
            totals = merged.setdefault(key, [0, 0])
            totals[0] += int(items)
            totals[1] += int(recent or 0)
        return [(*key, items, recent) for key, (items, recent) in sorted(merged.items())]

    def workers(self) -> list[dict[str, Any]]:
        names = ("owner", "items", "live", "last_claim", "lease_expires_at")
        rows = self._all(_WORKERS, {"b_now": utcnow()})
        return [dict(zip(names, (r[0], int(r[1]), int(r[2] or 0), r[3], r[4]), strict=True)) for r in rows]

    def active_blocks(self) -> list[dict[str, Any]]:
        rows = self._all(_ACTIVE_BLOCKS, {"b_now": utcnow()})
        return [{"key": r[0], "blocked_until": r[1], "reason": r[2]} for r in rows]

    def get(self, dedupe_key: str) -> dict[str, Any] | None:
        with self._begin(read=True) as conn:
            row = conn.execute(_GET, {"b_key": dedupe_key}).mappings().first()
        return None if row is None else dict(row)

    def checkpoint(self, key: CheckpointKey) -> Any:
        with self._begin(read=True) as conn:
            text = conn.execute(_CHECKPOINT_GET, _checkpoint_params(key)).scalar()
        return None if text is None else json.loads(text)

    def save_checkpoint(self, key: CheckpointKey, value: Any, new: list[NewItem] | None = None) -> int:
        now = utcnow()
        ordered = self._insert_order(new or [])
        params = {**_checkpoint_params(key), "b_value": json.dumps(value, separators=(",", ":")), "b_now": now}

        def work(conn: sa.Connection) -> int:
            inserted = self._insert(conn, ordered, now) if ordered else 0
            if self.dialect == "mssql":  # no upsert: update under a key-range lock, else insert
                if not conn.execute(_CHECKPOINT_UPDATE, params).rowcount:
                    conn.execute(_checkpoint_put_sql(self.dialect), params)
            else:
                conn.execute(_checkpoint_put_sql(self.dialect), params)
            return inserted

        inserted = self._write(work)
        if inserted and self.dialect == "postgresql":
            self._note_inserts(inserted)
        return inserted

    # -- host politeness ------------------------------------------------------------------------
    def take_slot(
        self, key: str, owner: str, *, delay: float, concurrency: int, lease_seconds: float, recheck: float = 0.25
    ) -> SlotGrant:
        now = utcnow()
        params = {"b_key": key, "b_now": now, "b_delay": float(delay), "b_concurrency": int(concurrency)}

        def work(conn: sa.Connection) -> SlotGrant:
            row = self._lock_host(conn, params)
            next_allowed, blocked_until, reason = row
            if blocked_until is not None and blocked_until > now:
                return SlotGrant(None, blocked_until, f"blocked: {reason or ''}".rstrip(": "))
            conn.execute(_SLOTS_EXPIRED, params)
            live, soonest = conn.execute(_SLOTS_LIVE, params).one()
            if live >= max(concurrency, 1):
                # Slots of a dead process on this host are free at once (as its work items' leases are).
                owners = conn.execute(_SLOT_OWNERS, params).scalars().all()
                dead = [owner for owner in owners if local_owner_alive(owner) is False]
                if dead:
                    conn.execute(_SLOTS_OF_OWNERS_DELETE, {**params, "b_owners": dead})
                    live, soonest = conn.execute(_SLOTS_LIVE, params).one()
            if live >= max(concurrency, 1):
                cap = now + timedelta(seconds=recheck)
                retry = min(soonest, cap) if soonest is not None else cap
                if next_allowed is not None:
                    retry = max(retry, next_allowed)
                return SlotGrant(None, retry, "full")
            if next_allowed is not None and next_allowed > now:
                return SlotGrant(None, next_allowed, "delay")
            slot_id = str(uuid.uuid4())
            conn.execute(
                _SLOT_INSERT,
                {**params, "b_slot": slot_id, "b_owner": owner, "b_until": now + timedelta(seconds=lease_seconds)},
            )
            conn.execute(_HOST_TAKEN, {**params, "b_next": now + timedelta(seconds=max(delay, 0.0))})
            return SlotGrant(slot_id)

        return self._write(work)

    def _lock_host(self, conn: sa.Connection, params: dict[str, Any]) -> tuple[Any, Any, Any]:
        """Insert the key's row if new, then lock it: ``(next_allowed_at, blocked_until, block_reason)``."""
        if self.dialect == "mssql":
            if conn.execute(_host_lock_sql(self.dialect), params).first() is None:
                conn.execute(_host_ensure_sql(self.dialect), params)
        else:
            conn.execute(_host_ensure_sql(self.dialect), params)
        row = conn.execute(_host_lock_sql(self.dialect), params).one()
        return row[0], row[1], row[2]

    def release_slot(
        self,
        key: str,
        slot_id: str,
        *,
        ok: bool | None = None,
        backoff: float = 1.0,
        backoff_cap: float = 300.0,
        block: tuple[datetime, str] | None = None,
    ) -> datetime | None:
        now = utcnow()
        params = {"b_key": key, "b_slot": slot_id, "b_now": now, "b_delay": 0.0, "b_concurrency": 1}

        def work(conn: sa.Connection) -> datetime | None:
            if block is not None:
                self._lock_host(conn, params)
                conn.execute(_HOST_BLOCK, {**params, "b_until": block[0], "b_reason": block[1][:400]})
            conn.execute(_SLOT_DELETE, params)
            if ok:
                conn.execute(_HOST_OK, params)
                return None
            if ok is None:
                return None
            self._lock_host(conn, params)
            failures = int(conn.execute(_HOST_FAILURES, params).scalar() or 0) + 1
            until = now + timedelta(seconds=min(backoff * 2 ** (failures - 1), backoff_cap))
            conn.execute(_HOST_FAILED, {**params, "b_failures": failures})
            conn.execute(_HOST_BLOCK, {**params, "b_until": until, "b_reason": f"backoff after {failures} failures"})
            return until

        return self._write(work)

    def block_key(self, key: str, until: datetime, reason: str) -> None:
        params = {"b_key": key, "b_now": utcnow(), "b_delay": 0.0, "b_concurrency": 1}

        def work(conn: sa.Connection) -> None:
            self._lock_host(conn, params)
            conn.execute(_HOST_BLOCK, {**params, "b_until": until, "b_reason": reason[:400]})

        self._write(work)

    def renew_slots(self, owner: str, lease_seconds: float) -> int:
        until = utcnow() + timedelta(seconds=lease_seconds)
        return self._rowcount(_SLOTS_RENEW, {"b_owner": owner, "b_until": until})

    def release_owner_slots(self, owner: str) -> int:
        return self._rowcount(_SLOTS_OF_OWNER_DELETE, {"b_owner": owner})

    def host_states(self) -> list[dict[str, Any]]:
        return [dict(row._mapping) for row in self._all(_HOST_STATES, {"b_now": utcnow()})]

    def blocked_keys(self) -> list[str]:
        return [row[0] for row in self._all(_BLOCKED_KEYS, {"b_now": utcnow()})]

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()
        self.engine.dispose()

    # -- connections ----------------------------------------------------------------------------
    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run *work* in one write transaction; run it again (at once, at most :data:`CONFLICT_ATTEMPTS`
        runs in all) when the database chose it as a deadlock victim or failed it on a serialization
        conflict: the whole transaction was rolled back, and the other one has gone through. Every other
        error is raised at once."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                with self._begin() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == CONFLICT_ATTEMPTS or not is_write_conflict(exc):
                    raise
                self.conflict_retries += 1
                logger.info(
                    "frontier transaction lost a write conflict (run %d), running it again: %s",
                    attempt,
                    db_error_text(exc),
                )
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _begin(self, *, read: bool = False) -> Iterator[sa.Connection]:
        """A transaction on this thread's connection (a read begins deferred on SQLite: no write lock)."""
        conn = self._connection(read)
        with conn.begin():
            yield conn

    def _connection(self, read: bool) -> sa.Connection:
        """This thread's connection for writes or reads, kept between calls (a pool checkout per call, and
        PostgreSQL's pre-ping, cost more than the statements) while it is busy: one idle for
        :data:`HOLD_IDLE_SECONDS` goes back to the pool and the next call checks one out (pinged), so a
        server restart between bursts costs no failed call. SQLAlchemy invalidates a connection that
        lost its server; it reconnects on its next use."""
        kind = "read" if read else "write"
        now = time.monotonic()
        held: tuple[sa.Connection, float] | None = getattr(self._local, kind, None)
        if held is not None:
            conn, used = held
            if not conn.closed and now - used < HOLD_IDLE_SECONDS:
                setattr(self._local, kind, (conn, now))
                return conn
            conn.close()
        conn = self.engine.connect()
        if read:
            conn = conn.execution_options(**{READ_ONLY: True})
        setattr(self._local, kind, (conn, now))
        with self._lock:
            self._held = [c for c in self._held if not c.closed]
            self._held.append(conn)
        return conn


# -- statements (pure: built once, executed with bound parameters) ---------------------------------
def _chunks(values: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class _Text(sa.sql.expression.ColumnElement[str]):
    """A text constant of ours written into the SQL: ``'pending'``, and ``N'pending'`` on SQL Server
    (an NVARCHAR literal, as its filtered indexes spell the predicate)."""

    inherit_cache = True
    _traverse_internals = [("value", InternalTraversal.dp_string)]
    type = sa.Unicode()

    def __init__(self, value: str):
        if "'" in value:
            raise ValueError(f"not a plain constant: {value!r}")
        self.value = value


@compiles(_Text)
def _text_literal(element: _Text, compiler: Any, **kw: Any) -> str:
    return f"'{element.value}'"


@compiles(_Text, "mssql")
def _ntext_literal(element: _Text, compiler: Any, **kw: Any) -> str:
    return f"N'{element.value}'"


def _const(value: str | int) -> sa.ColumnElement[Any]:
    """A constant of ours written into the SQL, not bound: the planners see it (a partial index on
    ``status = 'in_progress'`` matches it) and SQLite runs the claim faster than with parameters."""
    if isinstance(value, str):
        return _Text(value)
    return sa.literal_column(str(int(value)), sa.Integer())


_AnySelect = TypeVar("_AnySelect", bound="sa.Select[*tuple[Any, ...]]")


def _top(select: _AnySelect, dialect: str) -> _AnySelect:
    """*select* limited to ``b_limit`` rows: ``LIMIT ?`` (SQLite, PostgreSQL) or ``SELECT TOP (?)`` (SQL
    Server, where a bound LIMIT would become a ``ROW_NUMBER()`` subquery)."""
    if dialect == "mssql":
        return select.prefix_with(sa.text("TOP (:b_limit)").bindparams(_p("limit", sa.Integer())), dialect="mssql")
    return select.limit(_p("limit", sa.Integer()))


_S = {status: _const(status) for status in STATUSES}
ZERO, ONE, NULL = _const(0), _const(1), sa.null()


def _p(name: str, type_: Any = None, *, expanding: bool = False) -> sa.BindParameter[Any]:
    return sa.bindparam(f"b_{name}", type_=type_, expanding=expanding)


def _now() -> sa.BindParameter[Any]:
    return _p("now", UtcDateTime())


def _seqs() -> sa.BindParameter[Any]:
    return _p("seqs", expanding=True)


def _minus_one(column: Any) -> sa.ColumnElement[int]:
    """``MAX(column - 1, 0)`` in portable SQL (SQLite's scalar MAX is PostgreSQL's GREATEST)."""
    return sa.case((column > ZERO, column - ONE), else_=ZERO)


def _scoped(scoped: bool) -> tuple[sa.ColumnElement[bool], ...]:
    """The conditions of a scope (``b_system``, ``b_name``), none without one."""
    if not scoped:
        return ()
    return (W.c.source_system == _p("system"), W.c.source_name == _p("name"))


def _scope_params(scope: Scope | None) -> dict[str, str]:
    return {} if scope is None else {"b_system": scope.source_system, "b_name": scope.source_name}


def _due() -> sa.ColumnElement[bool]:
    return sa.or_(W.c.next_attempt_at.is_(None), W.c.next_attempt_at <= _now())


def _unleased(**extra: Any) -> dict[str, Any]:
    """Back to pending without a lease (released, interrupted or requeued)."""
    return {
        "status": _S[PENDING],
        "lease_solo": ZERO,
        "lease_owner": NULL,
        "lease_expires_at": NULL,
        "updated_at": _now(),
        **extra,
    }


def _fresh() -> dict[str, Any]:
    """Back to pending with fresh attempt and lease-loss counts (retry-failed, re-crawl)."""
    return {
        "status": _S[PENDING],
        "attempt": ZERO,
        "lease_losses": ZERO,
        "solo_lease_losses": ZERO,
        "next_attempt_at": NULL,
        "updated_at": _now(),
    }


def _insert_row(n: NewItem, now: datetime) -> dict[str, Any]:
    return {
        "work_item_id": n.work_item_id,
        "source_system": n.source_system,
        "source_name": n.source_name,
        "resource_type": n.resource_type,
        "resource_id": n.resource_id,
        "request_uri": n.request_uri,
        "request_method": n.request_method,
        "request_headers": n.request_headers,
        "request_body": n.request_body,
        "metadata": n.metadata,
        "priority": n.priority,
        "depth": n.depth,
        "status": n.status,
        "attempt": 0,
        "run_id": n.run_id,
        "discovered_from": n.discovered_from,
        "created_at": now,
        "updated_at": now,
        "completed_at": now if n.status == COMPLETED else None,
        "dedupe_key": n.dedupe_key,
    }


def _insert_values(n: NewItem, stamp: Any) -> tuple[Any, ...]:
    """The values of :data:`INSERT_COLUMNS` for *n*, the times already bound (*stamp*)."""
    return (
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
        0,
        n.run_id,
        n.discovered_from,
        stamp,
        stamp,
        stamp if n.status == COMPLETED else None,
        n.dedupe_key,
    )


#: The columns of :func:`_insert_values`, in its order.
INSERT_COLUMNS = (
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
    "status",
    "attempt",
    "run_id",
    "discovered_from",
    "created_at",
    "updated_at",
    "completed_at",
    "dedupe_key",
)


def _compiled_insert(dialect: sa.Dialect) -> str:
    """The insert-if-new of *dialect* (positional parameters) as SQL text; its parameters are :data:`INSERT_COLUMNS`."""
    compiled = _insert_sql(dialect.name).compile(dialect=dialect, column_keys=list(INSERT_COLUMNS))
    if tuple(compiled.positiontup or ()) != INSERT_COLUMNS:
        raise AssertionError(f"unexpected insert parameters {compiled.positiontup}")
    return compiled.string


@functools.cache
def _insert_sql(dialect: str) -> sa.Insert:
    """Insert-if-new in *dialect*'s own syntax (``RETURNING seq`` on PostgreSQL to count the rows inserted;
    on SQL Server one row's ``INSERT ... OUTPUT inserted.seq SELECT ... WHERE NOT EXISTS`` under a key-range
    lock, its parameters named after :data:`INSERT_COLUMNS`)."""
    if dialect == "mssql":
        values = sa.select(*(sa.bindparam(name, type_=W.c[name].type) for name in INSERT_COLUMNS))
        known = (
            sa.select(ONE)
            .select_from(W)
            .where(W.c.dedupe_key == sa.bindparam("dedupe_key", type_=W.c.dedupe_key.type))
            .with_hint(W, "WITH (UPDLOCK, HOLDLOCK)", "mssql")
        )
        return sa.insert(W).from_select(list(INSERT_COLUMNS), values.where(~known.exists())).returning(W.c.seq)
    from sqlalchemy.dialects import postgresql, sqlite

    if dialect == "postgresql":
        return postgresql.insert(W).on_conflict_do_nothing(index_elements=[W.c.dedupe_key]).returning(W.c.seq)
    return sqlite.insert(W).on_conflict_do_nothing(index_elements=[W.c.dedupe_key])


@functools.cache
def _claim_sql(dialect: str, scoped: bool, solo: bool, avoid: bool = False) -> tuple[sa.Select[Any] | None, sa.Update]:
    """(the locking select of PostgreSQL and SQL Server, or None, the update) of a claim: *solo* claims
    the suspects (``lease_losses >= b_solo_after``) and marks them ``lease_solo``, else the others;
    *avoid* leaves out items whose URL starts with one of the patterns ``b_avoid0`` ..
    (:func:`_avoid_params`: the hosts blocked now)."""
    losses = W.c.lease_losses >= _p("solo_after") if solo else W.c.lease_losses < _p("solo_after")
    avoided = (sa.not_(sa.or_(*(W.c.request_uri.like(_p(f"avoid{i}")) for i in range(AVOID_PATTERNS)))),)
    ready = _top(
        sa.select(W.c.seq)
        .where(W.c.status == _S[PENDING], _due(), losses, *_scoped(scoped), *(avoided if avoid else ()))
        .order_by(W.c.priority.desc(), W.c.seq),
        dialect,
    )
    values = {
        "status": _S[IN_PROGRESS],
        "attempt": W.c.attempt + ONE,
        "lease_solo": ONE if solo else ZERO,
        "lease_owner": _p("owner"),
        "lease_expires_at": _p("until", UtcDateTime()),
        "updated_at": _now(),
        "next_attempt_at": NULL,
    }
    if dialect in ("postgresql", "mssql"):
        # SQL Server: UPDLOCK holds the rows chosen until the commit, READPAST skips those another claimer holds.
        lock = (
            ready.with_hint(W, "WITH (ROWLOCK, READPAST, UPDLOCK)", "mssql")
            if dialect == "mssql"
            else ready.with_for_update(skip_locked=True)
        )
        target = sa.and_(W.c.seq.in_(_seqs()), W.c.status == _S[PENDING])
        return lock, sa.update(W).where(target).values(values).returning(*CLAIM)
    # SQLite: the transaction began with BEGIN IMMEDIATE; no other writer until it commits.
    return None, sa.update(W).where(W.c.seq.in_(ready)).values(values).returning(*CLAIM)


#: URL patterns of a claim that leaves blocked hosts out (two per host: http and https); hosts past
#: the first AVOID_PATTERNS // 2 blocked ones are claimed as usual (their requests wait for the block).
AVOID_PATTERNS = 8


def _avoid_params(keys: list[str]) -> dict[str, str]:
    """``b_avoid0`` .. of a claim that leaves out the items of hosts *keys* (politeness keys, ``host[:port]``):
    ``http://key/%`` and ``https://key/%``, the unused ones an empty pattern (no URL is empty)."""
    patterns = [f"{scheme}://{key}/%" for key in keys[: AVOID_PATTERNS // 2] for scheme in ("http", "https")]
    patterns += [""] * (AVOID_PATTERNS - len(patterns))
    return {f"b_avoid{i}": pattern for i, pattern in enumerate(patterns)}


_COMPLETE = (
    sa.update(W)
    .where(W.c.seq.in_(_seqs()))
    .values(
        status=_S[COMPLETED],
        completed_at=_now(),
        updated_at=_now(),
        lease_owner=NULL,
        lease_expires_at=NULL,
        next_attempt_at=NULL,
        error_message=NULL,
    )
)
_ATTEMPTS = sa.select(W.c.seq, W.c.attempt).where(W.c.seq.in_(_seqs()))
_FAIL = (
    sa.update(W)
    .where(W.c.seq == _p("seq"))
    .values(
        status=_p("status", sa.Unicode()),
        error_message=_p("error", sa.UnicodeText()),
        next_attempt_at=_p("next", UtcDateTime()),
        updated_at=_now(),
        lease_owner=NULL,
        lease_expires_at=NULL,
    )
)
_END_SOLO = sa.update(W).where(W.c.seq.in_(_seqs()), W.c.lease_solo == ONE).values(lease_solo=0)
_RELEASE = (
    sa.update(W)
    .where(W.c.seq.in_(_seqs()), W.c.status == _S[IN_PROGRESS])
    .values(_unleased(attempt=_minus_one(W.c.attempt)))
)
_RENEW = (
    sa.update(W)
    .where(W.c.status == _S[IN_PROGRESS], W.c.lease_owner == _p("owner"))
    .values(lease_expires_at=_p("until", UtcDateTime()))
)
_REQUEUE = (
    sa.update(W)
    .where(
        W.c.dedupe_key.in_(_p("keys", expanding=True)),
        sa.not_(
            sa.and_(
                W.c.status == _S[PENDING],
                W.c.attempt == ZERO,
                W.c.next_attempt_at.is_(None),
                W.c.completed_at.is_(None),
                W.c.lease_owner.is_(None),
            )
        ),
    )
    .values(
        _unleased(
            attempt=ZERO,
            next_attempt_at=NULL,
            completed_at=NULL,
            error_message=NULL,
            lease_losses=ZERO,
            solo_lease_losses=ZERO,
        )
    )
)


@functools.cache
def _reclaim_sql(by_owner: bool, scoped: bool) -> sa.Update:
    lost = W.c.lease_owner.in_(_p("owners", expanding=True)) if by_owner else W.c.lease_expires_at < _now()
    quarantined = sa.and_(W.c.lease_solo == ONE, W.c.solo_lease_losses + ONE >= _p("quarantine", sa.Integer()))
    message = (
        _const("quarantined: its worker died ")
        + sa.cast(W.c.solo_lease_losses + ONE, LONG_TEXT)
        + _const(" times while it was the only item in flight")
    )
    return (
        sa.update(W)
        .where(W.c.status == _S[IN_PROGRESS], lost, *_scoped(scoped))
        .values(
            attempt=_minus_one(W.c.attempt),
            lease_losses=W.c.lease_losses + ONE,
            solo_lease_losses=W.c.solo_lease_losses + W.c.lease_solo,
            status=sa.case((quarantined, _S[FAILED]), else_=_S[PENDING]),
            error_message=sa.case((quarantined, message), else_=W.c.error_message),
            lease_solo=ZERO,
            lease_owner=NULL,
            lease_expires_at=NULL,
            updated_at=_now(),
        )
    )


@functools.cache
def _retry_failed_sql(by_source: bool) -> sa.Update:
    where = [W.c.status == _S[FAILED]]
    if by_source:
        where.append(W.c.source_name == _p("source"))
    return sa.update(W).where(*where).values(_fresh())


@functools.cache
def _recrawl_sql(with_cutoff: bool) -> sa.Update:
    where = [W.c.status == _S[COMPLETED], W.c.attempt > ZERO, W.c.source_name == _p("source")]
    if with_cutoff:
        where.append(W.c.completed_at < _p("cutoff", UtcDateTime()))
    return sa.update(W).where(*where).values(_fresh())


@functools.cache
def _release_leases_sql(by_owner: bool, expired_only: bool) -> sa.Update:
    where = [W.c.status == _S[IN_PROGRESS]]
    if by_owner:
        where.append(W.c.lease_owner == _p("owner"))
    if expired_only:
        where.append(W.c.lease_expires_at < _now())
    return sa.update(W).where(*where).values(_unleased(attempt=_minus_one(W.c.attempt)))


@functools.cache
def _lease_owners_sql(scoped: bool) -> sa.Select[Any]:
    where = (W.c.status == _S[IN_PROGRESS], W.c.lease_owner.is_not(None), *_scoped(scoped))
    return sa.select(W.c.lease_owner).distinct().where(*where)


@functools.cache
def _ready_count_sql(dialect: str, scoped: bool) -> sa.Select[Any]:
    ready = _top(sa.select(W.c.seq).where(W.c.status == _S[PENDING], _due(), *_scoped(scoped)), dialect)
    return sa.select(sa.func.count()).select_from(ready.subquery())


def _leased_live_by_others() -> tuple[sa.ColumnElement[bool], ...]:
    return (W.c.status == _S[IN_PROGRESS], W.c.lease_owner != _p("owner"), W.c.lease_expires_at >= _now())


@functools.cache
def _min_inflight_depth_sql(scoped: bool) -> sa.Select[Any]:
    return sa.select(sa.func.min(W.c.depth)).where(*_leased_live_by_others(), *_scoped(scoped))


@functools.cache
def _outstanding_sql(scoped: bool) -> sa.Select[Any]:
    pending = sa.exists().where(W.c.status == _S[PENDING], *_scoped(scoped))
    leased = sa.exists().where(*_leased_live_by_others(), *_scoped(scoped))
    # CASE, not the bare condition: T-SQL cannot select a boolean.
    return sa.select(sa.case((sa.or_(pending, leased), ONE), else_=ZERO))


_COUNTS = sa.select(W.c.source_name, W.c.status, sa.func.count()).group_by(W.c.source_name, W.c.status)
_OLDEST_LEASE = (
    sa.select(W.c.dedupe_key, W.c.lease_owner, W.c.lease_expires_at, W.c.updated_at)
    .where(W.c.status == _S[IN_PROGRESS])
    .order_by(W.c.lease_expires_at)
    .limit(1)
)
# A literal, not a bound parameter: PostgreSQL must see the same expression in SELECT and GROUP BY.
_MESSAGE = sa.func.coalesce(W.c.error_message, sa.literal_column("'(none)'"))


@functools.cache
def _failure_reasons_sql(dialect: str) -> sa.Select[Any, int]:
    return _top(
        sa.select(_MESSAGE, sa.func.count())
        .where(W.c.status == _S[FAILED])
        .group_by(_MESSAGE)
        .order_by(sa.func.count().desc(), _MESSAGE),
        dialect,
    )


_LEASE_SUMMARY = (
    sa.select(W.c.lease_owner, sa.func.count(), sa.func.sum(sa.case((W.c.lease_expires_at >= _now(), ONE), else_=ZERO)))
    .where(W.c.status == _S[IN_PROGRESS], W.c.lease_owner.is_not(None))
    .group_by(W.c.lease_owner)
    .order_by(W.c.lease_owner)
)


class _UriHost(sa.sql.expression.ColumnElement[str]):
    """The netloc of a request URI column, cut in SQL (what follows ``://`` up to the next ``/``), so
    that a full scan groups by host without sending every URI to Python; :func:`uri_host` finishes it
    (query, fragment, user info, case). One expression per dialect, the same text in SELECT and GROUP BY."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]
    type = sa.Unicode()

    def __init__(self, column: sa.ColumnElement[Any]):
        self.column = column


@compiles(_UriHost)
def _uri_host_sqlite(element: _UriHost, compiler: Any, **kw: Any) -> str:
    u = compiler.process(element.column, **kw)
    rest = f"substr({u}, instr({u}, '://') + 3)"
    return f"substr({rest}, 1, instr({rest} || '/', '/') - 1)"


@compiles(_UriHost, "postgresql")
def _uri_host_postgresql(element: _UriHost, compiler: Any, **kw: Any) -> str:
    u = compiler.process(element.column, **kw)
    return f"split_part(split_part({u}, '://', 2), '/', 1)"


@compiles(_UriHost, "mssql")
def _uri_host_mssql(element: _UriHost, compiler: Any, **kw: Any) -> str:
    u = compiler.process(element.column, **kw)
    start = f"CHARINDEX(N'://', {u}) + 3"
    return f"SUBSTRING({u}, {start}, CHARINDEX(N'/', {u} + N'/', {start}) - ({start}))"


def uri_host(netloc_or_uri: str) -> str:
    """The host (with its port) of a URI or of the netloc :class:`_UriHost` cut: lower case, without
    user info, query or fragment (``https://U@Wiki.Example:8080?x`` -> ``wiki.example:8080``)."""
    text = netloc_or_uri.split("://", 1)[-1]
    for stop in "/?#":
        text = text.split(stop, 1)[0]
    return text.rsplit("@", 1)[-1].lower()


_HOST = _UriHost(W.c.request_uri)
_FINISHED_SINCE = sa.and_(
    W.c.attempt > ZERO, W.c.status != _S[IN_PROGRESS], W.c.updated_at >= _p("since", UtcDateTime())
)
# One scan of work_items: items per source, host and status, and the attempts finished in the window.
_HOST_COUNTS = sa.select(
    W.c.source_name, _HOST, W.c.status, sa.func.count(), sa.func.sum(sa.case((_FINISHED_SINCE, ONE), else_=ZERO))
).group_by(W.c.source_name, _HOST, W.c.status)
_WORKERS = (
    sa.select(
        W.c.lease_owner,
        sa.func.count(),
        sa.func.sum(sa.case((W.c.lease_expires_at >= _now(), ONE), else_=ZERO)),
        sa.func.max(W.c.updated_at),
        sa.func.max(W.c.lease_expires_at),
    )
    .where(W.c.status == _S[IN_PROGRESS], W.c.lease_owner.is_not(None))
    .group_by(W.c.lease_owner)
    .order_by(W.c.lease_owner)
)
_HOSTS = frontier_hosts
_ACTIVE_BLOCKS = (
    sa.select(_HOSTS.c.politeness_key, _HOSTS.c.blocked_until, _HOSTS.c.block_reason)
    .where(_HOSTS.c.blocked_until > _now())
    .order_by(_HOSTS.c.politeness_key)
)
_GET = sa.select(W).where(W.c.dedupe_key == _p("key"))
C = frontier_checkpoints
_CHECKPOINT_KEY = (
    C.c.source_system == _p("cp_system"),
    C.c.source_name == _p("cp_source"),
    C.c.name == _p("cp_name"),
)
_CHECKPOINT_GET = sa.select(C.c.value).where(*_CHECKPOINT_KEY)
# SQL Server's upsert, as the record store's: the range lock makes a second writer of the key wait, so the
# INSERT that follows an UPDATE that changed no row never races.
_CHECKPOINT_UPDATE = (
    sa.update(C)
    .where(*_CHECKPOINT_KEY)
    .values(value=_p("value"), updated_at=_now())
    .with_hint("WITH (UPDLOCK, SERIALIZABLE)", dialect_name="mssql")
)


def _checkpoint_params(key: CheckpointKey) -> dict[str, Any]:
    return {"b_cp_system": key.source_system, "b_cp_source": key.source_name, "b_cp_name": key.name}


@functools.cache
def _checkpoint_put_sql(dialect: str) -> sa.Insert:
    """Set a checkpoint: an upsert on SQLite and PostgreSQL (``ON CONFLICT ... DO UPDATE``); on SQL Server
    the ``INSERT`` that follows an ``UPDATE ... WITH (UPDLOCK, SERIALIZABLE)`` that changed no row."""
    values = {
        "source_system": _p("cp_system"),
        "source_name": _p("cp_source"),
        "name": _p("cp_name"),
        "value": _p("value"),
        "updated_at": _now(),
    }
    if dialect == "mssql":
        return sa.insert(C).values(values)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(C).values(values)
        return pg.on_conflict_do_update(
            index_elements=[C.c.source_system, C.c.source_name, C.c.name],
            set_={"value": pg.excluded.value, "updated_at": pg.excluded.updated_at},
        )
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    lite = sqlite_insert(C).values(values)
    return lite.on_conflict_do_update(
        index_elements=[C.c.source_system, C.c.source_name, C.c.name],
        set_={"value": lite.excluded.value, "updated_at": lite.excluded.updated_at},
    )


# -- host politeness statements ------------------------------------------------------------------
H, HS = frontier_hosts, frontier_host_slots
_HOST_KEY = H.c.politeness_key == _p("key")


@functools.cache
def _host_ensure_sql(dialect: str) -> sa.Insert:
    """The key's row if new (delay and concurrency as configured): ``ON CONFLICT DO NOTHING`` on SQLite and
    PostgreSQL; on SQL Server ``INSERT ... SELECT ... WHERE NOT EXISTS`` under a key-range lock."""
    values = {
        "politeness_key": _p("key"),
        "delay_s": _p("delay", sa.Float()),
        "concurrency": _p("concurrency", sa.Integer()),
        "failures": ZERO,
        "updated_at": _now(),
    }
    if dialect == "mssql":
        known = sa.select(ONE).select_from(H).where(_HOST_KEY).with_hint(H, "WITH (UPDLOCK, HOLDLOCK)", "mssql")
        row = sa.select(*(v.label(k) for k, v in values.items())).where(~known.exists())
        return sa.insert(H).from_select(list(values), row)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(H).values(values).on_conflict_do_nothing(index_elements=[H.c.politeness_key])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(H).values(values).on_conflict_do_nothing(index_elements=[H.c.politeness_key])


@functools.cache
def _host_lock_sql(dialect: str) -> sa.Select[Any]:
    """The key's row, locked until the commit: ``FOR UPDATE`` (PostgreSQL), ``WITH (UPDLOCK, ROWLOCK)``
    (SQL Server); SQLite's ``BEGIN IMMEDIATE`` already holds the database's write lock."""
    select = sa.select(H.c.next_allowed_at, H.c.blocked_until, H.c.block_reason).where(_HOST_KEY)
    if dialect == "postgresql":
        return select.with_for_update()
    if dialect == "mssql":
        return select.with_hint(H, "WITH (UPDLOCK, ROWLOCK)", "mssql")
    return select


_SLOT_KEY = HS.c.politeness_key == _p("key")
_SLOTS_EXPIRED = sa.delete(HS).where(_SLOT_KEY, HS.c.lease_expires_at < _now())
_SLOTS_LIVE = sa.select(sa.func.count(), sa.func.min(HS.c.lease_expires_at)).where(
    _SLOT_KEY, HS.c.lease_expires_at >= _now()
)
_SLOT_OWNERS = sa.select(HS.c.slot_owner).distinct().where(_SLOT_KEY, HS.c.lease_expires_at >= _now())
_SLOTS_OF_OWNERS_DELETE = sa.delete(HS).where(_SLOT_KEY, HS.c.slot_owner.in_(_p("owners", expanding=True)))
_SLOT_INSERT = sa.insert(HS).values(
    slot_id=_p("slot"), politeness_key=_p("key"), slot_owner=_p("owner"), lease_expires_at=_p("until", UtcDateTime())
)
_HOST_TAKEN = (
    sa.update(H)
    .where(_HOST_KEY)
    .values(
        next_allowed_at=_p("next", UtcDateTime()),
        delay_s=_p("delay", sa.Float()),
        concurrency=_p("concurrency", sa.Integer()),
        updated_at=_now(),
    )
)
_SLOT_DELETE = sa.delete(HS).where(HS.c.slot_id == _p("slot"))
_HOST_OK = sa.update(H).where(_HOST_KEY, H.c.failures > ZERO).values(failures=ZERO, updated_at=_now())
_HOST_FAILURES = sa.select(H.c.failures).where(_HOST_KEY)
_HOST_FAILED = sa.update(H).where(_HOST_KEY).values(failures=_p("failures", sa.Integer()), updated_at=_now())
_HOST_BLOCK = (
    sa.update(H)
    .where(_HOST_KEY, sa.or_(H.c.blocked_until.is_(None), H.c.blocked_until < _p("until", UtcDateTime())))
    .values(blocked_until=_p("until", UtcDateTime()), block_reason=_p("reason", sa.Unicode()), updated_at=_now())
)
_SLOTS_RENEW = sa.update(HS).where(HS.c.slot_owner == _p("owner")).values(lease_expires_at=_p("until", UtcDateTime()))
_SLOTS_OF_OWNER_DELETE = sa.delete(HS).where(HS.c.slot_owner == _p("owner"))
_LIVE_SLOTS = (
    sa.select(sa.func.count())
    .where(HS.c.politeness_key == H.c.politeness_key, HS.c.lease_expires_at >= _now())
    .scalar_subquery()
)
_HOST_STATES = sa.select(
    H.c.politeness_key,
    H.c.delay_s,
    H.c.concurrency,
    H.c.next_allowed_at,
    H.c.blocked_until,
    H.c.block_reason,
    H.c.failures,
    H.c.updated_at,
    _LIVE_SLOTS.label("live_slots"),
).order_by(H.c.politeness_key)
_BLOCKED_KEYS = sa.select(H.c.politeness_key).where(H.c.blocked_until > _now()).order_by(H.c.politeness_key)

_ANALYZE = sa.text("ANALYZE work_items")  # PostgreSQL only


def statements(dialect: str) -> dict[str, sa.Executable]:
    """Every statement :class:`SqlWorkItemStore` runs on *dialect* (``sqlite``, ``postgresql``, ``mssql``), by
    name: the offline checks compile them for SQL Server and parse the T-SQL, and a test proves on SQLite
    and PostgreSQL that the stores run nothing else."""
    found: dict[str, sa.Executable] = {
        "insert": _insert_sql(dialect),
        "complete": _COMPLETE,
        "attempts": _ATTEMPTS,
        "fail": _FAIL,
        "end_solo": _END_SOLO,
        "release": _RELEASE,
        "renew": _RENEW,
        "requeue": _REQUEUE,
        "counts": _COUNTS,
        "oldest_lease": _OLDEST_LEASE,
        "failure_reasons": _failure_reasons_sql(dialect),
        "lease_summary": _LEASE_SUMMARY,
        "host_counts": _HOST_COUNTS,
        "workers": _WORKERS,
        "active_blocks": _ACTIVE_BLOCKS,
        "get": _GET,
        "checkpoint_get": _CHECKPOINT_GET,
        "checkpoint_put": _checkpoint_put_sql(dialect),
    }
    found.update(
        host_ensure=_host_ensure_sql(dialect),
        host_lock=_host_lock_sql(dialect),
        slots_expired=_SLOTS_EXPIRED,
        slots_live=_SLOTS_LIVE,
        slot_owners=_SLOT_OWNERS,
        slots_of_owners_delete=_SLOTS_OF_OWNERS_DELETE,
        slot_insert=_SLOT_INSERT,
        host_taken=_HOST_TAKEN,
        slot_delete=_SLOT_DELETE,
        host_ok=_HOST_OK,
        host_failures=_HOST_FAILURES,
        host_failed=_HOST_FAILED,
        host_block=_HOST_BLOCK,
        slots_renew=_SLOTS_RENEW,
        slots_of_owner_delete=_SLOTS_OF_OWNER_DELETE,
        host_states=_HOST_STATES,
        blocked_keys=_BLOCKED_KEYS,
    )
    if dialect == "mssql":
        found["checkpoint_update"] = _CHECKPOINT_UPDATE
    if dialect == "postgresql":
        found["analyze"] = _ANALYZE
    for scoped in (False, True):
        tag = "_of_source" if scoped else ""
        for solo in (False, True):
            for avoid in (False, True):
                lock, update = _claim_sql(dialect, scoped, solo, avoid)
                name = f"claim{'_solo' if solo else ''}{tag}{'_avoiding' if avoid else ''}"
                found[name] = update
                if lock is not None:
                    found[f"{name}_lock"] = lock
        for by_owner in (False, True):
            found[f"reclaim{'_owners' if by_owner else ''}{tag}"] = _reclaim_sql(by_owner, scoped)
        found[f"lease_owners{tag}"] = _lease_owners_sql(scoped)
        found[f"ready_count{tag}"] = _ready_count_sql(dialect, scoped)
        found[f"min_inflight_depth{tag}"] = _min_inflight_depth_sql(scoped)
        found[f"outstanding{tag}"] = _outstanding_sql(scoped)
    for flag in (False, True):
        found[f"retry_failed{'_of_source' if flag else ''}"] = _retry_failed_sql(flag)
        found[f"recrawl{'_before' if flag else ''}"] = _recrawl_sql(flag)
        for expired_only in (False, True):
            name = f"release_leases{'_of_owner' if flag else ''}{'_expired' if expired_only else ''}"
            found[name] = _release_leases_sql(flag, expired_only)
    return found


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
    """Open the frontier backend named by the store *url* (schema brought up to date): a
    :class:`SqlWorkItemStore` on the engine of :func:`holocron_scrapy.db.engine.open_engine`.

    ``sqlite:///``, ``postgresql://`` (``postgresql+psycopg://``) and SQL Server's ``mssql+pyodbc://``
    and ``sqlserver://``; for SQL Server the connection settings, schema included, come from
    :meth:`SqlServerSettings.resolve` (``INGEST_SQLSERVER_*`` first, then *sqlserver_config*, the YAML
    ``sqlserver`` section).
    """
    from holocron_scrapy.db.engine import open_engine

    engine = open_engine(url, setting=setting, sqlserver_config=sqlserver_config)
    return SqlWorkItemStore(
        engine,
        max_attempts=max_attempts,
        retry_backoff=retry_backoff,
        solo_after=solo_after,
        quarantine_after=quarantine_after,
    )
