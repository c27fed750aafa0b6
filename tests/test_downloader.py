"""holocron_scrapy.downloader: a source's ``concurrency`` caps the requests a host sees at once,
also with no download delay (real ``scrapy crawl http`` against a slow server on 127.0.0.1)."""

from __future__ import annotations

from scrapy import Request, Spider
from scrapy.core.downloader import Downloader
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler
from twisted.internet.defer import Deferred

from holocron_scrapy.downloader import PoliteDownloader
from tests.support.counting_site import counting_site
from tests.support.crawl import Workspace
from tests.test_spiders_http import http_config

PAGES = 12


def crawl(tmp_path, name: str, base: str, settings: dict[str, str] | None = None) -> Workspace:
    ws = Workspace(tmp_path / name)
    ws.root.mkdir()
    http_config(ws, "  - {name: site, type: http, delay: 0, concurrency: 2}\n")
    proc = ws.crawl("http", "source=site", f"seeds={base}/", "max_depth=1", settings=settings)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(ws.records()) == PAGES + 1
    return ws


def test_concurrency_per_host_holds_without_a_delay(tmp_path):
    with counting_site(PAGES, latency=0.2) as site:  # an index linking to PAGES pages, 0.2 s an answer
        crawl(tmp_path, "polite", site.base)
        assert site.peak == 2  # the limit is reached, never exceeded


@deferred_f_from_coro_f
async def test_a_slot_starts_no_more_than_its_concurrency_at_once():
    """Six requests queued for a slot of concurrency 2, delay 0, one pass of the queue: Scrapy's
    downloader starts all six (if this fails for it, Scrapy enforces the limit itself and
    PoliteDownloader can go); PoliteDownloader starts two."""
    for cls, started_at_once in ((Downloader, 6), (PoliteDownloader, 2)):
        crawler = get_crawler(Spider, {"CONCURRENT_REQUESTS_PER_DOMAIN": 2, "DOWNLOAD_DELAY": 0})
        downloader = cls(crawler)
        started: list[Request] = []

        async def no_download(slot, request, queue_dfd, started=started):
            started.append(request)

        downloader._wait_for_download = no_download
        _, slot = downloader._get_slot(Request("http://h/"))
        for n in range(6):
            slot.queue.append((Request(f"http://h/{n}"), Deferred()))
        downloader._process_queue(slot)
        assert len(slot.queue) == 6 - started_at_once, cls
        downloader.close()
