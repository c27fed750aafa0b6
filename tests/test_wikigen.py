"""The test-wiki generator, its oracle, and the real MediaWiki built from it."""

from __future__ import annotations

import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from tests.support import mediawiki_server as ms
from tests.support import wikigen
from tests.support.wikigen import (
    BIG_CATEGORY,
    CRAWL_SEED,
    INVALID_TITLES,
    MISSING_CATEGORY,
    build_model,
    extract_links,
    normalize_title,
)

FIXTURES = Path(__file__).parent / "fixtures" / "mediawiki"


@pytest.fixture(scope="module")
def model() -> wikigen.WikiModel:
    return build_model()


# --------------------------------------------------------------------------- generator


def test_generation_is_deterministic(model: wikigen.WikiModel) -> None:
    assert build_model().dump_xml() == model.dump_xml()
    assert build_model(seed=7).dump_xml() != model.dump_xml()


def test_wiki_shape(model: wikigen.WikiModel) -> None:
    articles = model.articles()
    assert len(articles) >= 500
    for hub, size in model.hubs.items():
        assert size > 500 and len(model.pages[hub].links) == size
    ordinary = [p for p in articles if p.kind in ("article", "orphan")]
    modest = [p for p in ordinary if 3 <= len(p.links) <= 40]
    assert len(modest) >= 0.95 * len(ordinary)
    for title in model.special_titles:
        assert model.pages[title].redirect is None and model.pages[title].ns == 0
    assert len(model.category_members(BIG_CATEGORY)) > 500
    assert model.category_members(MISSING_CATEGORY) and MISSING_CATEGORY not in model.pages
    linked_namespaces = {wikigen.namespace_of(t) for p in articles for t in p.links}
    assert {0, 1, 4, 10, 12, 14} <= linked_namespaces
    assert {1, 4, 10, 12, 14} <= {p.ns for p in model.pages.values()}
    assert len(model.missing_titles) > 100
    assert model.redirects["Self Reference"] == "Self Reference"
    assert all(normalize_title(t) is None for t in INVALID_TITLES)


def test_links_match_wikitext(model: wikigen.WikiModel) -> None:
    """The structured links/categories agree with an independent scan of the wikitext."""
    for page in model.pages.values():
        links, categories = extract_links(page.title, page.text)
        for template in page.templates:
            tlinks, _ = extract_links(page.title, re.sub(r"<noinclude>.*?</noinclude>", "", model.pages[template].text))
            links |= tlinks
            categories |= set(re.findall(r"<includeonly>\[\[(Category:[^\]|]+)\]\]", model.pages[template].text))
        assert (links, categories) == (set(page.links), set(page.categories)), page.title


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mos_Eisley  Cantina ", "Mos Eisley Cantina"),
        ("project:About", "Holocron Test Wiki:About"),
        ("talk:ωmega Station", "Talk:Ωmega Station"),
        (":Category:planets", "Category:Planets"),
        ("Battle Log: Hoth Sector", "Battle Log: Hoth Sector"),
        ("Han's Blaster#History", "Han's Blaster"),
        ("Foo<Bar", None),
        ("Talk:", None),
    ],
)
def test_normalize_title(raw: str, expected: str | None) -> None:
    assert normalize_title(raw) == expected


def test_dump_is_a_valid_export(model: wikigen.WikiModel, tmp_path: Path) -> None:
    path = model.write_dump(tmp_path / "dump.xml")
    ns = {"mw": "http://www.mediawiki.org/xml/export-0.11/"}
    root = ET.parse(path).getroot()
    assert root.get("version") == "0.11"
    pages = root.findall("mw:page", ns)
    assert len(pages) == len(model.pages)
    for elem in pages:
        page = model.pages[elem.findtext("mw:title", namespaces=ns)]
        assert int(elem.findtext("mw:ns", namespaces=ns)) == page.ns
        redirect = elem.find("mw:redirect", ns)
        assert (redirect.get("title") if redirect is not None else None) == page.redirect
        text = elem.find("mw:revision/mw:text", ns)
        assert text.text == page.text and int(text.get("bytes")) == len(page.text.encode())


def test_reachable_small_example(model: wikigen.WikiModel) -> None:
    seeds = ["omega_Station", "Self Reference", "Loop Beta", "Old Republic Archives", "Lost Redirect", "Foo<Bar"]
    seeds += ["Special:Random", "Ωmega Station"]
    assert model.reachable(seeds, 0) == {
        "Ωmega Station": {"depth": 0, "outcome": "ok", "requested": "omega_Station"},
        "Self Reference": {"depth": 0, "outcome": "redirect_loop", "requested": "Self Reference"},
        "Loop Beta": {"depth": 0, "outcome": "redirect_loop", "requested": "Loop Beta"},
        "Republic Archives": {"depth": 0, "outcome": "ok", "requested": "Old Republic Archives"},
        "Never Written Page": {"depth": 0, "outcome": "missing", "requested": "Lost Redirect"},
        "Foo<Bar": {"depth": 0, "outcome": "invalid", "requested": "Foo<Bar"},
        "Special:Random": {"depth": 0, "outcome": "special", "requested": "Special:Random"},
    }


