"""holocron_scrapy.middlewares.deltafetch: scrapy-deltafetch working on Scrapy 2.19."""

from __future__ import annotations

from scrapy import Request, Spider
from scrapy.http import HtmlResponse
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler
from scrapy_deltafetch.middleware import DeltaFetch

from holocron_scrapy.items import FAILED, IngestItem
from holocron_scrapy.middlewares.deltafetch import AsyncDeltaFetch


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
    out = [o async for o in mw.process_spider_output_async(response, _aiter([{"item": 1}, Request("http://e/new")]))]
    assert len(out) == 2
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
