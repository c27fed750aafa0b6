"""scrapy-deltafetch for Scrapy 2.19: skip requests to pages that already gave items.

scrapy-deltafetch 2.1.0 only has a synchronous ``process_spider_output``, which Scrapy
2.19 refuses for asynchronous spider output (TypeError). This subclass adds
``process_spider_output_async`` with the same logic, and resolves ``DELTAFETCH_DIR`` to an
absolute path (a relative one would land in Scrapyd's working directory). Items with the outcome
``failed`` (HTTP 404/5xx, exhausted retries) do not mark their page as seen, so the next run
tries it again. A page is marked only once its item is stored (``item_scraped``) or found already
stored (dropped as unchanged or as another worker's copy), never when the item is lost to a
storage fault or a pipeline error: "seen" must not run ahead of storage.

Why it keeps its own database instead of asking :mod:`holocron_scrapy.records.versions` (the one
"which version do we hold?" lookup that the change filter, the MediaWiki re-crawl check and
conditional requests share): it answers another question, under another contract. It asks "did
this page ever give a successful record?" (no version, no validators), keyed by canonical URL
and shared by all http sources (``seen_resources`` is keyed per source; answering across sources
would need a new index on three backends for an opt-in feature), it outlives a change of records
database (its documented use is a fresh frontier, possibly with fresh stores), and
``DELTAFETCH_RESET`` empties it, which must never empty the record of what is stored. Its check
is a key lookup in a local file in the crawl's own process: no server round trip to batch or to
take off the reactor.

Settings: ``DELTAFETCH_ENABLED``, ``DELTAFETCH_DIR`` (the config's ``storage.deltafetch_dir``;
default ``<cwd>/data/deltafetch``),
``DELTAFETCH_RESET``. Stats: ``deltafetch/stored``, ``deltafetch/skipped``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from itemadapter import ItemAdapter, is_item
from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.http import Response
from scrapy_deltafetch.middleware import DeltaFetch

from holocron_scrapy import defaults
from holocron_scrapy.items import FAILED
from holocron_scrapy.pipelines.faults import StorageFault


def _failed(item: Any) -> bool:
    """An item recording a failed fetch (outcome ``failed``), which must not mark its page as done."""
    try:
        return ItemAdapter(item).get("outcome") == FAILED
    except TypeError:  # not an item type itemadapter knows
        return False


class AsyncDeltaFetch(DeltaFetch):
    @classmethod
    def from_crawler(cls, crawler: Crawler) -> AsyncDeltaFetch:
        mw = super().from_crawler(crawler)
        mw.dir = str(Path(crawler.settings.get("DELTAFETCH_DIR") or defaults.DELTAFETCH_DIR).expanduser().resolve())
        mw._pending = {}
        crawler.signals.connect(mw._stored, signal=signals.item_scraped)
        crawler.signals.connect(mw._dropped, signal=signals.item_dropped)
        crawler.signals.connect(mw._lost, signal=signals.item_error)
        return mw

    _pending: dict[int, bytes]  # id(item) -> key of the page that gave it, until the item is stored

    def _mark(self, key: bytes) -> None:
        db = getattr(self, "db", None)
        if db is None:  # closed already
            return
        db[key] = str(time.time())
        if self.stats:
            self.stats.inc_value("deltafetch/stored")

    def _stored(self, item: Any, **kwargs: Any) -> None:
        key = self._pending.pop(id(item), None)
        if key is not None:
            self._mark(key)

    def _dropped(self, item: Any, exception: BaseException | None = None, **kwargs: Any) -> None:
        key = self._pending.pop(id(item), None)
        if key is not None and not isinstance(exception, StorageFault):  # unchanged / duplicate: stored before
            self._mark(key)

    def _lost(self, item: Any, **kwargs: Any) -> None:
        self._pending.pop(id(item), None)

    def _check(self, response: Response | None, output: Any) -> bool:
        """Record items; tell whether a request must be dropped (its page gave items before)."""
        if isinstance(output, Request):
            key = self._get_key(output)
            if key in self.db and self._is_enabled_for_request(output):
                if self.stats:
                    self.stats.inc_value("deltafetch/skipped")
                return False
            return True
        if response is not None and not _failed(output):  # a failed page must be tried again
            key = self._get_key(response.request)
            if is_item(output):
                self._pending[id(output)] = key  # marked once the item is stored
            else:
                self._mark(key)
        return True

    def process_spider_output(self, response: Response, result: Iterable[Any], spider: Any = None) -> Iterable[Any]:
        for output in result:
            if self._check(response, output):
                yield output

    async def process_spider_output_async(
        self, response: Response, result: AsyncIterator[Any], spider: Any = None
    ) -> AsyncIterator[Any]:
        async for output in result:
            if self._check(response, output):
                yield output
