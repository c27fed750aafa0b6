"""Claimed rows become the requests a worker sends: rebuilt, leased, given their claim, merged into batches.

Pure (memory only): the scheduler's background loop hands the rows of a claim here on the reactor
thread. Each row's stored request is rebuilt (:func:`~holocron_scrapy.frontier.serialization.request_from_row`)
and gets the claim's :class:`~holocron_scrapy.frontier.contract.Work` (its id, attempt, work item and,
for a re-crawl, when the item last completed); a row that cannot be rebuilt is failed for good. For a
:class:`~holocron_scrapy.frontier.contract.BatchingSpider`, requests of one ``batch_key`` are merged
by its ``build_batch_request``, up to its current ``frontier_batch_size`` (a run resumed under other
rights uses today's size, not the one stored with the rows); the merged request holds their ids.

Settings read: none. Stats written: none (the scheduler counts ``frontier/claimed`` and
``frontier/solo_claims`` from :class:`Claimed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scrapy import Request, Spider

from holocron_scrapy.frontier.contract import BatchingSpider, Work, hand_on, ids_of, set_work, work_of
from holocron_scrapy.frontier.leases import Leases
from holocron_scrapy.frontier.serialization import SerializationError, request_from_row
from holocron_scrapy.frontier.store import ts


@dataclass
class Claimed:
    requests: list[Request] = field(default_factory=list)  # batches first, then single requests
    rejected: int = 0  # rows whose request could not be rebuilt (failed)
    solo: int = 0  # rows of items whose lease was lost before (claimed alone)


def claimed_requests(rows: list[dict[str, Any]], spider: Spider | None, leases: Leases, *, solo_after: int) -> Claimed:
    """The requests of claimed *rows*; each rebuilt row's item is leased in *leases*."""
    out = Claimed()
    singles: list[Request] = []
    batches: dict[str, list[Request]] = {}
    batching = isinstance(spider, BatchingSpider)
    for row in rows:
        try:
            request = request_from_row(row, spider)
        except (SerializationError, ValueError, KeyError) as exc:
            leases.reject(row["seq"], f"cannot rebuild request: {exc}")
            out.rejected += 1
            continue
        suspect = (row.get("lease_losses") or 0) >= solo_after
        leases.take(row["seq"], depth=row["depth"], attempt=row["attempt"], suspect=suspect)
        out.solo += suspect
        done = row.get("completed_at")
        work = (work_of(request) or Work()).but(
            ids=(row["seq"],),
            attempt=row["attempt"],
            work_item_id=row["work_item_id"],
            completed_at=(ts(done) if isinstance(done, datetime) else str(done)) if done else None,
        )
        set_work(request, work)
        if work.batch_key and batching:
            batches.setdefault(work.batch_key, []).append(request)
        else:
            singles.append(request)
    for group in batches.values():
        assert isinstance(spider, BatchingSpider)
        first = work_of(group[0])
        stored_size = first.batch_size if first is not None else None
        size = max(1, int(spider.frontier_batch_size or stored_size or len(group)))
        for start in range(0, len(group), size):
            chunk = group[start : start + size]
            merged = spider.build_batch_request(chunk)
            out.requests.append(hand_on(merged, [seq for r in chunk for seq in ids_of(r)]))
    out.requests.extend(singles)
    return out
