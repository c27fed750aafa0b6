"""holocron_scrapy.frontier.acks: what is acked, failed or handed on when a callback's output ends."""

from __future__ import annotations

import pytest
import pytest_twisted
from scrapy import Request
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from holocron_scrapy.frontier.acks import (
    DROPPED,
    FrontierAckMiddleware,
    FrontierHandOffMiddleware,
)
from holocron_scrapy.frontier.contract import WORK_META, Work
from holocron_scrapy.items import IngestItem


class Frontier:
    def __init__(self):
        self.acked: list[int] = []
        self.failed: list[tuple[list[int], str, bool]] = []
        self.fetched_ids: list[int] = []

    def ack(self, seqs):
        self.acked += seqs

    def fail(self, seqs, error, *, retryable=True):
        self.failed.append((list(seqs), error, retryable))

    def fetched(self, seqs):
        self.fetched_ids += seqs


def setup():
    crawler = get_crawler(settings_dict={})
    crawler.holocron_frontier = Frontier()
    request = Request("https://w/api.php?batch", meta={WORK_META: Work(ids=(1, 2, 3))})
    response = HtmlResponse(request.url, body=b"<html></html>", request=request)
    continuation = Request("https://w/api.php?continue", meta={WORK_META: Work(ids=(2,))})
    item = IngestItem("mediawiki", "w", "page", "Three", request.url, {"x": 1}, work_item_ids=[3])
    return crawler, response, [continuation, item]


def drop_requests(outputs):
    return [o for o in outputs if not isinstance(o, Request)]


@pytest.mark.parametrize("dropped", [False, True])
def test_a_request_dropped_between_the_callback_and_the_ack_fails_its_ids(dropped):
    crawler, response, outputs = setup()
    handoff, acks = FrontierHandOffMiddleware(), FrontierAckMiddleware(crawler)
    noted = list(handoff.process_spider_output(response, outputs))
    passed = drop_requests(noted) if dropped else noted
    assert list(acks.process_spider_output(response, passed)) == passed
    frontier = crawler.holocron_frontier
    assert frontier.acked == [1]  # 3 belongs to the item (acked when it is stored), 2 to the request
    if dropped:
        assert frontier.failed == [([2], DROPPED, True)]  # not acked: it has no record
        assert crawler.stats.get_value("frontier/dropped_requests") == 1
        assert 2 not in frontier.fetched_ids
    else:
        assert frontier.failed == []


@pytest_twisted.ensureDeferred
async def test_the_async_output_is_settled_the_same_way():
    crawler, response, outputs = setup()
    handoff, acks = FrontierHandOffMiddleware(), FrontierAckMiddleware(crawler)

    async def callback():
        for output in outputs:
            yield output

    async def dropper(result):
        async for output in result:
            if not isinstance(output, Request):
                yield output

    out = [o async for o in acks.process_spider_output_async(
        response, dropper(handoff.process_spider_output_async(response, callback()))
    )]  # fmt: skip
    assert out == outputs[1:]
    assert crawler.holocron_frontier.acked == [1]
    assert crawler.holocron_frontier.failed == [([2], DROPPED, True)]


def test_the_project_puts_the_hand_off_next_to_the_callback():
    from scrapy.utils.project import get_project_settings

    from holocron_scrapy.addons import apply_addons

    middlewares = apply_addons(get_project_settings()).getdict("SPIDER_MIDDLEWARES")
    assert middlewares["holocron_scrapy.frontier.acks.FrontierHandOffMiddleware"] > 900  # above DepthMiddleware
    assert middlewares["holocron_scrapy.frontier.acks.FrontierAckMiddleware"] < 50  # below HttpErrorMiddleware


@pytest.mark.parametrize("outcome", ["stored", "dropped", "error"])
def test_a_foreign_items_page_is_acked_only_once_its_items_left_the_pipelines(outcome):
    """A third-party spider's items (plain dicts: no work_item_ids field) hold the ids of their response."""
    from scrapy import signals
    from twisted.python.failure import Failure

    crawler, response, _ = setup()
    acks = FrontierAckMiddleware(crawler)
    first, second = {"title": "A"}, {"title": "B"}
    assert list(acks.process_spider_output(response, [first, second])) == [first, second]
    frontier = crawler.holocron_frontier
    assert frontier.acked == [] and frontier.failed == []  # the callback ended; its items are not stored yet
    crawler.signals.send_catch_log(signals.item_scraped, item=first, response=response, spider=None)
    assert frontier.acked == []  # one of two
    if outcome == "stored":
        crawler.signals.send_catch_log(signals.item_scraped, item=second, response=response, spider=None)
        assert frontier.acked == [1, 2, 3] and frontier.failed == []
    elif outcome == "dropped":
        dropped = {"item": second, "response": response, "exception": None, "spider": None}
        crawler.signals.send_catch_log(signals.item_dropped, **dropped)
        assert frontier.acked == [1, 2, 3]
    else:
        failure = Failure(OSError("disk full"))
        crawler.signals.send_catch_log(signals.item_error, item=second, response=response, spider=None, failure=failure)
        assert frontier.acked == [] and frontier.failed == [([1, 2, 3], "pipeline error: disk full", False)]


def test_ids_of_a_page_without_items_are_acked_when_its_output_ends():
    crawler, response, _ = setup()
    acks = FrontierAckMiddleware(crawler)
    assert list(acks.process_spider_output(response, [])) == []
    assert crawler.holocron_frontier.acked == [1, 2, 3]


def test_a_callback_that_raises_midway_fails_its_untaken_ids_for_good():
    """As in Scrapy, a request is not fetched again for its callback's exception."""
    crawler, response, outputs = setup()
    acks = FrontierAckMiddleware(crawler)

    def callback():
        yield outputs[0]  # the continuation takes id 2
        raise KeyError("parse")

    with pytest.raises(KeyError):
        list(acks.process_spider_output(response, callback()))
    assert acks.process_spider_exception(response, KeyError("parse")) is None  # settled already: not twice
    assert crawler.holocron_frontier.failed == [([1, 3], "spider error: KeyError('parse')", False)]
    assert crawler.holocron_frontier.acked == []


def test_a_callback_that_raises_before_any_output_fails_its_ids_for_good():
    """A callback that is not a generator raises before ``process_spider_output`` sees anything."""
    crawler, response, _ = setup()
    acks = FrontierAckMiddleware(crawler)
    assert acks.process_spider_exception(response, ValueError("bad page")) is None  # others may handle it
    assert crawler.holocron_frontier.failed == [([1, 2, 3], "spider error: ValueError('bad page')", False)]
    assert crawler.holocron_frontier.fetched_ids == [1, 2, 3]


def test_a_callback_that_stops_the_crawl_costs_its_ids_no_attempt():
    """CloseSpider (and the stores' "unreachable" errors, which are CloseSpider) stops the crawl: the
    ids stay leased and are handed back at close for the next run, not failed."""
    from scrapy.exceptions import CloseSpider

    crawler, response, _ = setup()
    acks = FrontierAckMiddleware(crawler)

    def callback():
        raise CloseSpider("fatal_records_unreachable")
        yield

    with pytest.raises(CloseSpider):
        list(acks.process_spider_output(response, callback()))
    assert acks.process_spider_exception(response, CloseSpider("x")) is None
    assert crawler.holocron_frontier.failed == [] and crawler.holocron_frontier.acked == []
