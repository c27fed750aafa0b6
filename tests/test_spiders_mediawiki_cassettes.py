"""MediaWikiSpider.parse_batch / errback_batch on recorded answers of the local MediaWiki 1.39.

The cassettes (tests/fixtures/cassettes/test_spiders_mediawiki_cassettes.*.yaml) were recorded
from the generated test wiki through tests/support/cassettes.py, so :func:`wikigen.build_model`
is their ground truth; they replay without a wiki (and under ``CI``). Re-record with
``HOLOCRON_RECORD=1`` (see tests/support/cassettes.py).
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import vcr
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.http import HtmlResponse, JsonResponse, Response, TextResponse
from scrapy.responsetypes import responsetypes
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_reactor_settings
from twisted.internet.error import DNSLookupError
from twisted.python.failure import Failure
from vcr.errors import CannotOverwriteExistingCassetteException

from holocron_scrapy.frontier.contract import CRAWLER_ATTRIBUTE, WORK_META, hand_on, ids_of, work_of
from holocron_scrapy.items import FAILED, INVALID, MISSING, OK, REDIRECT_LOOP, SPECIAL, IngestItem
from holocron_scrapy.mediawiki import api
from holocron_scrapy.mediawiki.calls import QUERY, api_call, api_meta
from holocron_scrapy.spiders.mediawiki import MediaWikiSpider
from tests.support import cassettes, wikigen
from tests.support.cassettes import PLACEHOLDER_API as API
from tests.support.crawl import Workspace

RUN_ID = "run_cassette_test"


class KnownRecorder:
    """The crawl's frontier, as far as these tests need it: the requests marked known."""

    def __init__(self) -> None:
        self.known: list[Request] = []

    def mark_known(self, request: Request) -> None:
        self.known.append(request)

    def ack(self, seqs: list[int]) -> None:
        pass

    def fail(self, seqs: list[int], error: str, *, retryable: bool = True) -> None:
        pass


def known_titles(spider: MediaWikiSpider) -> list[str]:
    return [work_of(r).resource.resource_id for r in getattr(spider.crawler, CRAWLER_ATTRIBUTE).known]


@cache
def model() -> wikigen.WikiModel:
    return wikigen.build_model()


