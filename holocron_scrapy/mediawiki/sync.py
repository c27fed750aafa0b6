"""The daily sync of a MediaWiki source from its recent changes (``recrawl=changes``, issue 11).

Why: the ``lastrevid`` sweep (``recrawl_after``) costs one ``prop=info`` request per 50 stored pages
every run; ``list=recentchanges`` says what changed in ``⌈changes/500⌉`` requests. A sync run
(``-a recrawl=changes`` or the source key ``recrawl: changes``) does, at its start, before the seeds
(:meth:`ChangesSync.run`, called once from the spider's ``start``):

1. reads the source's checkpoint ``sync/recentchanges`` from ``frontier_checkpoints`` (in the
   frontier's worker thread) and asks the wiki, in one request, for the oldest change it keeps and
   its clock (:func:`~holocron_scrapy.mediawiki.changes.oldest_change_params`); the server's time is
   the run's start;
2. decides with :func:`~holocron_scrapy.mediawiki.changes.plan_sync`. A first run or a stale
   checkpoint falls back to the ``lastrevid`` sweep (every completed item of the source back to
   pending, each batch checked with ``prop=info`` as ``recrawl_after`` does), says so in the log and
   in the run report (``sync: "sweep (first run)"``), and asks ``$wgRCMaxAge`` once
   (:func:`~holocron_scrapy.mediawiki.changes.rc_max_age_params`, kept in the checkpoint: later runs
   need no extra request to know how far back the wiki keeps its changes);
3. otherwise pages through the window ``[checkpoint - margin, run start]`` (continuation followed),
   classifies it (:func:`~holocron_scrapy.mediawiki.changes.classify`) and, with :func:`plan_fetch`,
   puts back to pending only what changed (:meth:`~holocron_scrapy.frontier.store.WorkItemStore.requeue_keys`,
   which clears ``completed_at``: fetched in full at once, no ``prop=info``):

   * pages the crawl stored (a version held in ``seen_resources``) that were edited, restored,
     imported, merged: refetched, unless the revision held is already the newest of the window
     (the margin's overlap with the last run, and a rerun after a kill, deduplicated);
   * pages created in the window, when the crawl follows links or categories (``max_depth`` > 0):
     the window is read in the crawled namespaces only, and a page created there is one the crawl's
     rules reach (the request that would tell which crawled page links it would cost more than
     fetching it). They are enqueued at ``max_depth``: stored, their own links not followed;
   * moved pages: the new title is fetched (at the old item's depth) and the old title with it, so
     that the old title's record follows the redirect rules (it resolves to the new title, one
     record; without a redirect it is ``missing``);
   * deleted pages the crawl stored get a record with outcome ``deleted`` (its payload: the title and
     the deletion's log entry, the same on a rerun, so the change filter keeps one);

   then the frontier claims them in full batches.
4. The checkpoint (the run's start, not the newest change seen, and ``$wgRCMaxAge``) is written when
   the run closes with reason ``finished`` (``spider_closed``, in a thread, on a store of its own:
   the frontier's is closed by then). A killed or stopped run leaves it, so the next run reads the
   same window again and misses nothing.

Only with the frontier scheduler (the checkpoint lives in the state database); the listing and plan
requests go through the downloader middlewares (retries, maxlag, the bot's session) and never block.
A listing that cannot be read stops the crawl with ``fatal_sync`` (exit status 1), the checkpoint
unchanged.

Settings read: ``HOLOCRON_SYNC_MARGIN`` (seconds before the checkpoint a window starts, default 300),
the state store's (``HOLOCRON_STATE_URL``, ``JOBDIR``, ``HOLOCRON_STATE_SQLSERVER``).
Stats written: ``sync/mode`` (text: ``changes``, ``sweep (first run)``, ``sweep (stale checkpoint)``,
read by the run report), ``sync/changes`` (entries read), ``sync/listing_requests``, ``sync/refetch``,
``sync/created``, ``sync/moved``, ``sync/deleted``, ``sync/already_stored`` (titles whose newest
revision was held), ``sync/ignored`` (changed titles the crawl never stored), ``recrawl/requeued``,
``frontier/enqueued``, ``mediawiki/pages/deleted``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from scrapy import Request, signals
from scrapy.exceptions import CloseSpider
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import threads

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.keys import make_dedupe_key
from holocron_scrapy.frontier.scheduler import scheduler_of
from holocron_scrapy.frontier.store import CheckpointKey, NewItem, WorkItemStore, open_work_item_store
from holocron_scrapy.items import DELETED, IngestItem, payload_hash
from holocron_scrapy.mediawiki import api, changes
from holocron_scrapy.mediawiki.calls import api_meta, take_decoded
from holocron_scrapy.mediawiki.changes import _CONTENT_LOGS as CONTENT_LOGS  # the classifier's own list
from holocron_scrapy.mediawiki.changes import Change, ChangeSet, SyncPlan
from holocron_scrapy.mediawiki.errors import ApiError
from holocron_scrapy.mediawiki.parse import MalformedResponse
from holocron_scrapy.spiders.mediawiki_source import MediaWikiSource, parse_recrawl_mode

if TYPE_CHECKING:
    from holocron_scrapy.spiders.mediawiki import MediaWikiSpider

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: The checkpoint of a source's sync in ``frontier_checkpoints``.
CHECKPOINT_NAME = "sync/recentchanges"
#: The close reason of a sync whose listing could not be read (a ``fatal_`` reason: exit status 1).
SYNC_CLOSE_REASON = "fatal_sync"
#: The only finish reason that advances the checkpoint.
COMPLETED_REASON = "finished"
_CONTENT_TYPES = (None, "edit", "new")


def recrawl_mode(source: MediaWikiSource, kwargs: dict[str, Any]) -> str | None:
    """``-a recrawl`` else the source's ``recrawl`` (an ``-a recrawl_after`` alone asks for the sweep)."""
    if "recrawl" in kwargs:
        if "recrawl_after" in kwargs:
            raise ConfigError("recrawl=changes and recrawl_after are two ways to re-crawl: pass one", key="recrawl")
        return parse_recrawl_mode(kwargs["recrawl"])
    return None if "recrawl_after" in kwargs else source.recrawl


