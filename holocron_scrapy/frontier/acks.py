"""Acknowledge work items only after storage.

A claimed request carries the ids (``seq``) of its work items in ``meta["holocron_ids"]``.
Ownership of an id moves with the request it is handed to (a continuation or a retry),
or to the item that claims it in its ``work_item_ids`` field. An item's ids are acked when
the item leaves the pipelines (``item_scraped`` / ``item_dropped``) and failed on
``item_error``; ids no item or request took are acked when the callback output ends,
and failed for good if the callback raised (as in Scrapy, a request is not fetched again for its
callback's exception; ``process_spider_exception`` covers a callback that raised before any
output). When the callback output ends, the frontier also learns that
the ids not handed on to another request were fetched and parsed (``frontier.fetched``: an item
claimed alone is no longer at risk of being the one that kills its worker). The frontier is
found at ``crawler.holocron_frontier``.

A spider middleware between the callback and this one may drop a request that carries ids
(Scrapy's ``DepthMiddleware`` past ``DEPTH_LIMIT``, ``UrlLengthMiddleware``, a user's filter): its
ids would then look untaken and be acked with no record. :class:`FrontierHandOffMiddleware`, next
to the callback, notes the ids each request was handed; the ids of a request that never reached
this middleware are failed as retryable (``frontier/dropped_requests``) instead of acked.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any

from itemadapter import ItemAdapter, is_item
from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.http import Response

IDS_META = "holocron_ids"


def item_ids(item: Any) -> list[int]:
    """Work item ids claimed by *item* (empty for foreign items)."""
    if not is_item(item):
        return []
    adapter = ItemAdapter(item)
    if "work_item_ids" not in adapter.field_names():
        return []
    return list(adapter.get("work_item_ids") or ())


def taken_ids(output: Any) -> set[int]:
    if isinstance(output, Request):
        return set(output.meta.get(IDS_META) or ())
    return set(item_ids(output))


#: response -> the ids its callback handed to requests, noted next to the callback.
_HANDED: weakref.WeakKeyDictionary[Response, set[int]] = weakref.WeakKeyDictionary()
#: Responses whose callback output reached the ack middleware (it settles their ids itself).
_SETTLING: weakref.WeakSet[Response] = weakref.WeakSet()
DROPPED = "a spider middleware dropped the request that carried it"


class FrontierHandOffMiddleware:
    """Spider middleware next to the callback: notes the ids each output request carries."""

    @staticmethod
    def _note(response: Response, output: Any) -> None:
        if isinstance(output, Request) and output.meta.get(IDS_META):
            _HANDED.setdefault(response, set()).update(output.meta[IDS_META])

    def process_spider_output(
        self, response: Response, result: Iterable[Any], spider: Spider | None = None
    ) -> Iterable[Any]:
        for output in result:
            self._note(response, output)
            yield output

    async def process_spider_output_async(
        self, response: Response, result: AsyncIterator[Any], spider: Spider | None = None
    ) -> AsyncIterator[Any]:
        async for output in result:
            self._note(response, output)
            yield output


class FrontierAckMiddleware:
    """Spider middleware that acks or fails the ids left over when a callback finishes."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    def _settle(self, frontier: Any, response: Response, remaining: set[int], seen: set[int]) -> None:
        """Fail the ids of requests dropped on the way here, ack the rest of *remaining*."""
        dropped = (_HANDED.pop(response, None) or set()) - seen
        if dropped:
            frontier.fail(sorted(dropped), DROPPED, retryable=True)
            if self.crawler.stats is not None:
                self.crawler.stats.inc_value("frontier/dropped_requests")
        frontier.ack(sorted(remaining - dropped))

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FrontierAckMiddleware:
        return cls(crawler)

    def _start(self, response: Response) -> tuple[Any, set[int]]:
        frontier = getattr(self.crawler, "holocron_frontier", None)
        ids = set(response.meta.get(IDS_META) or ()) if response.request is not None else set()
        _SETTLING.add(response)
        return frontier, ids

    def process_spider_exception(self, response: Response, exception: Exception, spider: Spider | None = None) -> None:
        """A callback that raised before giving any output (not a generator) never reaches
        ``process_spider_output``: its ids fail, as those of a callback raising midway do. Output that
        reached this middleware is settled there (its ids may have gone on to requests)."""
        if response in _SETTLING or response.request is None:
            return
        frontier = getattr(self.crawler, "holocron_frontier", None)
        ids = set(response.meta.get(IDS_META) or ())
        if frontier is None or not ids:
            return
        frontier.fail(sorted(ids), f"spider error: {exception!r}", retryable=False)
        self._fetched(frontier, ids, set())

    @staticmethod
    def _fetched(frontier: Any, ids: set[int], handed_on: set[int]) -> None:
        fetched = getattr(frontier, "fetched", None)
        if fetched is not None and ids - handed_on:
            fetched(sorted(ids - handed_on))

    def process_spider_output(
        self, response: Response, result: Iterable[Any], spider: Spider | None = None
    ) -> Iterable[Any]:
        frontier, remaining = self._start(response)
        if frontier is None or not remaining:
            yield from result
            return
        ids, handed_on = set(remaining), set()
        try:
            for output in result:
                taken = taken_ids(output)
                remaining -= taken
                if isinstance(output, Request):
                    handed_on |= taken
                yield output
        except Exception as exc:
            frontier.fail(sorted(remaining), f"spider error: {exc!r}", retryable=False)
            raise
        finally:
            self._fetched(frontier, ids, handed_on | (_HANDED.get(response) or set()))
        self._settle(frontier, response, remaining, handed_on)

    async def process_spider_output_async(
        self, response: Response, result: AsyncIterator[Any], spider: Spider | None = None
    ) -> AsyncIterator[Any]:
        frontier, remaining = self._start(response)
        if frontier is None or not remaining:
            async for output in result:
                yield output
            return
        ids, handed_on = set(remaining), set()
        try:
            async for output in result:
                taken = taken_ids(output)
                remaining -= taken
                if isinstance(output, Request):
                    handed_on |= taken
                yield output
        except Exception as exc:
            frontier.fail(sorted(remaining), f"spider error: {exc!r}", retryable=False)
            raise
        finally:
            self._fetched(frontier, ids, handed_on | (_HANDED.get(response) or set()))
        self._settle(frontier, response, remaining, handed_on)
