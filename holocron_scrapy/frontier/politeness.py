"""Fleet-wide politeness: a source's delay and concurrency hold for every worker of a frontier together.

Why: each Scrapy process keeps its own per-host slots, so N workers on one frontier sent N times the
rate their source's config promises (three workers, ``concurrency: 1, delay: 0.5``: two requests in
flight and 40 in the busiest 10 s, see /work/shared/NOTES.md), and a ``Retry-After`` slowed only the
worker that received it. Here the state of each politeness key lives in the frontier database
(``frontier_hosts``, ``frontier_host_slots``, schema 0008) and every worker asks it before it sends:

* the politeness key is the request's host (``host[:port]``); a MediaWiki source's requests all go to
  its API host, so that host is its key;
* before a request is sent, :meth:`SharedPoliteness.acquire` takes a slot of its key
  (:meth:`~holocron_scrapy.frontier.store.WorkItemStore.take_slot`: one short transaction on this
  module's own worker thread, never the reactor). When none is free the request waits on a timer until
  the time the store named (the block's end, the key's ``next_allowed_at``, or a slot's expiry capped by
  a short recheck): no busy polling;
* the slot is given back when the download ends (answer, error or cancel); a 429/503 with
  ``Retry-After`` blocks the key for every worker in the same transaction, a 429/5xx without one counts
  towards an exponential backoff block (``HOLOCRON_RETRY_BACKOFF_BASE`` doubled per failure in a row,
  at most ``HOLOCRON_RETRY_BACKOFF_MAX``); any other answer resets that count;
* a MediaWiki ``maxlag`` / ``ratelimited`` answer (HTTP 200, named by its ``MediaWiki-API-Error``
  header) with ``Retry-After`` blocks the key in the transaction that gives the slot back, as a 429
  does: no other worker can take a slot between the two. The retry middleware then calls
  :func:`block_host` too (the same block, counted there; its backoff when there is no ``Retry-After``);
* slots are leases (``HOLOCRON_FRONTIER_POLITENESS_LEASE`` seconds), renewed every third of that while
  held: a killed worker's slot frees itself when its lease expires (at once for a worker of the same
  host, which sees that its pid is gone). A slot whose giving back failed (the state database dropped
  the connection) is given back again before the worker's next take, not held until its lease expires;
* claims leave the items of hosts blocked now pending (:meth:`~holocron_scrapy.frontier.store.WorkItemStore.claim`),
  so a worker takes work it can send.

The figures are the crawl's configured ``DOWNLOAD_DELAY`` and ``CONCURRENT_REQUESTS_PER_DOMAIN`` (a
source's ``delay`` and ``concurrency``; ``DOWNLOAD_SLOTS`` per key when set). AutoThrottle still moves
each process's own slot delay, which can only slow a worker down further: the shared limit uses the
configured delay, never AutoThrottle's. Times are the workers' clocks (UTC): workers on several
machines need synchronised clocks.

``HOLOCRON_FRONTIER_POLITENESS`` (``frontier.politeness`` in the config): ``shared`` (the default, when
the frontier scheduler runs) or ``local`` (each process on its own, as before).

Settings read: ``HOLOCRON_FRONTIER_POLITENESS``, ``HOLOCRON_FRONTIER_POLITENESS_LEASE``, ``SCHEDULER``,
the frontier's store settings (``HOLOCRON_STATE_URL``, ``JOBDIR``, ``HOLOCRON_STATE_SQLSERVER``),
``DOWNLOAD_DELAY``, ``CONCURRENT_REQUESTS_PER_DOMAIN``, ``DOWNLOAD_SLOTS``, ``HOLOCRON_RETRY_BACKOFF_BASE``,
``HOLOCRON_RETRY_BACKOFF_MAX``.

Stats: ``politeness/slots`` (slots taken), ``politeness/waits`` (requests that had to wait),
``politeness/waited_seconds``, ``politeness/blocks`` (blocks set by this worker),
``politeness/backoffs`` (backoff blocks after a 429/5xx without ``Retry-After``), ``politeness/errors``
(store calls that failed: while the state database is away a request goes on under its worker's own
limits, as claimed requests do during an outage).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import load_object
from twisted.internet import defer, task

from holocron_scrapy import defaults
from holocron_scrapy.frontier.executor import StoreExecutor, ThreadExecutor
from holocron_scrapy.frontier.store import SlotGrant, WorkItemStore, make_owner, utcnow

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)
T = TypeVar("T")

SHARED, LOCAL = "shared", "local"
#: Seconds a refused request waits at most before it asks again while all slots are taken.
RECHECK_SECONDS = 0.25
#: Codes of a MediaWiki answer (HTTP 200) that block the API host for everyone.
BLOCKING_API_ERRORS = ("maxlag", "ratelimited")


def politeness_key(request: Request) -> str:
    """The politeness key of *request*: its host, with the port when the URL names one."""
    parsed = urlparse_cached(request)
    host = (parsed.hostname or "").lower()
    return f"{host}:{parsed.port}" if parsed.port else host


def politeness_mode(settings: Any) -> str:
    """``shared`` when the frontier scheduler runs and ``HOLOCRON_FRONTIER_POLITENESS`` is not ``local``."""
    from holocron_scrapy.frontier.scheduler import FrontierScheduler

    mode = settings.get("HOLOCRON_FRONTIER_POLITENESS") or defaults.FRONTIER_POLITENESS
    try:
        scheduler = load_object(settings.get("SCHEDULER"))
    except (ImportError, NameError, ValueError):
        return LOCAL
    # The MRO, not issubclass: Scrapy's BaseScheduler metaclass takes any class with its methods for a subclass.
    if mode != SHARED or FrontierScheduler not in getattr(scheduler, "__mro__", ()):
        return LOCAL
    return SHARED


class SharedPoliteness:
    """One worker's side of the fleet-wide politeness: slots taken and given back through its own
    store connection, on its own worker thread (the frontier's thread runs claims and flushes)."""

    def __init__(
        self,
        store_factory: Callable[[], WorkItemStore],
        *,
        lease_seconds: float = defaults.FRONTIER_POLITENESS_LEASE,
        backoff: float = defaults.RETRY_BACKOFF_BASE,
        backoff_cap: float = defaults.RETRY_BACKOFF_MAX,
        stats: StatsCollector | None = None,
        executor: StoreExecutor | None = None,
    ):
        self.owner = make_owner()
        self.lease_seconds = lease_seconds
        self.backoff, self.backoff_cap = backoff, backoff_cap
        self.stats = stats
        self._factory = store_factory
        self._store: WorkItemStore | None = None
        self._executor: StoreExecutor = executor or ThreadExecutor("holocron-politeness")
        self._held = 0
        self._closed = False
        self._renewer = task.LoopingCall(self._renew)
        self._errors_logged = 0
        #: Releases that failed, run again before the next take (touched on the worker thread only).
        self._unreleased: list[Callable[[WorkItemStore], Any]] = []

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SharedPoliteness | None:
        """The crawl's shared politeness, or None with ``local`` politeness (or without the frontier)."""
        s = crawler.settings
        if politeness_mode(s) != SHARED:
            return None
        from holocron_scrapy.frontier.scheduler import state_url_from_settings
        from holocron_scrapy.frontier.store import open_work_item_store

        url = state_url_from_settings(s)
        sqlserver = s.getdict("HOLOCRON_STATE_SQLSERVER")

        def factory() -> WorkItemStore:
            return open_work_item_store(url, sqlserver_config=sqlserver)

        return cls(
            factory,
            lease_seconds=s.getfloat("HOLOCRON_FRONTIER_POLITENESS_LEASE"),
            backoff=s.getfloat("HOLOCRON_RETRY_BACKOFF_BASE"),
            backoff_cap=s.getfloat("HOLOCRON_RETRY_BACKOFF_MAX"),
            stats=crawler.stats,
        )

    # -- store calls, on the worker thread ----------------------------------------------------------
    def _open(self) -> WorkItemStore:
        if self._store is None:
            self._store = self._factory()
        return self._store

    def _submit(self, fn: Callable[[WorkItemStore], T]) -> defer.Deferred[T]:
        return self._executor.submit(lambda: fn(self._open()))

    def _inc(self, key: str, count: float = 1) -> None:
        if self.stats is not None:
            self.stats.inc_value(f"politeness/{key}", count)  # type: ignore[arg-type]  # seconds: a float

    # -- the reactor's side -------------------------------------------------------------------------
    async def acquire(self, key: str, delay: float, concurrency: int) -> str | None:
        """Wait (on timers) until a slot of *key* is taken for this worker; its id. None when the state
        database cannot be reached: the request goes on under this worker's own limits, as requests
        already claimed go on during an outage (:mod:`holocron_scrapy.db.outage`)."""
        from twisted.internet import reactor

        started = time.monotonic()
        waited = False
        while True:
            try:
                grant = await maybe_deferred_to_future(self._take(key, delay, concurrency))
            except defer.CancelledError:
                raise
            except Exception as exc:  # the state database is away: the request goes on with local limits only
                self._inc("errors")
                if self._errors_logged < 3:
                    self._errors_logged += 1
                    logger.warning(
                        "politeness: could not take a slot of %s (%s); sending with this worker's own limits", key, exc
                    )
                return None
            else:
                if grant.slot_id is not None:
                    self._held += 1
                    self._inc("slots")
                    if waited:
                        self._inc("waited_seconds", round(time.monotonic() - started, 3))
                    if not self._renewer.running and not self._closed:
                        self._renewer.start(self.lease_seconds / 3, now=False)
                    return grant.slot_id
                wait = max((grant.retry_at - utcnow()).total_seconds(), 0.001) if grant.retry_at else RECHECK_SECONDS
            if not waited:
                waited = True
                self._inc("waits")
            await maybe_deferred_to_future(task.deferLater(reactor, wait))

    def _take(self, key: str, delay: float, concurrency: int) -> defer.Deferred[SlotGrant]:
        """The take, shielded: when the request is cancelled while the store works, a slot taken
        anyway is given back at once (not held until its lease expires)."""

        def take(store: WorkItemStore) -> SlotGrant:
            self._give_back_unreleased(store)
            return store.take_slot(
                key,
                self.owner,
                delay=delay,
                concurrency=concurrency,
                lease_seconds=self.lease_seconds,
                recheck=RECHECK_SECONDS,
            )

        inner = self._submit(take)
        outer: defer.Deferred[SlotGrant] = defer.Deferred()

        def deliver(grant: SlotGrant) -> None:
            if outer.called:  # cancelled meanwhile
                if grant.slot_id is not None:
                    self._submit(lambda store: store.release_slot(key, grant.slot_id or ""))
                return
            outer.callback(grant)

        def fail(failure: Any) -> None:
            if not outer.called:
                outer.errback(failure)

        inner.addCallbacks(deliver, fail)
        return outer

    def release(
        self,
        key: str,
        slot_id: str,
        status: int | None = None,
        retry_after: float | None = None,
        api_error: str | None = None,
    ) -> defer.Deferred[Any]:
        """Give the slot back after an answer with *status* (None: no answer). A 429/503 with
        *retry_after* blocks *key* for that long; a 429/5xx without one counts towards the backoff.
        A MediaWiki *api_error* ``maxlag`` / ``ratelimited`` with *retry_after* blocks it too (counted
        by the retry middleware's :func:`block_host`, which sets the same block)."""
        self._held = max(self._held - 1, 0)
        ok: bool | None = None
        block = None
        overloaded = api_error in BLOCKING_API_ERRORS
        if status is not None:
            failing = status == 429 or status >= 500
            if failing and retry_after is not None:
                block = (utcnow() + timedelta(seconds=retry_after), f"HTTP {status} Retry-After: {retry_after:g}")
                self._inc("blocks")
            elif overloaded and retry_after is not None:
                block = (utcnow() + timedelta(seconds=retry_after), f"MediaWiki {api_error}")
            elif overloaded:
                pass  # the retry middleware blocks for its backoff; the failure count stays as it is
            else:
                ok = not failing
                if failing:
                    self._inc("backoffs")

        def give_back(store: WorkItemStore) -> Any:
            return store.release_slot(
                key, slot_id, ok=ok, backoff=self.backoff, backoff_cap=self.backoff_cap, block=block
            )

        def run(store: WorkItemStore) -> Any:
            try:
                return give_back(store)
            except Exception:
                self._unreleased.append(give_back)  # held in the database until given back or expired
                raise

        d = self._submit(run)
        d.addErrback(self._log_failure, "give back a slot of", key)
        return d

    def _give_back_unreleased(self, store: WorkItemStore) -> None:
        """Give back the slots whose release failed (worker thread); those that fail again are kept."""
        pending, self._unreleased = self._unreleased, []
        for n, give_back in enumerate(pending):
            try:
                give_back(store)
            except Exception:
                self._unreleased = pending[n:] + self._unreleased
                return

    def block(self, key: str, seconds: float, reason: str) -> defer.Deferred[Any]:
        """Block *key* for every worker for *seconds*."""
        self._inc("blocks")
        until = utcnow() + timedelta(seconds=seconds)
        logger.info("politeness: %s blocked for %.1fs for every worker (%s)", key, seconds, reason)
        d = self._submit(lambda store: store.block_key(key, until, reason))
        d.addErrback(self._log_failure, "block", key)
        return d

    def _log_failure(self, failure: Any, what: str, key: str) -> None:
        self._inc("errors")
        logger.warning("politeness: could not %s %s: %s", what, key, failure.getErrorMessage())

    def _renew(self) -> None:
        if self._held:
            d = self._submit(lambda store: store.renew_slots(self.owner, self.lease_seconds))
            d.addErrback(self._log_failure, "renew the slots of", self.owner)

    def close(self) -> None:
        """Give back whatever this worker still holds and stop the worker thread (without waiting)."""
        if self._closed:
            return
        self._closed = True
        if self._renewer.running:
            self._renewer.stop()
        owner = self.owner

        def final() -> None:
            if self._store is None:
                return
            try:
                self._store.release_owner_slots(owner)
            finally:
                self._store.close()

        self._executor.submit(final).addErrback(lambda _f: None)
        self._executor.shutdown(wait=False)


def block_host(crawler: Crawler, request: Request, seconds: float, reason: str) -> None:
    """Block *request*'s politeness key for every worker (the retry middleware's hook for a MediaWiki
    ``maxlag`` / ``ratelimited`` answer); nothing with ``local`` politeness."""
    try:
        engine = crawler.engine
    except (AttributeError, RuntimeError):  # Scrapy raises RuntimeError before the crawl starts
        return
    politeness = getattr(getattr(engine, "downloader", None), "politeness", None)
    if isinstance(politeness, SharedPoliteness) and seconds > 0:
        politeness.block(politeness_key(request), seconds, reason)
