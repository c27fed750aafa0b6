"""holocron_scrapy.extensions.runs: the run summary built from Scrapy stats."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from holocron_scrapy.extensions.runs import build_summary, exit_code, run_status


@pytest.mark.parametrize(
    ("reason", "ok", "failed", "errors", "status"),
    [
        ("finished", 10, 0, 0, "completed"),
        ("finished", 10, 2, 0, "partial"),
        ("finished", 0, 2, 0, "failed"),
        ("finished", 0, 0, 0, "completed"),  # nothing to do (everything already stored)
        ("shutdown", 5, 0, 0, "partial"),  # Ctrl-C, SIGTERM: stopped early
        ("shutdown", 0, 0, 1, "failed"),
        ("max_pages", 5, 0, 0, "completed"),  # a limit reached is a normal end
        ("closespider_pagecount", 5, 0, 0, "completed"),
        ("closespider_itemcount", 5, 1, 0, "partial"),
        ("fatal_api_probe", 0, 0, 1, "failed"),
        ("fatal_storage", 40, 0, 0, "failed"),  # whatever was stored before
    ],
)
def test_status(reason, ok, failed, errors, status):
    assert run_status(reason, ok, failed, errors) == status


@pytest.mark.parametrize(("status", "code"), [("completed", 0), ("partial", 3), ("failed", 1), (None, 1)])
def test_exit_codes(status, code):
    assert exit_code(status) == code


def summarize(stats, reason="finished"):
    return build_summary(stats, run_id="r", spider="http", source_system="http_scrape", source_name="s", reason=reason)


def test_summary_counts_pages_not_records():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stats = {
        "start_time": start,
        "finish_time": start + timedelta(seconds=90),
        "records/written": 12,  # 7 pages, 2 missing titles, 3 failure records (one per failed attempt)
        "records/written/ok": 7,
        "records/written/missing": 1,
        "records/written/redirect_loop": 1,
        "records/written/failed": 3,
        "mediawiki/pages/ok": 7,
        "mediawiki/pages/missing": 1,
        "mediawiki/pages/redirect_loop": 1,
        "mediawiki/pages/failed": 3,
        "frontier/failed": 1,  # ended failed for good
        "frontier/retried": 2,  # put back for another attempt
        "retry/count": 5,
        "recrawl/unchanged": 4,
        "downloader/request_count": 3,
        "downloader/exception_type_count/twisted.internet.error.DNSLookupError": 2,
    }
    summary = build_summary(
        stats, run_id="r1", spider="mediawiki", source_system="mediawiki", source_name="w", reason="finished"
    )
    assert summary["status"] == "partial" and summary["duration_s"] == 90
    assert (summary["pages_stored"], summary["pages_missing"], summary["pages_failed"]) == (7, 2, 1)
    assert (summary["pages_retried"], summary["download_retries"], summary["failure_records"]) == (2, 5, 3)
    assert summary["pages_unchanged"] == 4 and summary["requests"] == 3
    assert summary["errors"] == {"downloader/exception_type_count/twisted.internet.error.DNSLookupError": 2}


def test_failure_records_are_not_stored_pages():
    """The README's quick start offline: every page failed; the failure records are no stored pages."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stats = {"start_time": start, "records/written": 2, "records/written/failed": 2, "frontier/failed": 2}
    summary = summarize(stats)
    assert summary["status"] == "failed" and summary["pages_stored"] == 0 and summary["pages_failed"] == 2


def test_retried_pages_that_end_stored_leave_the_run_completed():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stats = {"start_time": start, "records/written/ok": 10, "records/written/failed": 4, "frontier/retried": 4}
    summary = summarize(stats)
    assert summary["status"] == "completed" and summary["pages_retried"] == 4 and summary["pages_failed"] == 0


def test_pages_refused_by_robots_txt_are_not_failures():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stats = {"start_time": start, "records/written/ok": 3, "frontier/failed": 1, "robotstxt/forbidden": 1}
    summary = summarize(stats)
    assert summary["status"] == "completed" and summary["pages_forbidden"] == 1 and summary["pages_failed"] == 0


def test_a_recrawl_that_finds_everything_unchanged_is_not_failed_by_one_failure():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    stats = {"start_time": start, "recrawl/unchanged": 1000, "frontier/failed": 1, "records/written/failed": 1}
    summary = summarize(stats)
    assert summary["status"] == "partial" and summary["pages_unchanged"] == 1000
    only_failures = summarize({"start_time": start, "frontier/failed": 1, "records/written/failed": 1})
    assert only_failures["status"] == "failed"


def test_a_page_limit_is_a_normal_end():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert summarize({"start_time": start, "records/written/ok": 5}, reason="max_pages")["status"] == "completed"
    assert summarize({"start_time": start, "records/written/ok": 5}, reason="shutdown")["status"] == "partial"


def test_a_sync_run_says_what_it_did_and_counts_deleted_pages():
    stats = {"sync/mode": "sweep (first run)", "mediawiki/pages/deleted": 2, "records/written/ok": 3}
    summary = summarize(stats, "finished")
    assert summary["sync"] == "sweep (first run)" and summary["pages_deleted"] == 2
    assert summary["pages_missing"] == 0 and summary["status"] == "completed"
    plain = summarize({"records/written/ok": 1}, "finished")
    assert plain["sync"] is None and plain["pages_deleted"] == 0


def test_webhook_comes_from_the_setting_or_else_the_environment(monkeypatch):
    from scrapy.utils.test import get_crawler

    from holocron_scrapy.extensions.runs import RunSummary

    monkeypatch.delenv("HOLOCRON_NOTIFY_WEBHOOK", raising=False)
    assert RunSummary.from_crawler(get_crawler()).webhook is None
    monkeypatch.setenv("HOLOCRON_NOTIFY_WEBHOOK", "http://127.0.0.1:9/env")
    assert RunSummary.from_crawler(get_crawler()).webhook == "http://127.0.0.1:9/env"
    setting = get_crawler(settings_dict={"HOLOCRON_NOTIFY_WEBHOOK": "http://127.0.0.1:9/setting"})
    assert RunSummary.from_crawler(setting).webhook == "http://127.0.0.1:9/setting"


def test_webhook_userinfo_is_sent_as_basic_auth_not_in_the_url():
    import base64
    import http.server
    import threading

    from holocron_scrapy.extensions.runs import post_webhook

    seen: list[tuple[str, str | None]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://hook:p%40ss@127.0.0.1:{server.server_port}/h?token=t0k"
        assert post_webhook(url, b"{}", 5) == 204
    finally:
        server.shutdown()
    assert seen == [("/h?token=t0k", "Basic " + base64.b64encode(b"hook:p@ss").decode())]


def test_a_crawl_whose_engine_never_opened_leaves_no_summary(tmp_path):
    from scrapy import Spider
    from scrapy.statscollectors import MemoryStatsCollector
    from scrapy.utils.test import get_crawler

    from holocron_scrapy.extensions.runs import RunSummary

    records = tmp_path / "records.sqlite3"
    crawler = get_crawler(
        settings_dict={"HOLOCRON_RECORDS_URL": f"sqlite:///{records}", "HOLOCRON_LAKE_DIR": str(tmp_path / "lake")}
    )
    crawler.stats = MemoryStatsCollector(crawler)  # empty: CoreStats never saw the spider open
    ext = RunSummary.from_crawler(crawler)
    assert ext.spider_closed(Spider("x"), "shutdown") is None  # no start_time: the engine failed to open
    assert ext.summary is None and not records.exists() and not (tmp_path / "lake").exists()
