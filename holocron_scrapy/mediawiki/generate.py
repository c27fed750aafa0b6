"""Generators as seeds: walk a MediaWiki listing through Scrapy and stream its titles into the frontier.

``-a generator=allpages``, ``prefix:Star Wars`` or ``categorymembers:Category:Foo`` (or a source's
``generator:`` key; the spec is parsed by :func:`holocron_scrapy.mediawiki.listings.parse_generator`)
seeds a crawl with every page the listing gives, instead of seeds. Why: starting from seeds and
following links misses orphans and finds each title only after its linking page was fetched; a
listing names 500 titles per request (5,000 with ``apihighlimits``), and the frontier then fetches
them in full batches of 50 (500).

How:

* The walk is :class:`~holocron_scrapy.mediawiki.listings.ListingWalk` (pure). Each listing request
  goes through the engine (``engine.download_async``: the downloader middlewares, so ``maxlag``, HTTP
  429/5xx and ``Retry-After`` are handled by :mod:`holocron_scrapy.middlewares.retry` exactly as for
  content requests, and a bot login's session cookie is sent by
  :class:`~holocron_scrapy.mediawiki.auth.BotLoginMiddleware`), one at a time, never blocking the
  reactor. The limit is what the account may use: 500, or 5,000 after a bot login with
  ``apihighlimits``.
* Each answer's titles become exactly the work items seed titles would (the spider's ``seed_request``
  and :func:`holocron_scrapy.frontier.intake.work_items`) and are inserted together with the walk's
  new position (checkpoint ``generator/<sha256 of the spec>``) in ONE transaction
  (:meth:`~holocron_scrapy.frontier.store.WorkItemStore.save_checkpoint`), in the frontier's worker
  thread (:func:`holocron_scrapy.frontier.intake.in_worker`, which also rides out a database outage).
  A kill leaves both or neither: the next run of the same command asks for exactly the next listing
  request and nothing is enqueued twice. Only one answer's titles are held at a time.
* A listing completed by an earlier run is not listed again (the log says so); a different spec
  (kind, prefix, category, depth or namespaces) is another listing.
* An answer that still fails after the retry middleware gave up (a permanent API error, a body that
  is not the listing) stops the listing with one error line (the run ends ``partial``); what was
  listed is fetched, and the next run resumes the listing at the failed request.

A generator crawl follows no links: it stores exactly the listed pages (``max_depth`` is the depth
of subcategories for ``categorymembers``). Seeds and a generator are two ways to seed a crawl, not
combined (the spider's options refuse both).

Settings read: none (the spider's options, its bot session, the frontier's source scope).
Stats written: ``generator/requests`` (listing answers taken in this run), ``generator/titles``
(titles listed), ``generator/enqueued`` (new work items), ``generator/skipped`` (1: listed by an
earlier run), ``generator/resumed`` (1: an interrupted listing went on), ``generator/failed`` (1: the
listing stopped on an error); inserted and known titles also count in ``frontier/enqueued`` and
``frontier/filtered``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy import Request

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.intake import in_worker, work_items
from holocron_scrapy.frontier.scheduler import scheduler_of
from holocron_scrapy.frontier.store import CheckpointKey, NewItem, WorkItemStore
from holocron_scrapy.mediawiki import api
from holocron_scrapy.mediawiki.calls import LISTING, api_meta, take_decoded
from holocron_scrapy.mediawiki.errors import ApiError
from holocron_scrapy.mediawiki.listings import GeneratorSpec, ListingPage, ListingWalk, listing_limit
from holocron_scrapy.mediawiki.parse import MalformedResponse

if TYPE_CHECKING:
    from holocron_scrapy.spiders.mediawiki import MediaWikiSpider

logger = logging.getLogger(__name__)

#: Checkpoint names of generator listings: ``generator/<sha256 of the spec>``.
CHECKPOINT_PREFIX = "generator/"
#: Marks a listing request (for middlewares and logs; it never reaches the frontier).


def spec_digest(spec: GeneratorSpec) -> str:
    """SHA-256 of what makes a listing: kind, namespaces, prefix, category and depth."""
    ident = {
        "kind": spec.kind,
        "namespaces": list(spec.namespaces),
        "prefix": spec.prefix,
        "category": spec.category,
        "max_depth": spec.max_depth,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass
class GeneratorState:
    """Where a generator's listing stands (the walk is the checkpoint), plus what this run did."""

    walk: ListingWalk
    skipped: bool = False  # listed completely before this run
    resumed: bool = False  # begun before this run
    requests_now: int = 0
    titles_now: int = 0
    inserted_now: int = 0
    failed: str | None = None  # why the listing stopped short in this run

    @property
    def done(self) -> bool:
        return self.walk.done


