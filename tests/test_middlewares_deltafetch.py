"""holocron_scrapy.middlewares.deltafetch: scrapy-deltafetch working on Scrapy 2.19."""

from __future__ import annotations

from scrapy import Request, Spider, signals
from scrapy.http import HtmlResponse
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler
from scrapy_deltafetch.middleware import DeltaFetch

from holocron_scrapy.items import FAILED, IngestItem
from holocron_scrapy.middlewares.deltafetch import AsyncDeltaFetch
from holocron_scrapy.pipelines.changes import UnchangedError
from holocron_scrapy.pipelines.faults import StorageFault


class Site(Spider):
    name = "site"


async def _aiter(items):
    for item in items:
        yield item


def test_the_shipped_middleware_lacks_the_async_hook():
    assert not hasattr(DeltaFetch, "process_spider_output_async")  # why the subclass exists
    assert hasattr(AsyncDeltaFetch, "process_spider_output_async")


@deferred_f_from_coro_f
async def test_async_output_records_items_and_skips_seen_requests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crawler = get_crawler(Site, {"DELTAFETCH_ENABLED": True, "DELTAFETCH_DIR": "relative/delta"})
    mw = AsyncDeltaFetch.from_crawler(crawler)
    assert mw.dir == str(tmp_path / "relative" / "delta")  # made absolute
    spider = Site()
    mw.spider_opened(spider)
    page = Request("http://e/page", meta={"deltafetch_key": "page"})
    response = HtmlResponse("http://e/page", body=b"", request=page)
    item = {"item": 1}
    out = [o async for o in mw.process_spider_output_async(response, _aiter([item, Request("http://e/new")]))]
    assert len(out) == 2
    assert not crawler.stats.get_value("deltafetch/stored")  # not before the item is stored
    crawler.signals.send_catch_log(signals.item_scraped, item=item, response=response, spider=spider)
    assert crawler.stats.get_value("deltafetch/stored") == 1
    index = HtmlResponse("http://e/", body=b"", request=Request("http://e/"))
    again = [o async for o in mw.process_spider_output_async(index, _aiter([page, Request("http://e/other")]))]
    assert [r.url for r in again] == ["http://e/other"]
    assert crawler.stats.get_value("deltafetch/skipped") == 1
    mw.spider_closed(spider)


@deferred_f_from_coro_f
async def test_a_failed_page_is_not_marked_seen(tmp_path):
    crawler = get_crawler(Site, {"DELTAFETCH_ENABLED": True, "DELTAFETCH_DIR": str(tmp_path / "delta")})
    mw = AsyncDeltaFetch.from_crawler(crawler)
    spider = Site()
    mw.spider_opened(spider)
    broken = Request("http://e/broken", meta={"deltafetch_key": "broken"})
    response = HtmlResponse("http://e/broken", status=503, body=b"", request=broken)
    failed = IngestItem("http_scrape", "s", "error", "http://e/broken", "http://e/broken", None, outcome=FAILED)
    assert [o async for o in mw.process_spider_output_async(response, _aiter([failed]))] == [failed]
    index = HtmlResponse("http://e/", body=b"", request=Request("http://e/"))
    again = [o async for o in mw.process_spider_output_async(index, _aiter([broken]))]
    assert again == [broken]  # tried again next time
    assert not crawler.stats.get_value("deltafetch/stored")
    mw.spider_closed(spider)


@deferred_f_from_coro_f
async def test_a_page_is_marked_seen_only_once_its_item_is_stored(tmp_path):
    """Seen must not run ahead of storage: an item lost to a storage fault or a pipeline error
    leaves its page unmarked; one dropped as unchanged (stored before) marks it."""
    crawler = get_crawler(Site, {"DELTAFETCH_ENABLED": True, "DELTAFETCH_DIR": str(tmp_path / "delta")})
    mw = AsyncDeltaFetch.from_crawler(crawler)
    spider = Site()
    mw.spider_opened(spider)
    index = HtmlResponse("http://e/", body=b"", request=Request("http://e/"))
    outcomes = {
        "fault": (signals.item_dropped, {"exception": StorageFault("disk full")}),
        "error": (signals.item_error, {"failure": None}),
        "unchanged": (signals.item_dropped, {"exception": UnchangedError("same")}),
    }
    for name, (signal, extra) in outcomes.items():
        page = Request(f"http://e/{name}", meta={"deltafetch_key": name})
        response = HtmlResponse(page.url, body=b"", request=page)
        item = {"page": name}
        assert [o async for o in mw.process_spider_output_async(response, _aiter([item]))] == [item]
        crawler.signals.send_catch_log(signal, item=item, response=response, spider=spider, **extra)
    pages = [Request(f"http://e/{name}", meta={"deltafetch_key": name}) for name in outcomes]
    again = [o async for o in mw.process_spider_output_async(index, _aiter(pages))]
    assert [r.url for r in again] == ["http://e/fault", "http://e/error"]  # tried again next run
    mw.spider_closed(spider)
