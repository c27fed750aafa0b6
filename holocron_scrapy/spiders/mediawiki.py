"""Crawl a MediaWiki through its Action API: pages, their links and (optionally) categories.

Each title is one work item in the frontier; the frontier hands out up to ``batch_size``
titles at a time and :meth:`MediaWikiSpider.build_batch_request` turns them into one
``action=query``. Continuations belong to the batch; when the last part is merged every
requested title yields one record (or shares the record of the page it redirects to).

Before the first batch, one ``action=query&meta=siteinfo`` request probes ``api_url``: if it
is not a MediaWiki API (a refused connection, an unknown host, a 404, an HTML page) one error
line says why and the spider closes with reason ``fatal_api_probe``.

A source with ``auth: {type: botpassword, ...}`` then logs in (:mod:`holocron_scrapy.mediawiki.auth`)
before any content request, and its rights set the batch size: up to 500 titles with
``apihighlimits`` (default 500 unless ``batch_size`` is lower), else 50 (logged once). A failed
login closes the spider with ``fatal_login``; a configured ``batch_size`` the account may not use
with ``fatal_batch_size``. Content requests then carry ``assert=user``.

Failures follow :mod:`holocron_scrapy.failures`: an answer that is not a JSON object is transient
(the retry middleware retries it; then the frontier), a permanent API error on a batch that one
title may have caused (or an HTTP 414, URI too long) splits the batch in halves until the bad
titles are isolated.

A re-crawled batch (items completed before) asks ``prop=info`` first and fetches content only for
the titles whose ``lastrevid`` is not the revision stored (:mod:`holocron_scrapy.mediawiki.recrawl`).

Seeds go through the frontier's seed intake (:mod:`holocron_scrapy.frontier.intake`): streamed in
chunks, each title normalised by :meth:`MediaWikiSpider.seed_request`, taken in once per seed list.
Instead of seeds, a generator (``-a generator=allpages``, ``prefix:X``, ``categorymembers:Category:X``,
or the source's ``generator``) lists the titles (:mod:`holocron_scrapy.mediawiki.generate`: streamed
into the frontier, checkpointed per answer); such a crawl follows no links, and ``max_depth`` is the
depth of subcategories.

``-a recrawl=changes`` (or the source key ``recrawl: changes``) makes the run a sync from the wiki's
recent changes (:mod:`holocron_scrapy.mediawiki.sync`, one hook in :meth:`MediaWikiSpider.start`): only
what changed since the last completed sync is fetched; a first run or a stale checkpoint sweeps.

Spider arguments: ``source``, ``seeds`` ("A|B" or @file), ``generator``, ``api_url``, ``max_depth``,
``discover`` (links|categories|both|none), ``namespaces`` ("0|4"), ``batch_size`` (1-50; 1-500 with a
bot login), ``recrawl`` (changes): merged into the source and validated by its model
(:mod:`holocron_scrapy.spiders.mediawiki_source`).

Stats: ``mediawiki/pages/<outcome>``, ``mediawiki/api_error/<code>``, ``mediawiki/continuations``,
``mediawiki/bisections``, ``mediawiki/probe/<ok|failed>``; ``mediawiki/login/*`` (see the auth module).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

from scrapy import Request
from scrapy.exceptions import CloseSpider
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from holocron_scrapy import defaults
from holocron_scrapy.config import Config, Source
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.failures import classify_exception, could_be_one_title, decode_api_body, failure_error
from holocron_scrapy.frontier.contract import WORK_META, Work, frontier_of, work_meta, work_of
from holocron_scrapy.frontier.keys import Resource
from holocron_scrapy.items import FAILED, OK, IngestItem
from holocron_scrapy.mediawiki import api
from holocron_scrapy.mediawiki.auth import (
    ASSERT_FAILURES,
    BATCH_SIZE_CLOSE_REASON,
    LOGIN_CLOSE_REASON,
    BotSession,
    LoginError,
    effective_batch_size,
)
from holocron_scrapy.mediawiki.calls import PROBE, ApiCall, api_call, api_meta, take_decoded
from holocron_scrapy.mediawiki.errors import ApiError
from holocron_scrapy.mediawiki.generate import generator_requests
from holocron_scrapy.mediawiki.parse import (
    Accumulator,
    MalformedResponse,
    check_probe,
    merge_query,
    page_categories,
    page_links,
    resolve,
)
from holocron_scrapy.mediawiki.recrawl import RevisionCheck
from holocron_scrapy.sources import ad_hoc_source
from holocron_scrapy.spiders.base import HolocronSpider, response_header
from holocron_scrapy.spiders.mediawiki_options import MediaWikiOptions, mediawiki_options
from holocron_scrapy.spiders.mediawiki_source import MediaWikiSource

SOURCE_SYSTEM = "mediawiki"
RESOURCE_TYPE = "page"


def batch_call(response: Response) -> ApiCall:
    """The :class:`ApiCall` of a content batch's answer (an empty one for a request sent unbatched)."""
    return api_call(response) or ApiCall()