def make_spider(tmp_path: Path, **arguments: str) -> MediaWikiSpider:
    """A MediaWikiSpider built as ``scrapy crawl mediawiki -a source=testwiki ...`` would build it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    ws = Workspace(tmp_path)
    ws.write_config(API)
    crawler = Crawler(MediaWikiSpider, {
        **get_reactor_settings(), "HOLOCRON_CONFIG": str(ws.config), "HOLOCRON_RUN_ID": RUN_ID,
        "TELNETCONSOLE_ENABLED": False,
    })
    spider = crawler._create_spider(source="testwiki", **{"seeds": "Sarvessha", **arguments})
    crawler.spider = spider
    crawler._apply_settings()  # stats
    setattr(crawler, CRAWLER_ATTRIBUTE, KnownRecorder())
    return spider


def batch_request(spider: MediaWikiSpider, titles: list[str], *, depth: int = 0, first_id: int = 1) -> Request:
    """The batch request the frontier would build after claiming *titles* (ids from *first_id*)."""
    claimed = []
    for seq, title in enumerate(titles, start=first_id):
        request = spider.title_request(title, depth=depth)
        request.meta[WORK_META] = work_of(request).but(ids=[seq], attempt=1, work_item_id=f"wi-{seq}")
        claimed.append(request)
    merged = spider.build_batch_request(claimed)
    return hand_on(merged, [ids_of(r)[0] for r in claimed])


def split_output(output: list[Any]) -> tuple[list[IngestItem], list[Request]]:
    items = [o for o in output if isinstance(o, IngestItem)]
    requests = [o for o in output if isinstance(o, Request)]
    assert len(items) + len(requests) == len(output), output
    return items, requests


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


# -- the cassette layer ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", [api.api_url(API, api.query_params(["Sarvessha"]))], ids=["query-Sarvessha"])
def test_response_fixture_keeps_class_status_headers_and_url(response: Response, url: str) -> None:
    assert type(response) is JsonResponse and isinstance(response, TextResponse)
    assert not isinstance(response, HtmlResponse)  # scrapy-mock's only class
    assert response.status == 200 and response.url == url
    assert response.headers[b"Content-Type"] == b"application/json; charset=utf-8"
    assert b"MediaWiki-API-Error" not in response.headers
    assert response.json()["query"]["pages"][0]["title"] == "Sarvessha"
    assert response.request is not None and response.request.url == url


def test_maxlag_cassette_keeps_the_retry_headers(cassette: cassettes.CassettePlayer) -> None:
    url = api.api_url(API, api.query_params(["Sarvessha"], maxlag=-1))
    response = cassette.fetch(Request(url, meta={"marker": 1}))
    assert type(response) is JsonResponse and response.status == 200
    assert response.headers[b"MediaWiki-API-Error"] == b"maxlag"
    assert response.headers[b"Retry-After"] == b"5" and b"X-Database-Lag" in response.headers
    assert response.meta["marker"] == 1
    assert response.json()["error"]["code"] == "maxlag"
    assert "http://wiki.test/api.php" in response.json()["error"]["docref"]


def test_not_found_cassette_keeps_the_status(cassette: cassettes.CassettePlayer) -> None:
    response = cassette.fetch(f"{cassettes.PLACEHOLDER_ORIGIN}/no-such-entry-point.php")
    assert response.status == 404 and response.url == f"{cassettes.PLACEHOLDER_ORIGIN}/no-such-entry-point.php"
    assert type(response) is responsetypes.from_args(headers=response.headers, url=response.url, body=response.body)


def test_recorded_cassettes_do_not_depend_on_the_port() -> None:
    files = sorted(cassettes.CASSETTE_DIR.glob("*.yaml"))
    assert files, "no cassettes recorded"
    for path in files:
        text = path.read_text("utf-8")
        assert "127.0.0.1" not in text and "localhost:" not in text, path.name
        assert "http://wiki.test/" in text, path.name


def test_replay_of_a_missing_cassette_fails_loudly(tmp_path: Path) -> None:
    recorder = cassettes.make_vcr("none", directory=tmp_path)
    with pytest.raises(cassettes.MissingCassetteError, match="HOLOCRON_RECORD=1"):
        with cassettes.use_cassette(recorder, "never-recorded.yaml"):
            pass  # pragma: no cover


def test_replay_never_reaches_the_network() -> None:
    recorder = cassettes.make_vcr("none")
    recorded = "test_spiders_mediawiki_cassettes.test_maxlag_cassette_keeps_the_retry_headers.yaml"
    with cassettes.use_cassette(recorder, recorded) as player:
        with pytest.raises(CannotOverwriteExistingCassetteException):
            player.fetch(api.api_url(API, api.query_params(["Not Recorded Anywhere"])))


@pytest.mark.parametrize(
    ("env", "mode"),
    [({}, "none"), ({"CI": "true"}, "none"), ({"CI": "true", "HOLOCRON_RECORD": "1"}, "once"),
     ({"HOLOCRON_RECORD": "0"}, "none"), ({"HOLOCRON_RECORD": "all"}, "all"),
     ({"HOLOCRON_RECORD": "new_episodes"}, "new_episodes")],
)
def test_record_mode_is_explicit_and_ignores_ci(env: dict[str, str], mode: str) -> None:
    assert cassettes.record_mode(env) == mode


def test_unknown_record_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="HOLOCRON_RECORD"):
        cassettes.record_mode({"HOLOCRON_RECORD": "sometimes"})


def test_session_vcr_replays_only_by_default(vcr_settings: vcr.VCR) -> None:
    assert vcr_settings.record_mode == cassettes.record_mode()
    assert Path(vcr_settings.cassette_library_dir) == cassettes.CASSETTE_DIR


def test_scrubbing_replaces_the_local_wiki_address() -> None:
    text = "See http://127.0.0.1:49659/api.php; Host: 127.0.0.1:49659; http://localhost:8080/x"
    assert cassettes.scrub_text(text) == "See http://wiki.test/api.php; Host: wiki.test; http://wiki.test/x"
    headers = cassettes.scrub_headers(
        {"Content-Encoding": ["gzip"], "Content-Length": ["999"], "Host": ["127.0.0.1:1"]}, b"12345"
    )
    assert headers == {"Content-Length": ["5"], "Host": ["wiki.test"]}


def test_redirected_answers_keep_the_final_url_and_redirect_meta() -> None:
    hop = requests.Response()
    hop.status_code, hop.url = 301, "http://127.0.0.1:8080/w/api.php?titles=A"
    final = requests.Response()
    final.status_code, final.url, final.history = 200, "http://127.0.0.1:8080/api.php?titles=A", [hop]
    final.headers["Content-Type"] = "application/json"
    final._content = b'{"batchcomplete": true}'
    request = Request("http://wiki.test/w/api.php?titles=A", meta=api_meta(titles=[]))
    response = cassettes.to_scrapy_response(request, final)
    assert type(response) is JsonResponse and response.url == "http://wiki.test/api.php?titles=A"
    assert response.request is not None and response.request.url == response.url
    assert response.meta["redirect_urls"] == ["http://wiki.test/w/api.php?titles=A"]
    assert response.meta["redirect_reasons"] == [301] and api_call(response).titles == []

# -- parse_batch: a complete batch -----------------------------------------------------------------

BATCH = [
    "Sarvessha", "Omega Station", "han's Blaster", "東京 Base", "Old Republic Archives", "Planets list",
    "Never Written Page", "Lost Redirect", "Foo<Bar", "Loop Alpha", "Self Reference", "Special:Random",
]


def expected_groups(titles: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Resolved key -> (outcome, requested titles), from the wiki model."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for title in titles:
        truth = model().resolve(title)
        outcome, members = groups.setdefault(truth.key, (truth.outcome, []))
        assert outcome == truth.outcome
        members.append(title)
    return groups


def ns0_links(title: str) -> set[str]:
    return {t for t in model().pages[title].links if wikigen.namespace_of(t) == 0}


def test_complete_batch_yields_one_item_per_resolved_title(cassette: cassettes.CassettePlayer, tmp_path: Path) -> None:
    spider = make_spider(tmp_path, max_depth="1")
    request = batch_request(spider, BATCH)
    assert api_call(request).purpose == QUERY and request.dont_filter
    response = cassette.fetch(request)
    assert type(response) is JsonResponse and response.json().get("batchcomplete") is True
    items, requests = split_output(list(spider.parse_batch(response)))

    ids = {title: seq for seq, title in enumerate(BATCH, start=1)}
    groups = expected_groups(BATCH)
    by_key = {item.resource_id: item for item in items}
    assert len(by_key) == len(items) == len(groups)
    for key, (outcome, members) in groups.items():
        item = by_key[key]
        assert item.outcome == outcome, key
        direct = key if key in members else members[0]
        assert item.requested_id == direct, key
        assert sorted(item.work_item_ids) == sorted(ids[m] for m in members), key
        assert item.work_item_id == f"wi-{ids[direct]}"
        assert item.context["requested_titles"] == members
        assert (item.source_system, item.source_name, item.resource_type) == ("mediawiki", "testwiki", "page")
        assert item.status_code == 200 and item.content_type == "application/json; charset=utf-8"
        assert item.request_uri == request.url and item.run_id == RUN_ID
        assert item.depth == 0 and item.attempt == 1 and item.context["api_parts"] == 1
        assert item.error_message is None and not item.retryable
    assert {i.outcome for i in items} == {OK, MISSING, INVALID, REDIRECT_LOOP, SPECIAL}

    # Payloads are the API's page objects, complete.
    for key in ("Sarvessha", "Ωmega Station", "Han's Blaster", "東京 Base", "Republic Archives", "Category:Planets"):
        payload = by_key[key].payload
        assert payload["title"] == key and len(payload["revisions"]) == 1
        assert {link["title"] for link in payload.get("links", [])} == ns0_links(key)  # plnamespace=0
        assert {c["title"] for c in payload.get("categories", [])} == set(model().pages[key].categories)
    assert by_key["Never Written Page"].payload["missing"] is True
    assert by_key["Never Written Page"].context["resolution"] == [
        ["Never Written Page"], ["Lost Redirect", "Never Written Page"],
    ]
    assert by_key["Foo<Bar"].payload["invalid"] is True
    assert by_key["Loop Alpha"].payload["redirect_loop"] == [
        {"from": "Loop Alpha", "to": "Loop Beta"}, {"from": "Loop Beta", "to": "Loop Alpha"},
    ]
    assert by_key["Self Reference"].payload["redirect_loop"] == [{"from": "Self Reference", "to": "Self Reference"}]
    assert by_key["Special:Random"].payload.get("special") is True

    # Redirect targets become known work items (not fetched again); links are followed to depth 1.
    known = set(known_titles(spider))
    assert known == {"Ωmega Station", "Han's Blaster", "Republic Archives", "Category:Planets"}
    followed: dict[str, set[str]] = {}
    for r in requests:
        work = work_of(r)
        assert r.callback == spider.parse_batch and r.errback == spider.errback_batch
        assert r.url == api.title_url(API, work.resource.resource_id)
        assert work.depth == 1 and work.depth <= spider.options.max_depth
        followed.setdefault(work.discovered_from, set()).add(work.resource.resource_id)
    ok_keys = {k for k, (outcome, _) in groups.items() if outcome == OK}
    assert followed == {key: ns0_links(key) for key in ok_keys if ns0_links(key)}
    stats = spider.crawler.stats.get_stats()
    assert stats["mediawiki/pages/ok"] == len(ok_keys) and stats["mediawiki/pages/redirect_loop"] == 2


def test_no_links_are_followed_beyond_max_depth(cassette: cassettes.CassettePlayer, tmp_path: Path) -> None:
    spider = make_spider(tmp_path, max_depth="1")
    titles = ["Sarvessha", "Omega Station"]
    response = cassette.fetch(batch_request(spider, titles, depth=1))  # already at max_depth
    items, requests = split_output(list(spider.parse_batch(response)))
    assert sorted((i.resource_id, i.outcome, i.depth) for i in items) == [
        ("Sarvessha", OK, 1), ("Ωmega Station", OK, 1),
    ]
    assert requests == [] and known_titles(spider) == ["Ωmega Station"]  # the redirect target: known
    shallow = make_spider(tmp_path / "depth0", max_depth="0")
    again = response.replace(request=batch_request(shallow, titles))  # same answer, a max_depth=0 crawl
    items0, requests0 = split_output(list(shallow.parse_batch(again)))
    assert len(items0) == 2 and requests0 == [] and known_titles(shallow) == ["Ωmega Station"]


# -- parse_batch: continuation -----------------------------------------------------------------------


def test_continuation_yields_one_request_then_complete_pages(
    cassette: cassettes.CassettePlayer, tmp_path: Path
) -> None:
    spider = make_spider(tmp_path, max_depth="0")
    titles = ["Hub Alpha", "Hub Beta", "Han's Blaster"]
    first = batch_request(spider, titles, first_id=10)
    request, parts, items = first, 0, []
    while True:
        parts += 1
        assert parts < 10, "continuation does not end"
        response = cassette.fetch(request)
        answer = response.json()
        output = list(spider.parse_batch(response))
        if "continue" not in answer:
            items, rest = split_output(output)
            assert rest == []  # max_depth=0: nothing to follow, no redirects
            break
        assert len(output) == 1 and isinstance(output[0], Request), output  # exactly one request, no items
        follow = output[0]
        sent = query(follow.url)
        for key, value in answer["continue"].items():
            assert sent[key] == str(value), key  # every continue key, sent back whole
        assert {k: v for k, v in sent.items() if k not in answer["continue"]} == query(first.url)
        assert ids_of(follow) == (10, 11, 12) == ids_of(first)
        assert api_call(follow).titles == api_call(first).titles
        assert api_call(follow).first_url == first.url and api_call(follow).acc["parts"] == parts
        assert api_call(follow).purpose == QUERY and follow.dont_filter
        assert follow.callback == spider.parse_batch and follow.errback == spider.errback_batch
        request = follow
    assert parts >= 3  # Hub Beta has 850 links in namespace 0; pllimit=max is 500
    assert spider.crawler.stats.get_value("mediawiki/continuations") == parts - 1

    by_key = {item.resource_id: item for item in items}
    assert sorted(by_key) == sorted(titles)
    for seq, title in enumerate(titles, start=10):
        item = by_key[title]
        assert (item.outcome, item.requested_id, item.work_item_ids) == (OK, title, [seq])
        assert item.request_uri == first.url and item.context["api_parts"] == parts
        links = [link["title"] for link in item.payload["links"]]
        assert len(links) == len(set(links)) and set(links) == ns0_links(title)
        assert len(item.payload["revisions"]) == 1
        assert {c["title"] for c in item.payload["categories"]} == set(model().pages[title].categories)
    assert len(by_key["Hub Beta"].payload["links"]) > 500


# -- parse_batch: API errors --------------------------------------------------------------------------


def check_failures(items: list[IngestItem], titles: list[str], *, code: str, retryable: bool, url: str) -> None:
    assert [i.resource_id for i in items] == titles == [i.requested_id for i in items]
    for seq, item in enumerate(items, start=1):
        assert item.outcome == FAILED and item.retryable is retryable
        assert item.error_message.startswith(f"MediaWiki API error {code}: ")
        assert item.payload["error"]["code"] == code  # the API's answer, stored unaltered
        assert item.status_code == 200 and item.request_uri == url
        assert item.work_item_ids == [seq] and item.work_item_id == f"wi-{seq}"


def test_maxlag_answer_gives_retryable_failures(cassette: cassettes.CassettePlayer, tmp_path: Path) -> None:
    spider = make_spider(tmp_path)
    spider.options = dataclasses.replace(spider.options, maxlag=-1)  # the harness wiki reports lag 0
    titles = ["Sarvessha", "Ionsar Runner"]
    request = batch_request(spider, titles)
    assert query(request.url)["maxlag"] == "-1"
    response = cassette.fetch(request)
    assert response.headers[b"MediaWiki-API-Error"] == b"maxlag"
    items, requests = split_output(list(spider.parse_batch(response)))
    assert requests == []
    check_failures(items, titles, code="maxlag", retryable=True, url=request.url)
    stats = spider.crawler.stats.get_stats()
    assert stats["mediawiki/api_error/maxlag"] == 1 and stats["mediawiki/pages/failed"] == 2


def test_badvalue_answer_gives_permanent_failures(cassette: cassettes.CassettePlayer, tmp_path: Path) -> None:
    spider = make_spider(tmp_path)
    titles = ["Sarvessha", "Ionsar Runner"]
    bad_url = api.api_url(API, {"action": "nonexistentaction", "format": "json", "formatversion": "2"})
    request = batch_request(spider, titles).replace(url=bad_url)
    response = cassette.fetch(request)
    assert response.headers[b"MediaWiki-API-Error"] == b"badvalue"
    items, requests = split_output(list(spider.parse_batch(response)))
    assert requests == []
    check_failures(items, titles, code="badvalue", retryable=False, url=bad_url)
    assert spider.crawler.stats.get_value("mediawiki/api_error/badvalue") == 1


@pytest.mark.parametrize(
    "body",
    [b"<html><body>Site maintenance</body></html>", b'{"batchcomplete":true,"query":{"pages":[{"title":"Sarv', b"[]"],
    ids=["html-page", "cut-short", "json-list"],
)
def test_a_body_that_is_no_query_answer_fails_transiently(tmp_path: Path, body: bytes) -> None:
    spider = make_spider(tmp_path)
    request = batch_request(spider, ["Sarvessha", "Omega Station"])
    response = TextResponse(request.url, status=200, body=body, request=request)
    items = list(spider.parse_batch(response))
    assert [i.resource_id for i in items] == ["Sarvessha", "Omega Station"]
    for item in items:
        assert item.outcome == FAILED and item.retryable  # the frontier tries again: no title is lost
        assert item.error_message.startswith("not a MediaWiki query answer")
        assert item.payload["body_prefix"] == body.decode()


def test_a_refused_title_splits_its_batch_in_halves_carrying_their_ids(tmp_path: Path) -> None:
    spider = make_spider(tmp_path)
    titles = [f"Title {n:02d}" for n in range(1, 8)]
    request = batch_request(spider, titles)
    error = {"error": {"code": "badvalue", "info": 'Unrecognized value for parameter "titles": refused.'}}
    response = TextResponse(request.url, status=200, body=json.dumps(error).encode(), request=request)
    halves = list(spider.parse_batch(response))
    assert all(isinstance(h, Request) for h in halves) and len(halves) == 2
    assert [[t["title"] for t in api_call(h).titles] for h in halves] == [titles[:3], titles[3:]]
    assert [list(ids_of(h)) for h in halves] == [[1, 2, 3], [4, 5, 6, 7]]  # each half owns its work items
    for half in halves:
        assert query(half.url)["titles"] == "|".join(t["title"] for t in api_call(half).titles)
        assert api_call(half).purpose == QUERY and half.dont_filter and api_call(half).acc is None
        assert half.callback == spider.parse_batch and half.errback == spider.errback_batch
    single = batch_request(spider, ["Title 03"], first_id=3)
    alone = response.replace(request=single)
    (item,) = list(spider.parse_batch(alone))  # isolated: only this title fails, for good
    assert (item.resource_id, item.outcome, item.retryable, item.work_item_ids) == ("Title 03", FAILED, False, [3])
    assert spider.crawler.stats.get_value("mediawiki/bisections") == 1


def test_an_error_naming_another_parameter_fails_the_batch_without_splitting(tmp_path: Path) -> None:
    spider = make_spider(tmp_path)
    request = batch_request(spider, ["Sarvessha", "Ionsar Runner"])
    error = {"error": {"code": "badvalue", "info": 'Unrecognized value for parameter "prop": nope.'}}
    response = TextResponse(request.url, status=200, body=json.dumps(error).encode(), request=request)
    items = list(spider.parse_batch(response))
    assert [(i.resource_id, i.outcome, i.retryable) for i in items] == [
        ("Sarvessha", FAILED, False), ("Ionsar Runner", FAILED, False),
    ]
    assert spider.crawler.stats.get_value("mediawiki/bisections") is None


@deferred_f_from_coro_f
async def test_the_body_is_decoded_once_by_middleware_and_spider_together(
    cassette: cassettes.CassettePlayer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from holocron_scrapy import failures
    from holocron_scrapy.middlewares.retry import PoliteRetryMiddleware

    spider = make_spider(tmp_path, max_depth="0")
    request = batch_request(spider, ["Sarvessha", "Omega Station"])
    response = cassette.fetch(request)
    calls = []
    real_loads = json.loads
    monkeypatch.setattr(failures.json, "loads", lambda *a, **k: calls.append(1) or real_loads(*a, **k))
    middleware = PoliteRetryMiddleware.from_crawler(spider.crawler)
    passed = await middleware.process_response(response.request, response)
    assert passed is response
    items, _ = split_output(list(spider.parse_batch(response)))
    assert sorted(i.resource_id for i in items) == ["Sarvessha", "Ωmega Station"]
    assert len(calls) == 1  # the cheap path stays cheap: one json.loads per answer


# -- errback_batch ----------------------------------------------------------------------------------


def http_failure(request: Request, response: Response) -> Failure:
    failure = Failure(HttpError(response, "Ignoring non-200 response"))
    failure.request = request  # as Scrapy sets it for errbacks
    return failure


def test_errback_with_http_404_gives_permanent_failures(cassette: cassettes.CassettePlayer, tmp_path: Path) -> None:
    spider = make_spider(tmp_path)
    titles = ["Sarvessha", "Ionsar Runner", "T1-C5"]
    request = batch_request(spider, titles).replace(url=f"{cassettes.PLACEHOLDER_ORIGIN}/no-such-entry-point.php")
    response = cassette.fetch(request)
    assert response.status == 404
    items = list(spider.errback_batch(http_failure(request, response)))
    assert [i.resource_id for i in items] == titles
    for seq, item in enumerate(items, start=1):
        assert item.outcome == FAILED and item.retryable is False and item.status_code == 404
        assert item.error_message == "HttpError: Ignoring non-200 response"
        assert item.request_uri == request.url and item.work_item_ids == [seq]
        assert item.payload == {"error": item.error_message}


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (503, True), (403, False), (410, False)])
def test_errback_http_status_decides_retryable(tmp_path: Path, status: int, retryable: bool) -> None:
    spider = make_spider(tmp_path)
    request = batch_request(spider, ["Sarvessha"])
    (item,) = list(spider.errback_batch(http_failure(request, Response(request.url, status=status, request=request))))
    assert (item.outcome, item.retryable, item.status_code) == (FAILED, retryable, status)


def test_errback_uri_too_long_splits_the_batch(tmp_path: Path) -> None:
    spider = make_spider(tmp_path)
    titles = ["Sarvessha", "Ionsar Runner", "T1-C5"]
    request = batch_request(spider, titles)
    halves = list(spider.errback_batch(http_failure(request, Response(request.url, status=414, request=request))))
    assert [[t["title"] for t in api_call(h).titles] for h in halves] == [titles[:1], titles[1:]]
    assert [list(ids_of(h)) for h in halves] == [[1], [2, 3]]
    single = batch_request(spider, ["Sarvessha"])
    (item,) = list(spider.errback_batch(http_failure(single, Response(single.url, status=414, request=single))))
    assert (item.outcome, item.retryable, item.status_code) == (FAILED, False, 414)


def test_errback_network_error_is_retryable_and_covers_unbatched_requests(tmp_path: Path) -> None:
    spider = make_spider(tmp_path)
    single = spider.title_request("Sarvessha", depth=2)
    single.meta[WORK_META] = work_of(single).but(ids=[7])
    failure = Failure(DNSLookupError("wiki.test"))
    failure.request = single
    (item,) = list(spider.errback_batch(failure))
    assert (item.resource_id, item.outcome, item.retryable, item.status_code) == ("Sarvessha", FAILED, True, None)
    assert item.depth == 2 and item.work_item_ids == [7] and item.error_message.startswith("DNSLookupError")


def test_item_payloads_are_json(cassette: cassettes.CassettePlayer, tmp_path: Path) -> None:
    spider = make_spider(tmp_path)
    response = cassette.fetch(batch_request(spider, ["東京 Base", "Foo<Bar", "Loop Alpha"]))
    items, _ = split_output(list(spider.parse_batch(response)))
    assert len(items) == 3
    for item in items:
        assert json.loads(json.dumps(item.payload, ensure_ascii=False)) == item.payload
