"""holocron_scrapy.mediawiki.listings on the recorded answers of the lab MediaWiki 1.39.

The fixtures (tests/fixtures/mediawiki/listings, see its README) are real answers to the requests
this module builds, recorded by tests/support/record_listings.py; its constants and
:func:`tests.support.wikigen.build_model` are their ground truth.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.mediawiki import listings
from holocron_scrapy.mediawiki.errors import ApiError
from holocron_scrapy.mediawiki.listings import (
    GeneratorSpec,
    Listing,
    ListingWalk,
    listing_params,
    parse_generator,
    parse_listing,
)
from holocron_scrapy.mediawiki.parse import MalformedResponse
from tests.support import record_listings as rec
from tests.support import wikigen
from tests.support.listing_fixtures import body, chain, manifest, raw

NS = rec.NAMESPACES


@cache
def model() -> wikigen.WikiModel:
    return wikigen.build_model()


def roundtrip(walk: ListingWalk) -> ListingWalk:
    """The walk as a checkpoint would restore it (through JSON text)."""
    return ListingWalk.from_dict(json.loads(json.dumps(walk.to_dict())))


# -- generator specs ------------------------------------------------------------------------------


def test_allpages_lists_each_crawled_namespace() -> None:
    spec = parse_generator("allpages", namespaces=[14, 0, 14])
    assert spec == GeneratorSpec("allpages", (0, 14))
    assert spec.listings() == [Listing("allpages", (0,)), Listing("allpages", (14,))]
    assert [listing.key for listing in spec.listings()] == ["allpages:0", "allpages:14"]


def test_prefix_is_tidied_and_listed_per_namespace() -> None:
    spec = parse_generator("  prefix:Star_Wars  ", namespaces=(0,))
    assert spec == GeneratorSpec("prefix", (0,), prefix="Star Wars")
    assert spec.listings() == [Listing("allpages", (0,), prefix="Star Wars")]
    assert spec.describe() == "prefix:Star Wars in namespace 0"


@pytest.mark.parametrize(
    ("value", "category"),
    [
        ("categorymembers:Category:Listing root", "Category:Listing root"),
        ("categorymembers:category:listing_root", "Category:Listing root"),
        ("CategoryMembers: Category : Listing  root ", "Category:Listing root"),
        ("categorymembers:Kategorie:Planeten", "Category:Planeten"),
    ],
)
def test_categorymembers_takes_a_category_title(value: str, category: str) -> None:
    spec = parse_generator(value, namespaces=(0,), max_depth=3, category_prefixes=("Category", "Kategorie"))
    assert spec == GeneratorSpec("categorymembers", (0,), category=category, max_depth=3)
    assert spec.listings() == [Listing("categorymembers", (0,), category=category, depth=0, max_depth=3)]


@pytest.mark.parametrize(
    ("value", "kwargs", "problem"),
    [
        ("", {}, "expected allpages, prefix:<title prefix> or categorymembers:Category:<name>, got ''"),
        (
            "everything",
            {},
            "expected allpages, prefix:<title prefix> or categorymembers:Category:<name>, got 'everything'",
        ),
        ("allpages:Star", {}, "allpages takes no argument (use prefix:<title prefix>), got 'allpages:Star'"),
        ("prefix:", {}, "prefix needs a title prefix, e.g. prefix:Star Wars (got 'prefix:')"),
        ("prefix: _ ", {}, "prefix needs a title prefix, e.g. prefix:Star Wars (got 'prefix: _')"),
        (
            "categorymembers:",
            {},
            "categorymembers needs a category, e.g. categorymembers:Category:Foo (got 'categorymembers:')",
        ),
        (
            "categorymembers:Planets",
            {},
            "categorymembers needs a category title, got 'Planets' (did you mean Category:Planets?)",
        ),
        (
            "categorymembers:Talk:Planets",
            {},
            "categorymembers needs a category title, got 'Talk:Planets'",
        ),
        (
            "categorymembers:Category:",
            {},
            "categorymembers needs a category title, got 'Category:'",
        ),
        ("allpages", {"max_depth": -1}, "max_depth must be >= 0 for a generator, got -1"),
        ("allpages", {"namespaces": ()}, "crawled namespaces must be numbers >= 0, got []"),
    ],
)
def test_bad_generators_fail_in_one_line(value: str, kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_generator(value, **kwargs)
    assert info.value.key == "generator" and info.value.problem == problem
    assert str(info.value) == f"generator: {problem}" and "\n" not in str(info.value)


def test_generator_errors_name_the_callers_key() -> None:
    with pytest.raises(ConfigError, match=r"^sources\[wook\]\.generator: expected allpages"):
        parse_generator("pages", key="sources[wook].generator")


def test_specs_describe_themselves_for_the_log() -> None:
    assert parse_generator("allpages", namespaces=(0, 14)).describe() == "allpages in namespaces 0|14"
    spec = parse_generator("categorymembers:Category:Planets", max_depth=2)
    assert spec.describe() == "categorymembers:Category:Planets (subcategories to depth 2)"


# -- requests -------------------------------------------------------------------------------------


def test_allpages_params() -> None:
    assert listing_params(Listing("allpages", (0,))) == {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "list": "allpages",
        "apnamespace": "0",
        "aplimit": "max",
        "apfilterredir": "nonredirects",
        "maxlag": "5",
    }
    params = listing_params(
        Listing("allpages", (14,), prefix="Star Wars"),
        continuation={"apcontinue": "Star_Wars_X", "continue": "-||"},
        limit=3,
        maxlag=None,
    )
    assert params["apprefix"] == "Star Wars" and params["aplimit"] == "3" and "maxlag" not in params
    assert params["apcontinue"] == "Star_Wars_X" and params["continue"] == "-||"


@pytest.mark.parametrize(
    ("namespaces", "depth", "max_depth", "cmtype", "cmnamespace"),
    [
        ((0,), 0, 1, "page|subcat", "0|14"),  # subcategories still followed
        ((0,), 1, 1, "page", "0"),  # at max depth: members only
        ((0, 14), 1, 1, "page|subcat", "0|14"),  # category pages are crawled: listed, not followed
        ((0, 6), 0, 0, "page|file", "0|6"),
    ],
)
def test_categorymembers_params(
    namespaces: tuple[int, ...], depth: int, max_depth: int, cmtype: str, cmnamespace: str
) -> None:
    listing = Listing("categorymembers", namespaces, category="Category:Foo", depth=depth, max_depth=max_depth)
    assert listing_params(listing) == {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "list": "categorymembers",
        "cmtitle": "Category:Foo",
        "cmprop": "title|type",
        "cmtype": cmtype,
        "cmnamespace": cmnamespace,
        "cmlimit": "max",
        "maxlag": "5",
    }


def test_recordings_answer_the_requests_built_today() -> None:
    """Every recorded listing request is what the module builds now (else: re-record)."""
    files = manifest()["files"]
    for name, spec_value, limit in (("allpages", "allpages", "max"), ("prefix", f"prefix:{rec.PREFIX}", 3)):
        for listing in parse_generator(spec_value, namespaces=NS).listings():
            ns = listing.namespaces[0]
            assert files[f"{name}_ns{ns}_1"] == listing_params(listing, limit=limit)
    bad = Listing("categorymembers", NS, category="Category:Foo<Bar")
    assert files["categorymembers_invalid_error"] == listing_params(bad)


# -- answers and continuation chains --------------------------------------------------------------


def test_allpages_chain_lists_every_article_once() -> None:
    """``aplimit=max``: 500 then 76 articles of namespace 0, then 15 categories: exactly the wiki's."""
    walk = ListingWalk.start(parse_generator("allpages", namespaces=NS))
    files = manifest()["files"]
    seen: list[str] = []
    for name in [*chain("allpages_ns0"), *chain("allpages_ns14")]:
        assert walk.next_params() == files[name]
        page = walk.feed(raw(name))
        assert page.limit == listings.LISTING_LIMIT and page.subcategories == ()
        json.dumps(page.continuation)  # JSON-serialisable, for the checkpoint
        seen += page.titles
        walk = roundtrip(walk)
    assert walk.done and walk.requests == 3
    assert [len(body(n)["query"]["allpages"]) for n in chain("allpages_ns0")] == [500, 76]
    assert len(seen) == len(set(seen)) == walk.titles
    articles = {t for t in seen if wikigen.namespace_of(t) == 0}
    assert articles == rec.expected_articles(model())
    categories = {t for t in seen if wikigen.namespace_of(t) == 14}
    expected = {p.title for p in model().in_namespace(14)} | {t for t in rec.CATEGORY_TREE if t.startswith("Category:")}
    assert categories == expected
    assert not set(seen) & set(model().redirects)  # apfilterredir=nonredirects