class GeneratorIntake:
    """The listing of one generator into one source's frontier (store side: runs in the worker thread).

    *to_items* turns a page of titles into their work items (pure)."""

    def __init__(
        self,
        spec: GeneratorSpec,
        source_system: str,
        source_name: str,
        to_items: Callable[[list[str]], list[NewItem]],
    ):
        self.spec = spec
        self.key = CheckpointKey(source_system, source_name, CHECKPOINT_PREFIX + spec_digest(spec))
        self.to_items = to_items
        self.state: GeneratorState | None = None

    def begin(self, store: WorkItemStore) -> GeneratorState:
        """Read the checkpoint: a new walk, the stored one to go on with, or a completed one."""
        stored = store.checkpoint(self.key)
        if not stored:
            self.state = GeneratorState(ListingWalk.start(self.spec))
        else:
            walk = ListingWalk.from_dict(stored["walk"])
            self.state = GeneratorState(walk, skipped=walk.done, resumed=not walk.done)
        return self.state

    def value(self, walk: ListingWalk) -> dict[str, Any]:
        return {"generator": self.spec.describe(), "done": walk.done, "walk": walk.to_dict()}

    def commit(self, store: WorkItemStore, walk: ListingWalk, page: ListingPage) -> int:
        """Insert *page*'s titles and set the checkpoint to *walk* (the position after *page*) in one
        transaction; returns the number of new work items."""
        titles = list(page.titles)
        return store.save_checkpoint(self.key, self.value(walk), self.to_items(titles) if titles else [])

    def advance(self, walk: ListingWalk, page: ListingPage, inserted: int) -> None:
        """Record in memory what :meth:`commit` stored."""
        state = self.state
        assert state is not None
        state.walk = walk
        state.requests_now += 1
        state.titles_now += len(page.titles)
        state.inserted_now += inserted


def fed(walk: ListingWalk, body: Any) -> tuple[ListingWalk, ListingPage]:
    """The walk after *body* (a copy: *walk* stays where it was, also when the answer raises)."""
    following = ListingWalk.from_dict(walk.to_dict())
    return following, following.feed(body)


def listing_request(spider: MediaWikiSpider, walk: ListingWalk) -> Request:
    """The next request of *walk*, with the account's limit (500, 5,000 with apihighlimits) and
    ``assert=user`` after a bot login. It goes through the downloader middlewares only."""
    session = spider.mw_session
    high = bool(session is not None and session.account is not None and session.account.high_limits)
    params = walk.next_params(limit=listing_limit(high), maxlag=spider.options.maxlag)
    if session is not None:
        params["assert"] = "user"
    return Request(
        api.api_url(spider.options.api_url, params),
        meta=api_meta(LISTING),
        dont_filter=True,
    )


async def fetch_page(spider: MediaWikiSpider, walk: ListingWalk) -> tuple[ListingWalk, ListingPage]:
    """Download the next answer of *walk* (retried by the middlewares) and parse it. Raises
    :class:`ListingFailed` when it cannot be had."""
    engine = spider.crawler.engine
    assert engine is not None
    request = listing_request(spider, walk)
    try:
        response = await engine.download_async(request)
    except Exception as exc:  # noqa: BLE001 - the retry middleware gave up: say why, stop the listing
        raise ListingFailed(f"no answer: {type(exc).__name__}: {exc}") from None
    if response.status != 200:
        raise ListingFailed(f"HTTP {response.status}")
    body = take_decoded(response)
    try:
        return fed(walk, body if body is not None else response.body)
    except ApiError as exc:
        spider.crawler.stats.inc_value(f"mediawiki/api_error/{exc.code}")
        raise ListingFailed(str(exc)) from None
    except (MalformedResponse, ValueError) as exc:
        raise ListingFailed(f"not a listing answer: {exc}") from None


class ListingFailed(Exception):
    """A listing request that could not be answered after the retries."""


