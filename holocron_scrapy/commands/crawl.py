"""``scrapy crawl``, with configuration errors reported as one clear line (exit status 1).

Scrapy's own command prints a traceback for any exception raised while the spider is
built; for bad seeds, arguments or config files that hides the message. Such a run never
opens, so it leaves no run summary: when a webhook is configured (``HOLOCRON_NOTIFY_WEBHOOK``,
setting or environment) it receives a ``failed`` report with the error instead. Everything
else is Scrapy's ``crawl`` unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone
from typing import Any

from scrapy.commands.crawl import Command as ScrapyCrawlCommand
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from holocron_scrapy.errors import HolocronError
from holocron_scrapy.extensions.runs import post_webhook, report_json, webhook_settings


class Command(ScrapyCrawlCommand):
    spider_name: str | None = None

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        self.spider_name = args[0] if args else None
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
            self._start_failed(failure.value)
            return None
        return failure

    def _report_task(self, task: asyncio.Future) -> None:
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: asyncio will not log it again
        if isinstance(exc, HolocronError):
            self._start_failed(exc)
        elif exc is not None:
            raise exc

    def _start_failed(self, exc: BaseException) -> None:
        print(f"holocron_scrapy: error: {exc}", file=sys.stderr)
        webhook, timeout = webhook_settings(self.settings)
        if not webhook:
            return
        report = {
            "run_id": self.settings.get("HOLOCRON_RUN_ID"),
            "spider": self.spider_name,
            "status": "failed",
            "finish_reason": "start_error",
            "finished_at": datetime.now(timezone.utc),
            "pages_stored": 0,
            "error": str(exc),
        }
        try:
            post_webhook(webhook, report_json(report), timeout)
        except Exception as error:  # noqa: BLE001 - a failing webhook must not hide the real error
            print(f"holocron_scrapy: run report webhook failed: {error}", file=sys.stderr)
