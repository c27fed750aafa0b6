"""holocron_scrapy.frontier.serialization: a request's round trip through a work_items row."""

from __future__ import annotations

import json

import pytest
from scrapy import Request, Spider

from holocron_scrapy.frontier.contract import WORK_META, Work
from holocron_scrapy.frontier.keys import Resource
from holocron_scrapy.frontier.serialization import SerializationError, request_from_row, request_to_row

UNCLAIMED = Work(Resource("mediawiki", "w", "page", "Ωmega"), 1, discovered_from="Hub", batch_key="b", batch_size=5)
#: The same request as the frontier hands it out: the claim's fields are never stored.
CLAIMED = UNCLAIMED.but(ids=[5], attempt=2, work_item_id="wi-5", completed_at="2026-12-01 00:00:00.000000")


class RoundTripSpider(Spider):
    name = "roundtrip"

    def parse_page(self, response, **kwargs):
        pass

    def on_error(self, failure):
        pass


def test_round_trip_keeps_callbacks_meta_kwargs_headers_and_body():
    spider = RoundTripSpider()
    request = Request(
        "https://example.org/a?b=1",
        method="POST",
        body=b"\x00\xffbinary",
        headers={"X-Token": b"\xe9t\xe9", "Accept": ["a/b", "c/d"]},
        callback=spider.parse_page,
        errback=spider.on_error,
        cb_kwargs={"depth_hint": 2, "tags": ["x", "y"]},
        meta={WORK_META: CLAIMED, "raw": b"\x01\x02", "download_slot": "x"},
        priority=7,
        dont_filter=True,
        flags=["seed"],
    )
    row = request_to_row(request, spider)
    json.loads(row["metadata"])  # valid JSON
    assert row["request_uri"] == "https://example.org/a?b=1" and row["request_method"] == "POST"
    back = request_from_row(row, spider)
    assert back.url == request.url and back.method == "POST" and back.body == b"\x00\xffbinary"
    assert back.callback == spider.parse_page and back.errback == spider.on_error
    assert back.cb_kwargs == {"depth_hint": 2, "tags": ["x", "y"]}
    assert back.headers.getlist("Accept") == [b"a/b", b"c/d"] and back.headers["X-Token"] == b"\xe9t\xe9"
    assert back.meta == {WORK_META: UNCLAIMED, "raw": b"\x01\x02"}  # lease bookkeeping dropped
    assert back.priority == 7 and back.dont_filter and back.flags == ["seed"]


def test_a_request_stored_by_an_earlier_version_is_read_into_its_work():
    """Before the contract, the resource was a dict under "holocron" and the batch two keys beside it."""
    row = request_to_row(Request("https://w/index.php?title=A"))
    legacy = {
        "holocron": {"source_system": "mediawiki", "source_name": "w", "resource_type": "page", "resource_id": "A",
                     "depth": 2, "discovered_from": "Hub"},
        "holocron_batch": "https://w/api.php",
        "holocron_batch_size": 50,
        "keep": 1,
    }
    metadata = json.loads(row["metadata"])
    metadata["request"]["meta"] = legacy
    row["metadata"] = json.dumps(metadata)
    back = request_from_row(row)
    assert back.meta == {
        WORK_META: Work(Resource("mediawiki", "w", "page", "A"), 2, "Hub", "https://w/api.php", 50),
        "keep": 1,
    }


def test_unserialisable_meta_names_the_key():
    with pytest.raises(SerializationError, match=r"request\.meta\.thing: object"):
        request_to_row(Request("https://example.org/", meta={"thing": object()}))


def test_unknown_format_version_is_refused():
    row = request_to_row(Request("https://example.org/"))
    row["metadata"] = json.dumps({"v": 99, "request": {}})
    with pytest.raises(SerializationError, match="unknown metadata format version 99"):
        request_from_row(row)
