"""holocron_scrapy.mediawiki.parse and .errors on every recorded response of the local MediaWiki 1.39.

The fixtures (tests/fixtures/mediawiki, see its README) are real answers of the generated test wiki,
so :func:`tests.support.wikigen.build_model` is their ground truth.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from holocron_scrapy.items import INVALID, MISSING, OK, REDIRECT_LOOP, SPECIAL
from holocron_scrapy.mediawiki.errors import ApiError, api_error, api_error_from_bytes, is_retryable
from holocron_scrapy.mediawiki.parse import (
    Accumulator,
    MalformedResponse,
    merge_query,
    page_categories,
    page_links,
    resolve,
)
from tests.support import wikigen

FIXTURES = Path(__file__).parent / "fixtures" / "mediawiki"
ALL_BODIES = sorted(p.stem for p in FIXTURES.glob("*.json") if not p.name.endswith(".headers.json"))
ERROR_BODIES = {"maxlag_error": ("maxlag", True), "bad_param_error": ("badvalue", False)}
QUERY_BODIES = [name for name in ALL_BODIES if name not in ERROR_BODIES]
CONTINUATION = sorted((n for n in ALL_BODIES if n.startswith("continuation_")), key=lambda n: int(n.split("_")[1]))


def raw(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def body(name: str) -> Any:
    """A fresh decoded copy of fixture *name* (merge_query may keep references to it)."""
    return json.loads(raw(name))


def merged(*names: str) -> Accumulator:
    acc = Accumulator()
    for name in names:
        merge_query(acc, body(name))
    return acc


def merged_body(data: Any) -> Accumulator:
    acc = Accumulator()
    merge_query(acc, data)
    return acc


@cache
def model() -> wikigen.WikiModel:
    return wikigen.build_model()


def titles_of(page: dict[str, Any], key: str) -> list[str]:
    return [entry["title"] for entry in page.get(key, [])]


def test_every_fixture_is_covered() -> None:
    assert set(ALL_BODIES) == {
        "bad_param_error", "batch_ok", "maxlag_error", "missing_invalid", "prop_info", "redirect_loop",
        "redirects_normalized", *CONTINUATION,
    }
    assert len(CONTINUATION) == 4


# -- every fixture ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", QUERY_BODIES)
def test_every_query_fixture_merges(name: str) -> None:
    data = body(name)
    acc = Accumulator()
    cont = merge_query(acc, data)
    assert acc.parts == 1
    assert cont == data.get("continue")
    assert (cont is None) == bool(data.get("batchcomplete"))
    pages = data["query"].get("pages", [])
    assert sorted(acc.pages) == sorted(p["title"] for p in pages)
    assert acc.normalized == {e["from"]: e["to"] for e in data["query"].get("normalized", [])}
    assert acc.redirects == {e["from"]: e for e in data["query"].get("redirects", [])}
    # The accumulator survives the JSON round trip of request meta / the SQL frontier.
    assert Accumulator.from_dict(json.loads(json.dumps(acc.to_dict()))) == acc


@pytest.mark.parametrize("name", ERROR_BODIES)
def test_error_fixtures_raise_api_error(name: str) -> None:
    code, retryable = ERROR_BODIES[name]
    acc = Accumulator()
    with pytest.raises(ApiError) as info:
        merge_query(acc, body(name))
    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert info.value.info == body(name)["error"]["info"]
    assert str(info.value) == f"MediaWiki API error {code}: {info.value.info}"
    assert acc == Accumulator()  # nothing was folded in


@pytest.mark.parametrize("name", ALL_BODIES)
def test_api_error_from_bytes_on_every_raw_fixture(name: str) -> None:
    error = api_error_from_bytes(raw(name))
    assert error == api_error(body(name))
    if name in ERROR_BODIES:
        assert error is not None and (error.code, error.retryable) == ERROR_BODIES[name]
        # The compact form MediaWiki actually sends is recognised too.
        compact = json.dumps(body(name), separators=(",", ":")).encode()
        assert api_error_from_bytes(compact) == error
    else:
        assert error is None


def test_error_headers_fixtures_match_the_bodies() -> None:
    for name, (code, _) in ERROR_BODIES.items():
        recorded = json.loads((FIXTURES / f"{name}.headers.json").read_text("utf-8"))
        assert recorded["status"] == 200  # API errors arrive as HTTP 200 ...
        assert recorded["headers"]["MediaWiki-API-Error"] == code  # ... with the code in a header
    maxlag_headers = json.loads((FIXTURES / "maxlag_error.headers.json").read_text("utf-8"))["headers"]
    assert maxlag_headers["Retry-After"] == "5"


# -- a complete batch -------------------------------------------------------------------------


def test_batch_ok_gives_one_complete_page_per_title() -> None:
    acc = merged("batch_ok")
    requested = ["Sarvessha", "Ionsar Runner", "Quayav Brikorost", "T1-C5", "Siege of Xanrhenfen"]
    assert sorted(acc.pages) == sorted(requested)
    for title in requested:
        res = resolve(acc, title)
        assert (res.requested, res.title, res.outcome, res.chain) == (title, title, OK, (title,))
        assert res.page is acc.pages[title]
        truth = model().pages[title]
        assert len(res.page["revisions"]) == 1
        assert res.page["revisions"][0]["slots"]["main"]["content"].rstrip() == truth.text.rstrip()
        assert sorted(page_links(res.page)) == sorted(truth.links)
        assert sorted(page_links(res.page, (0,))) == sorted(t for t in truth.links if wikigen.namespace_of(t) == 0)
        assert sorted(page_categories(res.page)) == sorted(truth.categories)


def test_page_links_keeps_api_order_and_filters_namespaces() -> None:
    page = merged("batch_ok").pages["Sarvessha"]
    assert page_links(page) == [link["title"] for link in page["links"]]
    assert page_links(page, (12,)) == ["Help:Stub"]
    assert "Help:Stub" not in page_links(page, (0,))
    assert page_links(page, ()) == []
    assert page_links({"title": "Bare"}) == [] and page_categories({"title": "Bare"}) == []
    assert page_categories(page) == [
        "Category:Holocron entries", "Category:Planets", "Category:Stubs", "Category:Unsorted drafts",
    ]


# -- continuation ------------------------------------------------------------------------------


def test_continuation_parts_send_back_every_key_and_finish_on_the_last() -> None:
    acc = Accumulator()
    conts = [merge_query(acc, body(name)) for name in CONTINUATION]
    assert conts[-1] is None
    for cont, name in zip(conts[:-1], CONTINUATION[:-1], strict=True):
        assert cont == body(name)["continue"]
        assert set(cont) == {"plcontinue", "continue"} and cont["continue"] == "||revisions|categories"
    assert len({c["plcontinue"] for c in conts[:-1]}) == 3  # progress on every part
    assert acc.parts == len(CONTINUATION)


@pytest.mark.parametrize("round_trip", [False, True], ids=["in-memory", "via-json-meta"])
def test_continuation_merges_into_one_complete_page_per_title(round_trip: bool) -> None:
    acc = Accumulator()
    for name in CONTINUATION:
        if round_trip:  # as the spider does between parts: request meta, possibly the SQL frontier
            acc = Accumulator.from_dict(json.loads(json.dumps(acc.to_dict())))
        merge_query(acc, body(name))
    assert sorted(acc.pages) == ["Han's Blaster", "Hub Alpha", "Hub Beta"]
    first_ids = {p["title"]: p["pageid"] for p in body("continuation_1")["query"]["pages"]}
    for title, page in acc.pages.items():
        truth = model().pages[title]
        links = page_links(page)
        assert len(links) == len(set(links)), f"duplicate links in {title}"
        assert set(links) == set(truth.links), title
        assert sorted(page_categories(page)) == sorted(truth.categories)
        assert len(page["revisions"]) == 1, f"revisions of {title} duplicated"
        assert page["revisions"][0]["slots"]["main"]["content"].rstrip() == truth.text.rstrip()
        assert (page["pageid"], page["ns"]) == (first_ids[title], 0)
        assert resolve(acc, title).outcome == OK
    assert len(page_links(acc.pages["Hub Alpha"])) == wikigen.HUB_SIZES["Hub Alpha"] == 600
    assert len(page_links(acc.pages["Hub Beta"])) == wikigen.HUB_SIZES["Hub Beta"] == 900
    # Links stay in API order (namespace, then title) across the parts.
    beta = acc.pages["Hub Beta"]["links"]
    assert beta == sorted(beta, key=lambda link: (link["ns"], link["title"].encode("utf-8")))


def test_continuation_parts_every_prefix_is_a_subset() -> None:
    acc = Accumulator()
    previous = 0
    for name in CONTINUATION:
        merge_query(acc, body(name))
        total = sum(len(p.get("links", [])) for p in acc.pages.values())
        assert total > previous
        previous = total
    assert previous == 600 + 900 + len(model().pages["Han's Blaster"].links)


def test_repeated_revisions_are_not_duplicated_but_new_ones_are_added() -> None:
    acc = merged("continuation_1")
    again = body("continuation_1")  # a wiki that repeats the revision in a later part
    for page in again["query"]["pages"]:
        page.pop("links", None)
        page.pop("categories", None)
    merge_query(acc, again)
    assert all(len(p["revisions"]) == 1 for p in acc.pages.values())
    newer = {"revid": 9999, "parentid": 4, "timestamp": "2026-01-01T00:00:00Z"}
    merge_query(acc, {"query": {"pages": [{"title": "Han's Blaster", "revisions": [newer]}]}})
    assert [r["revid"] for r in acc.pages["Han's Blaster"]["revisions"]] == [4, 9999]


def test_later_parts_fill_only_missing_scalar_keys() -> None:
    acc = merged("batch_ok")
    merge_query(acc, {"query": {"pages": [{"title": "Sarvessha", "pageid": 12345, "touched": "now"}]}})
    assert acc.pages["Sarvessha"]["pageid"] == 7 and acc.pages["Sarvessha"]["touched"] == "now"


# -- redirects, normalisation, Unicode -----------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "title", "chain"),
    [
        ("Omega Station", "Ωmega Station", ("Omega Station", "Ωmega Station")),
        ("Old Republic Archives", "Republic Archives",
         ("Old Republic Archives", "Republic Archives (old)", "Republic Archives")),
        ("han's Blaster", "Han's Blaster", ("han's Blaster", "Han's Blaster")),
        ("Mos_Eisley_Cantina", "Mos Eisley Cantina", ("Mos_Eisley_Cantina", "Mos Eisley Cantina")),
        ("東京 Base", "東京 Base", ("東京 Base",)),
        ("Planets list", "Category:Planets", ("Planets list", "Category:Planets")),
    ],
)
def test_redirects_and_normalisation_resolve_to_the_right_page(requested: str, title: str, chain: tuple) -> None:
    acc = merged("redirects_normalized")
    res = resolve(acc, requested)
    assert (res.requested, res.title, res.outcome, res.chain) == (requested, title, OK, chain)
    assert res.page is acc.pages[title] and res.page["title"] == title
    truth = model().resolve(requested)
    assert (truth.outcome, truth.key) == (OK, title)
    assert res.chain[-len(truth.chain):] == truth.chain
    assert sorted(page_links(res.page)) == sorted(model().pages[title].links)


def test_cross_namespace_redirect_target_keeps_its_namespace() -> None:
    page = resolve(merged("redirects_normalized"), "Planets list").page
    assert page is not None and page["ns"] == 14


def test_resolved_titles_also_resolve_to_themselves() -> None:
    acc = merged("redirects_normalized")
    for title in acc.pages:
        res = resolve(acc, title)
        assert (res.title, res.outcome, res.chain) == (title, OK, (title,))


def test_redirect_and_its_target_in_one_batch_resolve_to_the_same_page() -> None:
    acc = merged("redirects_normalized")
    assert resolve(acc, "Omega Station").page is resolve(acc, "Ωmega Station").page


# -- missing, invalid, special, interwiki ---------------------------------------------------------


def test_missing_and_invalid_titles() -> None:
    acc = merged("missing_invalid")
    missing = resolve(acc, "Never Written Page")
    assert (missing.title, missing.outcome, missing.page) == (
        "Never Written Page", MISSING, {"ns": 0, "title": "Never Written Page", "missing": True},
    )
    invalid = resolve(acc, "Foo<Bar")
    assert (invalid.title, invalid.outcome) == ("Foo<Bar", INVALID)
    assert invalid.page is not None and "invalid characters" in invalid.page["invalidreason"]
    lost = resolve(acc, "Lost Redirect")  # a redirect to a missing page: keyed by the target
    assert (lost.title, lost.outcome) == ("Never Written Page", MISSING)
    assert lost.chain == ("Lost Redirect", "Never Written Page")
    assert lost.page is missing.page
    assert resolve(acc, "Sarvessha").outcome == OK
    for requested in ("Never Written Page", "Foo<Bar", "Lost Redirect", "Sarvessha"):
        truth = model().resolve(requested)
        res = resolve(acc, requested)
        assert (res.outcome, res.title) == (truth.outcome, truth.key), requested


def test_a_title_absent_from_the_response_is_missing() -> None:
    res = resolve(merged("batch_ok"), "Not In This Batch")
    assert (res.title, res.outcome, res.chain) == ("Not In This Batch", MISSING, ("Not In This Batch",))
    assert res.page == {"title": "Not In This Batch", "missing": True, "absent_from_response": True}


def test_special_and_interwiki_titles() -> None:
    acc = Accumulator()
    merge_query(acc, {
        "batchcomplete": True,
        "query": {
            "interwiki": [{"title": "wikipedia:Star Wars", "iw": "wikipedia"}],
            "pages": [{"title": "Special:Random", "ns": -1, "special": True}],
        },
    })
    special = resolve(acc, "Special:Random")
    assert (special.title, special.outcome) == ("Special:Random", SPECIAL)
    interwiki = resolve(acc, "wikipedia:Star Wars")
    assert (interwiki.outcome, interwiki.page) == (INVALID, {"title": "wikipedia:Star Wars", "iw": "wikipedia"})


def test_prop_info_fixture() -> None:
    acc = merged("prop_info")
    assert len(acc.pages) == 50
    outcomes = {t: resolve(acc, t).outcome for t in acc.pages}
    assert outcomes.pop("Never Written Page") == MISSING
    assert set(outcomes.values()) == {OK} and len(outcomes) == 49
    for title in outcomes:
        page = acc.pages[title]
        assert isinstance(page["lastrevid"], int) and page["length"] > 0
        assert model().pages[title].redirect is None


# -- redirect loops -------------------------------------------------------------------------------


def test_redirect_loop_is_keyed_by_the_requested_title_with_the_api_entries() -> None:
    acc = merged("redirect_loop")
    assert acc.pages == {}  # MediaWiki answers loops with redirects only
    entries = {e["from"]: e for e in body("redirect_loop")["query"]["redirects"]}
    res = resolve(acc, "Loop Alpha")
    assert (res.requested, res.title, res.outcome) == ("Loop Alpha", "Loop Alpha", REDIRECT_LOOP)
    assert res.chain == ("Loop Alpha", "Loop Beta", "Loop Alpha")
    assert res.page == {"title": "Loop Alpha", "redirect_loop": [entries["Loop Alpha"], entries["Loop Beta"]]}
    truth = model().resolve("Loop Alpha")
    assert (truth.outcome, truth.key) == (REDIRECT_LOOP, "Loop Alpha")


def test_self_redirect_is_a_loop_keyed_by_itself() -> None:
    acc = merged("redirect_loop")
    title = "Self Reference"
    res = resolve(acc, title)
    assert (res.title, res.outcome, res.chain) == (title, REDIRECT_LOOP, (title, title))
    assert res.page == {"title": title, "redirect_loop": [{"from": title, "to": title}]}
    truth = model().resolve(title)
    assert (truth.outcome, truth.key) == (REDIRECT_LOOP, title)


def test_redirect_loop_entered_from_the_other_side_is_keyed_by_that_title() -> None:
    res = resolve(merged("redirect_loop"), "Loop Beta")
    assert (res.title, res.outcome) == ("Loop Beta", REDIRECT_LOOP)
    assert [e["from"] for e in res.page["redirect_loop"]] == ["Loop Beta", "Loop Alpha"]


def test_redirect_loop_requested_unnormalised_is_keyed_by_the_normalised_title() -> None:
    data = body("redirect_loop")
    data["query"]["normalized"] = [{"fromencoded": False, "from": "loop_Alpha", "to": "Loop Alpha"}]
    res = resolve(merged_body(data), "loop_Alpha")
    assert (res.requested, res.title, res.outcome) == ("loop_Alpha", "Loop Alpha", REDIRECT_LOOP)
    assert res.chain == ("loop_Alpha", "Loop Alpha", "Loop Beta", "Loop Alpha")
    assert res.page is not None and res.page["title"] == "Loop Alpha" and len(res.page["redirect_loop"]) == 2


def test_redirect_into_a_loop_is_keyed_by_the_requested_title() -> None:
    data = body("redirect_loop")
    data["query"]["redirects"].insert(0, {"from": "Loop Gate", "to": "Loop Alpha"})
    res = resolve(merged_body(data), "Loop Gate")
    assert (res.title, res.outcome) == ("Loop Gate", REDIRECT_LOOP)
    assert [e["from"] for e in res.page["redirect_loop"]] == ["Loop Gate", "Loop Alpha", "Loop Beta"]



# -- malformed bodies -------------------------------------------------------------------------------

HTML = "<!DOCTYPE html><html><head><title>Wiki</title></head><body>Database error</body></html>"


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [{"query": {}}],
        "[]",
        HTML,
        None,
        42,
        {},
        {"warnings": {"main": {"warnings": "x"}}},
        {"query": 3},
        {"query": "pages"},
        {"query": 0},
        {"query": False},
        {"query": []},
        {"batchcomplete": True, "query": [1]},
        {"query": {"pages": [{"pageid": 7, "ns": 0}]}},
        {"query": {"pages": [None]}},
        {"query": {"pages": ["Sarvessha"]}},
        {"query": {"pages": 3}},
        {"query": {"redirects": [{"to": "X"}]}},
        {"query": {"normalized": "han's Blaster"}},
        {"query": {"pages": []}, "continue": "plcontinue"},
    ],
    ids=repr,
)
def test_malformed_bodies_raise_malformed_response(bad: Any) -> None:
    with pytest.raises(MalformedResponse):
        merge_query(Accumulator(), copy.deepcopy(bad))


def test_malformed_response_is_a_value_error() -> None:
    assert issubclass(MalformedResponse, ValueError)  # the spider catches both as "not a query answer"


def test_html_body_bytes_are_no_api_error_and_not_json() -> None:
    assert api_error_from_bytes(HTML.encode()) is None
    with pytest.raises(ValueError):
        json.loads(HTML)


@pytest.mark.parametrize(
    "tolerated",
    [{"batchcomplete": True}, {"continue": {"continue": "-||"}}, {"batchcomplete": True, "query": {}}],
    ids=repr,
)
def test_answers_without_query_are_tolerated(tolerated: dict) -> None:
    acc = Accumulator()
    assert merge_query(acc, tolerated) == tolerated.get("continue")
    assert acc.pages == {} and acc.parts == 1


def test_formatversion_1_pages_object_is_tolerated() -> None:
    data = body("batch_ok")
    data["query"]["pages"] = {str(p["pageid"]): p for p in data["query"]["pages"]}
    assert sorted(merged_body(data).pages) == sorted(merged("batch_ok").pages)


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("maxlag", True), ("ratelimited", True), ("readonly", True), ("internal_api_error_DBQueryError", True),
        ("internal_api_error_DBConnectionError", True), ("internal_api_error_DBUnexpectedError", True),
        ("badvalue", False), ("toomanyvalues", False), ("missingparam", False), ("unknown_action", False),
        ("internal_api_error_MWException", False),
    ],
)
def test_is_retryable(code: str, retryable: bool) -> None:
    assert is_retryable(code) is retryable
    assert api_error({"error": {"code": code, "info": "x"}}) == ApiError(code, "x", retryable)


def test_api_error_shapes() -> None:
    assert api_error({"error": {"code": "badvalue", "*": "formatversion 1 text"}}) == ApiError(
        "badvalue", "formatversion 1 text", False
    )
    assert api_error({"error": {}}) == ApiError("unknown", "", False)
    for no_error in (None, [], "error", {"error": "maxlag"}, {"query": {}}, body("batch_ok")):
        assert api_error(no_error) is None
    assert is_retryable("custom", ("custom",)) and not is_retryable("maxlag", ())


def test_api_error_from_bytes_edge_cases() -> None:
    assert api_error_from_bytes(b"") is None
    assert api_error_from_bytes(b'{"error": ') is None  # truncated
    assert api_error_from_bytes(b'\xff"error"\xfe') is None  # not UTF-8
    assert api_error_from_bytes(b'["error"]') is None
    # A page whose text mentions "error" is not an error.
    page = {"batchcomplete": True, "query": {"pages": [{"title": "E", "revisions": [{"content": '"error"'}]}]}}
    assert api_error_from_bytes(json.dumps(page).encode()) is None
