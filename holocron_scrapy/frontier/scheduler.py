"""A Scrapy scheduler whose queue is the SQL ``work_items`` table.

* Enqueue: new requests are buffered and inserted-if-new in batches (the unique dedupe
  key decides, race-free across processes); known ones count as ``frontier/filtered``.
* Next request: hands out a request claimed before; claims a batch of pending items with a lease
  when none is ready. A spider that batches (:class:`~holocron_scrapy.frontier.contract.BatchingSpider`)
  gets the claimed requests of one ``Work.batch_key`` merged by its ``build_batch_request``.
* Spiders reach it through :mod:`holocron_scrapy.frontier.contract` only: the :class:`Work` of each
  request, and ``mark_known`` / ``ack`` / ``fail``.
* No database I/O on the reactor thread: ``enqueue_request``, ``next_request`` and the acks touch
  memory only. A background loop (:meth:`FrontierScheduler._pump`) hands the buffered writes and
  the claims to the store's worker thread (:mod:`holocron_scrapy.frontier.executor`), one
  :class:`~holocron_scrapy.frontier.jobs.Job` at a time, and wakes the engine when claimed
  requests arrive.
* While the state database cannot be reached, requests already claimed go on, new claims wait and
  acks stay buffered (:mod:`holocron_scrapy.db.outage`: one log line when it goes, one when it
  is back). After ``HOLOCRON_DB_OUTAGE_LIMIT`` seconds the crawl stops with the reason
  ``fatal_frontier_unreachable`` (exit code 1); what was not acknowledged stays leased and goes
  back to pending on the next run.
* Requests that already own leased items (continuations, retries) stay in memory. So do requests
  the store cannot hold (a meta value JSON cannot represent, a callback that is not a spider
  method), as Scrapy's own scheduler keeps what its disk queue cannot take: crawled by this worker,
  not shared and not resumed after a stop (``frontier/unserializable``, one warning).
* As in Scrapy, a request is not fetched again for a callback's exception, nor when it ends with
  no outcome (a download error and no errback, a request a downloader middleware dropped): its
  items fail for good, with the reason (see :mod:`holocron_scrapy.frontier.acks`).
* Acks and failures (see :mod:`holocron_scrapy.frontier.acks`) are flushed in batches, after
  the enqueues of the same period, so a kill never loses discovered work.
* A crawl works on its own source only (``HOLOCRON_SOURCE_SYSTEM`` + ``HOLOCRON_SOURCE_NAME``, set
  by the holocron spiders): claims, counts and reclaims cover that source's items (and the progress line
  of :mod:`holocron_scrapy.extensions.progress`), and
  requests without a resource in their meta are filed under it. Without both settings (a foreign
  spider) the scheduler works on every item.
* A lost lease is not an attempt (see :mod:`holocron_scrapy.frontier.store`); an item lost twice
  is claimed only when nothing else is in flight, and nothing else is claimed until its request
  has been fetched and parsed (:meth:`FrontierScheduler.fetched`, called by the ack middleware).

What it delegates: the work items it leases and the writes of their outcomes to
:mod:`holocron_scrapy.frontier.leases`, claimed rows to requests and batches to
:mod:`holocron_scrapy.frontier.claims`, each job's database work to :mod:`holocron_scrapy.frontier.jobs`
(in the store's thread), the progress line to :mod:`holocron_scrapy.extensions.progress`. What stays
here is one state machine, about 700 lines of code: the engine's calls (enqueue, next request, idle,
close) and the background loop that writes and claims share every buffer, and the invariant that no
write is lost or made twice (a job's unwritten part goes back in front of the buffers; an "anything
left?" answer counts only for the writes it saw) is kept by keeping them in one class.

Settings: ``HOLOCRON_STATE_URL`` (else ``JOBDIR``/frontier.sqlite3, else the default; a ``JOBDIR`` set
at a higher priority than ``HOLOCRON_STATE_URL``, e.g. ``-s JOBDIR`` against the config file's
``state.url``, wins), ``HOLOCRON_STATE_SQLSERVER``, ``HOLOCRON_SOURCE_SYSTEM``, ``HOLOCRON_SOURCE_NAME``,
``HOLOCRON_FRONTIER_ORDER`` (bfs|dfs), ``HOLOCRON_FRONTIER_CLAIM_SIZE``,
``HOLOCRON_FRONTIER_LEASE_SECONDS``, ``HOLOCRON_FRONTIER_MAX_ATTEMPTS``,
``HOLOCRON_FRONTIER_RETRY_BACKOFF``, ``HOLOCRON_FRONTIER_FLUSH_INTERVAL``,
``HOLOCRON_FRONTIER_FILL_BATCHES``,
``HOLOCRON_FRONTIER_SOLO_AFTER_LOSSES``, ``HOLOCRON_FRONTIER_QUARANTINE_AFTER``,
``HOLOCRON_DB_OUTAGE_LIMIT``,
``HOLOCRON_RECRAWL_AFTER``, ``HOLOCRON_FULL_REFRESH``, ``HOLOCRON_RUN_ID``, ``DUPEFILTER_CLASS``.

Stats: ``frontier/enqueued``, ``frontier/filtered``, ``frontier/unserializable``, ``frontier/claimed``,
``frontier/completed`` (items acknowledged), ``frontier/failed`` (items that ended failed for good
in this run: not retryable, or out of attempts), ``frontier/retried`` (items put back for another
attempt after a retryable failure), ``frontier/released``, ``frontier/reclaimed`` (lost leases put
back), ``frontier/level_waits``, ``frontier/wakeups``, ``frontier/solo_claims`` (items lost twice,
claimed alone), ``frontier/outages``, ``frontier/outage_seconds``, ``recrawl/requeued``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy import Request, Spider, signals
from scrapy.core.scheduler import BaseScheduler
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.misc import build_from_crawler, load_object
from twisted.internet import defer, task

from holocron_scrapy import defaults
from holocron_scrapy.db.outage import OutageWatch, outage_limit
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.acks import item_ids
from holocron_scrapy.frontier.claims import claimed_requests
from holocron_scrapy.frontier.contract import (
    CRAWLER_ATTRIBUTE,
    BatchingSpider,
    ids_of,
    work_of,
)
from holocron_scrapy.frontier.dupefilter import FrontierDupeFilter
from holocron_scrapy.frontier.executor import StoreExecutor, ThreadExecutor
from holocron_scrapy.frontier.jobs import ClaimWant, Job, JobResult, run_job
from holocron_scrapy.frontier.keys import Resource
from holocron_scrapy.frontier.leases import Leases
from holocron_scrapy.frontier.serialization import (
    SerializationError,
    request_to_row,
)
from holocron_scrapy.frontier.store import (
    COMPLETED,
    PENDING,
    NewItem,
    Scope,
    WorkItemStore,
    make_owner,
    open_work_item_store,
)
from holocron_scrapy.items import FAILED as FAILED_OUTCOME
from holocron_scrapy.reactor import get_reactor

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

_ENQUEUE_FLUSH_SIZE = 1000
#: The close reason of a crawl that gave up on its state database (a ``fatal_`` reason: exit status 1).
OUTAGE_CLOSE_REASON = "fatal_frontier_unreachable"
#: The error of a leased item whose request ended without an outcome (no callback output, no errback's fail).
ORPHAN_ERROR = "request finished without storing an outcome (a download error without errback, or dropped)"


def state_url_from_settings(settings: Any) -> str:
    """The crawl's state URL, by the one rule of :func:`holocron_scrapy.db.targets.state_url_from_settings`
    (``JOBDIR`` set at a higher priority than ``HOLOCRON_STATE_URL`` wins, else the URL, else the default)."""
    from holocron_scrapy.db.targets import state_url_from_settings as resolve

    return resolve(settings)


def scheduler_of(crawler: Crawler | None) -> FrontierScheduler | None:
    """The crawl's frontier scheduler, for the components that work with its store (the seed intake,
    the generators, the changes sync, the shutdown); None when the crawl runs another scheduler.
    Spiders use :func:`holocron_scrapy.frontier.contract.frontier_of` instead."""
    scheduler = getattr(crawler, CRAWLER_ATTRIBUTE, None) if crawler is not None else None
    return scheduler if isinstance(scheduler, FrontierScheduler) else None


def scope_from_settings(settings: Any) -> Scope | None:
    """The crawl's source (``HOLOCRON_SOURCE_SYSTEM`` / ``HOLOCRON_SOURCE_NAME``), or None when either is unset."""
    system, name = settings.get("HOLOCRON_SOURCE_SYSTEM"), settings.get("HOLOCRON_SOURCE_NAME")
    return Scope(str(system), str(name)) if system and name else None


