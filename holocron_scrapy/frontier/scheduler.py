"""A Scrapy scheduler whose queue is the SQL ``work_items`` table.

* Enqueue: new requests are buffered and inserted-if-new in batches (the unique dedupe
  key decides, race-free across processes); known ones count as ``frontier/filtered``.
* Next request: claims a batch of pending items with a lease. Requests marked with
  ``meta["holocron_batch"]`` are merged per batch key by ``spider.build_batch_request``.
* Requests that already own leased items (continuations, retries) stay in memory.
* Acks and failures (see :mod:`holocron_scrapy.frontier.acks`) are flushed in batches, after
  the enqueues of the same period, so a kill never loses discovered work.
* A crawl works on its own source only (``HOLOCRON_SOURCE_SYSTEM`` + ``HOLOCRON_SOURCE_NAME``, set
  by the holocron spiders): claims, counts, reclaims and progress cover that source's items, and
  requests without a resource in their meta are filed under it. Without both settings (a foreign
  spider) the scheduler works on every item.
* A lost lease is not an attempt (see :mod:`holocron_scrapy.frontier.store`); an item lost twice
  is claimed only when nothing else is in flight, and nothing else is claimed until its request
  has been fetched and parsed (:meth:`FrontierScheduler.fetched`, called by the ack middleware).

Settings: ``HOLOCRON_STATE_URL`` (else ``JOBDIR``/frontier.sqlite3, else the default; a ``JOBDIR`` set
at a higher priority than ``HOLOCRON_STATE_URL``, e.g. ``-s JOBDIR`` against the config file's
``state.url``, wins), ``HOLOCRON_STATE_SQLSERVER``, ``HOLOCRON_SOURCE_SYSTEM``, ``HOLOCRON_SOURCE_NAME``,
``HOLOCRON_FRONTIER_ORDER`` (bfs|dfs), ``HOLOCRON_FRONTIER_CLAIM_SIZE``,
``HOLOCRON_FRONTIER_LEASE_SECONDS``, ``HOLOCRON_FRONTIER_MAX_ATTEMPTS``,
``HOLOCRON_FRONTIER_RETRY_BACKOFF``, ``HOLOCRON_FRONTIER_FLUSH_INTERVAL``,
``HOLOCRON_FRONTIER_PROGRESS_INTERVAL``, ``HOLOCRON_FRONTIER_FILL_BATCHES``,
``HOLOCRON_FRONTIER_SOLO_AFTER_LOSSES``, ``HOLOCRON_FRONTIER_QUARANTINE_AFTER``,
``HOLOCRON_RECRAWL_AFTER``, ``HOLOCRON_FULL_REFRESH``, ``HOLOCRON_RUN_ID``, ``DUPEFILTER_CLASS``.

Stats: ``frontier/enqueued``, ``frontier/filtered``, ``frontier/unserializable``, ``frontier/claimed``,
``frontier/completed`` (items acknowledged), ``frontier/failed`` (items that ended failed for good
in this run: not retryable, or out of attempts), ``frontier/retried`` (items put back for another
attempt after a retryable failure), ``frontier/released``, ``frontier/reclaimed`` (lost leases put
back), ``frontier/level_waits``, ``frontier/wakeups``, ``frontier/solo_claims`` (items lost twice,
claimed alone), ``recrawl/requeued``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from itemadapter import ItemAdapter
from scrapy import Request, Spider, signals
from scrapy.core.scheduler import BaseScheduler
from scrapy.crawler import Crawler
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.misc import build_from_crawler, load_object
from twisted.internet import task

from holocron_scrapy import defaults
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.acks import IDS_META, item_ids
from holocron_scrapy.frontier.dupefilter import FrontierDupeFilter
from holocron_scrapy.frontier.keys import Resource, request_depth
from holocron_scrapy.frontier.serialization import (
    SerializationError,
    request_from_row,
    request_to_row,
)
from holocron_scrapy.frontier.store import (
    COMPLETED,
    PENDING,
    FailedItem,
    NewItem,
    Scope,
    WorkItemStore,
    local_owner_alive,
    make_owner,
    open_work_item_store,
    ts,
)
from holocron_scrapy.items import FAILED as FAILED_OUTCOME

logger = logging.getLogger(__name__)

BATCH_META = "holocron_batch"
BATCH_SIZE_META = "holocron_batch_size"
ATTEMPT_META = "holocron_attempt"
WORK_ITEM_META = "holocron_work_item_id"
#: ``meta[STATUS_META] = "completed"`` records a resource as already known (e.g. a redirect target).
STATUS_META = "holocron_status"
#: Set on a claimed request whose item was completed before (a re-crawl): the time it completed.
RECRAWL_META = "holocron_completed_at"
_ENQUEUE_FLUSH_SIZE = 1000


def state_url_from_settings(settings: Any) -> str:
    """``HOLOCRON_STATE_URL`` if set, else a SQLite file inside ``JOBDIR``, else the default.

    A ``JOBDIR`` set at a higher priority than ``HOLOCRON_STATE_URL`` wins: ``-s JOBDIR=crawls/run1``
    (``cmdline``) over the config file's ``state.url`` (``spider``), while an explicit
    ``-s HOLOCRON_STATE_URL`` (``cmdline`` too) still wins over ``JOBDIR``. For a plain dict
    (no priorities) ``HOLOCRON_STATE_URL`` wins."""
    url = settings.get("HOLOCRON_STATE_URL")
    jobdir = settings.get("JOBDIR")
    jobdir_url = "sqlite:///" + str(Path(jobdir, defaults.JOBDIR_STATE_FILE).resolve()) if jobdir else None
    if url and jobdir_url:
        priority = getattr(settings, "getpriority", None)
        if priority is not None and (priority("JOBDIR") or 0) > (priority("HOLOCRON_STATE_URL") or 0):
            return jobdir_url
        return url
    return url or jobdir_url or defaults.STATE_URL


def scope_from_settings(settings: Any) -> Scope | None:
    """The crawl's source (``HOLOCRON_SOURCE_SYSTEM`` / ``HOLOCRON_SOURCE_NAME``), or None when either is unset."""
    system, name = settings.get("HOLOCRON_SOURCE_SYSTEM"), settings.get("HOLOCRON_SOURCE_NAME")
    return Scope(str(system), str(name)) if system and name else None


