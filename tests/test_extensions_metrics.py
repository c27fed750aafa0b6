"""The Prometheus endpoint (holocron_scrapy.extensions.metrics) of a real crawl, scraped while it runs.

A real ``scrapy crawl http`` against a local site, with ``HOLOCRON_METRICS_PORT``: the endpoint
serves exposition text that prometheus_client's own parser reads, with the frontier's gauges and the
crawl's counters; it is gone once the crawl ends. Without the setting no port is opened.
"""

from __future__ import annotations

import socket
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support.static_site import free_port, serve_directory
from tests.test_commands_frontier import http_workspace, page_requests, start_http_crawl, write_pages

EXPECTED = {
    "holocron_frontier_items",
    "holocron_frontier_read_timestamp_seconds",
    "holocron_pages_stored",
    "holocron_requests",
    "holocron_responses",
    "holocron_records_written",
    "holocron_lake_bytes",
    "holocron_outages",
}


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return answer.read().decode("utf-8")
    except OSError:
        return None


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_endpoint_serves_the_frontier_and_the_crawl_while_it_runs(tmp_path):
    pages = 120
    write_pages(tmp_path / "site", pages)
    ws = http_workspace(tmp_path / "ws")
    port = free_port()
    with serve_directory(tmp_path / "site") as (base, log):
        proc = start_http_crawl(ws, base, "metrics", HOLOCRON_METRICS_PORT=str(port))
        try:
            deadline = time.monotonic() + 120
            while True:  # until the counts and the stats have been read at least once mid-crawl
                assert proc.poll() is None, proc.stderr.read()[-3000:]
                assert time.monotonic() < deadline, "no metrics mid-crawl"
                text = scrape(port)
                if text is not None:
                    got = samples(text)
                    stored = got.get(("holocron_pages_stored_total", ()), 0)
                    pending = got.get(("holocron_frontier_items", (("source", "site"), ("status", "pending"))), 0)
                    if stored > 0 and pending > 0:
                        break
                time.sleep(0.2)
            during = page_requests(log)
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) >= EXPECTED, set(families)
    assert families["holocron_frontier_items"].type == "gauge"
    counters = EXPECTED - {"holocron_frontier_items", "holocron_frontier_read_timestamp_seconds"}
    assert {families[name].type for name in counters} == {"counter"}
    statuses = {s.labels["status"] for s in families["holocron_frontier_items"].samples}
    assert statuses == {"pending", "in_progress", "completed", "failed"}
    ok = got[("holocron_responses_total", (("status", "200"),))]
    assert 0 < ok <= during + 1  # the server saw them all (and robots.txt), and logged them first
    assert got[("holocron_requests_total", ())] >= ok  # handed to the downloader: some still queued
    assert got[("holocron_records_written_total", (("outcome", "ok"),))] == stored
    assert got[("holocron_lake_bytes_total", ())] > 0
    assert got[("holocron_outages_total", (("store", "frontier"),))] == 0
    assert "Metrics endpoint: http://127.0.0.1:" in err
    assert scrape(port) is None  # stopped with the crawl
    with socket.socket() as sock:  # and the port is free again (its closed connections in TIME_WAIT aside)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_off_by_default(tmp_path):
    write_pages(tmp_path / "site", 3)
    ws = http_workspace(tmp_path / "ws")
    with serve_directory(tmp_path / "site") as (base, _log):
        proc = start_http_crawl(ws, base, "plain")
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "Enabled extensions" in err and "Metrics endpoint" not in err
    assert "FleetMetrics" not in err.split("Enabled extensions")[-1][:2000]


def test_a_busy_port_is_one_error_line_and_the_crawl_goes_on(caplog):
    from scrapy.utils.test import get_crawler

    from holocron_scrapy.extensions.metrics import FleetMetrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        crawler = get_crawler(settings_dict={"HOLOCRON_METRICS_PORT": port})
        ext = FleetMetrics.from_crawler(crawler)
        with caplog.at_level("ERROR", logger="holocron_scrapy.extensions.metrics"):
            ext.spider_opened(None)
    assert [r.getMessage() for r in caplog.records] == [
        f"Metrics endpoint not started: cannot listen on 127.0.0.1:{port} ([Errno 98] Address already in use)"
    ]
    assert ext._loop is None
    closed = ext.spider_closed(None)
    assert closed.called and closed.result is None  # nothing was started: nothing to wait for
