"""Graceful stop: a stopping crawl finishes or hands back what is in flight, within a time limit.

SIGTERM (Scrapyd's cancel) or Ctrl-C makes Scrapy close the spider (reason ``shutdown``): no new
request is sent, the requests in flight finish and their items are stored, then the frontier
flushes its acknowledgements and gives back the leases of whatever was not finished (continuations,
claimed but unsent requests), and the run summary is written. This extension bounds that:

* once the spider starts closing (for any reason), it has ``HOLOCRON_SHUTDOWN_TIMEOUT`` seconds
  (default 30). When they are up, whatever is still in flight is handed back and the process
  stops: the rows still waiting for their records batch are given up and their lake files
  removed (their work items were not acknowledged), the frontier's buffered acknowledgements are
  flushed and this worker's leases released, the run counts as ``partial`` (exit status 3);
* a second Ctrl-C / SIGTERM stops at once (Scrapy stops the reactor); the same hand-back runs
  just before the reactor stops. Nothing is lost either way: an item is acknowledged only after
  its record is committed, and a lease the hand-back could not release belongs to a dead process,
  which the next run reclaims at once.

Settings: ``HOLOCRON_SHUTDOWN_TIMEOUT``. Stats: ``shutdown/forced`` (1 when the timeout or a second
signal cut the stop short), ``records/abandoned`` (via the records pipeline).
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from twisted.internet import task

from holocron_scrapy.pipelines.lake import JsonLakePipeline
from holocron_scrapy.pipelines.records import IngestRecordsPipeline
from holocron_scrapy.reactor import get_reactor

P = TypeVar("P")

logger = logging.getLogger(__name__)

#: How often the extension looks whether the spider started closing (seconds).
WATCH_INTERVAL = 0.25


class GracefulShutdown:
    def __init__(self, crawler: Crawler, timeout: float):
        self.crawler = crawler
        self.timeout = timeout
        self._loop: task.LoopingCall | None = None
        self._deadline: Any = None
        self._trigger: Any = None
        self._closing_since: float | None = None
        self._done = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> GracefulShutdown:
        timeout = crawler.settings.getfloat("HOLOCRON_SHUTDOWN_TIMEOUT")
        if timeout <= 0:
            raise NotConfigured("HOLOCRON_SHUTDOWN_TIMEOUT must be more than 0")
        ext = cls(crawler, timeout)
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_opened(self, spider: Any = None) -> None:
        reactor = get_reactor()

        self._loop = task.LoopingCall(self._watch)
        self._loop.start(WATCH_INTERVAL, now=False)
        # A second Ctrl-C stops the reactor at once: hand back what we can just before it stops.
        self._trigger = reactor.addSystemEventTrigger("before", "shutdown", self._stopped_at_once)

    def spider_closed(self, spider: Any = None, reason: str = "") -> None:
        reactor = get_reactor()

        self._done = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        if self._trigger is not None:
            reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        if self._closing_since is not None:
            logger.info("Stopped in %.1f s", time.monotonic() - self._closing_since)

    # -- watching --------------------------------------------------------------------------
    def _closing(self) -> bool:
        engine = getattr(self.crawler, "engine", None)
        slot = getattr(engine, "_slot", None)  # Scrapy sets slot.closing when close_spider_async starts
        return getattr(slot, "closing", None) is not None

    def _watch(self) -> None:
        if self._deadline is not None or self._done or not self._closing():
            return
        reactor = get_reactor()

        self._closing_since = time.monotonic()
        logger.info(
            "Stopping: what is in flight gets %g s (HOLOCRON_SHUTDOWN_TIMEOUT) to finish, then it is handed back",
            self.timeout,
        )
        self._deadline = reactor.callLater(self.timeout, self._force)

    def _force(self) -> None:
        reactor = get_reactor()

        if self._done:
            return
        engine = getattr(self.crawler, "engine", None)
        inflight = len(getattr(getattr(engine, "_slot", None), "inprogress", ()) or ())
        logger.warning(
            "Stop timeout (%g s) reached with %d requests in flight: handing them back and stopping now",
            self.timeout,
            inflight,
        )
        self.hand_back()
        if getattr(self.crawler, "holocron_run_summary", None) is None:
            # The summary extension never ran: a stop cut short is a partial run.
            # Read by the crawl command (getattr); Scrapy's Crawler does not declare our attribute.
            self.crawler.holocron_run_summary = {  # type: ignore[attr-defined]
                "status": "partial",
                "finish_reason": "shutdown_forced",
            }
        self._done = True
        if reactor.running:
            reactor.stop()

    def _stopped_at_once(self) -> None:
        if self._done:
            return
        logger.warning("Stopped at once: handing back what was in flight")
        self.hand_back()
        self._done = True

    # -- hand back ---------------------------------------------------------------------------
    def hand_back(self) -> None:
        """Give up the rows waiting for a records batch (and their lake files), flush the frontier's
        acknowledgements and release this worker's leases. Never raises."""
        if self.crawler.stats is not None:
            self.crawler.stats.set_value("shutdown/forced", 1)
        for lake in self._pipelines(JsonLakePipeline):
            lake.close_spider()  # no lake file from now on: it could get no record
        for records in self._pipelines(IngestRecordsPipeline):
            try:
                records.abandon()
            except Exception:  # noqa: BLE001 - a forced stop goes on whatever fails
                logger.exception("Could not give up the waiting records")
        from holocron_scrapy.frontier.scheduler import scheduler_of

        scheduler = scheduler_of(self.crawler)
        if scheduler is None or scheduler.store is None:
            return
        try:
            released = scheduler.hand_back()  # the buffers, then this worker's leases (in its store thread)
            logger.info("Frontier: %d leased items handed back", released)
        except Exception as exc:  # noqa: BLE001 - the next run reclaims the leases of a dead worker
            logger.error("Could not hand back the leased items (the next run reclaims them): %s", exc)

    def _pipelines(self, kind: type[P]) -> list[P]:
        engine = getattr(self.crawler, "engine", None)
        itemproc = getattr(getattr(engine, "scraper", None), "itemproc", None)
        return [m for m in getattr(itemproc, "middlewares", ()) if isinstance(m, kind)]