def test_allpages_continuation_is_sent_back_whole() -> None:
    first = parse_listing(Listing("allpages", (0,)), body("allpages_ns0_1"))
    assert first.continuation == {"apcontinue": "Ulsar_Syndicate", "continue": "-||"}
    params = listing_params(Listing("allpages", (0,)), continuation=first.continuation)
    assert params == manifest()["files"]["allpages_ns0_2"]
    assert parse_listing(Listing("allpages", (0,)), body("allpages_ns0_2")).continuation is None


def test_prefix_chain_with_a_small_limit() -> None:
    walk = ListingWalk.start(parse_generator(f"prefix:{rec.PREFIX}", namespaces=NS))
    titles: list[str] = []
    for name in [*chain("prefix_ns0"), *chain("prefix_ns14")]:
        assert walk.next_params(limit=3) == manifest()["files"][name]
        titles += walk.feed(body(name)).titles
    assert walk.done and walk.requests == 4
    assert titles == [f"Listing page {i}" for i in range(1, 9)]  # the talk page is in namespace 1


def test_category_walk_follows_subcategories_breadth_first_and_once() -> None:
    spec = parse_generator(f"categorymembers:{rec.CATEGORY_ROOT}", namespaces=NS, max_depth=2)
    walk = ListingWalk.start(spec)
    files = manifest()["files"]
    titles: list[str] = []
    order: list[str] = []
    for name in chain("categorymembers"):
        assert walk.next_params(limit=2) == files[name]  # after a restore too: resumes exactly
        current = walk.current
        assert current is not None
        order.append(f"{current.category}@{current.depth}")
        titles += walk.feed(raw(name)).titles
        walk = roundtrip(walk)
    assert walk.done and walk.requests == len(chain("categorymembers")) == 7
    assert list(dict.fromkeys(order)) == [
        "Category:Listing root@0",
        "Category:Listing branch@1",
        "Category:Listing side@1",
        "Category:Listing leaf@2",
    ]
    expected = set().union(*rec.CATEGORY_MEMBERS_BY_DEPTH.values())
    assert set(titles) == expected
    assert titles.count("Listing page 8") == 2  # a member of two categories: the frontier dedupes
    assert "Talk:Listing page 1" not in titles  # cmnamespace keeps to the crawled namespaces
    assert walk.queued == {f"categorymembers:{c}" for c in rec.CATEGORY_TREE if c.startswith("Category:")}


