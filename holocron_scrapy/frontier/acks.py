"""Acknowledge work items only after storage.

A claimed request carries the ids (``seq``) of its work items in its
:class:`~holocron_scrapy.frontier.contract.Work` (``Work.ids``). Ownership of an id moves with the
request it is handed to (a continuation or a retry), or to the item that claims it in its
``work_item_ids`` field. An item's ids are acked when the item leaves the pipelines
(``item_scraped`` / ``item_dropped``) and failed on ``item_error``; ids no item or request took are
acked when the callback output ends, and failed for good if the callback raised (as in Scrapy, a
request is not fetched again for its callback's exception; ``process_spider_exception`` covers a
callback that raised before any output), unless the exception stops the crawl (``CloseSpider``, and
the stores' "unreachable" errors): those ids are handed back at close, without costing an attempt.
When the callback output ends, the frontier also learns that the ids not handed on to another
request were fetched and parsed (``frontier.fetched``: an item claimed alone is no longer at risk of
being the one that kills its worker). The frontier is
:func:`~holocron_scrapy.frontier.contract.frontier_of` the crawler.

A spider middleware between the callback and this one may drop a request that carries ids
(Scrapy's ``DepthMiddleware`` past ``DEPTH_LIMIT``, ``UrlLengthMiddleware``, a user's filter): its
ids would then look untaken and be acked with no record. :class:`FrontierHandOffMiddleware`, next
to the callback, notes the ids each request was handed; the ids of a request that never reached
this middleware are failed as retryable (``frontier/dropped_requests``) instead of acked.

A third-party spider (the :class:`~holocron_scrapy.addons.Frontier` add-on) yields items that do not
name their work items. The ids left over by a callback that gave such items are held by them and
acked once every one of them has left the pipelines (failed, if one hit ``item_error``: as in Scrapy,
the page is not fetched again for its pipeline's exception): a kill -9 between the callback and the
project's own storage loses nothing.

Settings read: none. Stats written: ``frontier/dropped_requests``.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any

from itemadapter import ItemAdapter, is_item
from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider
from scrapy.http import Response

from holocron_scrapy.frontier.contract import CRAWLER_ATTRIBUTE, ids_of


def item_ids(item: Any) -> list[int]:
    """Work item ids claimed by *item* (empty for foreign items)."""
    if not is_item(item):
        return []
    adapter = ItemAdapter(item)
    if "work_item_ids" not in adapter.field_names():
        return []
    return list(adapter.get("work_item_ids") or ())


def claim_of(output: Any) -> tuple[set[int], bool]:
    """``(the work item ids *output* takes, whether it is a foreign item)``: a request takes the ids it
    holds, an item those of its ``work_item_ids`` field; an item without that field (a third-party
    spider's, under the :class:`~holocron_scrapy.addons.Frontier` add-on) is foreign."""
    if isinstance(output, Request):
        return set(ids_of(output)), False
    if not is_item(output):
        return set(), False
    adapter = ItemAdapter(output)
    if "work_item_ids" not in adapter.field_names():
        return set(), True
    return set(adapter.get("work_item_ids") or ()), False


#: response -> the ids its callback handed to requests, noted next to the callback.
_HANDED: weakref.WeakKeyDictionary[Response, set[int]] = weakref.WeakKeyDictionary()
#: Responses whose callback output reached the ack middleware (it settles their ids itself).
_SETTLING: weakref.WeakSet[Response] = weakref.WeakSet()
DROPPED = "a spider middleware dropped the request that carried it"


class FrontierHandOffMiddleware:
    """Spider middleware next to the callback: notes the ids each output request carries."""

    @staticmethod
    def _note(response: Response, output: Any) -> None:
        if isinstance(output, Request):
            ids = ids_of(output)
            if ids:
                _HANDED.setdefault(response, set()).update(ids)

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


def spider_error(frontier: Any, ids: set[int], exc: BaseException) -> None:
    """A callback raised: its untaken ids fail for good (as in Scrapy, a request is not fetched again
    for its callback's exception), except when the exception stops the crawl (``CloseSpider``, and
    the stores' "unreachable" errors, which are ``CloseSpider``): then they stay leased and are handed
    back when the crawl closes, for the next run, without costing an attempt."""
    if isinstance(exc, CloseSpider) or not ids:
        return
    frontier.fail(sorted(ids), f"spider error: {exc!r}", retryable=False)


class _Holding:
    """The ids of one response held by its foreign items until every one of them left the pipelines."""

    __slots__ = ("ids", "pending", "ended", "error")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.pending = 0  # items of the response still in the pipelines
        self.ended = False  # the callback's output has ended (ids known)
        self.error: str | None = None


class FrontierAckMiddleware:
    """Spider middleware that acks or fails the ids left over when a callback finishes.

    Left-over ids of a response whose callback gave foreign items (:func:`claim_of`: items that do not
    name their work items) are acked only once all those items have left the pipelines
    (``item_scraped`` / ``item_dropped``), and failed if one of them hit ``item_error`` (not fetched again):
    a third-party spider's page is acknowledged after its items are stored, as holocron's own are."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self._held: dict[int, list[_Holding]] = {}  # id(item) -> the holdings it counts in
        crawler.signals.connect(self._item_stored, signal=signals.item_scraped)
        crawler.signals.connect(self._item_stored, signal=signals.item_dropped)
        crawler.signals.connect(self._item_error, signal=signals.item_error)

    def _settle(
        self, frontier: Any, response: Response, remaining: set[int], seen: set[int], holding: _Holding | None
    ) -> None:
        """Fail the ids of requests dropped on the way here; ack the rest of *remaining* now, or, when
        foreign items hold them, once those are stored."""
        dropped = (_HANDED.pop(response, None) or set()) - seen
        if dropped:
            frontier.fail(sorted(dropped), DROPPED, retryable=True)
            if self.crawler.stats is not None:
                self.crawler.stats.inc_value("frontier/dropped_requests")
        if holding is None:
            frontier.ack(sorted(remaining - dropped))
            return
        holding.ids, holding.ended = sorted(remaining - dropped), True
        self._release(frontier, holding)

    def _hold(self, holding: _Holding | None, item: Any) -> _Holding:
        holding = holding or _Holding()
        holding.pending += 1
        self._held.setdefault(id(item), []).append(holding)
        return holding

    def _left(self, item: Any, error: str | None) -> None:
        holdings = self._held.get(id(item))
        if not holdings:
            return
        holding = holdings.pop(0)
        if not holdings:
            del self._held[id(item)]
        holding.pending -= 1
        if error is not None:
            holding.error = error
        self._release(getattr(self.crawler, CRAWLER_ATTRIBUTE, None), holding)

    def _item_stored(self, item: Any, **kwargs: Any) -> None:
        self._left(item, None)

    def _item_error(self, item: Any, failure: Any = None, **kwargs: Any) -> None:
        self._left(item, failure.getErrorMessage() if failure is not None else "item pipeline error")

    @staticmethod
    def _release(frontier: Any, holding: _Holding) -> None:
        if frontier is None or not holding.ended or holding.pending > 0 or not holding.ids:
            return
        ids, holding.ids = holding.ids, []
        if holding.error is not None:
            frontier.fail(ids, f"pipeline error: {holding.error}", retryable=False)
        else:
            frontier.ack(ids)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FrontierAckMiddleware:
        return cls(crawler)

    def _start(self, response: Response) -> tuple[Any, set[int]]:
        frontier = getattr(self.crawler, CRAWLER_ATTRIBUTE, None)
        ids = set(ids_of(response)) if response.request is not None else set()
        _SETTLING.add(response)
        return frontier, ids

    def process_spider_exception(self, response: Response, exception: Exception, spider: Spider | None = None) -> None:
        """A callback that raised before giving any output (not a generator) never reaches
        ``process_spider_output``: its ids fail, as those of a callback raising midway do. Output that
        reached this middleware is settled there (its ids may have gone on to requests)."""
        if response in _SETTLING or response.request is None:
            return
        frontier = getattr(self.crawler, CRAWLER_ATTRIBUTE, None)
        ids = set(ids_of(response))
        if frontier is None or not ids:
            return
        spider_error(frontier, ids, exception)
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
        ids, handed_on, holding = set(remaining), set(), None
        try:
            for output in result:
                taken, foreign = claim_of(output)
                remaining -= taken
                if isinstance(output, Request):
                    handed_on |= taken
                elif foreign:
                    holding = self._hold(holding, output)
                yield output
        except Exception as exc:
            spider_error(frontier, remaining, exc)
            raise
        finally:
            self._fetched(frontier, ids, handed_on | (_HANDED.get(response) or set()))
        self._settle(frontier, response, remaining, handed_on, holding)

    async def process_spider_output_async(
        self, response: Response, result: AsyncIterator[Any], spider: Spider | None = None
    ) -> AsyncIterator[Any]:
        frontier, remaining = self._start(response)
        if frontier is None or not remaining:
            async for output in result:
                yield output
            return
        ids, handed_on, holding = set(remaining), set(), None
        try:
            async for output in result:
                taken, foreign = claim_of(output)
                remaining -= taken
                if isinstance(output, Request):
                    handed_on |= taken
                elif foreign:
                    holding = self._hold(holding, output)
                yield output
        except Exception as exc:
            spider_error(frontier, remaining, exc)
            raise
        finally:
            self._fetched(frontier, ids, handed_on | (_HANDED.get(response) or set()))
        self._settle(frontier, response, remaining, handed_on, holding)
