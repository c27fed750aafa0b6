"""One progress line of the frontier every few minutes, as Scrapy's LogStats gives one of the engine.

``Frontier progress: done=… pending=… in_progress=… failed=… | … pages/min | ETA …``: the work
items of the crawl's source (every source for a foreign spider), read from the frontier's store.
The rate is that of this run (items completed since the first line, by every worker of the
source), and the ETA divides what is left by it. The counts are read in the store's worker thread
(:meth:`~holocron_scrapy.frontier.scheduler.FrontierScheduler.read_counts`), never on the reactor;
while the state database is unreachable no line is written (the scheduler logs the outage).

Does nothing for a crawl whose scheduler is not the frontier.

Settings read: ``HOLOCRON_FRONTIER_PROGRESS_INTERVAL`` (seconds; 0 turns it off). Stats written: none.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from twisted.internet import task

from holocron_scrapy.frontier.scheduler import FrontierScheduler, scheduler_of
from holocron_scrapy.frontier.store import COMPLETED, FAILED, IN_PROGRESS, PENDING, Scope

logger = logging.getLogger(__name__)


def progress_line(
    counts: dict[str, dict[str, int]], scope: Scope | None, base: tuple[float, int], now: float
) -> tuple[str, int]:
    """The progress line of *counts* (``store.counts()``), and the number of items done; *base* is
    ``(time, done)`` of the first line of the run."""
    if scope is not None:
        counts = {scope.source_name: counts.get(scope.source_name, {})}
    totals = dict.fromkeys((PENDING, IN_PROGRESS, COMPLETED, FAILED), 0)
    for per_status in counts.values():
        for status, count in per_status.items():
            totals[status] = totals.get(status, 0) + count
    start, done0 = base
    minutes = max((now - start) / 60, 1e-9)
    rate = (totals[COMPLETED] - done0) / minutes
    left = totals[PENDING] + totals[IN_PROGRESS]
    eta = f"{left / rate:.1f} min" if rate > 0 else "unknown"
    line = (
        f"Frontier progress: done={totals[COMPLETED]} pending={totals[PENDING]} in_progress={totals[IN_PROGRESS]}"
        f" failed={totals[FAILED]} | {rate:.1f} pages/min | ETA {eta}"
    )
    return line, totals[COMPLETED]


class FrontierProgress:
    def __init__(self, crawler: Crawler, interval: float):
        self.crawler = crawler
        self.interval = interval
        self.spider: Spider | None = None
        self._loop: task.LoopingCall | None = None
        self._base: tuple[float, int] | None = None
        self._reading = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FrontierProgress:
        interval = crawler.settings.getfloat("HOLOCRON_FRONTIER_PROGRESS_INTERVAL")
        if interval <= 0:
            raise NotConfigured
        extension = cls(crawler, interval)
        crawler.signals.connect(extension.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.spider_closed, signal=signals.spider_closed)
        return extension

    def spider_opened(self, spider: Spider) -> None:
        if scheduler_of(self.crawler) is None:
            return
        self.spider = spider
        self._loop = task.LoopingCall(self.tick)
        self._loop.start(self.interval, now=False)

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def tick(self) -> None:
        """Read the counts (one read at a time) and log the line when they arrive."""
        scheduler = scheduler_of(self.crawler)
        if scheduler is None or self._reading:
            return
        self._reading = True
        d = scheduler.read_counts()
        d.addCallback(self.log, scheduler)
        d.addErrback(lambda failure: logger.debug("No progress line: %s", failure.getErrorMessage()))
        d.addBoth(self._done)

    def _done(self, _: Any) -> None:
        self._reading = False

    def log(self, counts: dict[str, dict[str, int]], scheduler: FrontierScheduler) -> None:
        now = time.monotonic()
        if self._base is None:
            _, done = progress_line(counts, scheduler.scope, (now, 0), now)
            self._base = (now, done)
        line, _ = progress_line(counts, scheduler.scope, self._base, now)
        logger.info("%s", line, extra={"spider": self.spider})