def test_category_walk_stops_at_max_depth() -> None:
    """Depth 1: the root's and its subcategories' members; the leaf (depth 2) is not listed."""
    walk = ListingWalk.start(parse_generator(f"categorymembers:{rec.CATEGORY_ROOT}", namespaces=NS, max_depth=1))
    files = manifest()["files"]
    titles: list[str] = []
    for name in chain("categorymembers")[:6]:  # root (3 parts), branch (2), side (1)
        assert walk.next_params(limit=2) == files[name]
        titles += walk.feed(body(name)).titles
    assert walk.done
    assert set(titles) == rec.CATEGORY_MEMBERS_BY_DEPTH[0] | rec.CATEGORY_MEMBERS_BY_DEPTH[1]


def test_category_walk_at_depth_zero_follows_nothing() -> None:
    listing = Listing("categorymembers", NS, category=rec.CATEGORY_ROOT, max_depth=0)
    page = parse_listing(listing, body("categorymembers_3"))
    assert page.titles == ("Category:Listing branch", "Category:Listing side")  # category pages are crawled
    assert page.subcategories == ()
    only_articles = Listing("categorymembers", (0,), category=rec.CATEGORY_ROOT, max_depth=0)
    assert parse_listing(only_articles, body("categorymembers_3")).titles == ()


