"""``scrapy crawl``, with exit statuses that tell the truth and bad input reported as one line.

Exit status (:data:`holocron_scrapy.extensions.runs.EXIT_CODES`): 0 when the run ``completed``,
3 when it was ``partial`` (some pages failed for good, or it was stopped early), 1 when it
``failed`` (including a ``fatal_*`` close reason), 2 on bad input before the start.

Scrapy's own command prints a traceback for any exception raised while the spider is
built; for bad seeds, arguments, settings or config files that hides the message. Such a run
prints ``holocron_scrapy: error: <setting or key>: <problem>`` and exits 2; it never opens, so it
leaves no run summary: when a webhook is configured (``HOLOCRON_NOTIFY_WEBHOOK``, setting or
environment) it receives a ``failed`` report with the error instead. Secret masking
(:mod:`holocron_scrapy.secrets`) is installed before anything is logged. Everything else is
Scrapy's ``crawl`` unchanged.

Settings read: ``HOLOCRON_NOTIFY_WEBHOOK``, ``HOLOCRON_NOTIFY_TIMEOUT``, ``HOLOCRON_RUN_ID``.
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

from holocron_scrapy import secrets
from holocron_scrapy.errors import HolocronError
from holocron_scrapy.extensions.runs import EXIT_BAD_INPUT, exit_code, post_webhook, report_json, webhook_settings
from holocron_scrapy.failures import failure_error


class Command(ScrapyCrawlCommand):
    spider_name: str | None = None
    start_error: BaseException | None = None

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        self.spider_name = args[0] if args else None
        secrets.install(self.settings)
        process = self.crawler_process
        assert process is not None
        known = sorted(process.spider_loader.list())
        if len(args) == 1 and self.spider_name not in known:
            print(
                f"holocron_scrapy: error: unknown spider {self.spider_name!r} (spiders: {', '.join(known)})",
                file=sys.stderr,
            )
            self.exitcode = EXIT_BAD_INPUT
            return
        original = process.crawl
        crawlers: list[Any] = []

        def crawl(*a: Any, **kw: Any) -> Any:
            if a and not isinstance(a[0], (str, type)):
                crawlers.append(a[0])
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
        summaries = [getattr(c, "holocron_run_summary", None) for c in crawlers]
        if self.start_error is not None:
            self.exitcode = EXIT_BAD_INPUT
        elif summaries and all(summaries):
            self.exitcode = max(exit_code(s["status"]) for s in summaries if s)  # `if s`: all are, as mypy cannot infer
        elif summaries:  # a crawl that never got as far as its summary did not complete
            self.exitcode = max(self.exitcode, exit_code("failed"))

    def _report(self, failure: Failure) -> Failure | None:
        if failure.check(HolocronError):
            self._start_failed(failure_error(failure))
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
        self.start_error = exc
        print(f"holocron_scrapy: error: {secrets.mask_text(str(exc))}", file=sys.stderr)
        assert self.settings is not None  # set by scrapy.cmdline before run()
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
            "error": secrets.mask_text(str(exc)),
        }
        try:
            post_webhook(webhook, report_json(report), timeout)
        except Exception as error:  # noqa: BLE001 - a failing webhook must not hide the real error
            where = secrets.mask_url(webhook)
            print(
                f"holocron_scrapy: run report webhook failed: {secrets.mask_text(str(error))} ({where})",
                file=sys.stderr,
            )
