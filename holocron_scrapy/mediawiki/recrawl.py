"""The revision check of a MediaWiki re-crawl: fetch content only for the pages that changed.

A batch of titles whose work items were completed before (a re-crawl: ``HOLOCRON_RECRAWL_AFTER``,
``scrapy frontier recrawl``) first asks one ``prop=info`` request for the 50 (or 500) titles. Its
answer gives each page's ``lastrevid``; :meth:`RevisionCheck.changed` compares it with the revision
stored for the title (or for the page a redirect or a normalisation leads to, stored under its own
title), through the crawler's version lookup (:mod:`holocron_scrapy.records.versions`: one batched
query, off the reactor). Only the titles whose revision differs, or that have none stored, go on to
the content request; the others are acknowledged as unchanged (``recrawl/unchanged``). A stored
revision counts only if it was stored no later than the title's item last completed: what it
discovered is in the frontier by then.

An info answer that cannot be read (an API error, not JSON) is not a verdict on the titles: the
whole batch goes on to the content request, which has its own failure handling.

Settings read: none (``full_refresh`` skips the check, in the spider). Stats written:
``recrawl/unchanged``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy import Request
from scrapy.http import Response

from holocron_scrapy.frontier.contract import WORK_META, Work
from holocron_scrapy.items import OK
from holocron_scrapy.mediawiki import api
from holocron_scrapy.mediawiki.calls import api_call, api_meta, take_decoded
from holocron_scrapy.mediawiki.errors import ApiError
from holocron_scrapy.mediawiki.parse import Accumulator, MalformedResponse, Resolution, merge_query, resolve

if TYPE_CHECKING:
    from holocron_scrapy.spiders.mediawiki import MediaWikiSpider

logger = logging.getLogger(__name__)

#: A title entry of a batch (``ApiCall.titles``): title, depth, ids, attempt, work_item_id, completed_at.
TitleEntry = dict[str, Any]


class RevisionCheck:
    """The ``prop=info`` step of one spider's re-crawled batches."""

    def __init__(self, spider: MediaWikiSpider, *, source_system: str, resource_type: str):
        self.spider = spider
        self.source_system = source_system
        self.resource_type = resource_type

    def request(self, titles: list[TitleEntry]) -> Request:
        """The ``prop=info`` request of a re-crawled batch; it holds the batch's work item ids."""
        options = self.spider.options
        params = api.info_params(
            sorted(t["title"] for t in titles), maxlag=options.maxlag, assert_user=self.spider.mw_session is not None
        )
        return Request(
            api.api_url(options.api_url, params),
            callback=self.spider.parse_info,
            errback=self.spider.errback_batch,
            meta={**api_meta(titles=titles), WORK_META: Work(ids=tuple(i for t in titles for i in t["ids"]))},
            dont_filter=True,
        )

    async def changed(self, response: Response) -> list[TitleEntry]:
        """The titles of the info answer *response* whose content must be fetched (all of them when
        the answer cannot be read); the rest count as ``recrawl/unchanged``."""
        call = api_call(response)
        titles: list[TitleEntry] = (call.titles if call is not None else None) or []
        acc = Accumulator()
        try:
            body = take_decoded(response)
            if body is None:
                raise MalformedResponse("not a JSON object")
            merge_query(acc, body)
        except (ApiError, ValueError, MalformedResponse) as exc:
            logger.warning("prop=info check failed (%s); fetching all %d titles", exc, len(titles))
            return titles
        resolved = {entry["title"]: resolve(acc, entry["title"]) for entry in titles}
        stored = await self.stored_revisions(titles, resolved)
        changed = []
        for entry in titles:
            resolution = resolved[entry["title"]]
            page = resolution.page or {}
            revision = stored.get(entry["title"])
            if resolution.outcome == OK and revision is not None and revision == page.get("lastrevid"):
                self.spider.crawler.stats.inc_value("recrawl/unchanged")
            else:
                changed.append(entry)
        return changed

    async def stored_revisions(self, titles: list[TitleEntry], resolved: dict[str, Resolution]) -> dict[str, int]:
        """``{requested title: stored revision}`` of the re-crawled *titles*, from one batched version
        lookup: the version stored under the title itself, else under the page a redirect or a
        normalisation led to. A version counts only if it was stored no later than the title's item
        last completed."""
        from holocron_scrapy.records.versions import VersionLookup

        source_name = self.spider.options.source_name

        def key(title: str) -> tuple[str, str, str, str]:
            return (self.source_system, source_name, self.resource_type, title)

        candidates: dict[str, list[str]] = {}
        for entry in titles:
            if not entry.get("completed_at"):
                continue
            names = [entry["title"]]
            resolution = resolved.get(entry["title"])
            if resolution is not None and resolution.outcome == OK and resolution.title != entry["title"]:
                names.append(resolution.title)
            candidates[entry["title"]] = names
        if not candidates:
            return {}
        lookup = VersionLookup.of(self.spider.crawler)
        held = await lookup.held([key(name) for names in candidates.values() for name in names])
        since = {t["title"]: t["completed_at"] for t in titles}
        stored: dict[str, int] = {}
        for title, names in candidates.items():
            for name in names:
                version = held.get(key(name))
                if version is not None and version.revision_id and version.stored_by(since[title]):
                    stored[title] = version.revision_id
                    break
        return stored