def test_walk_checkpoint_is_json_and_resumes_mid_listing() -> None:
    walk = ListingWalk.start(parse_generator(f"categorymembers:{rec.CATEGORY_ROOT}", namespaces=NS, max_depth=2))
    walk.feed(body("categorymembers_1"))
    text = json.dumps(walk.to_dict())
    restored = ListingWalk.from_dict(json.loads(text))
    assert restored.to_dict() == walk.to_dict()
    assert restored.next_params(limit=2) == manifest()["files"]["categorymembers_2"]
    assert restored.continuation == {
        "cmcontinue": body("categorymembers_1")["continue"]["cmcontinue"],
        "continue": "-||",
    }


def test_walk_past_the_end_is_an_error() -> None:
    walk = ListingWalk.start(parse_generator("allpages", namespaces=(14,)))
    walk.feed(body("allpages_ns14_1"))
    assert walk.done and walk.current is None
    with pytest.raises(ValueError, match="complete"):
        walk.next_params()
    with pytest.raises(ValueError, match="complete"):
        walk.feed(body("allpages_ns14_1"))


# -- errors: API errors against bodies that are not the answer ------------------------------------


def test_api_errors_raise_with_their_retry_verdict_and_the_walk_stays() -> None:
    walk = ListingWalk.start(parse_generator(f"categorymembers:{rec.CATEGORY_ROOT}", namespaces=NS))
    before = walk.to_dict()
    with pytest.raises(ApiError) as lag:
        walk.feed(raw("rc_maxlag_error"))
    assert lag.value.code == "maxlag" and lag.value.retryable
    with pytest.raises(ApiError) as bad:
        walk.feed(body("categorymembers_invalid_error"))
    assert bad.value.code == "invalidtitle" and not bad.value.retryable
    assert walk.to_dict() == before  # an error moves nothing: the same request is asked again


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(raw("allpages_ns0_1")[:4000], id="cut-short"),
        pytest.param(b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", id="html"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[1, 2]", id="json-list"),
        pytest.param(b'{"query": {"allpages": {"title": "x"}}}', id="not-a-list"),
        pytest.param(b'{"query": {"allpages": [{"ns": 0}]}}', id="entry-without-title"),
        pytest.param(b'{"query": {"allpages": [{"title": "A"}]}}', id="entry-without-namespace"),
        pytest.param(b'{"batchcomplete": true, "continue": "x", "query": {}}', id="bad-continue"),
        pytest.param(b'{"warnings": {}}', id="no-query"),
    ],
)
def test_bodies_that_are_not_the_answer_are_malformed_not_api_errors(broken: bytes) -> None:
    """A non-JSON or odd body says nothing about the listing: MalformedResponse (transient)."""
    walk = ListingWalk.start(parse_generator("allpages", namespaces=(0,)))
    with pytest.raises(MalformedResponse) as info:
        walk.feed(broken)
    assert not isinstance(info.value, ApiError)
    assert walk.requests == 0 and walk.continuation is None


def test_an_empty_listing_is_complete() -> None:
    page = parse_listing(Listing("allpages", (14,), prefix=rec.PREFIX), body("prefix_ns14_1"))
    assert page.titles == () and page.continuation is None


