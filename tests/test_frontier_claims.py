"""holocron_scrapy.frontier.claims: claimed rows become leased requests, merged into batches."""

from __future__ import annotations

from holocron_scrapy.frontier.claims import claimed_requests
from holocron_scrapy.frontier.contract import ids_of, work_of
from holocron_scrapy.frontier.leases import Leases
from holocron_scrapy.frontier.serialization import request_to_row
from tests.test_frontier_scheduler import BatchSpider, PageSpider, page


def row(seq: int, request, **extra):
    return {**request_to_row(request), "seq": seq, "depth": 0, "attempt": 1, "work_item_id": f"wi-{seq}", **extra}


def test_rows_become_requests_with_their_claim():
    leases = Leases()
    rows = [row(1, page("A")), row(2, page("B"), completed_at="2026-12-01 10:00:00.000000", lease_losses=2)]
    claimed = claimed_requests(rows, PageSpider(), leases, solo_after=2)
    a, b = claimed.requests
    assert ids_of(a) == (1,) and work_of(a).work_item_id == "wi-1" and work_of(a).completed_at is None
    assert work_of(b).completed_at == "2026-12-01 10:00:00.000000"  # a re-crawl
    assert claimed.solo == 1 and leases.suspects == {2} and leases.held() == {1, 2}


def test_a_batching_spider_gets_merged_requests_of_its_current_size():
    spider = BatchSpider()  # frontier_batch_size 2
    rows = [row(seq, page(title, batch=True)) for seq, title in enumerate("ABC", start=1)]
    claimed = claimed_requests(rows, spider, Leases(), solo_after=2)
    assert [r.meta["titles"] for r in claimed.requests] == [["A", "B"], ["C"]]
    assert [ids_of(r) for r in claimed.requests] == [(1, 2), (3,)]


def test_a_row_that_cannot_be_rebuilt_is_failed_not_leased():
    leases = Leases()
    bad = {**row(1, page("A")), "metadata": '{"v": 99, "request": {}}'}
    claimed = claimed_requests([bad, row(2, page("B"))], PageSpider(), leases, solo_after=2)
    assert claimed.rejected == 1 and [ids_of(r) for r in claimed.requests] == [(2,)]
    assert leases.held() == {2} and [f.seq for f in leases.failed] == [1] and not leases.failed[0].retryable
