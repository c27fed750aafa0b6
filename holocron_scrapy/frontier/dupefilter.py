"""Dupe filter for the SQL frontier, and the one place a request's dedupe key is computed.

The ``work_items`` unique dedupe key is the authority (insert-if-new in one statement). The key
comes from the request's resource, named by :class:`RequestKeys`: the resource of the request's
:class:`~holocron_scrapy.frontier.contract.Work` when the spider named one, else Scrapy's request
fingerprint (``request/scrapy/fingerprint/<hex>``). A project replaces it, as Scrapy's
``REQUEST_FINGERPRINTER_CLASS``, with ``HOLOCRON_FRONTIER_KEYS_CLASS``: any class with a
``resource(request) -> Resource`` method (built with ``from_crawler`` when it has one). The filter
remembers recently seen keys in a bounded LRU so that a link seen twice in one process costs no
database round trip.

Settings: ``HOLOCRON_FRONTIER_KEYS_CLASS``, ``HOLOCRON_DUPEFILTER_CACHE_SIZE``, ``DUPEFILTER_DEBUG``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.dupefilters import BaseDupeFilter
from scrapy.utils.misc import build_from_crawler, load_object

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.contract import work_of
from holocron_scrapy.frontier.keys import Resource

logger = logging.getLogger(__name__)

class RequestKeys:
    """The resource of a request: the one its :class:`~holocron_scrapy.frontier.contract.Work`
    names, else ``request/scrapy/fingerprint/<Scrapy's request fingerprint>``."""

    def __init__(self, fingerprinter: Any = None):
        self.fingerprinter = fingerprinter

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RequestKeys:
        return cls(crawler.request_fingerprinter)

    def resource(self, request: Request) -> Resource:
        work = work_of(request)
        if work is not None and work.resource is not None:
            return work.resource  # the spider named it: no fingerprint needed (the costly part)
        if self.fingerprinter is not None:
            fingerprint = self.fingerprinter.fingerprint(request)
        else:
            fingerprint = hashlib.sha1(f"{request.method} {request.url}".encode()).digest()
        return Resource("request", "scrapy", "fingerprint", fingerprint.hex())


class FrontierDupeFilter(BaseDupeFilter):
    def __init__(self, keys: Any = None, *, cache_size: int = 50_000, debug: bool = False):
        #: Names the resource of a request (``HOLOCRON_FRONTIER_KEYS_CLASS``; :class:`RequestKeys`).
        self.keys = keys if keys is not None else RequestKeys()
        self.cache_size = cache_size
        self.debug = debug
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._logged = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FrontierDupeFilter:
        keys_cls = load_object(crawler.settings.get("HOLOCRON_FRONTIER_KEYS_CLASS"))
        keys = build_from_crawler(keys_cls, crawler)
        if not callable(getattr(keys, "resource", None)):
            raise ConfigError(
                f"{keys_cls.__module__}.{keys_cls.__qualname__} has no resource(request) method",
                key="HOLOCRON_FRONTIER_KEYS_CLASS",
            )
        return cls(
            keys,
            cache_size=crawler.settings.getint("HOLOCRON_DUPEFILTER_CACHE_SIZE"),
            debug=crawler.settings.getbool("DUPEFILTER_DEBUG"),
        )

    def request_resource(self, request: Request) -> Resource:
        return self.keys.resource(request)

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
