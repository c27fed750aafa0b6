"""holocron_scrapy.extensions.runs: the run summary built from Scrapy stats."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from holocron_scrapy.extensions.runs import build_summary, run_status


@pytest.mark.parametrize(
    ("reason", "ok", "failed", "errors", "status"),
    [
        ("finished", 10, 0, 0, "completed"),
        ("finished", 10, 2, 0, "partial"),
        ("finished", 0, 2, 0, "failed"),
        ("finished", 0, 0, 0, "completed"),  # nothing to do (everything already stored)
        ("shutdown", 5, 0, 0, "partial"),
        ("shutdown", 0, 0, 1, "failed"),
    ],
)
def test_status(reason, ok, failed, errors, status):
    assert run_status(reason, ok, failed, errors) == status


def test_summary_counts_outcomes_of_every_spider():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stats = {
        "start_time": start,
        "finish_time": start + timedelta(seconds=90),
        "records/written": 7,
        "mediawiki/pages/ok": 5,
        "mediawiki/pages/missing": 1,
        "mediawiki/pages/redirect_loop": 1,
        "http/pages/failed": 2,
        "recrawl/unchanged": 4,
        "downloader/request_count": 3,
        "downloader/exception_type_count/twisted.internet.error.DNSLookupError": 2,
    }
    summary = build_summary(
        stats, run_id="r1", spider="mediawiki", source_system="mediawiki", source_name="w", reason="finished"
    )
    assert summary["status"] == "partial" and summary["duration_s"] == 90
    assert (summary["pages_stored"], summary["pages_missing"], summary["pages_failed"]) == (7, 2, 2)
    assert summary["pages_unchanged"] == 4 and summary["requests"] == 3
    assert summary["errors"] == {"downloader/exception_type_count/twisted.internet.error.DNSLookupError": 2}


def test_a_recrawl_that_finds_everything_unchanged_is_not_failed_by_one_failure():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stats = {"start_time": start, "recrawl/unchanged": 1000, "http/pages/failed": 1, "records/written": 1}
    summary = build_summary(stats, run_id="r2", spider="http", source_system="http_scrape", source_name="s",
                            reason="finished")  # fmt: skip
    assert summary["status"] == "partial" and summary["pages_unchanged"] == 1000
    only_failures = build_summary({"start_time": start, "http/pages/failed": 1}, run_id="r3", spider="http",
                                  source_system="http_scrape", source_name="s", reason="finished")  # fmt: skip
    assert only_failures["status"] == "failed"


def test_webhook_comes_from_the_setting_or_else_the_environment(monkeypatch):
    from scrapy.utils.test import get_crawler

    from holocron_scrapy.extensions.runs import RunSummary

    monkeypatch.delenv("HOLOCRON_NOTIFY_WEBHOOK", raising=False)
    assert RunSummary.from_crawler(get_crawler()).webhook is None
    monkeypatch.setenv("HOLOCRON_NOTIFY_WEBHOOK", "http://127.0.0.1:9/env")
    assert RunSummary.from_crawler(get_crawler()).webhook == "http://127.0.0.1:9/env"
    setting = get_crawler(settings_dict={"HOLOCRON_NOTIFY_WEBHOOK": "http://127.0.0.1:9/setting"})
    assert RunSummary.from_crawler(setting).webhook == "http://127.0.0.1:9/setting"
