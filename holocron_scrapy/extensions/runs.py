"""Summarise every crawl: log it and write it to ``ingest_runs``.

The summary counts pages stored, unchanged, missing and failed, requests, duration and
errors, with a status: ``completed`` (finished, nothing failed), ``partial`` (finished with
failures, or stopped early) or ``failed`` (nothing stored and errors, or a start error).

Settings: ``HOLOCRON_RUN_ID``, ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_RECORDS_SQLSERVER``,
``HOLOCRON_SOURCE_NAME``, ``HOLOCRON_SOURCE_SYSTEM``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from scrapy import Spider, signals
from scrapy.crawler import Crawler

from holocron_scrapy import defaults
from holocron_scrapy.records.store import open_record_store

logger = logging.getLogger(__name__)


def run_status(reason: str, stored: int, failed: int, errors: int) -> str:
    if reason != "finished":
        return "failed" if stored == 0 and (failed or errors) else "partial"
    if stored == 0 and (failed or errors):
        return "failed"
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
    errors = int(stats.get("spider_exceptions/count", 0)) + int(stats.get("log_count/ERROR", 0))
    return {
        "run_id": run_id,
        "spider": spider,
        "source_system": source_system,
        "source_name": source_name,
        "status": run_status(reason, stored, failed_items, errors),
        "started_at": started,
        "finished_at": finished,
        "duration_s": duration,
        "pages_stored": stored,
        "pages_unchanged": int(stats.get("recrawl/unchanged", 0)),
        "pages_missing": missing,
        "pages_failed": failed_items,
        "requests": int(stats.get("downloader/request_count", 0)),
        "finish_reason": reason,
        "summary": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in sorted(stats.items())},
    }


class RunSummary:
    def __init__(self, crawler: Crawler, *, records_url: str, sqlserver_config: dict[str, Any] | None):
        self.crawler = crawler
        self.records_url = records_url
        self.sqlserver_config = sqlserver_config
        self.summary: dict[str, Any] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RunSummary:
        s = crawler.settings
        ext = cls(
            crawler,
            records_url=s.get("HOLOCRON_RECORDS_URL") or defaults.RECORDS_URL,
            sqlserver_config=s.getdict("HOLOCRON_RECORDS_SQLSERVER"),
        )
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_closed(self, spider: Spider, reason: str) -> None:
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