@dataclass
class _Wants:
    """What the next job should do besides writing the buffers."""

    claim: bool = False
    renew: bool = False
    reclaim_expired: bool = False
    reclaim_dead_local: bool = False
    outstanding: bool = False

    def any(self) -> bool:
        return any(vars(self).values())


#: A failed job is retried after this long (the loop's tick also retries), growing to the maximum.
_RETRY_FIRST, _RETRY_MAX = 0.5, 5.0
#: An "anything left?" answer is trusted this long for closing the spider.
_DRAINED_FRESH = 2.0
#: After a claim that found nothing, ``next_request`` asks again only after a write, or after this long.
_EMPTY_CLAIM_FRESH = 0.5
#: An idle worker asks the store for work another worker added at most this often.
_IDLE_CLAIM_EVERY = 1.0
#: A job running this long counts as an outage (it may never return: a network that drops packets).
_HUNG_AFTER = 30.0
#: ``close`` waits this long for a running job.
_CLOSE_WAIT = 60.0
#: A forced stop waits this long for the final write.
_HAND_BACK_TIMEOUT = 10.0


class FrontierScheduler(BaseScheduler):
    def __init__(
        self,
        store_factory: Callable[[], WorkItemStore],
        dupefilter: FrontierDupeFilter,
        *,
        stats: StatsCollector | None = None,
        order: str = defaults.FRONTIER_ORDER,
        claim_size: int = defaults.FRONTIER_CLAIM_SIZE,
        lease_seconds: float = defaults.FRONTIER_LEASE_SECONDS,
        flush_interval: float = defaults.FRONTIER_FLUSH_INTERVAL,
        fill_batches: bool = defaults.FRONTIER_FILL_BATCHES,
        outage_limit: float = defaults.DB_OUTAGE_LIMIT,
        run_id: str | None = None,
        crawler: Crawler | None = None,
        recrawl_source: str | None = None,
        recrawl_after: float | None = None,
        full_refresh: bool = False,
        scope: Scope | None = None,
        executor: StoreExecutor | None = None,
    ):
        if order not in ("bfs", "dfs"):
            raise ConfigError(f"expected bfs or dfs, got {order!r}", key="HOLOCRON_FRONTIER_ORDER")
        if claim_size < 1:
            raise ConfigError(f"must be at least 1, got {claim_size}", key="HOLOCRON_FRONTIER_CLAIM_SIZE")
        self.store_factory = store_factory
        self.df = dupefilter
        self.stats = stats
        self.order = order
        self.claim_size = claim_size
        self.lease_seconds = lease_seconds
        self.flush_interval = flush_interval
        self.fill_batches = fill_batches
        self.run_id = run_id
        self.crawler = crawler
        self.recrawl_source = recrawl_source
        self.recrawl_after = recrawl_after
        self.full_refresh = full_refresh
        self.scope = scope
        #: Runs every store call; a worker thread unless given (tests pass an InlineExecutor).
        self.executor = executor
        self.outage = OutageWatch(
            outage_limit,
            what="state database",
            waiting="requests already claimed go on, new claims wait and acknowledgements stay buffered",
            stat_prefix="frontier",
            stats=stats,
        )
        self.owner = make_owner()
        self.store: WorkItemStore | None = None
        self.spider: Spider | None = None
        self.owned: deque[Request] = deque()  # requests handing on ids we already lease
        self.ready: deque[Request] = deque()  # claimed, not yet handed to the engine
        #: Requests that cannot be stored (meta holding a live object): kept in memory, as Scrapy's
        #: scheduler keeps what its disk queue cannot take; not shared with other workers nor resumed.
        self.memory: deque[Request] = deque()
        self._unserializable_logged = False
        self.leases = Leases()  # the items this worker leases, and the writes of their outcomes
        self._new: list[NewItem] = []
        self._wants = _Wants()
        self._job: defer.Deferred[JobResult] | None = None  # the job running in the worker thread
        self._job_writes = False  # ... and whether it writes buffered enqueues, acks or failures
        self._job_started = 0.0
        self._gen = 0  # bumped by every buffered write: an "anything left?" answer is only as new as it
        self._drained_at: float | None = None  # when the store last said nothing is left (at _gen)
        self._drained_gen = -1
        self._retry_at = 0.0
        self._retry_delay = _RETRY_FIRST
        self._in_next_request = False
        self._empty_claim: tuple[int, float] = (-1, 0.0)  # (_gen, time) of the last claim that found nothing
        self.idle_claim_every = _IDLE_CLAIM_EVERY
        self._gave_up = False
        self._closing = False
        self._loop: task.LoopingCall | None = None
        self._last_renew = self._last_reclaim = time.monotonic()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FrontierScheduler:
        s = crawler.settings
        if s.get("HOLOCRON_FRONTIER_CLAIM_SIZE") is None:  # the add-on registers every default
            raise ConfigError(
                "the frontier needs its add-on (it registers the defaults):"
                " ADDONS = {'holocron_scrapy.addons.Frontier': 300}",
                key="SCHEDULER",
            )
        url = state_url_from_settings(s)
        sqlserver = s.getdict("HOLOCRON_STATE_SQLSERVER")
        max_attempts = s.getint("HOLOCRON_FRONTIER_MAX_ATTEMPTS")
        backoff = s.getfloat("HOLOCRON_FRONTIER_RETRY_BACKOFF")
        solo_after = s.getint("HOLOCRON_FRONTIER_SOLO_AFTER_LOSSES")
        quarantine_after = s.getint("HOLOCRON_FRONTIER_QUARANTINE_AFTER")
        from holocron_scrapy.db.connection import parse_store_url

        parse_store_url(url, setting="HOLOCRON_STATE_URL")  # fail before the crawl starts

        def factory() -> WorkItemStore:
            return open_work_item_store(
                url,
                sqlserver_config=sqlserver,
                max_attempts=max_attempts,
                retry_backoff=backoff,
                solo_after=solo_after,
                quarantine_after=quarantine_after,
            )

        dupefilter_cls = load_object(s.get("DUPEFILTER_CLASS"))
        dupefilter = build_from_crawler(dupefilter_cls, crawler)
        if not isinstance(dupefilter, FrontierDupeFilter):
            raise ConfigError(
                "the frontier scheduler needs holocron_scrapy.frontier.dupefilter.FrontierDupeFilter"
                f" (or a subclass), got {s.get('DUPEFILTER_CLASS')}",
                key="DUPEFILTER_CLASS",
            )
        scheduler = cls(
            factory,
            dupefilter,
            stats=crawler.stats,
            order=s.get("HOLOCRON_FRONTIER_ORDER"),
            claim_size=s.getint("HOLOCRON_FRONTIER_CLAIM_SIZE"),
            lease_seconds=s.getfloat("HOLOCRON_FRONTIER_LEASE_SECONDS"),
            flush_interval=s.getfloat("HOLOCRON_FRONTIER_FLUSH_INTERVAL"),
            fill_batches=s.getbool("HOLOCRON_FRONTIER_FILL_BATCHES"),
            outage_limit=outage_limit(s),
            run_id=s.get("HOLOCRON_RUN_ID"),
            crawler=crawler,
            recrawl_source=s.get("HOLOCRON_SOURCE_NAME"),
            recrawl_after=s.getfloat("HOLOCRON_RECRAWL_AFTER") if s.get("HOLOCRON_RECRAWL_AFTER") is not None else None,
            full_refresh=s.getbool("HOLOCRON_FULL_REFRESH"),
            scope=scope_from_settings(s),
        )
        # Found by the ack middleware (getattr); Scrapy's Crawler does not declare our attribute.
        setattr(crawler, CRAWLER_ATTRIBUTE, scheduler)  # frontier_of(crawler): the spiders' Frontier
        crawler.signals.connect(scheduler._item_done, signal=signals.item_scraped)
        crawler.signals.connect(scheduler._item_done, signal=signals.item_dropped)
        crawler.signals.connect(scheduler._item_error, signal=signals.item_error)
        crawler.signals.connect(scheduler._spider_idle, signal=signals.spider_idle)
        return scheduler

    # -- lifecycle ---------------------------------------------------------------------
    def open(self, spider: Spider) -> defer.Deferred[None]:
        """Open the store in the worker thread, reclaim the leases of crashed local workers and
        requeue stale items for a re-crawl; the crawl starts when it is done."""
        self.spider = spider
        if self.executor is None:
            self.executor = ThreadExecutor()
        return self.executor.submit(self._open_in_worker).addCallback(self._opened)

    def _open_in_worker(self) -> tuple[WorkItemStore, JobResult, int]:
        store = self.store_factory()
        try:
            result = run_job(store, Job(reclaim_dead_local=True), self.owner, self.scope)
            if result.error is not None:
                raise result.error
            requeued = self._requeue_stale(store)
            check = run_job(store, Job(outstanding=True), self.owner, self.scope)
            if check.error is not None:
                raise check.error
        except BaseException:
            store.close()
            raise
        result.outstanding = check.outstanding
        return store, result, requeued

    def _opened(self, opened: tuple[WorkItemStore, JobResult, int]) -> None:
        self.store, result, requeued = opened
        self._stat("frontier/reclaimed", result.reclaimed)
        self._stat("recrawl/requeued", requeued)
        if requeued:
            what = "all completed items" if self.full_refresh else f"items completed over {self.recrawl_after:.0f}s ago"
            logger.info("Frontier: re-crawling %d %s of %s", requeued, what, self.recrawl_source)
        if not result.outstanding:
            self._drained_at, self._drained_gen = time.monotonic(), self._gen
        self.df.open()
        if self.flush_interval > 0:
            self._loop = task.LoopingCall(self._tick)
            self._loop.start(self.flush_interval, now=False)
        logger.info(
            "Frontier open: %s as %s, %s",
            getattr(self.store, "describe", lambda: "")() or type(self.store).__name__,
            self.owner,
            f"source {self.scope}" if self.scope else "all sources",
        )

    def _requeue_stale(self, store: WorkItemStore) -> int:
        """Incremental re-crawl: completed items older than ``recrawl_after`` (all of them with
        ``full_refresh``) of this run's source go back to pending."""
        if not self.recrawl_source or (self.recrawl_after is None and not self.full_refresh):
            return 0
        return store.recrawl(self.recrawl_source, None if self.full_refresh else self.recrawl_after)

    def close(self, reason: str) -> defer.Deferred[None] | None:
        self._closing = True  # no new job from now on: the final one is built from what is left
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.store is None:
            self._shutdown_executor()
            return None
        return defer.ensureDeferred(self._close(reason))

    async def _close(self, reason: str) -> None:
        deadline = time.monotonic() + _CLOSE_WAIT
        while self._job is not None and time.monotonic() < deadline:
            # let the running job finish (its failures come back to the buffers)
            await _settled(self._job, deadline - time.monotonic())
        if self._job is not None:  # a call that hangs (a network that drops packets): the thread is lost
            logger.error(
                "Frontier: a state database call has not returned for %.0f s; closing without the final"
                " write. Items leased by %s go back to pending on the next run.",
                time.monotonic() - self._job_started,
                self.owner,
                extra={"spider": self.spider},
            )
            self.df.close(reason)
            self.store = None
            if self.executor is not None:
                self.executor.shutdown(wait=False)
            return
        store, executor = self.store, self.executor
        assert store is not None and executor is not None
        unsent = [seq for req in self.ready for seq in ids_of(req)]
        job = self._take_job(release=unsent)
        pending = (len(job.new), len(job.completed), len(job.failed))
        owner = self.owner

        def final() -> tuple[JobResult, int]:
            result = run_job(store, job, owner, self.scope)
            released = 0
            if result.error is None:
                # Whatever we still lease was in flight when the crawl stopped: give it back.
                released = store.release_leases(owner)
            return result, released

        try:
            result, _released = await executor.submit(final)
        except Exception as exc:  # noqa: BLE001 - reported below, like a job's error
            result = JobResult(error=exc)
        if result.error is None:
            self._stat("frontier/enqueued", result.inserted)
            self._stat("frontier/filtered", len(job.new) - result.inserted)
            self._stat("frontier/released", len(unsent))
        else:
            logger.error(
                "Frontier: could not write to the state database at close (%s): %d new items, %d acks and %d"
                " failures are not recorded; their items stay leased by %s and go back to pending on the next"
                " run, which fetches them again",
                result.error,
                *pending,
                owner,
                extra={"spider": self.spider},
            )
        self.ready.clear()
        self.owned.clear()
        self.memory.clear()
        self.df.close(reason)
        try:
            await executor.submit(store.close)
        finally:
            self.store = None
            self._shutdown_executor()

    def _shutdown_executor(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    def hand_back(self, timeout: float = _HAND_BACK_TIMEOUT) -> int:
        """A forced stop (the reactor may not deliver results any more): write the buffers and give
        back every lease of this worker, waiting up to *timeout* seconds. Returns the items given back."""
        store, executor = self.store, self.executor
        if store is None or executor is None:
            return 0
        job = self._take_job()
        owner = self.owner

        def final() -> int:
            result = run_job(store, job, owner, self.scope)
            if result.error is not None:
                raise result.error
            return store.release_leases(owner)

        return executor.call(final, timeout)

    def has_pending_requests(self) -> bool:
        """Memory only: requests at hand, or writes not yet made. Whether the store still holds work
        is answered in :meth:`_spider_idle`."""
        return bool(
            self.owned or self.ready or self.memory or self._new or self.leases.has_writes() or self._job_writes
        )

    # -- enqueue -----------------------------------------------------------------------
    def enqueue_request(self, request: Request) -> bool:
        if ids_of(request):
            self.owned.append(request)  # continuation or retry of items we lease
            return True
        resource, key = self._resource_key(request)
        if not request.dont_filter and self.df.seen_key(key):
            self.df.log(request, self.spider)
            self._stat("frontier/filtered")
            return False
        try:
            item = self.new_item(request, resource, key, strict=True)
        except (SerializationError, ValueError) as exc:
            self._keep_in_memory(request, exc)
            return True
        if item is None:
            return False
        self._buffer(item)
        return True

    def mark_known(self, request: Request) -> None:
        """Record *request*'s resource as fetched already (a redirect's target): a completed work item,
        deduplicated as any other, never downloaded (:class:`~holocron_scrapy.frontier.contract.Frontier`)."""
        resource, key = self._resource_key(request)
        if self.df.seen_key(key):
            return
        item = self.new_item(request, resource, key, status=COMPLETED)
        if item is not None:
            self._buffer(item)

    def _buffer(self, item: NewItem) -> None:
        """Buffer a new item for the next write (at once when the buffer is full)."""
        self._new.append(item)
        self._gen += 1
        if len(self._new) >= _ENQUEUE_FLUSH_SIZE:
            self._pump()

    def _resource_key(self, request: Request) -> tuple[Resource, str]:
        resource = self.df.request_resource(request)
        if self.scope is not None and resource.source_system == "request":
            # no resource in its meta: the request belongs to this crawl's source
            resource = Resource(
                self.scope.source_system, self.scope.source_name, resource.resource_type, resource.resource_id
            )
        key = resource.dedupe_key
        if request.dont_filter:
            key = f"{key}#{uuid.uuid4().hex}"
        return resource, key

    def new_item(
        self,
        request: Request,
        resource: Resource | None = None,
        key: str | None = None,
        *,
        status: str = PENDING,
        strict: bool = False,
    ) -> NewItem | None:
        """The work item *request* is stored as (None, logged and counted, if it cannot be stored;
        *strict*: raise ``SerializationError`` / ``ValueError`` instead). Pure (no I/O): the seed intake
        (:mod:`holocron_scrapy.frontier.intake`) calls it in the store's worker thread."""
        if resource is None or key is None:
            resource, key = self._resource_key(request)
        try:
            row = request_to_row(request, self.spider)
        except (SerializationError, ValueError) as exc:  # ValueError: Request.to_dict (callback not on the spider)
            if strict:
                raise
            logger.error("Cannot store %s in the frontier: %s", request, exc, extra={"spider": self.spider})
            self._stat("frontier/unserializable")
            return None
        work = work_of(request)
        depth = work.depth if work is not None else int(request.meta.get("depth", 0) or 0)
        priority = request.priority + (-depth if self.order == "bfs" else depth)
        return NewItem(
            dedupe_key=key,
            source_system=resource.source_system,
            source_name=resource.source_name,
            resource_type=resource.resource_type,
            resource_id=resource.resource_id,
            priority=priority,
            depth=depth,
            run_id=self.run_id,
            discovered_from=work.discovered_from if work is not None else None,
            status=status,
            **row,
        )

    def _keep_in_memory(self, request: Request, error: Exception) -> None:
        """A request the store cannot hold is crawled from memory (lost if the process dies, like every
        request of Scrapy's own scheduler without ``JOBDIR``)."""
        if not self._unserializable_logged:
            logger.warning(
                "Frontier: cannot store %s (%s); keeping it in memory: it is not shared with other workers"
                " and not resumed after a stop (no more such requests will be logged)",
                request,
                error,
                extra={"spider": self.spider},
            )
            self._unserializable_logged = True
        self._stat("frontier/unserializable")
        self.memory.append(request)

    def stored_elsewhere(self, inserted: int, filtered: int = 0) -> None:
        """Work items were written to the store outside the buffers (by the seed intake, in the worker
        thread): count them, forget any "nothing left" answer, and claim."""
        self._stat("frontier/enqueued", inserted)
        self._stat("frontier/filtered", filtered)
        self._gen += 1
        if not self._closing:
            self._want_claim()

    # -- dequeue -----------------------------------------------------------------------
    def next_request(self) -> Request | None:
        if self.owned:
            return self.owned.popleft()
        if self.memory:
            return self.memory.popleft()
        if not self.ready:
            self._in_next_request = True  # an inline job's requests are returned here, not woken
            try:
                self._want_claim()
            finally:
                self._in_next_request = False
        if self.ready:
            return self.ready.popleft()
        return None

    def _want_claim(self) -> None:
        """Ask the background loop for a claim (the requests arrive in ``ready``, and wake the engine)."""
        if self.leases.suspects:
            return  # an item lost before is in flight: it goes alone
        gen, when = self._empty_claim
        if gen == self._gen and time.monotonic() - when < _EMPTY_CLAIM_FRESH:
            return  # the last claim found nothing and nothing changed since: the tick asks again
        self._wants.claim = True
        self._pump()

    def _claim_want(self) -> ClaimWant:
        hold = (
            self.fill_batches
            and isinstance(self.spider, BatchingSpider)
            and bool(self.leases or self.spider.frontier_hold)
        )
        return ClaimWant(
            limit=self.claim_size,
            lease_seconds=self.lease_seconds,
            alone=not (self.leases or self.ready or self.owned),
            bfs=self.order == "bfs",
            gate_depths=list(self.leases.depths.values()),
            hold_below=hold,
        )

    def _claimed(self, result: JobResult) -> None:
        """Turn claimed rows into requests in ``ready`` (merged into batches where the spider batches)."""
        if result.gated:
            self._stat("frontier/level_waits")
            if not result.gated_released:
                self.leases.release.extend(result.gated)
        rows = result.rows or []
        if not rows:
            return
        self._stat("frontier/claimed", len(rows))
        solo_after = self.store.solo_after if self.store is not None else defaults.FRONTIER_SOLO_AFTER_LOSSES
        claimed = claimed_requests(rows, self.spider, self.leases, solo_after=solo_after)
        if claimed.rejected:
            self._gen += 1
        self._stat("frontier/solo_claims", claimed.solo)
        self.ready.extend(claimed.requests)

    def fetched(self, seqs: list[int]) -> None:
        """The callback of a request holding these items has finished: an item claimed alone is
        no longer at risk of being the one that kills its worker, and others may join it."""
        if self.leases.fetched(seqs):
            self._gen += 1

    # -- acknowledgements --------------------------------------------------------------
    def ack(self, seqs: list[int]) -> None:
        """Mark items completed (buffered; flushed after the enqueues of the same period)."""
        if self.leases.ack(seqs):
            self._gen += 1
        self._stat("frontier/completed", len(seqs))

    def fail(self, seqs: list[int], error: str, *, retryable: bool = True) -> None:
        """Record failed attempts: ``frontier/failed`` counts the items that end failed for good
        (not retryable, or out of attempts), ``frontier/retried`` those put back for another try."""
        max_attempts = self.store.max_attempts if self.store is not None else defaults.FRONTIER_MAX_ATTEMPTS
        final, retried = self.leases.fail(seqs, error, retryable=retryable, max_attempts=max_attempts)
        if final or retried:
            self._gen += 1
        self._stat("frontier/failed", final)
        self._stat("frontier/retried", retried)

    def _item_done(self, item: Any, response: Any = None, spider: Any = None, **kwargs: Any) -> None:
        ids = item_ids(item)
        if not ids:
            return
        adapter = ItemAdapter(item)
        if adapter.get("outcome") == FAILED_OUTCOME:
            self.fail(ids, adapter.get("error_message") or "failed", retryable=bool(adapter.get("retryable")))
        else:
            self.ack(ids)

    def _item_error(
        self, item: Any, response: Any = None, spider: Any = None, failure: Any = None, **kwargs: Any
    ) -> None:
        ids = item_ids(item)
        if ids:
            message = failure.getErrorMessage() if failure is not None else "item pipeline error"
            self.fail(ids, f"pipeline error: {message}", retryable=True)

    def _spider_idle(self, spider: Spider) -> None:
        """The engine is idle: ids we still lease have no request left to settle them. The spider
        closes only once the store has said, after our last write, that nothing of ours is left
        (pending, in backoff, or leased live by another worker); until then this raises
        ``DontCloseSpider`` and the background loop asks (reclaiming expired leases first)."""
        in_memory = {seq for req in (*self.ready, *self.owned) for seq in ids_of(req)}
        orphans = self.leases.orphans(in_memory)
        if orphans:
            # Their request ended with no callback output: a download error without an errback, a request a
            # downloader middleware dropped. Scrapy does not fetch such a request again; neither do we.
            logger.warning("Frontier: %d leased items finished without an outcome; failing them", len(orphans))
            self.fail(orphans, ORPHAN_ERROR, retryable=False)
        if self._gave_up:
            return
        if not orphans and self._drained():
            return
        # A worker that died elsewhere left leases that have expired: they are work, not done.
        self._wants.reclaim_expired = self._wants.outstanding = True
        if not (self.ready or self.owned or self.leases):
            self._wants.claim = True
        self._pump()
        if orphans or not self._drained():
            raise DontCloseSpider

    def _drained(self) -> bool:
        """The store said nothing of ours is left, after our last buffered write, and recently."""
        return (
            self._drained_at is not None
            and self._drained_gen == self._gen
            and time.monotonic() - self._drained_at < _DRAINED_FRESH
            and not (self.ready or self.owned or self.memory)
        )

    # -- the background loop -----------------------------------------------------------
    def flush(self) -> None:
        """Start writing the buffered enqueues, acks and failures (at once with an inline executor)."""
        self._pump(force=True)

    def _tick(self) -> None:
        """Every ``HOLOCRON_FRONTIER_FLUSH_INTERVAL``: write the buffers, renew leases, reclaim dead
        workers' leases, and claim for an idle worker (work another worker added)."""
        now = time.monotonic()
        if self._job is not None and now - self._job_started > _HUNG_AFTER:
            # A call that neither returns nor fails (packets dropped, a lock held elsewhere): an outage too.
            hung = TimeoutError(f"a state database call has not returned for {now - self._job_started:.0f} s")
            if self.outage.failed(hung, spider=self.spider) and not self._gave_up:
                self._give_up()
        if now - self._last_renew >= self.lease_seconds / 3:
            self._last_renew = now
            self._wants.renew = True
        if now - self._last_reclaim >= min(30.0, self.lease_seconds / 2):
            self._last_reclaim = now
            self._wants.reclaim_expired = self._wants.reclaim_dead_local = True
        if not (self.ready or self.owned or self.leases or self.leases.suspects) and self._engine_accepts():
            gen, when = self._empty_claim
            if gen != self._gen or now - when >= self.idle_claim_every:
                self._wants.claim = True  # idle: another worker may have added work
        self._pump()

    def _engine_accepts(self) -> bool:
        """The engine runs and takes requests (not paused, not closing the spider)."""
        try:
            engine = getattr(self.crawler, "engine", None)
        except RuntimeError:  # Scrapy's Crawler.engine before the crawl starts
            return False
        if engine is None or engine.spider is None or not engine.running or engine.paused:
            return False
        return getattr(getattr(engine, "_slot", None), "closing", None) is None

    def _take_job(self, release: list[int] | None = None) -> Job:
        """A job with everything buffered and wanted; the buffers and wants start empty again."""
        wants, self._wants = self._wants, _Wants()
        writes = bool(self._new or self.leases.has_writes())
        # The write that may be the last one also asks whether anything is left: the engine, which waits
        # for it (``has_pending_requests``), then finds the crawl drained at once.
        last = writes and not (self.ready or self.owned or self.leases or self.memory)
        completed, failed, released, end_solo = self.leases.take_writes()
        job = Job(
            new=self._new,
            completed=completed,
            failed=failed,
            release=released + list(release or ()),
            end_solo=end_solo,
            renew=self.lease_seconds if wants.renew else None,
            reclaim_expired=wants.reclaim_expired,
            reclaim_dead_local=wants.reclaim_dead_local,
            claim=self._claim_want() if wants.claim and not self.leases.suspects else None,
            outstanding=wants.outstanding or last,
            gen=self._gen,
        )
        self._new = []
        return job

    def _pump(self, *, force: bool = False) -> None:
        """Start a job if none is running and there is something to do. After a failure, wait
        ``_retry_at`` (unless *force*: the tick retries)."""
        if self._job is not None or self.store is None or self.executor is None or self._gave_up or self._closing:
            return
        leases = self.leases
        if not (self._new or leases.has_writes() or leases.release or leases.end_solo or self._wants.any()):
            return
        if self.outage.down and not force and time.monotonic() < self._retry_at:
            return
        job = self._take_job()
        store, owner, scope = self.store, self.owner, self.scope
        d = self.executor.submit(lambda: run_job(store, job, owner, scope))
        if d.called:  # inline: ran already
            d.addCallback(self._job_done, job)
            return
        self._job, self._job_writes, self._job_started = d, job.writes(), time.monotonic()
        d.addCallback(self._job_done, job)

    def _job_done(self, result: JobResult, job: Job) -> None:
        self._job, self._job_writes = None, False
        if result.flushed:
            self._stat("frontier/enqueued", result.inserted)
            self._stat("frontier/filtered", len(job.new) - result.inserted)
        else:  # not written: back to the front of the buffers, in order
            self._new[:0] = job.new
            self.leases.put_back(completed=job.completed, failed=job.failed)
        if not result.released:
            self.leases.put_back(release=job.release, end_solo=job.end_solo)
        if result.reclaimed:
            self._stat("frontier/reclaimed", result.reclaimed)
            logger.info("Frontier: reclaimed %d items from expired leases", result.reclaimed)
        if result.rows is not None or result.gated:
            self._claimed(result)
        if result.error is not None:
            self._job_failed(result.error, job)
            return
        self.outage.succeeded(spider=self.spider)
        self._retry_delay = _RETRY_FIRST
        if job.claim is not None and not result.rows:
            self._empty_claim = (job.gen, time.monotonic())
        if result.outstanding is False and job.gen == self._gen:
            self._drained_at, self._drained_gen = time.monotonic(), job.gen
        if self.ready and not self._in_next_request:
            self._wake(had_work=bool(self.leases.held() - {s for r in self.ready for s in ids_of(r)}))
        elif self._drained():
            self._poke_engine()  # it may close the spider now
        if len(self._new) >= _ENQUEUE_FLUSH_SIZE or self._wants.any():
            self._pump()
        elif self._job is None and (self.leases.has_writes() or self._new) and not self.has_loop():
            self._pump()

    def has_loop(self) -> bool:
        return self._loop is not None and self._loop.running

    def _job_failed(self, error: BaseException, job: Job) -> None:
        """Keep the wants that were not met for the retry; give up past the outage limit."""
        if job.claim is not None and not job.claim.hold_below:
            self._wants.claim = True
        if job.outstanding:
            self._wants.outstanding = True
        if job.renew is not None:
            self._wants.renew = True
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        if self.outage.failed(error, spider=self.spider):
            self._give_up()

    def _give_up(self) -> None:
        self._gave_up = True
        logger.error(
            "Frontier: the state database has been unreachable for %.0f s (HOLOCRON_DB_OUTAGE_LIMIT=%.0f);"
            " stopping the crawl. Unacknowledged items stay leased by %s and go back to pending on the next run.",
            self.outage.elapsed(),
            self.outage.limit,
            self.owner,
            extra={"spider": self.spider},
        )
        engine = getattr(self.crawler, "engine", None)
        if engine is None:
            return
        from scrapy.utils.defer import deferred_from_coro

        deferred_from_coro(engine.close_spider_async(reason=OUTAGE_CLOSE_REASON)).addErrback(
            lambda f: logger.error("Could not stop the crawl: %s", f.getErrorMessage())
        )

    def _wake(self, *, had_work: bool) -> None:
        """Claimed requests arrived while the engine was not asking: schedule the engine's loop, which
        pulls them with ``next_request`` (not :meth:`ExecutionEngine.crawl`: the requests were
        scheduled once already, and ``request_scheduled`` fires once per request)."""
        if not self._engine_accepts():
            return
        if not had_work:
            self._stat("frontier/wakeups")
        self._poke_engine()

    def _poke_engine(self) -> None:
        """Let an idle engine look again now rather than on its 5 s heartbeat (it may close the spider)."""
        if self._in_next_request or not self._engine_accepts():
            return
        nextcall = getattr(getattr(self.crawler.engine, "_slot", None), "nextcall", None)  # type: ignore[union-attr]
        if nextcall is not None:
            nextcall.schedule()

    def read_counts(self) -> defer.Deferred[dict[str, dict[str, int]]]:
        """The store's counts per source and status, read in the store's worker thread (for the
        progress line, :mod:`holocron_scrapy.extensions.progress`); fails while the store is closed."""
        store, executor = self.store, self.executor
        if store is None or executor is None:
            return defer.fail(RuntimeError("the frontier is not open"))
        return executor.submit(store.counts)

    def _stat(self, key: str, count: int = 1) -> None:
        if self.stats is not None and count:
            self.stats.inc_value(key, count)


async def _settled(d: defer.Deferred[Any], timeout: float) -> None:
    """Wait until *d* has fired (leaving its result to its own callbacks), or *timeout* seconds."""
    reactor = get_reactor()

    waiter: defer.Deferred[None] = defer.Deferred()

    def release(value: Any = None) -> Any:
        if not waiter.called:
            waiter.callback(None)
        return value

    timer = reactor.callLater(timeout, release)
    d.addBoth(release)
    await waiter
    if timer.active():
        timer.cancel()


__all__ = ["FrontierScheduler", "state_url_from_settings", "scope_from_settings"]
