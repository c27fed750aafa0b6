"""Crawl ordinary websites politely and store every response raw.

``scrapy crawl http -a seeds="https://a.example/|https://b.example/docs/"`` (or ``@file``), or
``-a source=NAME`` for an ``http`` source of the config. Scrapy does the heavy lifting:
``LinkExtractor``, ``ROBOTSTXT_OBEY``, AutoThrottle, redirects, canonical URLs; the frontier
dedupes by canonical URL.

Spider arguments: ``source``, ``seeds``, ``allowed_domains`` ("a.org|b.org"; default: the
seeds' hosts), ``max_depth``, ``max_pages``, ``follow`` and ``deny`` (regexes, "|"-separated
lists are not used: pass one regex each, combine with ``(a|b)``), ``sitemap`` (a URL, or
``robots`` to find sitemaps through robots.txt), ``store_binary``, ``max_body_bytes``, ``deltafetch``:
merged into the source and validated by its model (:mod:`holocron_scrapy.spiders.http_source`).

Seeds (every one checked before the start, in one streamed pass that keeps only their hosts) go
through the frontier's seed intake (:mod:`holocron_scrapy.frontier.intake`).

Failures follow :mod:`holocron_scrapy.failures`: 404, 410 and other 4xx are stored as ``failed``
at once; resets, timeouts, lost data, 429 and 5xx are retried (by the retry middleware, then
the frontier).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from scrapy import Request
from scrapy.exceptions import CloseSpider, IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.linkextractors import LinkExtractor
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.sitemap import Sitemap, sitemap_urls_from_robots
from twisted.python.failure import Failure

from holocron_scrapy.config import Config, Source
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.failures import classify_exception, failure_error
from holocron_scrapy.frontier.contract import Work, frontier_of, work_meta, work_of
from holocron_scrapy.frontier.intake import SeedList
from holocron_scrapy.frontier.keys import Resource
from holocron_scrapy.items import FAILED, OK, IngestItem
from holocron_scrapy.sources import ad_hoc_source
from holocron_scrapy.spiders.base import HolocronSpider, parse_seeds, response_header
from holocron_scrapy.spiders.http_source import HttpSource
from holocron_scrapy.web.auth import SourceAuth, parse_auth
from holocron_scrapy.web.content import RAW_HTML, build_payload, resource_type_for
from holocron_scrapy.web.urls import canonical_url, host_allowed, host_of, url_resource_id, validate_seed_url

SOURCE_SYSTEM = "http_scrape"
WORK_ITEM_TYPE = "url"  # the frontier's resource type; records get raw_html/json/xml/text/binary
DEFAULT_HEADERS = ("Content-Type", "Content-Length", "Content-Language", "Last-Modified", "ETag", "Cache-Control")


@dataclass(frozen=True)
class HttpOptions:
    source_name: str
    seeds: SeedList  # streamed into the frontier by the seed intake
    seed_origins: tuple[str, ...]  # scheme://host[:port]/ of the seeds, each once
    allowed_domains: tuple[str, ...]
    max_depth: int
    max_pages: int
    follow: tuple[str, ...]
    deny: tuple[str, ...]
    sitemap: str | None
    store_binary: bool
    max_body_bytes: int
    response_headers: tuple[str, ...]
    auth: SourceAuth | None
    deltafetch: bool


def origin_of(url: str) -> str:
    """``scheme://host[:port]/`` of *url*."""
    return "/".join(canonical_url(url).split("/", 3)[:3]) + "/"


def http_options(source: HttpSource, kwargs: dict[str, Any], *, path: str | None = None) -> HttpOptions:
    """Merge the ``-a`` arguments into the source (validated by its model, :mod:`.http_source`) and
    check the seeds. A bad value of the file *path* is named ``sources[name].key``."""
    merged = source.with_arguments(kwargs, path=path)
    seeds = parse_seeds(kwargs["seeds"]) if "seeds" in kwargs else None
    if seeds is None and source.seeds:
        seeds = SeedList.of(source.seeds)
    if seeds is None:
        raise ConfigError(f"no seeds: pass -a seeds=URL or set seeds on source {source.name!r}", key="seeds")
    # One streamed pass: every seed is checked before the start; only their hosts and origins are kept.
    hosts: dict[str, None] = {}
    origins: dict[str, None] = {}
    for seed in seeds:
        url = validate_seed_url(seed)
        hosts[host_of(url)] = None
        origins[origin_of(url)] = None
    domains = merged.allowed_domains or tuple(hosts)
    return HttpOptions(
        source_name=source.name,
        seeds=seeds,
        seed_origins=tuple(origins),
        allowed_domains=tuple(dict.fromkeys(host_of(d) for d in domains)),
        max_depth=merged.max_depth,
        max_pages=merged.max_pages,
        follow=merged.follow,
        deny=merged.deny,
        sitemap=merged.sitemap,
        store_binary=merged.store_binary,
        max_body_bytes=merged.max_body_bytes,
        response_headers=merged.response_headers or DEFAULT_HEADERS,
        auth=parse_auth(merged.auth, host_of(seeds.first)),
        deltafetch=merged.deltafetch,
    )