async def generator_requests(spider: MediaWikiSpider, spec: GeneratorSpec) -> AsyncIterator[Request]:
    """Seed the crawl with *spec*'s listing (the spider's ``start`` hands over to this).

    With the frontier scheduler the titles are streamed into ``work_items`` with the checkpoint and
    nothing is yielded; without it (a foreign scheduler, no state database) each listed title's
    request is yielded and nothing is checkpointed. ``frontier_hold`` is set while listing, so that
    the frontier holds half-empty batches until the listing is complete."""
    frontier = scheduler_of(spider.crawler)
    if frontier is None or frontier.store is None:
        walk = ListingWalk.start(spec)
        while not walk.done:
            try:
                walk, page = await fetch_page(spider, walk)
            except ListingFailed as exc:
                _log_failed(spider, spec, walk, exc)
                return
            for title in page.titles:
                request = spider.seed_request(title)
                if request is not None:
                    yield request
        return
    spider.frontier_hold = True
    try:
        await run_in_frontier(spider, spec)
    finally:
        spider.frontier_hold = False
    frontier.stored_elsewhere(0)  # claim now: a half-empty last batch is no longer held


async def run_in_frontier(spider: MediaWikiSpider, spec: GeneratorSpec) -> GeneratorState | None:
    """Walk *spec*'s listing into the crawl's frontier, one answer (and one transaction) at a time.
    Returns the final state, or None when the frontier closed first (the checkpoint keeps the place)."""
    frontier = scheduler_of(spider.crawler)
    if frontier is None or frontier.store is None:
        return None
    store, scope, stats = frontier.store, frontier.scope, spider.crawler.stats
    if scope is None:
        raise ConfigError("a generator needs the crawl's source (HOLOCRON_SOURCE_SYSTEM, HOLOCRON_SOURCE_NAME)")
    intake = GeneratorIntake(spec, scope.source_system, scope.source_name, work_items(frontier, spider.seed_request))
    state = await in_worker(frontier, lambda: intake.begin(store))
    what = spec.describe()
    if state.skipped:
        spider.logger.info(
            "Generator %s was listed completely by an earlier run (%d titles in %d requests); not listed again",
            what,
            state.walk.titles,
            state.walk.requests,
        )
    elif state.resumed:
        spider.logger.info(
            "Generator %s: resuming the listing after %d titles (%d requests)",
            what,
            state.walk.titles,
            state.walk.requests,
        )
    else:
        spider.logger.info("Generator %s: listing", what)
    while not state.done:
        if frontier.store is None or getattr(frontier, "_closing", False):
            return None
        try:
            walk, page = await fetch_page(spider, state.walk)
        except ListingFailed as exc:
            state.failed = str(exc)
            stats.inc_value("generator/failed")
            _log_failed(spider, spec, state.walk, exc)
            break
        inserted = await in_worker(frontier, lambda: intake.commit(store, walk, page))  # noqa: B023 - awaited here
        intake.advance(walk, page, inserted)
        stats.inc_value("generator/requests")
        stats.inc_value("generator/titles", len(page.titles))
        stats.inc_value("generator/enqueued", inserted)
        frontier.stored_elsewhere(inserted, len(page.titles) - inserted)
    stats.inc_value("generator/skipped", int(state.skipped))
    stats.inc_value("generator/resumed", int(state.resumed))
    if state.done and state.walk.titles == 0:
        spider.logger.warning(
            "Generator %s listed no titles: check the %s",
            what,
            "category" if spec.category else "prefix and namespaces",
        )
    if not state.skipped and state.failed is None:
        spider.logger.info(
            "Generator %s done: %d titles listed in %d requests in this run (%d in all), %d new work items",
            what,
            state.titles_now,
            state.requests_now,
            state.walk.titles,
            state.inserted_now,
        )
    return state


def _log_failed(spider: MediaWikiSpider, spec: GeneratorSpec, walk: ListingWalk, exc: Exception) -> None:
    listing = walk.current
    spider.logger.error(
        "Generator %s: the listing stopped at %s after %d titles: %s. The titles listed are fetched; run the"
        " same command again to go on from there.",
        spec.describe(),
        listing.key if listing is not None else "its end",
        walk.titles,
        exc,
    )


__all__ = [
    "CHECKPOINT_PREFIX",
    "GeneratorIntake",
    "GeneratorState",
    "ListingFailed",
    "generator_requests",
    "listing_request",
    "run_in_frontier",
    "spec_digest",
]
