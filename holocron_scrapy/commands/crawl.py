"""``scrapy crawl``, with configuration errors reported as one clear line (exit status 1).

Scrapy's own command prints a traceback for any exception raised while the spider is
built; for bad seeds, arguments or config files that hides the message. Everything else
is Scrapy's ``crawl`` unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from holocron_scrapy.errors import HolocronError


class Command(ScrapyCrawlCommand):
    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        process = self.crawler_process
        assert process is not None
        original = process.crawl

        def crawl(*a: Any, **kw: Any) -> Any:
            result = original(*a, **kw)
            if isinstance(result, Deferred):
                result.addErrback(self._report)
            elif isinstance(result, asyncio.Future):
                result.add_done_callback(self._report_task)
            return result

        process.crawl = crawl  # type: ignore[method-assign]
        try:
            super().run(args, opts)
        finally:
            process.crawl = original  # type: ignore[method-assign]

    def _report(self, failure: Failure) -> Failure | None:
        if failure.check(HolocronError):
            print(f"holocron_scrapy: error: {failure.value}", file=sys.stderr)
            return None
        return failure

    def _report_task(self, task: asyncio.Future) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: asyncio will not log it again
        if isinstance(exc, HolocronError):
            print(f"holocron_scrapy: error: {exc}", file=sys.stderr)
        elif exc is not None:
            raise exc
