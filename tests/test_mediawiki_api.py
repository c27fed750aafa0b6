"""The pure MediaWiki request builders of holocron_scrapy.mediawiki.api."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from holocron_scrapy import defaults
from holocron_scrapy.mediawiki import api

ENDPOINT = "http://wiki.test/api.php"


def query_of(url: str) -> list[tuple[str, str]]:
    """The decoded query pairs of *url*, in order."""
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# -- normalize_title ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mos_Eisley_Cantina", "Mos Eisley Cantina"),
        ("  Arvekfen  Xanxanmir ", "Arvekfen Xanxanmir"),
        ("Han's\t Blaster\n", "Han's Blaster"),
        ("a__b _ c", "a b c"),
        ("東京_Base", "東京 Base"),
        ("Ωmega Station", "Ωmega Station"),
        ("han's Blaster", "han's Blaster"),  # first-letter case is the API's business
        ("Talk:Ωmega_Station", "Talk:Ωmega Station"),
        ("___", ""),
        ("", ""),
    ],
)
def test_normalize_title_tidies_blanks_only(raw: str, expected: str) -> None:
    assert api.normalize_title(raw) == expected


def test_normalize_title_is_idempotent() -> None:
    for raw in ("Mos_Eisley_Cantina", "  a  b  ", "AT-AT/Walker", "Café Ørsted"):
        once = api.normalize_title(raw)
        assert api.normalize_title(once) == once


# -- query_params ---------------------------------------------------------------------------


def test_query_params_defaults() -> None:
    params = api.query_params(["Sarvessha", "Ωmega Station"])
    assert params == {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "prop": "revisions|links|categories",
        "rvprop": "content|ids|timestamp",
        "rvslots": "main",
        "pllimit": "max",
        "plnamespace": "0",
        "cllimit": "max",
        "clprop": "sortkey|hidden",
        "redirects": "1",
        "titles": "Sarvessha|Ωmega Station",
        "maxlag": str(defaults.MEDIAWIKI_MAXLAG),
    }
    assert all(isinstance(v, str) for v in params.values())


def test_query_params_keeps_title_order_and_accepts_any_iterable() -> None:
    titles = ("Zeta", "Alpha", "Mu")
    assert api.query_params(titles)["titles"] == "Zeta|Alpha|Mu"
    assert api.query_params(iter(titles))["titles"] == "Zeta|Alpha|Mu"


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [((0,), "0"), ((14, 0), "0|14"), ([4, 0, 4, 14, 0], "0|4|14"), (range(3), "0|1|2")],
)
def test_query_params_plnamespace_is_sorted_and_unique(namespaces, expected: str) -> None:
    assert api.query_params(["A"], namespaces=namespaces)["plnamespace"] == expected


def test_query_params_maxlag() -> None:
    assert api.query_params(["A"], maxlag=-1)["maxlag"] == "-1"
    assert api.query_params(["A"], maxlag=0)["maxlag"] == "0"  # 0 is a value, not "absent"
    assert "maxlag" not in api.query_params(["A"], maxlag=None)


def test_query_params_sends_every_continuation_key_back_whole() -> None:
    # The shape MediaWiki 1.39 answers (tests/fixtures/mediawiki/continuation_1.json).
    cont = {"plcontinue": "565|0|Unwritten_Record_0354", "continue": "||revisions|categories"}
    params = api.query_params(["Hub Alpha", "Hub Beta"], continuation=cont)
    assert params["plcontinue"] == "565|0|Unwritten_Record_0354"
    assert params["continue"] == "||revisions|categories"
    base = api.query_params(["Hub Alpha", "Hub Beta"])
    assert {k: v for k, v in params.items() if k not in cont} == base


def test_query_params_continuation_values_become_strings_and_unknown_keys_pass() -> None:
    cont = {"rvcontinue": 12345, "clcontinue": "7|Holocron_entries", "continue": "||", "gplcontinue": "x"}
    params = api.query_params(["A"], continuation=cont)
    assert {k: params[k] for k in cont} == {
        "rvcontinue": "12345", "clcontinue": "7|Holocron_entries", "continue": "||", "gplcontinue": "x",
    }


@pytest.mark.parametrize("empty", [None, {}])
def test_query_params_without_continuation(empty) -> None:
    assert api.query_params(["A"], continuation=empty) == api.query_params(["A"])


def test_query_params_url_round_trips_the_continuation() -> None:
    cont = {"plcontinue": "566|1|Vektortal_Phejunost", "continue": "||revisions|categories"}
    url = api.api_url(ENDPOINT, api.query_params(["Hub Beta", "Han's Blaster"], continuation=cont))
    decoded = dict(query_of(url))
    assert decoded["plcontinue"] == cont["plcontinue"] and decoded["continue"] == cont["continue"]
    assert decoded["titles"] == "Hub Beta|Han's Blaster"


# -- info_params ----------------------------------------------------------------------------


def test_info_params() -> None:
    params = api.info_params(["Sarvessha", "Never Written Page"])
    assert params == {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "prop": "info",
        "redirects": "1",
        "titles": "Sarvessha|Never Written Page",
        "maxlag": str(defaults.MEDIAWIKI_MAXLAG),
    }
    assert api.info_params(["A"], maxlag=3)["maxlag"] == "3"
    assert "maxlag" not in api.info_params(["A"], maxlag=None)


# -- api_url / title_url --------------------------------------------------------------------


def test_api_url_sorts_parameters_so_equal_dicts_give_equal_urls() -> None:
    params = api.query_params(["Sarvessha", "東京 Base"])
    reversed_params = dict(reversed(list(params.items())))
    url = api.api_url(ENDPOINT, params)
    assert url == api.api_url(ENDPOINT, reversed_params)
    pairs = query_of(url)
    assert [k for k, _ in pairs] == sorted(params)
    assert dict(pairs) == params


def test_api_url_encodes_reserved_and_unicode_characters() -> None:
    url = api.api_url(ENDPOINT, {"titles": "Smugglers & Rebels|Holo+Net Relay|東京 Base|Who Shot First?"})
    assert url.startswith(ENDPOINT + "?titles=")
    query = urlsplit(url).query
    assert "&" not in query and "?" not in query and "東" not in query and " " not in query
    assert dict(query_of(url))["titles"] == "Smugglers & Rebels|Holo+Net Relay|東京 Base|Who Shot First?"


def test_api_url_of_a_known_request() -> None:
    url = api.api_url(ENDPOINT, {"titles": "Han's Blaster", "action": "query", "format": "json"})
    assert url == "http://wiki.test/api.php?action=query&format=json&titles=Han%27s+Blaster"


def test_title_url_names_one_title() -> None:
    url = api.title_url(ENDPOINT, "Ωmega Station")
    assert url == api.api_url(ENDPOINT, {"action": "query", "titles": "Ωmega Station"})
    assert query_of(url) == [("action", "query"), ("titles", "Ωmega Station")]


def test_title_url_is_distinct_per_title_and_stable() -> None:
    titles = ["Omega Station", "Ωmega Station", "Mos Eisley Cantina", "Mos eisley cantina", "AT-AT", "AT-AT/Walker"]
    urls = [api.title_url(ENDPOINT, t) for t in titles]
    assert len(set(urls)) == len(titles)
    assert urls == [api.title_url(ENDPOINT, t) for t in titles]
