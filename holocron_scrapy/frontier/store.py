"""The ``work_items`` store: insert-if-new, atomic batch claims with leases, acks.

:class:`WorkItemStore` is the contract every backend passes (``tests/test_frontier_store.py``);
:class:`~holocron_scrapy.frontier.sql_store.SqlWorkItemStore` implements it once, on SQLAlchemy
Core over :data:`holocron_scrapy.db.schema.work_items`, for SQLite (``sqlite:///``, the embedded
default), PostgreSQL (``postgresql://``) and SQL Server (``mssql+pyodbc://``, ``sqlserver://``, the
YAML ``sqlserver`` section); :func:`open_work_item_store` opens it on the store URL's engine. All
methods are synchronous and each is one transaction; callers batch their writes through
:meth:`WorkItemStore.flush`. A write transaction that loses a deadlock or a serialization conflict
(PostgreSQL 40P01/40001, SQL Server 1205) is run again, at most
:data:`~holocron_scrapy.frontier.sql_store.CONFLICT_ATTEMPTS` times, at once (the other transaction
has gone through); the retries are logged at INFO.

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

The implementation is :class:`holocron_scrapy.frontier.sql_store.SqlWorkItemStore`; its statements are built in
:mod:`holocron_scrapy.frontier.statements` and :mod:`holocron_scrapy.frontier.fleet_statements`. This module
holds the contract (:class:`WorkItemStore`), the values it takes and gives, and :func:`open_work_item_store`.

Settings read: none (the scheduler and commands pass the URL and the tuning). Stats written: none
(the store counts its conflict retries in :attr:`SqlWorkItemStore.conflict_retries`).
"""

from __future__ import annotations

import logging
import socket
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

logger = logging.getLogger(__name__)

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
        host and status, the host as :func:`~holocron_scrapy.frontier.fleet_statements.uri_host`
        gives it. An attempt is finished when its item was completed or failed (for good or into a
        retry backoff): ``attempt > 0``, not in progress, ``updated_at >= since``; items only
        recorded as known (attempt 0) are not requests."""

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
    from holocron_scrapy.frontier.sql_store import SqlWorkItemStore

    engine = open_engine(url, setting=setting, sqlserver_config=sqlserver_config)
    return SqlWorkItemStore(
        engine,
        max_attempts=max_attempts,
        retry_backoff=retry_backoff,
        solo_after=solo_after,
        quarantine_after=quarantine_after,
    )
