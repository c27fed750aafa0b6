"""The one contract between spiders and the frontier: what a request carries, and what a spider may call.

**What a request carries.** ``request.meta["holocron"]`` (:data:`WORK_META`) holds one :class:`Work`:

* the resource the request fetches (:class:`~holocron_scrapy.frontier.keys.Resource`), its depth and
  the resource it was discovered from; and, for a spider that batches, the batch it joins
  (``batch_key``, ``batch_size``). A spider sets these when it builds the request
  (:func:`work_meta`); they are stored with the work item.
* once the frontier hands the request out: the ids of the work items it holds (``ids``), the
  attempt, the work item's id, and, for a re-crawl, when the item last completed. These belong to
  one claim and are never stored. Ownership of the ids moves with the request they are given to
  (a continuation, a retry) or to the item that names them in ``work_item_ids``
  (:mod:`holocron_scrapy.frontier.acks`).

``Work`` is frozen: Scrapy copies ``meta`` shallowly (retries, redirects), so a change is a new
value (:meth:`Work.but`, :func:`set_work`), never an edit seen by another request.

**What a spider may call.** :func:`frontier_of` gives the crawl's :class:`Frontier`: ``mark_known``
(record a resource as fetched already, e.g. a redirect target, without sending anything),
``ack`` and ``fail`` (settle ids by hand, for the rare spider that stores outside the pipelines).
Without the frontier scheduler (Scrapy's own, in a test) it is :data:`NO_FRONTIER`, which does
nothing, so a spider never checks.

**Batching** is declared, not probed: a spider that merges claimed requests into one (MediaWiki:
50 titles per API call) implements :class:`BatchingSpider`.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from holocron_scrapy.frontier.keys import Resource

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

#: The one meta key of the contract.
WORK_META = "holocron"
#: The claim's fields: set by the frontier when it hands a request out, never stored.
CLAIM_FIELDS = ("ids", "attempt", "work_item_id", "completed_at")
#: Meta keys of the stored requests of earlier versions (before :class:`Work`), read by :meth:`Work.from_stored`.
LEGACY_META = (
    "holocron_batch",
    "holocron_batch_size",
    "holocron_status",
    "holocron_attempt",
    "holocron_work_item_id",
    "holocron_completed_at",
    "holocron_ids",
)


@dataclass(frozen=True, slots=True)
class Work:
    """What the frontier knows of one request (see the module docstring)."""

    resource: Resource | None = None
    depth: int = 0
    discovered_from: str | None = None
    batch_key: str | None = None
    batch_size: int | None = None
    ids: tuple[int, ...] = ()
    attempt: int = 1
    work_item_id: str | None = None
    #: A re-crawl: when the work item last completed (UTC text); None for a first fetch.
    completed_at: str | None = None

    def but(self, **changes: Any) -> Work:
        """A copy with *changes* (``ids`` are kept as a tuple)."""
        if "ids" in changes:
            changes["ids"] = tuple(changes["ids"])
        return dataclasses.replace(self, **changes)

    def stored(self) -> dict[str, Any]:
        """What the work item keeps of it (JSON): the resource, depth, origin and batch; no claim."""
        data: dict[str, Any] = {}
        if self.resource is not None:
            data.update(
                source_system=self.resource.source_system,
                source_name=self.resource.source_name,
                resource_type=self.resource.resource_type,
                resource_id=self.resource.resource_id,
            )
        data["depth"] = self.depth
        data["discovered_from"] = self.discovered_from
        if self.batch_key is not None:
            data["batch_key"] = self.batch_key
        if self.batch_size is not None:
            data["batch_size"] = self.batch_size
        return data

    @classmethod
    def from_stored(cls, data: Mapping[str, Any], legacy: Mapping[str, Any] | None = None) -> Work:
        """The :class:`Work` of :meth:`stored`'s dict; *legacy*: the other meta keys of a request
        stored by an earlier version (``holocron_batch``, ``holocron_batch_size``)."""
        legacy = legacy or {}
        resource = None
        if data.get("resource_id") is not None:
            resource = Resource(
                str(data["source_system"]),
                str(data["source_name"]),
                str(data["resource_type"]),
                str(data["resource_id"]),
            )
        batch_size = data.get("batch_size", legacy.get("holocron_batch_size"))
        return cls(
            resource=resource,
            depth=int(data.get("depth") or 0),
            discovered_from=data.get("discovered_from"),
            batch_key=data.get("batch_key", legacy.get("holocron_batch")),
            batch_size=None if batch_size is None else int(batch_size),
        )


def work_meta(
    resource: Resource,
    *,
    depth: int = 0,
    discovered_from: str | None = None,
    batch_key: str | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """``meta`` for a new request of *resource*: ``Request(url, meta=work_meta(...))``."""
    work = Work(resource, depth, discovered_from, batch_key, batch_size)
    return {WORK_META: work}


def work_of(message: Request | Response) -> Work | None:
    """The :class:`Work` of a request (or of a response's request), None when it carries none."""
    try:
        work = message.meta.get(WORK_META)
    except AttributeError:  # a Response without a request
        return None
    return work if isinstance(work, Work) else None


def ids_of(message: Request | Response) -> tuple[int, ...]:
    """The work item ids a request (or a response's request) holds; empty for none."""
    work = work_of(message)
    return work.ids if work is not None else ()


def set_work(request: Request, work: Work) -> Request:
    """Give *request* its :class:`Work` (replacing any); returns the request."""
    request.meta[WORK_META] = work
    return request


def hand_on(request: Request, ids: Iterable[int], *, of: Request | Response | None = None) -> Request:
    """Give *request* (a continuation, a merged batch) the ownership of *ids*; with *of*, the claim's
    attempt, work item id and re-crawl time come from that request's work."""
    source = work_of(of) if of is not None else None
    work = work_of(request) or Work()
    if source is not None:
        work = work.but(attempt=source.attempt, work_item_id=source.work_item_id, completed_at=source.completed_at)
    return set_work(request, work.but(ids=ids))


class Frontier(Protocol):
    """What a spider may ask of the crawl's frontier."""

    def mark_known(self, request: Request) -> None:
        """Record *request*'s resource as fetched already (e.g. a redirect's target): stored as a
        completed work item, deduplicated as any other, never downloaded."""

    def ack(self, seqs: list[int]) -> None:
        """Mark the work items *seqs* completed (buffered; written after this period's enqueues)."""

    def fail(self, seqs: list[int], error: str, *, retryable: bool = True) -> None:
        """Record a failed attempt of the work items *seqs*; retried while *retryable* and attempts remain."""


class _NoFrontier:
    """The frontier of a crawl without one (Scrapy's scheduler): nothing to record."""

    def mark_known(self, request: Request) -> None:
        return None

    def ack(self, seqs: list[int]) -> None:
        return None

    def fail(self, seqs: list[int], error: str, *, retryable: bool = True) -> None:
        return None


NO_FRONTIER: Frontier = _NoFrontier()
#: The attribute of the crawler under which the frontier scheduler registers itself.
CRAWLER_ATTRIBUTE = "holocron_frontier"


def frontier_of(crawler: Crawler | None) -> Frontier:
    """The crawl's :class:`Frontier`, or :data:`NO_FRONTIER` when its scheduler is not the frontier."""
    frontier = getattr(crawler, CRAWLER_ATTRIBUTE, None) if crawler is not None else None
    return frontier if frontier is not None else NO_FRONTIER


@runtime_checkable
class BatchingSpider(Protocol):
    """A spider whose claimed requests of one ``batch_key`` are merged into one request.

    * ``frontier_batch_size``: how many claimed requests one merged request may hold now (a run
      resumed under other rights, e.g. a bot login gained, uses today's figure);
    * ``frontier_hold``: True while the spider is about to queue more work (seeds, a listing): the
      frontier then holds a half-empty batch back rather than send it short;
    * ``build_batch_request``: the one request for a list of claimed requests; the frontier gives
      it the ownership of their ids (:func:`hand_on`).
    """

    frontier_hold: bool

    @property
    def frontier_batch_size(self) -> int: ...

    def build_batch_request(self, requests: list[Request]) -> Request: ...
