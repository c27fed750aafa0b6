"""A downloader middleware for tests: generator listing requests ask for ``SMALL_LISTING_LIMIT``
entries (default 20) instead of the account's 500, so that a listing of the lab wiki takes dozens of
requests and a test can kill the crawl in the middle of it. Everything else (the real MediaWiki, the
continuation, the checkpoint) is the product's own.

Enable with ``-s DOWNLOADER_MIDDLEWARES=<JSON>``: the project's ``DOWNLOADER_MIDDLEWARES`` plus
``"tests.support.small_listings.SmallListingMiddleware": 50`` (a ``-s`` dict replaces the project's whole).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from scrapy import Request

from holocron_scrapy.mediawiki.calls import LISTING, api_call

_LIMIT_KEYS = ("aplimit", "cmlimit")
_DONE = "small_listing_done"


class SmallListingMiddleware:
    def process_request(self, request: Request, spider: Any = None) -> Request | None:
        call = api_call(request)
        if call is None or call.purpose != LISTING or request.meta.get(_DONE):
            return None
        limit = os.environ.get("SMALL_LISTING_LIMIT", "20")
        parts = urlsplit(request.url)
        query = [(k, limit if k in _LIMIT_KEYS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        small = request.replace(url=urlunsplit(parts._replace(query=urlencode(query))))
        small.meta[_DONE] = True
        return small
