"""The MediaWiki spider end to end: real ``scrapy crawl`` against the real local MediaWiki."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.support.crawl import Workspace
from tests.support.wikigen import namespace_of

pytestmark = pytest.mark.mediawiki


def stored_keys(records: list[dict]) -> Counter:
    return Counter(r["resource_id"] for r in records)


def check_against_oracle(
    ws: Workspace,
    model,
    seeds: list[str],
    max_depth: int,
    namespaces: tuple[int, ...] = (0,),
    links: bool = True,
    categories: bool = False,
) -> dict:
    expected = model.reachable(seeds, max_depth, namespaces, follow_links=links, follow_categories=categories)
    records = ws.records()
    counts = stored_keys(records)
    assert set(counts) == set(expected), (
        f"missing: {sorted(set(expected) - set(counts))[:10]} extra: {sorted(set(counts) - set(expected))[:10]}"
    )
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1][:10]
    by_key = {r["resource_id"]: r for r in records}
    for key, truth in expected.items():
        assert by_key[key]["outcome"] == truth["outcome"], key
        if truth["outcome"] == "ok":
            payload = json.loads(by_key[key]["payload"])
            got = sorted(link["title"] for link in payload.get("links", []))
            want = sorted(t for t in model.pages[key].links if namespace_of(t) in namespaces)
            assert got == want, f"links of {key}: {len(got)} stored, {len(want)} expected"
            assert sorted(c["title"] for c in payload.get("categories", [])) == sorted(model.pages[key].categories)
    docs = ws.lake_documents()
    assert sorted(d["metadata"]["resource_id"] for d in docs) == sorted(counts)
    return expected


def test_crawl_stores_exactly_the_reachable_pages(mediawiki, tmp_path, crawl_database):
    """On SQLite files and with the frontier and the records on the live PostgreSQL."""
    ws = Workspace(tmp_path, database=crawl_database)
    ws.write_config(mediawiki.api_url)
    seeds = ["Hub Alpha", "Ωmega Station", "Loop Alpha", "Self Reference", "No Such Page Anywhere", "Foo<Bar"]
    seeds += [d[0] for d in mediawiki.model.double_redirects[:2]]
    proc = ws.crawl("mediawiki", "source=testwiki", "seeds=" + "|".join(seeds), "max_depth=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = check_against_oracle(ws, mediawiki.model, seeds, 2)
    assert len(expected) > 500
    outcomes = Counter(r["outcome"] for r in ws.records())
    assert outcomes["redirect_loop"] == 2 and outcomes["invalid"] == 1 and outcomes["missing"] >= 1
    (run,) = ws.runs()
    # pages_stored counts pages fetched with outcome ok (missing/invalid/redirect_loop titles are counted apart)
    assert run["status"] == "completed" and run["pages_stored"] == outcomes["ok"]
    # Every work item was settled, and the resolved redirect targets are known.
    items = ws.work_items()
    assert {i["status"] for i in items} == {"completed"}
    assert "Run " in proc.stderr and " completed: " in proc.stderr
    if ws.database:  # both stores were on the server: no SQLite file was made
        assert not ws.records_db.exists() and not ws.state_db.exists()


@pytest.mark.parametrize(
    ("discover", "namespaces", "links", "categories"),
    [
        ("none", "0", False, False),
        ("categories", "0", False, True),
        ("both", "0|1|4|14", True, True),
    ],
)
def test_discovery_modes_and_namespaces(mediawiki, tmp_path, discover, namespaces, links, categories):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    seeds = ["Ωmega Station", "Hub Beta 1"]
    proc = ws.crawl(
        "mediawiki", "source=testwiki", "seeds=" + "|".join(seeds), "max_depth=1",
        f"discover={discover}", f"namespaces={namespaces}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    spaces = tuple(int(n) for n in namespaces.split("|"))
    expected = check_against_oracle(ws, mediawiki.model, seeds, 1, spaces, links, categories)
    depth1 = {key for key, truth in expected.items() if truth["depth"] == 1}
    if discover == "none":
        assert not depth1
    else:
        assert depth1 and (not categories or any(k.startswith("Category:") for k in depth1))


def test_rerun_fetches_and_stores_nothing_new(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    args = ("source=testwiki", "seeds=Ωmega Station", "max_depth=1")
    assert ws.crawl("mediawiki", *args).returncode == 0
    first = len(ws.records())
    again = ws.crawl("mediawiki", *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(ws.records()) == first
    stats = json.loads(ws.runs()[-1]["summary"])
    assert stats["downloader/request_count"] == 1 and stats["mediawiki/probe/ok"] == 1  # the API probe only


def test_wikipedia_spider_uses_its_source_and_batches(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(
        mediawiki.api_url,
        extra_source=(f"  - name: wikipedia\n    type: mediawiki\n    api_url: {mediawiki.api_url}\n    delay: 0\n"),
    )
    titles = sorted(t for t, p in mediawiki.model.pages.items() if p.ns == 0 and p.redirect is None)[:120]
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# titles\n" + "\n".join(titles) + "\n\n", encoding="utf-8")
    proc = ws.crawl("wikipedia", f"seeds=@{seeds}", "max_depth=0", "batch_size=50")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(stored_keys(ws.records())) == titles
    assert ws.runs()[0]["requests"] == 1 + 3  # the API probe, then 120 titles in batches of 50
    assert {r["source_name"] for r in ws.records()} == {"wikipedia"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("source=testwiki", "seeds="), "no seeds given"),
        (("source=testwiki", "seeds=@/nonexistent/seeds.txt"), "does not exist"),
        (("source=testwiki", "seeds=A", "max_depth=-1"), "max_depth: must be at least 0, got -1"),
        (("source=testwiki", "seeds=A", "batch_size=51"), "batch_size: must be between 1 and 50, got 51"),
        (("source=nosuchwiki", "seeds=A"), "unknown source 'nosuchwiki'"),
        (("source=testwiki", "seeds=A", "discover=everything"), "discover: expected one of"),
    ],
)
def test_bad_input_fails_before_any_request(tmp_path, args, message):
    ws = Workspace(tmp_path)
    ws.write_config("http://127.0.0.1:9/api.php")
    proc = ws.crawl("mediawiki", *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not ws.lake.exists() and not ws.records_db.exists() and not ws.state_db.exists()


def test_malformed_yaml_fails_naming_the_file(tmp_path):
    ws = Workspace(tmp_path)
    ws.config.write_text("sources: [\n  - name: x\n", encoding="utf-8")
    proc = ws.crawl("mediawiki", "source=x", "seeds=A")
    assert proc.returncode != 0
    assert f"{ws.config}: malformed YAML" in proc.stderr
    assert not ws.lake.exists()


def test_wikimedia_without_contact_refuses_to_start(tmp_path):
    ws = Workspace(tmp_path)
    ws.config.write_text(
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
        "sources:\n  - {name: wikipedia, type: mediawiki, api_url: 'https://en.wikipedia.org/w/api.php'}\n",
        encoding="utf-8",
    )
    proc = ws.crawl("wikipedia", "seeds=Star Wars")
    assert proc.returncode != 0
    assert "Wikimedia sites require a contact" in proc.stderr
    assert not ws.lake.exists()