def test_reachable_depth_structure(model: wikigen.WikiModel) -> None:
    def ok_articles(result: dict[str, dict]) -> set[str]:
        return {k for k, v in result.items() if v["outcome"] == "ok" and k in {p.title for p in model.articles()}}

    everything = model.reachable(["Hub Alpha"], 50)
    depth2 = model.reachable(["Hub Alpha"], 2)
    articles = {p.title for p in model.articles()}
    assert 200 < len(ok_articles(depth2)) < len(ok_articles(everything)) < len(articles)
    assert all(everything[t]["depth"] >= 5 for t in model.deep_chain)
    assert sum(1 for v in everything.values() if v["depth"] >= 3) > 50
    assert not (set(model.orphans) | {"Hub Gamma"}) & set(everything)
    assert {k for k, v in everything.items() if v["outcome"] == "redirect_loop"} == {"Loop Alpha", "Self Reference"}
    assert {v["outcome"] for v in everything.values()} == {"ok", "missing", "redirect_loop"}
    # each result's depth is the BFS distance: no record is deeper than a parent + 1
    with_categories = model.reachable([CRAWL_SEED], 2, follow_categories=True)
    assert with_categories[BIG_CATEGORY]["depth"] == 1
    assert MISSING_CATEGORY not in model.reachable([CRAWL_SEED], 2)
    wider = model.reachable([CRAWL_SEED], 1, namespaces=(0, 1))
    assert wider["Talk:Ωmega Station"]["depth"] == 1


# --------------------------------------------------------------------------- the real wiki

live = pytest.mark.mediawiki


def query_pages(api_url: str, params: dict[str, str]) -> tuple[dict[str, dict], dict[str, str], dict[str, str], int]:
    """Run a query following ``continue``; return (pages by title, normalized, redirects, request count)."""
    pages: dict[str, dict] = {}
    normalized: dict[str, str] = {}
    redirects: dict[str, str] = {}
    cont: dict[str, str] = {}
    requests = 0
    while True:
        data = ms.api_get(api_url, {"action": "query", **params, **cont})
        requests += 1
        query = data.get("query", {})
        normalized.update({n["from"]: n["to"] for n in query.get("normalized", [])})
        redirects.update({r["from"]: r["to"] for r in query.get("redirects", [])})
        for page in query.get("pages", []):
            merged = pages.setdefault(page["title"], {})
            for key, value in page.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
                else:
                    merged[key] = value
        if "continue" not in data:
            return pages, normalized, redirects, requests
        cont = {k: str(v) for k, v in data["continue"].items()}


def all_pages(api_url: str, namespace: int) -> dict[str, dict]:
    params = {
        "generator": "allpages",
        "gapnamespace": str(namespace),
        "gaplimit": "50",
        "prop": "revisions|links|categories|info",
        "rvprop": "content|ids",
        "rvslots": "main",
        "pllimit": "max",
        "cllimit": "max",
    }
    return query_pages(api_url, params)[0]


def titles(items: Iterable[dict]) -> set[str]:
    return {item["title"] for item in items}


def list_all(api_url: str, module: str, params: dict[str, str]) -> list[dict]:
    """All items of ``list=<module>``, following ``continue``."""
    items: list[dict] = []
    cont: dict[str, str] = {}
    while True:
        data = ms.api_get(api_url, {"action": "query", "list": module, **params, **cont})
        items += data["query"][module]
        if "continue" not in data:
            return items
        cont = {k: str(v) for k, v in data["continue"].items()}


@live
def test_wiki_counts_match_model(mediawiki) -> None:
    model = mediawiki.model
    stats = mediawiki.api(action="query", meta="siteinfo", siprop="statistics")["query"]["statistics"]
    assert stats["pages"] == len(model.pages)
    assert stats["articles"] == len(model.articles()) >= 500
    for ns in sorted({p.ns for p in model.pages.values()}):
        listed = list_all(mediawiki.api_url, "allpages", {"apnamespace": str(ns), "aplimit": "max"})
        assert titles(listed) == {p.title for p in model.in_namespace(ns)}, ns
    content = list_all(
        mediawiki.api_url, "allpages", {"apnamespace": "0", "aplimit": "max", "apfilterredir": "nonredirects"}
    )
    assert titles(content) == {p.title for p in model.articles()}


