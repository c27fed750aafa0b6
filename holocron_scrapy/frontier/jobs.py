"""The database side of one cycle of the frontier scheduler: what runs in the worker thread.

The scheduler (:mod:`holocron_scrapy.frontier.scheduler`) keeps everything on the reactor thread in
memory: buffered enqueues, acks and failures, the ready requests. Its background loop hands a
:class:`Job` (a snapshot of those buffers plus what it wants: a claim, lease renewal, a reclaim,
an "anything left?" check) to :func:`run_job` on the store's worker thread, one job
at a time, and applies the :class:`JobResult` on the reactor thread.

The steps run in a fixed order: the writes first (enqueues before the acks of the same period,
in one transaction, so a kill never loses discovered work), then releases, renewal, reclaims,
the claim, and the reads last, so that they see the writes. A step that fails stops the job; the
result tells which steps were done (``error`` set), so the scheduler puts back exactly what was
not written (a failure counted twice would cost an item an attempt). Claimed rows are in the
result as soon as the claim returned: rows beyond the breadth-first level gate that could not be
given back are released by a later job.

Settings read: none. Stats written: none (the scheduler counts from the result).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from holocron_scrapy.frontier.store import FailedItem, NewItem, Scope, WorkItemStore, local_owner_alive


@dataclass
class ClaimWant:
    """A claim of up to *limit* items; *alone*: nothing else is in flight here; *gate_depths*: the
    depths this worker has in flight (breadth-first level gate, with *bfs*); *hold_below*: with
    batch filling, claim only if at least *limit* items are ready."""

    limit: int
    lease_seconds: float
    alone: bool = False
    bfs: bool = False
    gate_depths: list[int] = field(default_factory=list)
    hold_below: bool = False


@dataclass
class Job:
    new: list[NewItem] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    failed: list[FailedItem] = field(default_factory=list)
    release: list[int] = field(default_factory=list)
    end_solo: list[int] = field(default_factory=list)
    renew: float | None = None  # lease seconds
    reclaim_expired: bool = False
    reclaim_dead_local: bool = False
    claim: ClaimWant | None = None
    outstanding: bool = False
    #: The scheduler's write generation when the job was built (see ``FrontierScheduler._gen``).
    gen: int = 0

    def writes(self) -> bool:
        return bool(self.new or self.completed or self.failed)


@dataclass
class JobResult:
    flushed: bool = False
    inserted: int = 0
    released: bool = False
    renewed: bool = False
    reclaimed: int = 0
    rows: list[dict[str, Any]] | None = None  # claimed rows within the level gate
    gated: list[int] = field(default_factory=list)  # claimed rows beyond the gate
    gated_released: bool = False
    outstanding: bool | None = None
    error: BaseException | None = None


def run_job(store: WorkItemStore, job: Job, owner: str, scope: Scope | None) -> JobResult:
    """Run *job*'s steps in order on *store*; never raises (a failure ends up in ``error``)."""
    result = JobResult()
    try:
        if job.writes():
            result.inserted = store.flush(job.new, job.completed, job.failed)
        result.flushed = True
        if job.release:
            store.release(job.release)
        if job.end_solo:
            store.end_solo(job.end_solo)
        result.released = True
        if job.renew is not None:
            store.renew(owner, job.renew)
        result.renewed = True
        if job.reclaim_expired:
            result.reclaimed += store.reclaim(scope=scope)
        if job.reclaim_dead_local:
            dead = [o for o in store.lease_owners(scope) if o != owner and local_owner_alive(o) is False]
            if dead:
                result.reclaimed += store.reclaim(dead, scope=scope)
        if job.claim is not None:
            _claim(store, job.claim, owner, scope, result)
        if job.outstanding or (job.claim is not None and not result.rows):
            # asked for, or a claim found nothing: is anything of ours left (for closing the spider)?
            result.outstanding = store.outstanding(owner, scope)
    except Exception as exc:  # noqa: BLE001 - handed to the reactor thread, which decides
        result.error = exc
    return result


def _claim(store: WorkItemStore, want: ClaimWant, owner: str, scope: Scope | None, result: JobResult) -> None:
    if want.hold_below and store.ready_count(want.limit, scope) < want.limit:
        result.rows = []  # a half-empty batch waits: requests in flight may still add work
        return
    rows = store.claim(owner, want.limit, want.lease_seconds, scope=scope, alone=want.alone)
    result.rows = rows
    if not rows or not want.bfs:
        return
    # Breadth-first means level by level: while items of depth d are in flight (here or in another
    # worker) they may still discover depth d+1, so nothing deeper than d is sent.
    depths = list(want.gate_depths)
    others = store.min_inflight_depth(owner, scope)
    if others is not None:
        depths.append(others)
    if not depths:
        return
    gate = min(depths)
    result.rows = [r for r in rows if r["depth"] <= gate]
    result.gated = [r["seq"] for r in rows if r["depth"] > gate]
    if result.gated:
        store.release(result.gated)
        result.gated_released = True