# -- limits and request bounds --------------------------------------------------------------------


def test_limits_with_and_without_apihighlimits() -> None:
    assert (listings.listing_limit(), listings.listing_limit(True)) == (500, 5000)
    assert (listings.title_batch_limit(), listings.title_batch_limit(True)) == (50, 500)
    assert body("allpages_ns0_1")["limits"] == {"allpages": 500}  # what max meant for an anonymous client


@pytest.mark.parametrize(
    ("entries", "high", "expected"),
    [(0, False, 1), (1, False, 1), (500, False, 1), (501, False, 2), (5000, True, 1), (5001, True, 2)],
)
def test_listing_requests(entries: int, high: bool, expected: int) -> None:
    assert listings.listing_requests(entries, high) == expected


@pytest.mark.parametrize(
    ("changes", "titles", "high", "expected"),
    [
        (0, 0, False, 1),  # an empty window still takes its listing request
        (26, 16, False, 2),  # the recorded window: 26 changes, 16 titles to fetch
        (500, 50, False, 2),
        (501, 51, False, 4),
        (5000, 4000, False, 10 + 80),  # a day of a 1 M-page wiki (docs/benchmarks.md)
        (5000, 4000, True, 1 + 8),
    ],
)
def test_sync_request_bound(changes: int, titles: int, high: bool, expected: int) -> None:
    assert listings.sync_request_bound(changes, titles, high) == expected


def test_generator_request_bound_covers_the_recorded_walk() -> None:
    counts = [576, 15]  # namespace 0 and 14 of the lab wiki after the scenario
    assert listings.generator_request_bound(counts) == (2 + 1) + 12
    assert listings.generator_request_bound(counts, high_limits=True) == (1 + 1) + 2
    assert len(chain("allpages_ns0")) + len(chain("allpages_ns14")) <= sum(listings.listing_requests(n) for n in counts)


def test_bounds_reject_negative_counts() -> None:
    with pytest.raises(ValueError):
        listings.listing_requests(-1)
    with pytest.raises(ValueError):
        listings.batch_requests(-1)


# -- the live lab wiki ----------------------------------------------------------------------------


def walk_live(wiki: Any, spec: GeneratorSpec) -> tuple[ListingWalk, list[str]]:
    walk = ListingWalk.start(spec)
    titles: list[str] = []
    while not walk.done:
        titles += walk.feed(wiki.api(**walk.next_params())).titles
    return walk, titles


@pytest.mark.mediawiki
def test_live_allpages_lists_the_wiki(mediawiki) -> None:
    """The session wiki (no scenario): allpages of namespace 0 is exactly the model's articles."""
    walk, titles = walk_live(mediawiki, parse_generator("allpages", namespaces=(0,)))
    expected = {page.title for page in model().articles()}
    assert len(titles) == len(set(titles)) and set(titles) == expected
    assert walk.requests == listings.listing_requests(len(expected)) == 2


@pytest.mark.mediawiki
def test_live_category_tree_to_depth_one(mediawiki) -> None:
    """``categorymembers:Category:Holocron topics`` with depth 1: its subcategories' articles."""
    root = "Category:Holocron topics"
    walk, titles = walk_live(mediawiki, parse_generator(f"categorymembers:{root}", namespaces=(0,), max_depth=1))
    subcategories = {t for t in model().category_members(root) if wikigen.namespace_of(t) == 14}
    expected = {t for c in {root, *subcategories} for t in model().category_members(c) if wikigen.namespace_of(t) == 0}
    assert subcategories and set(titles) == expected
    assert walk.queued == {f"categorymembers:{c}" for c in {root, *subcategories}}
    # One request per category, and two for the 563 members of Category:Holocron entries.
    members = [
        len({t for t in model().category_members(c) if wikigen.namespace_of(t) in (0, 14)})
        for c in {root, *subcategories}
    ]
    assert walk.requests == sum(listings.listing_requests(n) for n in members) == len(walk.queued) + 1