@live
def test_every_page_matches_model(mediawiki) -> None:
    model = mediawiki.model
    seen = 0
    for ns in sorted({p.ns for p in model.pages.values()}):
        for title, page in all_pages(mediawiki.api_url, ns).items():
            expected = model.pages[title]
            seen += 1
            assert page["revisions"][0]["slots"]["main"]["content"] == expected.text, title
            assert page.get("redirect", False) == (expected.redirect is not None), title
            assert titles(page.get("links", [])) == expected.links, title
            assert titles(page.get("categories", [])) == expected.categories, title
    assert seen == len(model.pages)


@live
@pytest.mark.parametrize("hub", sorted(wikigen.HUB_SIZES))
def test_hub_links_need_continuation(mediawiki, hub: str) -> None:
    params = {"titles": hub, "prop": "links", "pllimit": "max"}
    pages, _, _, requests = query_pages(mediawiki.api_url, params)
    links = [(link["ns"], link["title"]) for link in pages[hub]["links"]]
    assert len(links) == len(set(links)) == wikigen.HUB_SIZES[hub]
    assert {t for _, t in links} == mediawiki.model.pages[hub].links
    assert all(ns == wikigen.namespace_of(t) for ns, t in links)
    assert requests == -(-wikigen.HUB_SIZES[hub] // 500)


@live
def test_category_members(mediawiki) -> None:
    model = mediawiki.model
    categories = {c for p in model.pages.values() for c in p.categories}
    for category in sorted(categories):
        found = list_all(mediawiki.api_url, "categorymembers", {"cmtitle": category, "cmlimit": "max"})
        members = titles(found)
        assert len(found) == len(members)
        assert members == model.category_members(category), category


def follow_redirects(name: str, redirects: dict[str, str]) -> str | None:
    """End of the redirect chain starting at ``name``; None for a loop."""
    chain = [name]
    while name in redirects:
        name = redirects[name]
        if name in chain:
            return None
        chain.append(name)
    return name


def classify(
    title: str, pages: dict[str, dict], normalized: dict[str, str], redirects: dict[str, str]
) -> tuple[str, str]:
    """(outcome, key) of one requested title, from the API answer alone."""
    if pages.get(title, {}).get("invalid"):
        return "invalid", title
    name = normalized.get(title, title)
    key = follow_redirects(name, redirects)
    if key is None:
        return "redirect_loop", name
    page = pages[key]
    return ("special" if page.get("special") else "missing" if page.get("missing") else "ok"), key


def resolve_via_api(api_url: str, requested: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Resolve titles with ``redirects=1`` using only the API answer: title -> (outcome, key)."""
    out: dict[str, tuple[str, str]] = {}
    for start in range(0, len(requested), 50):
        batch = list(requested[start : start + 50])
        pages, normalized, redirects, _ = query_pages(api_url, {"titles": "|".join(batch), "redirects": "1"})
        out.update({title: classify(title, pages, normalized, redirects) for title in batch})
    return out


@live
def test_redirects_and_odd_titles_resolve_like_model(mediawiki) -> None:
    model = mediawiki.model
    requested = sorted(model.redirects) + list(INVALID_TITLES) + ["omega_Station", "mos eisley_Cantina"]
    requested += ["Special:Random", "Never Written Page", "東京 Base", "Café Ørsted", "AT-AT/Walker"]
    got = resolve_via_api(mediawiki.api_url, requested)
    for title in requested:
        res = model.resolve(title)
        assert got[title] == (res.outcome, res.key), title
    loop = mediawiki.api(action="query", titles="Loop Alpha", redirects="1")["query"]
    assert loop == {"redirects": [{"from": "Loop Alpha", "to": "Loop Beta"}, {"from": "Loop Beta", "to": "Loop Alpha"}]}
    double = mediawiki.api(action="query", titles="Ancient Archives", redirects="1")["query"]
    assert [r["to"] for r in double["redirects"]] == list(model.double_redirects[1][1:])
    assert [p["title"] for p in double["pages"]] == ["Republic Archives"]


def crawl_via_api(
    api_url: str, seeds: Sequence[str], max_depth: int, namespaces: Sequence[int], follow_categories: bool
) -> dict[str, dict]:
    """A simple BFS crawler that knows nothing of the model: only urllib and the API."""
    result: dict[str, dict] = {}
    requested: set[str] = set()
    frontier = list(seeds)
    depth = 0
    while frontier and depth <= max_depth:
        next_level: set[str] = set()
        todo = [t for t in frontier if t not in requested]
        for start in range(0, len(todo), 50):
            batch = todo[start : start + 50]
            params = {"titles": "|".join(batch), "redirects": "1", "prop": "links|categories"}
            pages, normalized, redirects, _ = query_pages(api_url, {**params, "pllimit": "max", "cllimit": "max"})
            for title in batch:
                name = normalized.get(title, title)
                if name in requested:
                    continue
                requested.update({title, name})
                outcome, key = classify(title, pages, normalized, redirects)
                if key in result:
                    continue
                result[key] = {"depth": depth, "outcome": outcome, "requested": title}
                if outcome == "ok" and depth < max_depth:
                    page = pages[key]
                    next_level |= {link["title"] for link in page.get("links", []) if link["ns"] in namespaces}
                    if follow_categories:
                        next_level |= titles(page.get("categories", []))
        frontier = sorted(next_level - requested)
        depth += 1
    return result


@live
@pytest.mark.parametrize(
    ("seeds", "max_depth", "namespaces", "follow_categories"),
    [
        ([CRAWL_SEED], 2, (0,), False),
        (["omega_Station", "Loop Beta", "Foo<Bar", "Special:Random", "Lost Redirect", "Han's Blaster"], 1, (0,), False),
        ([CRAWL_SEED], 2, (0, 14), True),
        (["Hub Alpha"], 1, (0, 1, 4, 12), True),
    ],
)
def test_oracle_agrees_with_independent_crawl(
    mediawiki, seeds: list[str], max_depth: int, namespaces: tuple[int, ...], follow_categories: bool
) -> None:
    expected = mediawiki.model.reachable(seeds, max_depth, namespaces, follow_categories=follow_categories)
    got = crawl_via_api(mediawiki.api_url, seeds, max_depth, namespaces, follow_categories)
    assert got == expected


@live
def test_recorded_fixtures_match_live_wiki(mediawiki) -> None:
    """tests/fixtures/mediawiki is what this wiki answers (re-record with the CLI if the generator changed)."""
    responses = ms.fetch_fixture_responses(mediawiki.api_url, mediawiki.model)
    recorded = {p.stem for p in FIXTURES.glob("*.json") if not p.name.endswith(".headers.json")}
    assert {name for name, _, _ in responses} == recorded
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    for name, params, resp in responses:
        stored = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
        assert ms.normalise_recording(stored) == ms.normalise_recording(resp.json()), name
        assert urllib.parse.urlencode(params, quote_via=urllib.parse.quote) in readme, name
        headers_file = FIXTURES / f"{name}.headers.json"
        if headers_file.exists():
            stored_headers = json.loads(headers_file.read_text())
            live_headers = {"status": resp.status, "headers": resp.headers}
            assert ms.normalise_recording(stored_headers) == ms.normalise_recording(live_headers), name
            assert resp.status == 200 and "MediaWiki-API-Error" in resp.headers
    maxlag = json.loads((FIXTURES / "maxlag_error.headers.json").read_text())
    assert maxlag["headers"]["Retry-After"] == "5"
    assert json.loads((FIXTURES / "maxlag_error.json").read_text())["error"]["code"] == "maxlag"
    assert json.loads((FIXTURES / "continuation_1.json").read_text())["continue"]["plcontinue"]
    assert json.loads((FIXTURES / "batch_ok.json").read_text())["batchcomplete"] is True


@live
def test_fake_lag_triggers_maxlag(fresh_mediawiki) -> None:
    params = {"action": "query", "format": "json", "titles": CRAWL_SEED, "maxlag": "5"}
    assert "error" not in ms.api_request(fresh_mediawiki.api_url, params).json()
    fresh_mediawiki.set_lag(7)
    resp = ms.api_request(fresh_mediawiki.api_url, params)
    assert resp.status == 200 and resp.json()["error"]["code"] == "maxlag"
    assert resp.headers["Retry-After"] == "5" and resp.headers["X-Database-Lag"] == "7"
    fresh_mediawiki.set_lag(None)
    assert "error" not in ms.api_request(fresh_mediawiki.api_url, params).json()


@live
def test_edit_page_creates_new_revision(fresh_mediawiki) -> None:
    wiki = fresh_mediawiki
    before = wiki.api(action="query", prop="info", titles=CRAWL_SEED)["query"]["pages"][0]["lastrevid"]
    result = wiki.edit_page(CRAWL_SEED, "Rewritten. See [[Han's Blaster]] and [[Brand New Page]].", "test edit")
    assert result.old_revid == before and result.new_revid > before
    page = wiki.api(action="query", prop="info|links", titles=CRAWL_SEED)["query"]["pages"][0]
    assert page["lastrevid"] == result.new_revid
    assert titles(page["links"]) == {"Han's Blaster", "Brand New Page"}
    created = wiki.edit_page("Brand New Page", "Fresh [[Ωmega Station]].")
    assert created.old_revid is None and created.new_revid > result.new_revid
    changes = wiki.api(action="query", list="recentchanges", rctype="edit|new", rcprop="title|ids", rclimit="10")[
        "query"
    ]
    assert {c["title"] for c in changes["recentchanges"]} == {CRAWL_SEED, "Brand New Page"}
