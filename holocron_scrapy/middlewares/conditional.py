"""Conditional re-crawls of web pages: send the stored validators, accept 304.

For a page the ``http`` spider re-crawls (its work item was completed before, and
``seen_resources`` has its ETag or Last-Modified from no later than that), the request
gets ``If-None-Match`` / ``If-Modified-Since``; a ``304 Not
Modified`` answer reaches the spider, which counts it as ``recrawl/unchanged`` and stores
nothing. Off with ``full_refresh``.
"""

from __future__ import annotations

from typing import Any

from scrapy import Request
from scrapy.crawler import Crawler

from holocron_scrapy.frontier.scheduler import RECRAWL_META


class ConditionalRequestMiddleware:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ConditionalRequestMiddleware:
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        spider: Any = self.crawler.spider
        info = request.meta.get("holocron")
        since = request.meta.get(RECRAWL_META)  # only re-crawls of items completed before
        if not info or not since or info.get("resource_type") != "url" or not hasattr(spider, "versions"):
            return None
        versions = spider.versions
        if not versions.enabled:
            return None
        version = versions.lookup(info["source_system"], info["source_name"], [info["resource_id"]]).get(
            info["resource_id"]
        )
        if not version or not (version.get("etag") or version.get("last_modified")):
            return None
        if str(version.get("last_fetched_at")) > since:
            return None  # stored after the item last completed: its links may not be known yet
        if version.get("etag"):
            request.headers.setdefault("If-None-Match", version["etag"])
        if version.get("last_modified"):
            request.headers.setdefault("If-Modified-Since", version["last_modified"])
        allowed = list(request.meta.get("handle_httpstatus_list", ()))
        request.meta["handle_httpstatus_list"] = [*allowed, 304]
        return None
