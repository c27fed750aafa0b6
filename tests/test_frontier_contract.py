"""holocron_scrapy.frontier.contract: the one spider <-> frontier contract (Work, Frontier, BatchingSpider),
and the replaceable resource keys of holocron_scrapy.frontier.dupefilter."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

import pytest
from scrapy import Request, Spider
from scrapy.utils.test import get_crawler

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.contract import (
    NO_FRONTIER,
    WORK_META,
    BatchingSpider,
    Work,
    frontier_of,
    hand_on,
    ids_of,
    work_meta,
    work_of,
)
from holocron_scrapy.frontier.dupefilter import FrontierDupeFilter, RequestKeys
from holocron_scrapy.frontier.keys import Resource
from holocron_scrapy.frontier.store import COMPLETED
from tests.test_frontier_scheduler import BatchSpider, PageSpider, drain, make, page

PAGE = Resource("mediawiki", "w", "page", "A")


def test_work_is_one_frozen_value_and_a_change_is_a_new_one():
    work = Work(PAGE, depth=2, discovered_from="Hub")
    claimed = work.but(ids=[7, 8], attempt=2)
    assert claimed.ids == (7, 8) and claimed.attempt == 2 and work.ids == () and work.attempt == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        work.depth = 3  # type: ignore[misc]
    request = Request("https://w/A", meta=work_meta(PAGE, depth=2))
    assert list(request.meta) == [WORK_META] and work_of(request) == Work(PAGE, depth=2)
    retry = request.copy()  # Scrapy copies meta shallowly: a shared frozen value cannot leak a change
    hand_on(retry, [9])
    assert ids_of(retry) == (9,) and ids_of(request) == ()


def test_only_the_resource_depth_origin_and_batch_are_stored():
    work = Work(PAGE, 1, "Hub", "https://w/api.php", 50, ids=(3,), attempt=2, work_item_id="wi", completed_at="t")
    stored = work.stored()
    assert stored == {
        "source_system": "mediawiki", "source_name": "w", "resource_type": "page", "resource_id": "A",
        "depth": 1, "discovered_from": "Hub", "batch_key": "https://w/api.php", "batch_size": 50,
    }
    assert Work.from_stored(stored) == Work(PAGE, 1, "Hub", "https://w/api.php", 50)


def test_hand_on_moves_ids_and_keeps_the_claim_of_the_request_it_continues():
    claimed = Request("https://w/A", meta={WORK_META: Work(PAGE, ids=(4,), attempt=3, work_item_id="wi-4")})
    follow = hand_on(Request("https://w/A?continue=1"), ids_of(claimed), of=claimed)
    assert work_of(follow) == Work(ids=(4,), attempt=3, work_item_id="wi-4")


def test_a_crawl_without_the_frontier_gets_a_frontier_that_does_nothing():
    crawler = get_crawler(PageSpider)
    frontier = frontier_of(crawler)
    assert frontier is NO_FRONTIER
    frontier.mark_known(Request("https://w/A"))
    frontier.ack([1])
    frontier.fail([1], "x", retryable=False)  # nothing to record, nothing raised


def test_batching_is_a_declared_protocol_not_a_probe():
    class HalfBatching(PageSpider):  # a merge method alone does not make a batching spider
        name = "half"

        def build_batch_request(self, requests):
            return requests[0]

    assert isinstance(BatchSpider(), BatchingSpider)
    assert not isinstance(HalfBatching(), BatchingSpider) and not isinstance(PageSpider(), BatchingSpider)


def test_mark_known_stores_a_completed_item_that_is_never_sent(tmp_path):
    crawler, s = make(tmp_path)
    assert frontier_of(crawler) is s
    s.mark_known(page("Target"))
    s.mark_known(page("Target"))  # twice: one item
    assert not s.enqueue_request(page("Target"))  # and a link to it later is a duplicate
    assert s.enqueue_request(page("B"))
    assert [work_of(r).resource.resource_id for r in drain(s)] == ["B"]
    assert s.store.counts()["w"][COMPLETED] == 1
    assert s.store.get("mediawiki:w:page:Target")["status"] == COMPLETED
    s.close("finished")


def test_a_claimed_request_carries_one_holocron_key(tmp_path):
    _, s = make(tmp_path, BatchSpider)
    for title in "AB":
        s.enqueue_request(page(title, batch=True))
    (merged,) = drain(s)
    assert ids_of(merged) and [key for key in merged.meta if key.startswith("holocron")] == [WORK_META]
    s.close("finished")


class PathKeys:
    """A project's own keys: a page is its path, whatever the query says (built without from_crawler)."""

    def resource(self, request: Request) -> Resource:
        return Resource("site", "s", "path", urlsplit(request.url).path)


def test_the_dedupe_key_comes_from_one_replaceable_class(tmp_path):
    crawler, s = make(tmp_path, HOLOCRON_FRONTIER_KEYS_CLASS=f"{__name__}.PathKeys")
    assert isinstance(s.df.keys, PathKeys)
    assert s.enqueue_request(Request("https://w/a?utm=1"))
    assert not s.enqueue_request(Request("https://w/a?utm=2"))  # same path: the same resource
    (only,) = drain(s)
    assert only.url == "https://w/a?utm=1" and s.store.get("site:s:path:/a") is not None
    s.close("finished")


def test_the_default_keys_name_the_spiders_resource_else_the_fingerprint():
    crawler = get_crawler(Spider)
    keys = RequestKeys.from_crawler(crawler)
    assert keys.resource(Request("https://w/A", meta=work_meta(PAGE))) == PAGE
    fingerprint = crawler.request_fingerprinter.fingerprint(Request("https://w/B")).hex()
    assert keys.resource(Request("https://w/B")) == Resource("request", "scrapy", "fingerprint", fingerprint)


def test_a_keys_class_without_a_resource_method_is_refused_in_one_line():
    crawler = get_crawler(Spider, {"HOLOCRON_FRONTIER_KEYS_CLASS": "builtins.object"})
    with pytest.raises(ConfigError, match=r"HOLOCRON_FRONTIER_KEYS_CLASS.*builtins.object has no resource"):
        FrontierDupeFilter.from_crawler(crawler)
