"""Conditional re-crawls of web pages: send the stored validators, accept 304.

For a page the ``http`` spider re-crawls (its work item was completed before, and the version
held, :mod:`holocron_scrapy.records.versions`, has its ETag or Last-Modified from no later than
that), the request gets ``If-None-Match`` / ``If-Modified-Since``; a ``304 Not Modified`` answer
reaches the spider, which counts it as ``recrawl/unchanged`` and stores nothing. Off with
``full_refresh``.

The version is asked for through the crawler's :class:`~holocron_scrapy.records.versions.VersionLookup`
(``process_request`` is a coroutine): re-crawled requests leaving the scheduler together share
one query, run in a worker thread. Times are compared as instants.

Settings read: none of its own (``HOLOCRON_FULL_REFRESH`` through the spider, the records store
through the lookup). Stats written: none of its own (``versions/*`` by the lookup).
"""

from __future__ import annotations

from scrapy import Request
from scrapy.crawler import Crawler

from holocron_scrapy.frontier.contract import work_of
from holocron_scrapy.records.versions import VersionLookup


class ConditionalRequestMiddleware:
    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ConditionalRequestMiddleware:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        work = work_of(request)
        if work is None or work.resource is None or work.resource.resource_type != "url":
            return None
        since = work.completed_at  # only re-crawls of items completed before
        if not since:
            return None
        if getattr(self.crawler.spider, "full_refresh", False):
            return None
        # The frontier names a page by its "url" type; its records by their content kind: any type.
        key = (work.resource.source_system, work.resource.source_name, None, work.resource.resource_id)
        version = (await VersionLookup.of(self.crawler).held([key])).get(key)
        if version is None or not (version.etag or version.last_modified):
            return None
        if not version.stored_by(since):
            return None  # stored after the item last completed: its links may not be known yet
        if version.etag:
            request.headers.setdefault("If-None-Match", version.etag)
        if version.last_modified:
            request.headers.setdefault("If-Modified-Since", version.last_modified)
        allowed = list(request.meta.get("handle_httpstatus_list", ()))
        request.meta["handle_httpstatus_list"] = [*allowed, 304]
        return None