def title_entry(work: Work) -> dict[str, Any]:
    """The entry of one claimed title in a batch (``ApiCall.titles``): its title, depth and claim."""
    assert work.resource is not None, "a title request names its page"
    return {
        "title": work.resource.resource_id,
        "depth": work.depth,
        "ids": list(work.ids),
        "attempt": work.attempt,
        "work_item_id": work.work_item_id,
        "completed_at": work.completed_at,
    }


class MediaWikiSpider(HolocronSpider):
    """``scrapy crawl mediawiki -a source=NAME``: any MediaWiki source in the config."""

    name = "mediawiki"
    source_type = "mediawiki"
    options: MediaWikiOptions
    custom_settings = {
        "ROBOTSTXT_OBEY": False,  # an API client, as pywikibot; etiquette via maxlag
        # The bot login's BotLoginMiddleware is in the project's DOWNLOADER_MIDDLEWARES (settings.py): a
        # dict here would replace that one whole, and with it the polite retry middleware (maxlag).
        # No URL length cap on our own requests: a continuation of 500 titles (a bot) is far longer than
        # Scrapy's 2,083 characters, and UrlLengthMiddleware dropped it, after which the batch's items were
        # acknowledged without records. A server that refuses a long URL answers 414: the batch is halved.
        "URLLENGTH_LIMIT": 0,
    }
    mw_session: BotSession | None = None  # read by BotLoginMiddleware
    changes_sync: Any = None  # the sync of a recrawl=changes run (holocron_scrapy.mediawiki.sync.ChangesSync)

    @classmethod
    def select_source(cls, config: Config, kwargs: dict[str, Any]) -> Source:
        name = kwargs.get("source") or cls.default_source
        if name and name not in config.sources and kwargs.get("api_url"):
            return ad_hoc_source(MediaWikiSource, name=name, type="mediawiki", api_url=kwargs["api_url"])  # ad-hoc wiki
        return super().select_source(config, kwargs)

    @classmethod
    def configure(
        cls, config: Config, source: Source, kwargs: dict[str, Any]
    ) -> tuple[MediaWikiOptions, dict[str, Any]]:
        assert isinstance(source, MediaWikiSource)
        options = mediawiki_options(source, kwargs, path=config.path)
        # A bot's batch size is known only after login: claim as many as it may use.
        bot_default = options.login is not None and not options.batch_size_set
        claim = defaults.MEDIAWIKI_MAX_BOT_BATCH_SIZE if bot_default else options.batch_size
        updates: dict[str, Any] = {"CONCURRENT_REQUESTS": source.concurrency, "HOLOCRON_FRONTIER_CLAIM_SIZE": claim}
        if options.recrawl == "changes":
            updates["HOLOCRON_RECRAWL_AFTER"] = None  # the sync decides: what changed, or the sweep
        return options, updates

    @classmethod
    def target_urls(cls, options: MediaWikiOptions) -> list[str]:
        return [options.api_url]

    # -- requests ------------------------------------------------------------------------
    async def start(self) -> AsyncIterator[Any]:
        await self.probe_api()
        await self.bot_login()
        if self.options.recrawl == "changes":  # the daily sync: requeue what changed (mediawiki/sync.py)
            from holocron_scrapy.mediawiki.sync import ChangesSync

            self.changes_sync = ChangesSync(self)  # kept: it advances the checkpoint at spider_closed
            async for item in self.changes_sync.run():
                yield item
        if self.options.generator is not None:  # generators as seeds: holocron_scrapy/mediawiki/generate.py
            async for request in generator_requests(self, self.options.generator):
                yield request
            return
        assert self.options.seeds is not None
        async for request in self.seed_requests(self.options.seeds):
            yield request

    @property
    def frontier_batch_size(self) -> int:
        """Titles per content request now (read by the frontier when it merges claimed titles into
        batches: a run resumed after a bot login gained or lost ``apihighlimits`` uses today's size)."""
        return self.options.batch_size

    def seed_request(self, seed: str) -> Request | None:
        title = api.normalize_title(seed)
        return self.title_request(title, depth=0) if title else None

    async def probe_api(self) -> None:
        """One ``meta=siteinfo`` request (through the downloader middlewares, so transient
        faults are retried); raise CloseSpider("fatal_api_probe") if api_url is no MediaWiki API."""
        url = api.api_url(self.options.api_url, api.siteinfo_params(maxlag=self.options.maxlag))
        # Its own error line says what went wrong: Scrapy's "Gave up retrying" is only INFO here.
        meta = {**api_meta(PROBE), "give_up_log_level": logging.INFO}
        request = Request(url, meta=meta, dont_filter=True)
        stats = self.crawler.stats
        try:
            response = await self.crawler.engine.download_async(request)
        except Exception as exc:  # noqa: BLE001 - every download failure is judged by the taxonomy
            verdict = classify_exception(exc)
            result = None
            problem = f"no answer ({verdict.detail or verdict.kind})"
        else:
            result = check_probe(response.status, response_header(response, b"Content-Type"), response.body)
            problem = result.message
        if result is not None and result.ok:
            stats.inc_value("mediawiki/probe/ok")
            self.logger.info("API probe: %s answers as %s", self.options.api_url, result.message)
            return
        if result is not None and not result.fatal:
            stats.inc_value("mediawiki/probe/ok")
            self.logger.warning("API probe: %s answered %s; crawling anyway", self.options.api_url, problem)
            return
        stats.inc_value("mediawiki/probe/failed")
        self.logger.error(
            "API probe failed: %s is not a usable MediaWiki API: %s. Check api_url (source %r); stopping.",
            self.options.api_url,
            problem,
            self.options.source_name,
        )
        raise CloseSpider("fatal_api_probe")

    async def bot_login(self) -> None:
        """Log in with the source's BotPassword (if any) before any content request, and set the
        batch size to what the account may use. A failed login, or a ``batch_size`` the account
        may not use, stops the crawl (``fatal_login``, ``fatal_batch_size``: exit status 1)."""
        login = self.options.login
        if login is None:
            return
        self.mw_session = BotSession(
            self.crawler, login, source_name=self.options.source_name, api_url=self.options.api_url
        )
        try:
            account = await self.mw_session.login()
        except LoginError as exc:
            self.logger.error("Bot login failed: %s. Check auth (source %r); stopping.", exc, self.options.source_name)
            raise CloseSpider(LOGIN_CLOSE_REASON) from None
        configured = self.options.batch_size if self.options.batch_size_set else None
        try:
            size = effective_batch_size(configured, account.high_limits, login.username)
        except ConfigError as exc:
            self.logger.error("%s; stopping.", exc)
            raise CloseSpider(BATCH_SIZE_CLOSE_REASON) from None
        if not account.high_limits:
            self.logger.warning(
                "Account %s lacks apihighlimits (BotPassword grant 'highvolume'): batches stay at %d titles",
                login.username,
                size,
            )
        self.logger.info("Logged in as %s: %d titles per request", account.name, size)
        self.options = replace(self.options, batch_size=size)

    def title_request(
        self, title: str, *, depth: int, discovered_from: str | None = None
    ) -> Request:
        """The per-title request the frontier stores; batched by :meth:`build_batch_request`."""
        meta = work_meta(
            Resource(SOURCE_SYSTEM, self.options.source_name, RESOURCE_TYPE, title),
            depth=depth,
            discovered_from=discovered_from,
            batch_key=self.options.api_url,
            batch_size=self.options.batch_size,
        )
        return Request(
            api.title_url(self.options.api_url, title),
            callback=self.parse_batch,
            errback=self.errback_batch,
            meta=meta,
        )

    @functools.cached_property
    def revision_check(self) -> RevisionCheck:
        """The ``prop=info`` step of re-crawled batches."""
        return RevisionCheck(self, source_system=SOURCE_SYSTEM, resource_type=RESOURCE_TYPE)

    def build_batch_request(self, requests: list[Request]) -> Request:
        """One ``action=query`` for the titles of several claimed per-title requests; a re-crawl asks
        ``prop=info`` first (:mod:`holocron_scrapy.mediawiki.recrawl`)."""
        titles = [title_entry(work_of(r) or Work()) for r in requests]
        if not getattr(self, "full_refresh", False) and any(t["completed_at"] for t in titles):
            return self.revision_check.request(titles)
        return self._query_request(titles, continuation=None, acc=None)

    async def parse_info(self, response: Response) -> AsyncIterator[Any]:
        """The ``prop=info`` answer of a re-crawl: content only for the titles that changed; the
        others are acknowledged as unchanged (the callback's output ends without them)."""
        changed = await self.revision_check.changed(response)
        if changed:
            yield self._query_request(changed, continuation=None, acc=None)

    def _query_request(
        self, titles: list[dict[str, Any]], *, continuation: dict | None, acc: dict | None, first_url: str | None = None
    ) -> Request:
        params = api.query_params(
            sorted(t["title"] for t in titles),
            namespaces=self.options.namespaces,
            maxlag=self.options.maxlag,
            continuation=continuation,
            assert_user=self.mw_session is not None,
        )
        url = api.api_url(self.options.api_url, params)
        first_url = first_url or url
        return Request(
            url,
            callback=self.parse_batch,
            errback=self.errback_batch,
            meta={
                **api_meta(titles=titles, acc=acc, first_url=first_url),
                WORK_META: Work(ids=tuple(i for t in titles for i in t["ids"])),
            },
            dont_filter=True,
        )

    # -- responses -----------------------------------------------------------------------
    @staticmethod
    def decoded_body(response: Response) -> Any:
        """The answer's JSON object: decoded once, by the retry middleware when it ran; None when
        the body is not a JSON object."""
        decoded = take_decoded(response)
        if decoded is None:
            decoded, _ = decode_api_body(response.body)
        return decoded

    def parse_batch(self, response: Response) -> Iterator[Any]:
        call = batch_call(response)
        titles = call.titles or []
        acc = Accumulator.from_dict(call.acc)
        body = self.decoded_body(response)
        try:
            if body is None:
                raise MalformedResponse("the body is not a JSON object")
            continuation = merge_query(acc, body)
        except ApiError as exc:
            self.crawler.stats.inc_value(f"mediawiki/api_error/{exc.code}")
            if exc.code in ASSERT_FAILURES:  # the session was lost again after a new login: later
                yield from self.failure_items(titles, response, str(exc), retryable=True, payload=body)
                return
            if len(titles) > 1 and could_be_one_title(exc.code, exc.info, retryable=exc.retryable):
                yield from self.bisect(titles, exc)
                return
            yield from self.failure_items(titles, response, str(exc), retryable=exc.retryable, payload=body)
            return
        except (ValueError, MalformedResponse) as exc:
            # Cut short, an HTML error page, a PHP fatal: transient (the retry middleware already
            # retried it at the download level; the frontier tries again later).
            yield from self.failure_items(
                titles,
                response,
                f"not a MediaWiki query answer: {exc}",
                retryable=True,
                payload={
                    "body_prefix": response.text[:2000] if hasattr(response, "text") else repr(response.body[:2000])
                },
            )
            return
        if continuation:
            self.crawler.stats.inc_value("mediawiki/continuations")
            yield self._query_request(
                titles, continuation=continuation, acc=acc.to_dict(), first_url=call.first_url
            )
            return
        yield from self.batch_output(titles, acc, response)

    def bisect(self, titles: list[dict[str, Any]], cause: object) -> Iterator[Request]:
        """Split a batch that got a permanent error in halves, each a request of its own that
        carries its share of the work-item ids, until the bad titles are alone."""
        self.crawler.stats.inc_value("mediawiki/bisections")
        self.logger.info("Splitting a batch of %d titles to isolate the cause of: %s", len(titles), cause)
        half = len(titles) // 2
        for part in (titles[:half], titles[half:]):
            yield self._query_request(part, continuation=None, acc=None)

    def batch_output(self, titles: list[dict[str, Any]], acc: Accumulator, response: Response) -> Iterator[Any]:
        groups: dict[tuple[str, str], list[tuple[dict[str, Any], Any]]] = {}
        for entry in titles:
            resolution = resolve(acc, entry["title"])
            groups.setdefault((resolution.outcome, resolution.title), []).append((entry, resolution))
        latency = response.meta.get("download_latency")
        for (outcome, title), members in groups.items():
            entries = [m[0] for m in members]
            depth = min(e["depth"] for e in entries)
            direct = next((e for e in entries if e["title"] == title), entries[0])
            page = members[0][1].page
            revisions = (page or {}).get("revisions") or [{}]
            self.crawler.stats.inc_value(f"mediawiki/pages/{outcome}")
            yield IngestItem(
                source_system=SOURCE_SYSTEM,
                source_name=self.options.source_name,
                resource_type=RESOURCE_TYPE,
                resource_id=title,
                requested_id=direct["title"],
                outcome=outcome,
                payload=page,
                request_uri=batch_call(response).first_url or response.url,
                status_code=response.status,
                content_type=response_header(response, b"Content-Type"),
                duration_ms=None if latency is None else int(latency * 1000),
                run_id=self.run_id,
                attempt=max(e["attempt"] for e in entries),
                depth=depth,
                work_item_id=direct.get("work_item_id"),
                work_item_ids=[i for e in entries for i in e["ids"]],
                revision_id=revisions[0].get("revid") if isinstance(revisions[0], dict) else None,
                context={
                    "requested_titles": [e["title"] for e in entries],
                    "resolution": [list(m[1].chain) for m in members],
                    "api_parts": acc.parts,
                    "api_url": self.options.api_url,
                },
            )
            if outcome != OK:
                continue
            if title not in {e["title"] for e in entries}:
                # a redirect target: known now, not fetched again
                frontier_of(self.crawler).mark_known(self.title_request(title, depth=depth))
            if depth < self.options.max_depth:
                yield from self.discovered(page, depth + 1, title)

    def discovered(self, page: dict[str, Any], depth: int, parent: str) -> Iterator[Request]:
        found: list[str] = []
        if self.options.follow_links:
            found.extend(page_links(page, self.options.namespaces))
        if self.options.follow_categories:
            found.extend(page_categories(page))
        for title in dict.fromkeys(found):
            yield self.title_request(title, depth=depth, discovered_from=parent)

    def failure_items(
        self,
        titles: list[dict[str, Any]],
        response: Response | None,
        error: str,
        *,
        retryable: bool,
        payload: Any = None,
        status: int | None = None,
        url: str | None = None,
    ) -> Iterator[IngestItem]:
        for entry in titles:
            self.crawler.stats.inc_value("mediawiki/pages/failed")
            yield IngestItem(
                source_system=SOURCE_SYSTEM,
                source_name=self.options.source_name,
                resource_type=RESOURCE_TYPE,
                resource_id=entry["title"],
                requested_id=entry["title"],
                outcome=FAILED,
                payload=payload if payload is not None else {"error": error},
                request_uri=url or (response.url if response is not None else self.options.api_url),
                status_code=status if status is not None else (response.status if response is not None else None),
                run_id=self.run_id,
                attempt=entry["attempt"],
                depth=entry["depth"],
                error_message=error,
                retryable=retryable,
                work_item_id=entry.get("work_item_id"),
                work_item_ids=list(entry["ids"]),
            )

    def errback_batch(self, failure: Failure) -> Iterator[IngestItem | Request]:
        request = failure.request  # type: ignore[attr-defined]  # Scrapy sets Failure.request on a download error
        call = api_call(request)
        titles = call.titles if call is not None else None
        batched = titles is not None
        if titles is None:  # a per-title request that was never batched (no frontier)
            titles = [title_entry(work_of(request) or Work())]
        error = failure_error(failure)
        status = error.response.status if isinstance(error, HttpError) else None
        if status == 414 and len(titles) > 1 and batched:  # URI too long: fewer titles
            yield from self.bisect(titles, "HTTP 414 (URI too long)")
            return
        verdict = classify_exception(error)
        self.logger.warning(
            "Batch of %d titles failed (%s %s): %s",
            len(titles),
            verdict.category,
            verdict.kind,
            failure.getErrorMessage(),
        )
        yield from self.failure_items(
            titles,
            None,
            f"{type(error).__name__}: {failure.getErrorMessage()}",
            retryable=verdict.transient,
            status=status,
            url=request.url,
        )


class WikipediaSpider(MediaWikiSpider):
    """``scrapy crawl wikipedia``: the ``wikipedia`` source of the config."""

    name = "wikipedia"
    default_source = "wikipedia"