class HttpSpider(HolocronSpider):
    """``scrapy crawl http``: any website, politely."""

    name = "http"
    source_type = "http"
    options: HttpOptions
    pages_seen = 0
    source_auth: SourceAuth | None = None

    @classmethod
    def source_system_name(cls) -> str:
        return SOURCE_SYSTEM

    @classmethod
    def select_source(cls, config: Config, kwargs: dict[str, Any]) -> Source:
        name = kwargs.get("source")
        if name:
            return super().select_source(config, kwargs)
        seeds = parse_seeds(kwargs.get("seeds"))
        if seeds is None:
            raise ConfigError("no seeds given (use -a seeds=URL, -a seeds=@file, or -a source=NAME)", key="seeds")
        name = host_of(validate_seed_url(seeds.first)) or "web"
        return ad_hoc_source(HttpSource, name=name, type="http")  # ad-hoc site

    @classmethod
    def configure(cls, config: Config, source: Source, kwargs: dict[str, Any]) -> tuple[HttpOptions, dict[str, Any]]:
        assert isinstance(source, HttpSource)
        try:
            options = http_options(source, kwargs, path=config.path)
        except ConfigError as exc:
            if exc.key in kwargs or exc.source:
                raise
            # The value came from the config file: say where.
            raise ConfigError(exc.problem, key=f"sources[{source.name}].{exc.key}", source=config.path) from None
        settings: dict[str, Any] = {"ROBOTSTXT_OBEY": True}
        if options.max_pages:
            # The run stops after max_pages pages (see parse_page); with no more requests in flight
            # than the per-host concurrency it overshoots by at most that many, and claimed but
            # unsent items go back to the frontier for the next run.
            settings["CONCURRENT_REQUESTS"] = source.concurrency
            settings["HOLOCRON_FRONTIER_CLAIM_SIZE"] = source.concurrency
        if options.deltafetch:
            settings["DELTAFETCH_ENABLED"] = True
        return options, settings

    @classmethod
    def target_urls(cls, options: HttpOptions) -> list[str]:
        return list(options.seed_origins)

    @property
    def allowed_domains(self) -> list[str]:  # read by Scrapy's OffsiteMiddleware
        return list(self.options.allowed_domains)

    def _set_up(self) -> None:
        self.source_auth = self.options.auth
        self.link_extractor = LinkExtractor(allow=self.options.follow, deny=self.options.deny)

    # -- requests ------------------------------------------------------------------------
    async def start(self) -> AsyncIterator[Request]:
        self._set_up()
        async for request in self.seed_requests(self.options.seeds):
            yield request
        if self.options.sitemap == "robots":
            for host in self.options.seed_origins:
                yield self.aux_request(urljoin(host, "/robots.txt"), "robots", self.parse_robots)
        elif self.options.sitemap:
            yield self.aux_request(self.options.sitemap, "sitemap", self.parse_sitemap)

    def seed_request(self, seed: str) -> Request | None:
        return self.page_request(validate_seed_url(seed), depth=0)

    def page_request(self, url: str, *, depth: int, discovered_from: str | None = None) -> Request:
        resource = Resource(SOURCE_SYSTEM, self.options.source_name, WORK_ITEM_TYPE, url_resource_id(url))
        meta = work_meta(resource, depth=depth, discovered_from=discovered_from)
        if self.options.deltafetch:
            meta["deltafetch_key"] = resource.resource_id  # stable across redirects
        return Request(url, callback=self.parse_page, errback=self.errback_page, meta=meta)

    def aux_request(self, url: str, kind: str, callback: Any) -> Request:
        """A robots.txt or sitemap fetch: a work item of its own, stored as no record."""
        meta = work_meta(Resource(SOURCE_SYSTEM, self.options.source_name, kind, url_resource_id(url)))
        return Request(url, callback=callback, errback=self.errback_page, meta=meta, dont_filter=False)

    # -- responses -----------------------------------------------------------------------
    def parse_page(self, response: Response) -> Iterator[Any]:
        yield from self.page_output(response)
        # max_pages: stop once this page and all it discovered are out (nothing is lost).
        self.pages_seen += 1
        if self.options.max_pages and self.pages_seen >= self.options.max_pages:
            raise CloseSpider("max_pages")

    def page_output(self, response: Response) -> Iterator[Any]:
        """The page's record, and the links it leads to."""
        work = work_of(response)
        assert work is not None and work.resource is not None  # page_request named it
        resource_id = work.resource.resource_id
        if response.status == 304:  # conditional re-crawl: unchanged since the stored version
            self.crawler.stats.inc_value("recrawl/unchanged")
            return
        depth = work.depth
        content_type = response_header(response, "Content-Type")
        kind = resource_type_for(content_type, response)
        payload, note = build_payload(
            response, kind, store_binary=self.options.store_binary, max_body_bytes=self.options.max_body_bytes
        )
        self.crawler.stats.inc_value(f"http/pages/{OK}")
        assert response.request is not None  # a callback's response has its request (response.meta reads it)
        requested = (response.meta.get("redirect_urls") or [response.request.url])[0]
        latency = response.meta.get("download_latency")
        yield IngestItem(
            source_system=SOURCE_SYSTEM,
            source_name=self.options.source_name,
            resource_type=kind,
            resource_id=resource_id,
            requested_id=requested,
            payload=payload,
            request_uri=requested,
            status_code=response.status,
            content_type=content_type,
            response_headers=self._headers(response),
            duration_ms=None if latency is None else int(latency * 1000),
            run_id=self.run_id,
            attempt=work.attempt,
            depth=depth,
            discovered_from=work.discovered_from,
            error_message=note,
            work_item_id=work.work_item_id,
            work_item_ids=list(work.ids),
            context={"final_url": response.url, "redirects": response.meta.get("redirect_urls", [])},
            etag=response_header(response, "ETag"),
            last_modified=response_header(response, "Last-Modified"),
        )

        if url_resource_id(response.url) != resource_id:  # redirected: the target is known now
            frontier_of(self.crawler).mark_known(self.page_request(response.url, depth=depth))
        if kind != RAW_HTML or depth >= self.options.max_depth or not isinstance(response, TextResponse):
            return  # non-HTML is never parsed for links
        for link in self.link_extractor.extract_links(response):
            if host_allowed(link.url, self.options.allowed_domains):
                yield self.page_request(link.url, depth=depth + 1, discovered_from=resource_id)

    def parse_robots(self, response: Response) -> Iterator[Request]:
        for url in sitemap_urls_from_robots(response.body, base_url=response.url):  # bytes: str is deprecated
            yield self.aux_request(url, "sitemap", self.parse_sitemap)

    def parse_sitemap(self, response: Response) -> Iterator[Request]:
        try:
            sitemap = Sitemap(response.body)
        except Exception as exc:  # noqa: BLE001 - a broken sitemap is logged, not fatal
            self.logger.warning("Ignoring unparsable sitemap %s: %s", response.url, exc)
            return
        for entry in sitemap:
            loc = entry.get("loc")
            if not loc:
                continue
            if sitemap.type == "sitemapindex":
                yield self.aux_request(loc, "sitemap", self.parse_sitemap)
            elif host_allowed(loc, self.options.allowed_domains):
                yield self.page_request(loc, depth=0, discovered_from=url_resource_id(response.url))

    def errback_page(self, failure: Failure) -> Iterator[IngestItem]:
        request = failure.request  # type: ignore[attr-defined]  # Scrapy sets Failure.request on a download error
        work = work_of(request) or Work()
        ids = list(work.ids)
        resource = work.resource
        if failure.check(IgnoreRequest) and not failure.check(HttpError):
            if ids:  # robots.txt, offsite: nothing to store
                frontier_of(self.crawler).fail(ids, f"not fetched: {failure.getErrorMessage()}", retryable=False)
            return
        error = failure_error(failure)
        status = error.response.status if isinstance(error, HttpError) else None
        retryable = classify_exception(error).transient  # 404, 410, other 4xx: permanent
        if resource is None or resource.resource_type != WORK_ITEM_TYPE:
            if ids:
                frontier_of(self.crawler).fail(ids, failure.getErrorMessage(), retryable=retryable)
            return
        self.crawler.stats.inc_value("http/pages/failed")
        message = f"HTTP {status}" if status else f"{type(error).__name__}: {failure.getErrorMessage()}"
        yield IngestItem(
            source_system=SOURCE_SYSTEM,
            source_name=self.options.source_name,
            resource_type="error",
            resource_id=resource.resource_id,
            requested_id=request.url,
            payload={"error": message, "status": status},
            request_uri=request.url,
            status_code=status,
            outcome=FAILED,
            error_message=message,
            retryable=retryable,
            run_id=self.run_id,
            attempt=work.attempt,
            depth=work.depth,
            work_item_id=work.work_item_id,
            work_item_ids=ids,
        )

    def _headers(self, response: Response) -> dict[str, str]:
        out = {}
        for name in self.options.response_headers:
            value = response.headers.get(name)
            if value is not None:
                out[name] = value.decode("latin-1")
        return out
