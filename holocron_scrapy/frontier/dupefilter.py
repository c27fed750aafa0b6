"""Dupe filter for the SQL frontier.

The ``work_items`` unique dedupe key is the authority (insert-if-new in one statement);
this filter computes the key of a request and remembers recently seen keys in a bounded
LRU so that a link seen twice in one process costs no database round trip.

Settings: ``HOLOCRON_DUPEFILTER_CACHE_SIZE``, ``DUPEFILTER_DEBUG``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.dupefilters import BaseDupeFilter

from holocron_scrapy.frontier.keys import META_KEY, Resource, request_resource

logger = logging.getLogger(__name__)


class FrontierDupeFilter(BaseDupeFilter):
    def __init__(self, fingerprinter=None, *, cache_size: int = 50_000, debug: bool = False):
        self.fingerprinter = fingerprinter
        self.cache_size = cache_size
        self.debug = debug
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._logged = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FrontierDupeFilter:
        return cls(
            crawler.request_fingerprinter,
            cache_size=crawler.settings.getint("HOLOCRON_DUPEFILTER_CACHE_SIZE"),
            debug=crawler.settings.getbool("DUPEFILTER_DEBUG"),
        )

    def request_resource(self, request: Request) -> Resource:
        if request.meta.get(META_KEY):  # the spider named the resource: no fingerprint needed (the costly part)
            return request_resource(request)
        fp = self.fingerprinter.fingerprint(request) if self.fingerprinter else None
        return request_resource(request, fp)

    def seen_key(self, key: str) -> bool:
        """True if *key* was seen recently in this process; remembers it otherwise."""
        if key in self._recent:
            self._recent.move_to_end(key)
            return True
        self._recent[key] = None
        if len(self._recent) > self.cache_size:
            self._recent.popitem(last=False)
        return False

    def request_seen(self, request: Request) -> bool:
        return self.seen_key(self.request_resource(request).dedupe_key)

    def log(self, request: Request, spider: Spider | None) -> None:
        if self.debug:
            logger.debug("Filtered duplicate request: %(request)s", {"request": request}, extra={"spider": spider})
        elif not self._logged:
            logger.debug(
                "Filtered duplicate request: %(request)s - no more duplicates will be shown"
                " (see DUPEFILTER_DEBUG to show all duplicates)",
                {"request": request},
                extra={"spider": spider},
            )
            self._logged = True