# -- the checkpoint (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncCheckpoint:
    """The stored value: the start of the last completed sync run (the server's time) and the wiki's
    ``$wgRCMaxAge`` (None when it does not publish it)."""

    run_start: datetime
    rc_max_age: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run_start": changes.format_timestamp(self.run_start), "rc_max_age": self.rc_max_age}

    @classmethod
    def from_json(cls, value: Any) -> SyncCheckpoint | None:
        """The checkpoint of a stored value; None for none (or one this version cannot read: a sweep)."""
        if not isinstance(value, dict) or not isinstance(value.get("run_start"), str):
            return None
        try:
            start = changes.parse_timestamp(value["run_start"])
        except MalformedResponse:
            return None
        age = value.get("rc_max_age")
        return cls(start, age if isinstance(age, int) and age > 0 else None)


def mode_text(plan: SyncPlan) -> str:
    """What the run did, for the run report: ``changes``, ``sweep (first run)``, ``sweep (stale checkpoint)``."""
    if plan.mode == "changes":
        return "changes"
    return f"sweep ({'first run' if plan.reason == changes.SWEEP_FIRST_RUN else 'stale checkpoint'})"


# -- what to fetch (pure) -------------------------------------------------------------------------


@dataclass
class FetchPlan:
    """What a window of changes asks of the crawl (titles; see the module docstring)."""

    refetch: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)  # stored old title -> new title (fetched both)
    deleted: list[tuple[str, Change]] = field(default_factory=list)  # stored title, its deletion
    already_stored: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def titles(self) -> list[str]:
        """Every title to put back to pending (or enqueue), each once."""
        return list(dict.fromkeys([*self.refetch, *self.created, *self.moved.values(), *self.moved]))


def newest_revisions(window: Iterable[Change]) -> tuple[dict[str, int], set[str]]:
    """``{title: newest revision id}`` of the window's edits, creations and moves (a move's entry
    carries the null revision it made on the page, under its new title), and the titles a log entry
    that changes content without a revision of its own touched (restores, merges, imports, revision
    deletions: no revision id says whether we hold the result)."""
    newest: dict[str, int] = {}
    logged: set[str] = set()
    for change in window:
        moved = change.type == "log" and change.logtype == "move" and change.target
        if (change.type in _CONTENT_TYPES or moved) and change.revid:
            title = change.target if moved and change.target else change.title
            newest[title] = max(newest.get(title, 0), change.revid)
        elif change.type == "log" and (change.logtype, change.logaction) in CONTENT_LOGS:
            logged.add(change.title)
            if change.target:
                logged.add(change.target)
    return newest, logged


