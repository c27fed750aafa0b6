"""Summarise every crawl: log it, write it to ``ingest_runs`` and ``<lake>/_runs/<run_id>.json``,
and POST it to an optional webhook (a failing webhook is logged, never fails the crawl).

The summary counts pages stored, unchanged, missing and failed, requests, duration and
errors, with a status: ``completed`` (finished, nothing failed), ``partial`` (finished with
failures, or stopped early) or ``failed`` (failures or errors and not one successful fetch: a page
fetched, or found unchanged by a re-crawl check, is a success). A crawl that cannot start (bad
config or arguments) exits non-zero before the spider opens and leaves no summary.

Settings: ``HOLOCRON_RUN_ID``, ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_RECORDS_SQLSERVER``,
``HOLOCRON_SOURCE_NAME``, ``HOLOCRON_SOURCE_SYSTEM``, ``HOLOCRON_LAKE_DIR``,
``HOLOCRON_NOTIFY_WEBHOOK`` (or the environment variable of that name), ``HOLOCRON_NOTIFY_TIMEOUT``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scrapy import Spider, signals
from scrapy.crawler import Crawler
from twisted.internet import threads
from twisted.internet.defer import Deferred

from holocron_scrapy import defaults
from holocron_scrapy.pipelines.lake import write_atomically
from holocron_scrapy.records.store import open_record_store

logger = logging.getLogger(__name__)


def run_status(reason: str, fetched_ok: int, failed: int, errors: int) -> str:
    """``completed``: finished without failures; ``failed``: failures or errors and not one page
    fetched or confirmed unchanged (*fetched_ok* counts both); ``partial``: anything between, or
    stopped early."""
    if (failed or errors) and fetched_ok == 0:
        return "failed"
    if reason != "finished":
        return "partial"
    return "partial" if failed or errors else "completed"


def outcome_count(stats: dict[str, Any], outcome: str) -> int:
    """Sum of the ``<system>/pages/<outcome>`` counters the spiders keep."""
    suffix = f"/pages/{outcome}"
    return sum(int(v) for k, v in stats.items() if k.endswith(suffix))


def build_summary(
    stats: dict[str, Any], *, run_id: str, spider: str, source_system: str | None, source_name: str | None, reason: str
) -> dict[str, Any]:
    """The run summary from Scrapy stats (pure; used by the extension and tests)."""
    started = stats.get("start_time")
    finished = stats.get("finish_time") or datetime.now(timezone.utc)
    duration = (finished - started).total_seconds() if started else None
    stored = int(stats.get("records/written", 0))
    missing = outcome_count(stats, "missing") + outcome_count(stats, "invalid") + outcome_count(stats, "redirect_loop")
    failed_items = outcome_count(stats, "failed")
    unchanged = int(stats.get("recrawl/unchanged", 0))
    errors = int(stats.get("spider_exceptions/count", 0)) + int(stats.get("log_count/ERROR", 0))
    error_counts = {
        k: int(v)
        for k, v in stats.items()
        if k.startswith(("spider_exceptions/", "downloader/exception_type_count/", "mediawiki/api_error/"))
        or k == "log_count/ERROR"
    }
    return {
        "run_id": run_id,
        "spider": spider,
        "source_system": source_system,
        "source_name": source_name,
        "status": run_status(reason, outcome_count(stats, "ok") + unchanged, failed_items, errors),
        "started_at": started,
        "finished_at": finished,
        "duration_s": duration,
        "pages_stored": stored,
        "pages_unchanged": unchanged,
        "pages_missing": missing,
        "pages_failed": failed_items,
        "requests": int(stats.get("downloader/request_count", 0)),
        "finish_reason": reason,
        "pages_changed": int(stats.get("recrawl/changed", 0)),
        "errors": error_counts,
        "summary": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in sorted(stats.items())},
    }


def report_json(summary: dict[str, Any]) -> bytes:
    """The run report as written to the lake and sent to the webhook."""

    def default(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else str(value)

    return json.dumps(summary, ensure_ascii=False, indent=1, default=default).encode("utf-8")


def webhook_settings(settings: Any) -> tuple[str | None, float]:
    """The run-report webhook: ``HOLOCRON_NOTIFY_WEBHOOK`` (the setting, else the environment
    variable of that name; None when neither is set) and ``HOLOCRON_NOTIFY_TIMEOUT`` (seconds)."""
    url = settings.get("HOLOCRON_NOTIFY_WEBHOOK") or os.environ.get("HOLOCRON_NOTIFY_WEBHOOK") or None
    return url, settings.getfloat("HOLOCRON_NOTIFY_TIMEOUT", 10.0)


def post_webhook(url: str, body: bytes, timeout: float) -> int:
    """POST *body* as JSON; return the HTTP status (raises on network errors)."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - operator-configured URL
        return response.status


