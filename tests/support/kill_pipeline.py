"""A test-only item pipeline that kills its own crawl process with SIGKILL (kill -9).

Placed between the lake pipeline (300) and the records pipeline (400), it kills the process right
after the lake file of the ``KILL_AFTER_LAKE_ITEMS``-th item is written and before its record is:
the real crash the lake naming must survive. Nothing in the product knows about it; a test adds it
through ``ITEM_PIPELINES``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from scrapy.crawler import Crawler

#: The product's pipelines plus this one, as a ``-s ITEM_PIPELINES=`` value (JSON).
PIPELINES = (
    '{"holocron_scrapy.pipelines.changes.ChangeFilterPipeline": 200,'
    ' "holocron_scrapy.pipelines.lake.JsonLakePipeline": 300,'
    ' "tests.support.kill_pipeline.KillAfterLakePipeline": 350,'
    ' "holocron_scrapy.pipelines.records.IngestRecordsPipeline": 400}'
)


class KillAfterLakePipeline:
    def __init__(self, after: int):
        self.after = after
        self.seen = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> KillAfterLakePipeline:
        return cls(crawler.settings.getint("KILL_AFTER_LAKE_ITEMS", 0))

    def process_item(self, item: Any) -> Any:
        self.seen += 1
        if self.after and self.seen >= self.after:
            os.kill(os.getpid(), signal.SIGKILL)
        return item