def plan_fetch(
    change_set: ChangeSet,
    window: Iterable[Change],
    held: dict[str, int | None],
    *,
    follow: bool,
) -> FetchPlan:
    """Turn a change set into work. *held*: ``{title: revision id held (None: unknown)}`` of the titles
    the crawl stored (absent: never stored); *follow*: the crawl follows links or categories (new
    pages in its namespaces are reached)."""
    window = list(window)
    newest, logged = newest_revisions(window)
    ordered = sorted(window, key=lambda c: c.order)
    deletions = {c.title: c for c in ordered if (c.logtype, c.logaction) == ("delete", "delete")}
    plan = FetchPlan()

    def current(title: str) -> bool:
        """Whether the revision held is the window's newest already (nothing else touched the title)."""
        revision = held.get(title)
        return title not in logged and revision is not None and revision >= newest.get(title, revision + 1)

    for title in change_set.refetch:
        if title in change_set.moved.values():
            continue  # fetched as a move, below
        if title not in held:
            plan.ignored.append(title)
        elif current(title):
            plan.already_stored.append(title)
        else:
            plan.refetch.append(title)
    for title in change_set.created:
        if title in held and current(title):
            plan.already_stored.append(title)
        elif follow or title in held:
            plan.created.append(title)
        else:
            plan.ignored.append(title)
    for old, new in change_set.moved.items():
        if old not in held:
            plan.ignored.append(old)
        elif new in change_set.deleted:
            continue  # moved, then deleted: the old title's record is the deletion's (below)
        elif new in held and current(new):
            plan.already_stored.append(new)
        else:
            plan.moved[old] = new
    for title in change_set.deleted:
        origin = next((old for old, new in change_set.moved.items() if new == title), title)
        stored = title if title in held else origin if origin in held else None
        deletion = deletions.get(title)
        if stored is not None and deletion is not None:
            plan.deleted.append((stored, deletion))
        elif stored is None:
            plan.ignored.append(title)
    return plan


def deleted_payload(title: str, deletion: Change) -> dict[str, Any]:
    """The payload of a ``deleted`` record: the title and its deletion (the same on every rerun)."""
    return {
        "title": title,
        "deleted": True,
        "deletion": {"title": deletion.title, "timestamp": deletion.timestamp, "rcid": deletion.rcid},
    }


# -- the run ------------------------------------------------------------------------------------