class RunSummary:
    def __init__(
        self,
        crawler: Crawler,
        *,
        records_url: str,
        sqlserver_config: dict[str, Any] | None,
        lake_dir: str | None = None,
        webhook: str | None = None,
        webhook_timeout: float = 10.0,
    ):
        self.crawler = crawler
        self.records_url = records_url
        self.sqlserver_config = sqlserver_config
        self.lake_dir = lake_dir
        self.webhook = webhook
        self.webhook_timeout = webhook_timeout
        self.summary: dict[str, Any] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RunSummary:
        s = crawler.settings
        webhook, webhook_timeout = webhook_settings(s)
        ext = cls(
            crawler,
            records_url=s.get("HOLOCRON_RECORDS_URL") or defaults.RECORDS_URL,
            sqlserver_config=s.getdict("HOLOCRON_RECORDS_SQLSERVER"),
            lake_dir=s.get("HOLOCRON_LAKE_DIR") or defaults.LAKE_DIR,
            webhook=webhook,
            webhook_timeout=webhook_timeout,
        )
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_closed(self, spider: Spider, reason: str) -> Deferred | None:
        s = self.crawler.settings
        stats = dict(self.crawler.stats.get_stats())
        stats.setdefault("finish_time", datetime.now(timezone.utc))
        summary = build_summary(
            stats,
            run_id=getattr(spider, "run_id", None) or s.get("HOLOCRON_RUN_ID") or "unknown",
            spider=spider.name,
            source_system=s.get("HOLOCRON_SOURCE_SYSTEM"),
            source_name=s.get("HOLOCRON_SOURCE_NAME"),
            reason=reason,
        )
        self.summary = summary
        logger.info(
            "Run %(run_id)s %(status)s: %(pages_stored)d stored, %(pages_unchanged)d unchanged,"
            " %(pages_missing)d missing, %(pages_failed)d failed, %(requests)d requests in %(duration)s",
            {**summary, "duration": f"{summary['duration_s']:.1f}s" if summary["duration_s"] is not None else "?"},
            extra={"spider": spider},
        )
        try:
            store = open_record_store(self.records_url, sqlserver_config=self.sqlserver_config)
            try:
                store.write_run(summary)
            finally:
                store.close()
        except Exception:
            logger.exception("Could not write the run summary to ingest_runs", extra={"spider": spider})
        body = report_json(summary)
        if self.lake_dir:
            try:
                path = Path(self.lake_dir).expanduser().resolve() / "_runs" / f"{summary['run_id']}.json"
                write_atomically(path, body)
                summary["report_path"] = str(path)
            except OSError:
                logger.exception("Could not write the run report file", extra={"spider": spider})
        if not self.webhook:
            return None
        d = threads.deferToThread(post_webhook, self.webhook, body, self.webhook_timeout)
        d.addCallbacks(
            lambda status: logger.info("Run report sent to the webhook (HTTP %s)", status, extra={"spider": spider}),
            lambda failure: logger.warning(
                "Run report webhook failed: %s", failure.getErrorMessage(), extra={"spider": spider}
            ),
        )
        return d
