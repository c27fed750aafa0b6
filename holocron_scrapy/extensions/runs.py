"""Summarise every crawl: log it, write it to ``ingest_runs`` and ``<lake>/_runs/<run_id>.json``,
and POST it to an optional webhook (a failing webhook is logged, never fails the crawl).

The summary counts pages (not records): stored, unchanged, missing, failed for good, retried, and
download retries, requests, duration and errors, with a status: ``completed`` (a normal end:
finished, or a ``max_pages`` or ``CLOSESPIDER_PAGECOUNT/ITEMCOUNT/TIMEOUT`` limit reached, with
nothing failed), ``partial`` (failures, or stopped early: ``shutdown``) or ``failed`` (a ``fatal_*``
close reason, or failures or errors and not one page stored or found unchanged by a re-crawl check).
``scrapy crawl`` exits with :data:`EXIT_CODES` (0 completed, 3 partial, 1 failed); a crawl that
cannot start (bad config, arguments or settings) exits 2 before the spider opens and leaves no
summary.

A MediaWiki sync run (``recrawl=changes``, :mod:`holocron_scrapy.mediawiki.sync`) says in ``sync`` what
it did (``changes``, ``sweep (first run)``, ``sweep (stale checkpoint)``; None for other runs) and counts
``pages_deleted`` (records with outcome ``deleted``); both are in the report, not in ``ingest_runs`` columns.

Stats read: ``records/written/<outcome>``, ``recrawl/unchanged``, ``recrawl/changed``, ``sync/mode``,
``<system>/pages/<outcome>``, ``frontier/failed``, ``frontier/retried``, ``robotstxt/forbidden``,
``retry/count``, ``downloader/request_count``, ``spider_exceptions/*``, ``log_count/ERROR``.

Settings: ``HOLOCRON_RUN_ID``, ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_RECORDS_SQLSERVER``,
``HOLOCRON_SOURCE_NAME``, ``HOLOCRON_SOURCE_SYSTEM``, ``HOLOCRON_LAKE_DIR``,
``HOLOCRON_NOTIFY_WEBHOOK`` (or the environment variable of that name), ``HOLOCRON_NOTIFY_TIMEOUT``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from scrapy import Spider, signals
from scrapy.crawler import Crawler
from twisted.internet import threads
from twisted.internet.defer import Deferred

from holocron_scrapy import defaults
from holocron_scrapy.db.targets import RECORDS, crawl_store_target
from holocron_scrapy.pipelines.faults import is_storage_error
from holocron_scrapy.pipelines.lake import write_atomically
from holocron_scrapy.records.store import open_record_store
from holocron_scrapy.secrets import mask_text, mask_url

logger = logging.getLogger(__name__)


#: Close reasons of a run that ended normally: it finished, or reached a limit the operator set.
NORMAL_ENDS = frozenset(
    {"finished", "max_pages", "closespider_pagecount", "closespider_itemcount", "closespider_timeout"}
)
#: Close reasons starting with this make the run ``failed`` (e.g. ``fatal_api_probe``, ``fatal_storage``).
FATAL_PREFIX = "fatal_"
#: ``scrapy crawl`` exit status per run status; 2 is bad input before the start (no run).
EXIT_CODES = {"completed": 0, "failed": 1, "partial": 3}
EXIT_BAD_INPUT = 2
#: Outcomes of titles that gave no page (stored as records, neither content nor failures).
MISSING_OUTCOMES = ("missing", "invalid", "redirect_loop", "special")


def run_status(reason: str, fetched_ok: int, failed: int, errors: int) -> str:
    """``failed``: a ``fatal_*`` close reason, or failures or errors and not one page stored or
    confirmed unchanged (*fetched_ok* counts both); ``completed``: a normal end (finished, or a
    page/item/time limit reached) with no page failed for good and no error; ``partial``:
    anything between, or stopped early (``shutdown``: Ctrl-C, SIGTERM)."""
    if reason.startswith(FATAL_PREFIX):
        return "failed"
    if (failed or errors) and fetched_ok == 0:
        return "failed"
    if reason not in NORMAL_ENDS:
        return "partial"
    return "partial" if failed or errors else "completed"


def exit_code(status: str | None) -> int:
    """The ``scrapy crawl`` exit status for a run *status* (unknown: 1)."""
    return EXIT_CODES.get(status or "", 1)


def outcome_count(stats: dict[str, Any], outcome: str) -> int:
    """Sum of the ``<system>/pages/<outcome>`` counters the spiders keep."""
    suffix = f"/pages/{outcome}"
    return sum(int(v) for k, v in stats.items() if k.endswith(suffix))


def build_summary(
    stats: dict[str, Any], *, run_id: str, spider: str, source_system: str | None, source_name: str | None, reason: str
) -> dict[str, Any]:
    """The run summary from Scrapy stats (pure; used by the extension and tests).

    Pages, not records: ``pages_stored`` counts records written with outcome ``ok``
    (``records/written/ok``), ``pages_unchanged`` pages found unchanged (``recrawl/unchanged``),
    ``pages_missing`` titles that gave no page, ``pages_failed`` work items that ended failed for good
    in this run (``frontier/failed``, less those refused by robots.txt: ``pages_forbidden``),
    ``pages_retried`` work items put back for another attempt (``frontier/retried``) and
    ``download_retries`` Scrapy's download-level retries (``retry/count``)."""
    started = stats.get("start_time")
    finished = stats.get("finish_time") or datetime.now(timezone.utc)
    duration = (finished - started).total_seconds() if started else None
    stored = int(stats.get("records/written/ok", 0))
    missing = sum(outcome_count(stats, outcome) for outcome in MISSING_OUTCOMES)
    forbidden = int(stats.get("robotstxt/forbidden", 0))
    failed_items = max(0, int(stats.get("frontier/failed", 0)) - forbidden)
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
        "status": run_status(reason, stored + unchanged, failed_items, errors),
        "started_at": started,
        "finished_at": finished,
        "duration_s": duration,
        "pages_stored": stored,
        "pages_unchanged": unchanged,
        "pages_missing": missing,
        "pages_failed": failed_items,
        "pages_retried": int(stats.get("frontier/retried", 0)),
        "pages_forbidden": forbidden,
        "download_retries": int(stats.get("retry/count", 0)),
        "failure_records": int(stats.get("records/written/failed", 0)),
        "requests": int(stats.get("downloader/request_count", 0)),
        "finish_reason": reason,
        "pages_changed": int(stats.get("recrawl/changed", 0)),
        "pages_deleted": outcome_count(stats, "deleted"),
        "sync": stats.get("sync/mode"),
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
    """POST *body* as JSON; return the HTTP status (raises on network errors). Userinfo in *url*
    (``https://user:token@host/...``) is sent as Basic authentication."""
    headers = {"Content-Type": "application/json"}
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
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
        records = crawl_store_target(RECORDS, s)
        ext = cls(
            crawler,
            records_url=records.url,
            sqlserver_config=records.sqlserver_config,
            lake_dir=s.get("HOLOCRON_LAKE_DIR") or defaults.LAKE_DIR,
            webhook=webhook,
            webhook_timeout=webhook_timeout,
        )
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_closed(self, spider: Spider, reason: str) -> Deferred | None:
        s = self.crawler.settings
        stats = dict(self.crawler.stats.get_stats())
        if "start_time" not in stats:
            # The engine failed while opening (a store that cannot be opened, ...): the run never
            # started, and the crawl command reports the error; no summary, as for bad input.
            logger.debug("The crawl never started: no run summary", extra={"spider": spider})
            return None
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
        self.crawler.holocron_run_summary = summary  # type: ignore[attr-defined] # read by the crawl command
        logger.info(
            "Run %(run_id)s %(status)s: %(pages_stored)d stored, %(pages_unchanged)d unchanged,"
            " %(pages_missing)d missing, %(pages_failed)d failed, %(pages_retried)d retried"
            " (%(download_retries)d download retries), %(requests)d requests in %(duration)s"
            " (finish reason %(finish_reason)s, exit status %(exit_status)d)",
            {
                **summary,
                "duration": f"{summary['duration_s']:.1f}s" if summary["duration_s"] is not None else "?",
                "exit_status": exit_code(summary["status"]),
            },
            extra={"spider": spider},
        )
        try:
            store = open_record_store(self.records_url, sqlserver_config=self.sqlserver_config)
            try:
                store.write_run(summary)
            finally:
                store.close()
        except Exception as exc:
            if is_storage_error(exc):  # a read-only or full records database: one line, no traceback
                logger.error("Could not write the run summary to ingest_runs: %s", exc, extra={"spider": spider})
            else:
                logger.exception("Could not write the run summary to ingest_runs", extra={"spider": spider})
        body = report_json(summary)
        if self.lake_dir:
            try:
                path = Path(self.lake_dir).expanduser().resolve() / "_runs" / f"{summary['run_id']}.json"
                write_atomically(path, body)
                summary["report_path"] = str(path)
            except OSError as exc:  # a full or read-only lake: one line, no traceback
                logger.error("Could not write the run report file: %s", exc, extra={"spider": spider})
        if not self.webhook:
            return None
        d = threads.deferToThread(post_webhook, self.webhook, body, self.webhook_timeout)
        where = mask_url(self.webhook)
        d.addCallbacks(
            lambda status: logger.info(
                "Run report sent to the webhook %s (HTTP %s)", where, status, extra={"spider": spider}
            ),
            lambda failure: logger.warning(
                "Run report webhook failed: %s (%s)",
                mask_text(failure.getErrorMessage()),
                where,
                extra={"spider": spider},
            ),
        )
        return d
