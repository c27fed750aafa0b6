"""Keep the garbage collector off the objects that live as long as the crawl.

Why: measured on the 5,000-page cost-of-storing benchmark, a crawl spent 15-30% of its time in
CPython's full (generation 2) collections. Each one walks every tracked object, and most of them
are modules, classes, compiled SQL and settings made before the first request, none of which will
ever be garbage. Once the engine has started (spider, pipelines and stores open),
:func:`gc.freeze` moves all of them to a permanent generation that collections skip; what the
crawl creates afterwards is collected as before. The cost is that a reference cycle made before
the engine started, and dropped later, is never freed: a few objects per crawl.

Settings read: ``HOLOCRON_GC_FREEZE`` (default on). Stats written: ``gc/frozen`` (objects frozen).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector


class FreezeStartupObjects:
    def __init__(self, stats: StatsCollector | None = None):
        self.stats = stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FreezeStartupObjects:
        if not crawler.settings.getbool("HOLOCRON_GC_FREEZE"):
            raise NotConfigured  # switched off on purpose: no warning (Scrapy logs one for a message)
        extension = cls(crawler.stats)
        crawler.signals.connect(extension.engine_started, signal=signals.engine_started)
        return extension

    def engine_started(self) -> None:
        gc.collect()  # what is garbage already is freed, not frozen
        gc.freeze()
        if self.stats is not None:
            self.stats.set_value("gc/frozen", gc.get_freeze_count())