class ChangesSync:
    """One sync run of a MediaWiki spider (``recrawl=changes``); see the module docstring."""

    def __init__(self, spider: MediaWikiSpider):
        self.spider = spider
        self.crawler = spider.crawler
        self.stats = spider.crawler.stats
        self.options = spider.options
        self.key = CheckpointKey("mediawiki", self.options.source_name, CHECKPOINT_NAME)
        margin = self.crawler.settings.getfloat("HOLOCRON_SYNC_MARGIN", changes.DEFAULT_MARGIN.total_seconds())
        self.margin = timedelta(seconds=margin)  # checked (>= 0) with every HOLOCRON_* setting
        self.next_checkpoint: SyncCheckpoint | None = None
        self.crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    # -- plumbing --
    @property
    def frontier(self) -> Any:
        frontier = scheduler_of(self.crawler)
        if frontier is None or frontier.store is None or frontier.executor is None:
            logger.error(
                "recrawl=changes keeps its checkpoint in the frontier's state database: it needs the frontier"
                " scheduler (holocron_scrapy.frontier.scheduler.FrontierScheduler); stopping."
            )
            raise CloseSpider(SYNC_CLOSE_REASON)
        return frontier

    async def in_worker(self, fn: Callable[[WorkItemStore], T]) -> T:
        """Run *fn(store)* in the frontier's worker thread, riding out an outage of the state database."""
        from holocron_scrapy.db.outage import ride_out

        frontier = self.frontier
        store = frontier.store
        return await ride_out(
            lambda: maybe_deferred_to_future(frontier.executor.submit(lambda: fn(store))),
            frontier.outage,
            spider=self.spider,
        )

    async def api_get(self, params: dict[str, str], what: str) -> Any:
        """One API request through the downloader (retries, maxlag, the bot's cookies); its JSON.
        A failure stops the crawl with ``fatal_sync``."""
        request = Request(api.api_url(self.options.api_url, params), meta=api_meta(), dont_filter=True)
        try:
            response = await self.crawler.engine.download_async(request)
            decoded = take_decoded(response)
            return decoded if decoded is not None else response.body
        except Exception as exc:  # noqa: BLE001 - any failure of the listing stops the sync
            self.fail(what, exc)

    def fail(self, what: str, exc: BaseException) -> NoReturn:
        logger.error(
            "Sync of %s: %s failed (%s); stopping, the checkpoint stays where it was.",
            self.options.source_name,
            what,
            exc,
            extra={"spider": self.spider},
        )
        raise CloseSpider(SYNC_CLOSE_REASON)

    def resource_key(self, title: str) -> tuple[str, str, str, str]:
        return ("mediawiki", self.options.source_name, "page", title)

    def dedupe_key(self, title: str) -> str:
        return make_dedupe_key(*self.resource_key(title))

    # -- the run --
    async def run(self) -> AsyncIterator[IngestItem]:
        """Plan the run; sweep, or requeue what changed and yield the ``deleted`` records."""
        stored = SyncCheckpoint.from_json(await self.in_worker(lambda store: store.checkpoint(self.key)))
        body = await self.api_get(changes.oldest_change_params(maxlag=self.options.maxlag), "the oldest-change request")
        try:
            oldest, now = changes.parse_oldest_change(body)
        except (ApiError, MalformedResponse) as exc:
            self.fail("the oldest-change request", exc)
        run_start = now or datetime.now(timezone.utc).replace(microsecond=0)
        rc_max_age = stored.rc_max_age if stored else None
        plan = changes.plan_sync(
            stored.run_start if stored else None,
            run_start,
            rc_max_age=rc_max_age,
            oldest_kept=oldest,
            margin=self.margin,
        )
        self.stats.set_value("sync/mode", mode_text(plan))
        if plan.mode == "sweep":
            await self.sweep(plan)
            return
        self.next_checkpoint = SyncCheckpoint(run_start, rc_max_age)
        assert plan.start is not None
        logger.info("Sync of %s: %s", self.options.source_name, plan.message, extra={"spider": self.spider})
        window, url = await self.read_window(plan.start, plan.end)
        change_set = changes.classify(window)
        # new pages are reached when the crawl discovers anything at all (a seeds-only crawl does not)
        follow = (self.options.follow_links or self.options.follow_categories) and self.options.max_depth > 0
        candidates = {*change_set.refetch, *change_set.created, *change_set.deleted, *change_set.moved}
        from holocron_scrapy.records.versions import VersionLookup

        versions = await VersionLookup.of(self.crawler).held([self.resource_key(t) for t in candidates])
        held = {key[3]: version.revision_id for key, version in versions.items()}
        work = plan_fetch(change_set, window, held, follow=follow)
        for title, deletion in list(work.deleted):  # its deleted record is stored already (a rerun, the margin)
            version = versions.get(self.resource_key(title))
            if version is not None and version.hash_sha256 == payload_hash(deleted_payload(title, deletion)):
                work.deleted.remove((title, deletion))
                work.already_stored.append(title)
        inserted, requeued = await self.in_worker(lambda store: self.requeue(store, work))
        self.count(change_set, work, requeued)
        logger.info(
            "Sync of %s: %d changes; %d pages to refetch, %d new, %d moved, %d deleted, %d already stored,"
            " %d not crawled (ignored)",
            self.options.source_name,
            change_set.changes,
            len(work.refetch),
            len(work.created),
            len(work.moved),
            len(work.deleted),
            len(work.already_stored),
            len(work.ignored),
            extra={"spider": self.spider},
        )
        self.frontier.stored_elsewhere(inserted)
        for title, deletion in work.deleted:
            self.stats.inc_value("mediawiki/pages/deleted")
            yield self.deleted_item(title, deletion, url)

    async def sweep(self, plan: SyncPlan) -> None:
        """The fallback: every completed item of the source back to pending, checked by ``lastrevid``."""
        body = await self.api_get(changes.rc_max_age_params(), "the $wgRCMaxAge request")
        try:
            rc_max_age = changes.parse_rc_max_age(body)
        except (ApiError, MalformedResponse):
            rc_max_age = None  # the oldest kept change decides next time
        self.next_checkpoint = SyncCheckpoint(plan.end, rc_max_age)
        source = self.options.source_name
        requeued = await self.in_worker(lambda store: store.recrawl(source, None))
        self.stats.inc_value("recrawl/requeued", requeued)
        logger.warning(
            "Sync of %s: %s (%d stored pages checked by lastrevid)", source, plan.message, requeued,
            extra={"spider": self.spider},
        )  # fmt: skip
        self.frontier.stored_elsewhere(0)

    async def read_window(self, start: datetime, end: datetime) -> tuple[list[Change], str]:
        """Every change of ``[start, end]`` in the crawled namespaces, continuation followed; and the
        first request's URL."""
        window: list[Change] = []
        continuation: dict[str, str] | None = None
        first_url = ""
        while True:
            params = changes.recentchanges_params(
                start=start,
                end=end,
                namespaces=self.options.namespaces,
                continuation=continuation,
                maxlag=self.options.maxlag,
            )
            first_url = first_url or api.api_url(self.options.api_url, params)
            body = await self.api_get(params, "the recent-changes listing")
            self.stats.inc_value("sync/listing_requests")
            try:
                page = changes.parse_changes(body)
            except (ApiError, MalformedResponse) as exc:
                self.fail("the recent-changes listing", exc)
            window.extend(page.changes)
            if page.continuation is None:
                return window, first_url
            continuation = page.continuation

    def requeue(self, store: WorkItemStore, work: FetchPlan) -> tuple[int, int]:
        """In the frontier's worker thread: enqueue the titles not in the frontier yet (new pages at
        ``max_depth``, a move's new title at its old title's depth), then put every title to fetch
        back to pending, never attempted and without ``completed_at`` (no ``prop=info``: fetched in full)."""
        depth = {title: self.options.max_depth for title in work.created}
        for old, new in work.moved.items():
            row = store.get(self.dedupe_key(old))
            depth[new] = int(row["depth"]) if row else self.options.max_depth
        new_items: list[NewItem] = []
        for title, level in depth.items():
            item = self.frontier.new_item(self.spider.title_request(title, depth=level))
            if item is not None:
                new_items.append(item)
        inserted = store.flush(new_items, [], []) if new_items else 0
        requeued = store.requeue_keys([self.dedupe_key(t) for t in work.titles])
        return inserted, requeued

    def count(self, change_set: ChangeSet, work: FetchPlan, requeued: int) -> None:
        for name, value in (
            ("sync/changes", change_set.changes),
            ("sync/refetch", len(work.refetch)),
            ("sync/created", len(work.created)),
            ("sync/moved", len(work.moved)),
            ("sync/deleted", len(work.deleted)),
            ("sync/already_stored", len(work.already_stored)),
            ("sync/ignored", len(work.ignored)),
            ("recrawl/requeued", requeued),
        ):
            self.stats.inc_value(name, value)

    def deleted_item(self, title: str, deletion: Change, url: str) -> IngestItem:
        return IngestItem(
            source_system="mediawiki",
            source_name=self.options.source_name,
            resource_type="page",
            resource_id=title,
            requested_id=title,
            outcome=DELETED,
            payload=deleted_payload(title, deletion),
            request_uri=url,
            status_code=200,
            content_type="application/json",
            run_id=self.spider.run_id,
            context={"sync": "recentchanges", "api_url": self.options.api_url},
        )

    # -- the checkpoint --
    def spider_closed(self, spider: Any, reason: str) -> Any:
        """Advance the checkpoint if the run completed (in a thread, on a store of its own)."""
        checkpoint = self.next_checkpoint
        if checkpoint is None:
            return None
        if reason != COMPLETED_REASON:
            logger.info(
                "Sync of %s: the run ended with %s, not finished: the checkpoint stays where it was",
                self.options.source_name,
                reason,
                extra={"spider": spider},
            )
            return None
        from holocron_scrapy.frontier.scheduler import state_url_from_settings

        settings = self.crawler.settings
        url, sqlserver = state_url_from_settings(settings), settings.getdict("HOLOCRON_STATE_SQLSERVER")

        def save() -> None:
            store = open_work_item_store(url, sqlserver_config=sqlserver)
            try:
                store.save_checkpoint(self.key, checkpoint.to_json())
            finally:
                store.close()

        d = threads.deferToThread(save)
        d.addCallbacks(
            lambda _: logger.info(
                "Sync of %s: checkpoint advanced to %s",
                self.options.source_name,
                changes.format_timestamp(checkpoint.run_start),
                extra={"spider": spider},
            ),
            lambda failure: logger.error(
                "Sync of %s: could not save the checkpoint (%s); the next run reads the same window again",
                self.options.source_name,
                failure.getErrorMessage(),
                extra={"spider": spider},
            ),
        )
        return d


__all__ = [
    "CHECKPOINT_NAME",
    "ChangesSync",
    "FetchPlan",
    "SyncCheckpoint",
    "deleted_payload",
    "mode_text",
    "newest_revisions",
    "plan_fetch",
    "recrawl_mode",
]