class FrontierScheduler(BaseScheduler):
    def __init__(
        self,
        store_factory: Callable[[], WorkItemStore],
        dupefilter: FrontierDupeFilter,
        *,
        stats: Any = None,
        order: str = defaults.FRONTIER_ORDER,
        claim_size: int = defaults.FRONTIER_CLAIM_SIZE,
        lease_seconds: float = defaults.FRONTIER_LEASE_SECONDS,
        flush_interval: float = defaults.FRONTIER_FLUSH_INTERVAL,
        progress_interval: float = defaults.FRONTIER_PROGRESS_INTERVAL,
        fill_batches: bool = defaults.FRONTIER_FILL_BATCHES,
        run_id: str | None = None,
        crawler: Crawler | None = None,
        recrawl_source: str | None = None,
        recrawl_after: float | None = None,
        full_refresh: bool = False,
        scope: Scope | None = None,
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
        self.progress_interval = progress_interval
        self.fill_batches = fill_batches
        self.run_id = run_id
        self.crawler = crawler
        self.recrawl_source = recrawl_source
        self.recrawl_after = recrawl_after
        self.full_refresh = full_refresh
        self.scope = scope
        self.owner = make_owner()
        self.store: WorkItemStore | None = None
        self.spider: Spider | None = None
        self.owned: deque[Request] = deque()  # requests handing on ids we already lease
        self.ready: deque[Request] = deque()  # claimed, not yet handed to the engine
        self.leased: dict[int, int] = {}  # seq -> depth of every item this worker leases
        self.attempts: dict[int, int] = {}  # seq -> its attempt number, of every leased item
        self.suspects: set[int] = set()  # leased items whose lease was lost before (claimed alone)
        self._new: list[NewItem] = []
        self._completed: list[int] = []
        self._failed: list[FailedItem] = []
        self._loop: task.LoopingCall | None = None
        self._last_renew = self._last_reclaim = self._last_progress = time.monotonic()
        self._progress_base: tuple[float, int] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FrontierScheduler:
        s = crawler.settings
        url = state_url_from_settings(s)
        sqlserver = s.getdict("HOLOCRON_STATE_SQLSERVER")
        max_attempts = s.getint("HOLOCRON_FRONTIER_MAX_ATTEMPTS", defaults.FRONTIER_MAX_ATTEMPTS)
        backoff = s.getfloat("HOLOCRON_FRONTIER_RETRY_BACKOFF", defaults.FRONTIER_RETRY_BACKOFF)
        solo_after = s.getint("HOLOCRON_FRONTIER_SOLO_AFTER_LOSSES", defaults.FRONTIER_SOLO_AFTER_LOSSES)
        quarantine_after = s.getint("HOLOCRON_FRONTIER_QUARANTINE_AFTER", defaults.FRONTIER_QUARANTINE_AFTER)
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
            order=s.get("HOLOCRON_FRONTIER_ORDER", defaults.FRONTIER_ORDER),
            claim_size=s.getint("HOLOCRON_FRONTIER_CLAIM_SIZE", defaults.FRONTIER_CLAIM_SIZE),
            lease_seconds=s.getfloat("HOLOCRON_FRONTIER_LEASE_SECONDS", defaults.FRONTIER_LEASE_SECONDS),
            flush_interval=s.getfloat("HOLOCRON_FRONTIER_FLUSH_INTERVAL", defaults.FRONTIER_FLUSH_INTERVAL),
            progress_interval=s.getfloat("HOLOCRON_FRONTIER_PROGRESS_INTERVAL", defaults.FRONTIER_PROGRESS_INTERVAL),
            fill_batches=s.getbool("HOLOCRON_FRONTIER_FILL_BATCHES", defaults.FRONTIER_FILL_BATCHES),
            run_id=s.get("HOLOCRON_RUN_ID"),
            crawler=crawler,
            recrawl_source=s.get("HOLOCRON_SOURCE_NAME"),
            recrawl_after=s.getfloat("HOLOCRON_RECRAWL_AFTER") if s.get("HOLOCRON_RECRAWL_AFTER") is not None else None,
            full_refresh=s.getbool("HOLOCRON_FULL_REFRESH"),
            scope=scope_from_settings(s),
        )
        crawler.holocron_frontier = scheduler  # found by the ack middleware
        crawler.signals.connect(scheduler._item_done, signal=signals.item_scraped)
        crawler.signals.connect(scheduler._item_done, signal=signals.item_dropped)
        crawler.signals.connect(scheduler._item_error, signal=signals.item_error)
        crawler.signals.connect(scheduler._spider_idle, signal=signals.spider_idle)
        return scheduler

    # -- lifecycle ---------------------------------------------------------------------
    def open(self, spider: Spider) -> None:
        self.spider = spider
        self.store = self.store_factory()
        self._reclaim_dead_local_owners()
        self._requeue_stale()
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

    def _requeue_stale(self) -> None:
        """Incremental re-crawl: completed items older than ``recrawl_after`` (all of them with
        ``full_refresh``) of this run's source go back to pending."""
        assert self.store is not None
        if not self.recrawl_source or (self.recrawl_after is None and not self.full_refresh):
            return
        older = None if self.full_refresh else self.recrawl_after
        count = self.store.recrawl(self.recrawl_source, older)
        self._stat("recrawl/requeued", count)
        if count:
            what = "all completed items" if self.full_refresh else f"items completed over {older:.0f}s ago"
            logger.info("Frontier: re-crawling %d %s of %s", count, what, self.recrawl_source)

    def close(self, reason: str) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.store is None:
            return
        self.flush()
        unsent = [seq for req in self.ready for seq in req.meta.get(IDS_META, ())]
        self.store.release(unsent)
        # Whatever we still lease was in flight when the crawl stopped: give it back.
        self.store.release_leases(self.owner)
        self._stat("frontier/released", len(unsent))
        self.ready.clear()
        self.owned.clear()
        self.df.close(reason)
        self.store.close()
        self.store = None

    def has_pending_requests(self) -> bool:
        if self.owned or self.ready or self._new:
            return True
        assert self.store is not None
        return self.store.outstanding(self.owner, self.scope)

    # -- enqueue -----------------------------------------------------------------------
    def enqueue_request(self, request: Request) -> bool:
        if request.meta.get(IDS_META):
            self.owned.append(request)  # continuation or retry of items we lease
            return True
        resource = self.df.request_resource(request)
        if self.scope is not None and resource.source_system == "request":
            # no resource in its meta: the request belongs to this crawl's source
            resource = Resource(
                self.scope.source_system, self.scope.source_name, resource.resource_type, resource.resource_id
            )
        key = resource.dedupe_key
        if request.dont_filter:
            key = f"{key}#{uuid.uuid4().hex}"
        elif self.df.seen_key(key):
            self.df.log(request, self.spider)
            self._stat("frontier/filtered")
            return False
        try:
            row = request_to_row(request, self.spider)
        except (SerializationError, ValueError) as exc:  # ValueError: Request.to_dict (callback not on the spider)
            logger.error("Cannot store %s in the frontier: %s", request, exc, extra={"spider": self.spider})
            self._stat("frontier/unserializable")
            return False
        depth = request_depth(request)
        priority = request.priority + (-depth if self.order == "bfs" else depth)
        info = request.meta.get("holocron") or {}
        status = request.meta.get(STATUS_META, PENDING)
        if status not in (PENDING, COMPLETED):
            status = PENDING
        self._new.append(
            NewItem(
                dedupe_key=key,
                source_system=resource.source_system,
                source_name=resource.source_name,
                resource_type=resource.resource_type,
                resource_id=resource.resource_id,
                priority=priority,
                depth=depth,
                run_id=self.run_id,
                discovered_from=info.get("discovered_from"),
                status=status,
                **row,
            )
        )
        if len(self._new) >= _ENQUEUE_FLUSH_SIZE:
            self.flush()
        return True

    # -- dequeue -----------------------------------------------------------------------
    def next_request(self) -> Request | None:
        if self.owned:
            return self.owned.popleft()
        if not self.ready:
            self._refill()
        if self.ready:
            return self.ready.popleft()
        return None

    def _batches(self) -> bool:
        return callable(getattr(self.spider, "build_batch_request", None))

    def _refill(self) -> None:
        assert self.store is not None
        self.flush()
        if self.suspects:
            return  # an item lost before is in flight: it goes alone
        if self.fill_batches and self._batches() and (self.leased or getattr(self.spider, "frontier_hold", False)):
            # Requests in flight (or start requests) may still add work: don't send a half-empty batch yet.
            if self.store.ready_count(self.claim_size, self.scope) < self.claim_size:
                return
        alone = not (self.leased or self.ready or self.owned)
        rows = self.store.claim(self.owner, self.claim_size, self.lease_seconds, scope=self.scope, alone=alone)
        if rows and self.order == "bfs":
            rows = self._level_gate(rows)
        if not rows:
            return
        self._stat("frontier/claimed", len(rows))
        singles: list[Request] = []
        batches: dict[str, list[Request]] = {}
        for row in rows:
            try:
                request = request_from_row(row, self.spider)
            except (SerializationError, ValueError, KeyError) as exc:
                self._failed.append(FailedItem(row["seq"], f"cannot rebuild request: {exc}", retryable=False))
                continue
            self.leased[row["seq"]] = row["depth"]
            self.attempts[row["seq"]] = row["attempt"]
            if (row.get("lease_losses") or 0) >= self.store.solo_after:
                self.suspects.add(row["seq"])
                self._stat("frontier/solo_claims")
            request.meta[IDS_META] = [row["seq"]]
            request.meta[ATTEMPT_META] = row["attempt"]
            request.meta[WORK_ITEM_META] = row["work_item_id"]
            if row.get("completed_at"):
                done = row["completed_at"]
                request.meta[RECRAWL_META] = ts(done) if isinstance(done, datetime) else str(done)
            batch_key = request.meta.get(BATCH_META)
            if batch_key and self._batches():
                batches.setdefault(batch_key, []).append(request)
            else:
                singles.append(request)
        for group in batches.values():
            size = max(1, int(group[0].meta.get(BATCH_SIZE_META) or len(group)))
            for start in range(0, len(group), size):
                chunk = group[start : start + size]
                merged = self.spider.build_batch_request(chunk)
                merged.meta[IDS_META] = [seq for r in chunk for seq in r.meta[IDS_META]]
                self.ready.append(merged)
        self.ready.extend(singles)

    def _level_gate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Breadth-first means level by level: while items of depth d are in flight (here or
        in another worker) they may still discover depth d+1, so nothing deeper than d is
        sent; claimed rows beyond the gate are given back at once."""
        assert self.store is not None
        depths = list(self.leased.values())
        others = self.store.min_inflight_depth(self.owner, self.scope)
        if others is not None:
            depths.append(others)
        if not depths:
            return rows
        gate = min(depths)
        keep = [r for r in rows if r["depth"] <= gate]
        if len(keep) < len(rows):
            self.store.release([r["seq"] for r in rows if r["depth"] > gate])
            self._stat("frontier/level_waits")
        return keep

    def fetched(self, seqs: list[int]) -> None:
        """The callback of a request holding these items has finished: an item claimed alone is
        no longer at risk of being the one that kills its worker, and others may join it."""
        done = [seq for seq in seqs if seq in self.suspects]
        if done and self.store is not None:
            self.suspects.difference_update(done)
            self.store.end_solo(done)

    def _settle(self, seq: int) -> int | None:
        """Forget a leased item; returns its attempt number (None if it was not leased)."""
        if self.leased.pop(seq, None) is None:
            return None
        self.suspects.discard(seq)
        return self.attempts.pop(seq, 0)

    # -- acknowledgements --------------------------------------------------------------
    def ack(self, seqs: list[int]) -> None:
        """Mark items completed (buffered; flushed after the enqueues of the same period)."""
        for seq in seqs:
            if self._settle(seq) is not None:
                self._completed.append(seq)
        self._stat("frontier/completed", len(seqs))

    def fail(self, seqs: list[int], error: str, *, retryable: bool = True) -> None:
        """Record failed attempts: ``frontier/failed`` counts the items that end failed for good
        (not retryable, or out of attempts), ``frontier/retried`` those put back for another try."""
        max_attempts = self.store.max_attempts if self.store is not None else defaults.FRONTIER_MAX_ATTEMPTS
        final = retried = 0
        for seq in seqs:
            attempt = self._settle(seq)
            if attempt is None:
                continue
            self._failed.append(FailedItem(seq, error, retryable))
            if retryable and attempt < max_attempts:
                retried += 1
            else:
                final += 1
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
        """The engine is idle: ids we still lease have no request left to settle them."""
        in_memory = {seq for req in (*self.ready, *self.owned) for seq in req.meta.get(IDS_META, ())}
        orphans = sorted(set(self.leased) - in_memory)
        if orphans:
            logger.warning("Frontier: %d leased items finished without an outcome; retrying them", len(orphans))
            self.fail(orphans, "request finished without storing an outcome", retryable=True)
        self.flush()
        if self.store is not None:
            # A worker that died elsewhere left leases that have expired: they are work, not done.
            self._reclaim_leases(dead_local_owners=False)
        if orphans or (self.store is not None and self.store.outstanding(self.owner, self.scope)):
            raise DontCloseSpider

    # -- housekeeping ------------------------------------------------------------------
    def flush(self) -> None:
        """Write buffered enqueues, then acks and failures, in one transaction."""
        if self.store is None or not (self._new or self._completed or self._failed):
            return
        new, completed, failed = self._new, self._completed, self._failed
        self._new, self._completed, self._failed = [], [], []
        inserted = self.store.flush(new, completed, failed)
        self._stat("frontier/enqueued", inserted)
        self._stat("frontier/filtered", len(new) - inserted)

    def _tick(self) -> None:
        try:
            self.flush()
            self._wake_if_idle()
            now = time.monotonic()
            if now - self._last_renew >= self.lease_seconds / 3:
                self._last_renew = now
                self.store.renew(self.owner, self.lease_seconds)
            if now - self._last_reclaim >= min(30.0, self.lease_seconds / 2):
                self._last_reclaim = now
                self._reclaim_leases(dead_local_owners=True)
            if self.progress_interval > 0 and now - self._last_progress >= self.progress_interval:
                self._last_progress = now
                self.log_progress()
        except Exception:
            logger.exception("Frontier housekeeping failed; will retry", extra={"spider": self.spider})

    def _wake_if_idle(self) -> None:
        """A worker with nothing in flight only asks for work on the engine's 5 s heartbeat;
        with a shared frontier, other workers' discoveries should not wait that long. When we
        hold nothing and the store has claimable work, claim it and hand the engine a request
        through :meth:`ExecutionEngine.crawl`, which also wakes it."""
        engine = getattr(self.crawler, "engine", None)
        if engine is None or engine.spider is None or not engine.running or engine.paused:
            return
        if getattr(getattr(engine, "_slot", None), "closing", None) is not None:
            return  # closing (CloseSpider, Ctrl-C): claiming now would only be given back
        if self.ready or self.owned or self.leased or self.store is None or not self.store.ready_count(1, self.scope):
            return
        self._refill()
        if self.ready:
            self._stat("frontier/wakeups")
            engine.crawl(self.ready.popleft())  # holds leased ids, so it goes to ``owned``

    def _reclaim_leases(self, *, dead_local_owners: bool) -> None:
        """Give back to pending the expired leases (of workers dead anywhere) and, with
        *dead_local_owners*, those of crashed processes on this host."""
        assert self.store is not None
        reclaimed = self.store.reclaim(scope=self.scope)
        self._stat("frontier/reclaimed", reclaimed)
        if dead_local_owners:
            reclaimed += self._reclaim_dead_local_owners()
        if reclaimed:
            logger.info("Frontier: reclaimed %d items from expired leases", reclaimed)

    def _reclaim_dead_local_owners(self) -> int:
        """Reclaim at once the leases of crashed processes on this host (pid not running)."""
        assert self.store is not None
        dead = [
            owner
            for owner in self.store.lease_owners(self.scope)
            if owner != self.owner and local_owner_alive(owner) is False
        ]
        count = self.store.reclaim(dead, scope=self.scope) if dead else 0
        self._stat("frontier/reclaimed", count)
        return count

    def log_progress(self) -> None:
        assert self.store is not None
        totals = {"pending": 0, "in_progress": 0, "completed": 0, "failed": 0}
        counts = self.store.counts()
        if self.scope is not None:
            counts = {self.scope.source_name: counts.get(self.scope.source_name, {})}
        for per_status in counts.values():
            for status, count in per_status.items():
                totals[status] += count
        now = time.monotonic()
        if self._progress_base is None:
            self._progress_base = (now, totals["completed"])
        start, done0 = self._progress_base
        minutes = max((now - start) / 60, 1e-9)
        rate = (totals["completed"] - done0) / minutes
        left = totals["pending"] + totals["in_progress"]
        eta = f"{left / rate:.1f} min" if rate > 0 else "unknown"
        logger.info(
            "Frontier progress: done=%d pending=%d in_progress=%d failed=%d | %.1f pages/min | ETA %s",
            totals["completed"],
            totals["pending"],
            totals["in_progress"],
            totals["failed"],
            rate,
            eta,
            extra={"spider": self.spider},
        )

    def _stat(self, key: str, count: int = 1) -> None:
        if self.stats is not None and count:
            self.stats.inc_value(key, count)
