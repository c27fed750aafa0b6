"""Several sources share one state database: each crawl claims, counts, reclaims and stores only its
own source's work items (real MediaWiki, a real static site, real ``scrapy crawl`` processes)."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from tests.support.crawl import Workspace
from tests.support.static_site import serve_directory

pytestmark = [pytest.mark.mediawiki, pytest.mark.slow]

WIKI_SEEDS = ["Hub Alpha"]
WIKI_ARGS = ("seeds=Hub Alpha", "max_depth=1", "batch_size=5")
FAST = {"HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.2"}
PAGES = [f"p{i}.html" for i in range(12)]


def write_site(root) -> None:
    """index.html links to every page; each page links to the next one and back home."""
    root.mkdir(parents=True)
    links = "".join(f'<a href="{p}">{p}</a> ' for p in PAGES)
    (root / "index.html").write_text(f"<html><body>{links}</body></html>")
    for i, name in enumerate(PAGES):
        nxt = PAGES[(i + 1) % len(PAGES)]
        (root / name).write_text(f'<html><body>page {i} <a href="{nxt}">next</a> <a href="index.html">home</a>')
    (root / "robots.txt").write_text("User-agent: *\nDisallow:\n")


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    write_site(root)
    with serve_directory(root) as (base, _log):
        yield base


def write_config(ws: Workspace, api_url: str) -> None:
    """Two MediaWiki sources on the same wiki and one http source, one state database."""
    ws.config.write_text(
        "contact: tests@example.org\n"
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
        f"state:\n  url: sqlite:///{ws.state_db}\n"
        "sources:\n"
        f"  - {{name: testwiki, type: mediawiki, api_url: '{api_url}', delay: 0, concurrency: 3}}\n"
        f"  - {{name: mirrorwiki, type: mediawiki, api_url: '{api_url}', delay: 0, concurrency: 3}}\n"
        "  - {name: site, type: http, delay: 0, concurrency: 2}\n",
        encoding="utf-8",
    )


def http_args(base: str) -> tuple[str, ...]:
    return ("source=site", f"seeds={base}/index.html", "max_depth=2")


def wiki_args(source: str) -> tuple[str, ...]:
    return (f"source={source}", *WIKI_ARGS)


def start(ws: Workspace, spider: str, *args: str, settings: dict[str, str] | None = None) -> subprocess.Popen:
    return ws.start(spider, *args, settings={**FAST, **(settings or {})})


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "not found in" not in err, [line for line in err.splitlines() if "not found in" in line][:3]
    return err


def items_of(ws: Workspace, source: str) -> dict[str, dict]:
    return {i["dedupe_key"]: i for i in ws.work_items() if i["source_name"] == source}


def assert_source_complete(ws: Workspace, source: str, expected: set[str]) -> None:
    records = [r for r in ws.records() if r["source_name"] == source]
    counts = Counter(r["resource_id"] for r in records)
    assert set(counts) == expected, (sorted(expected - set(counts))[:5], sorted(set(counts) - expected)[:5])
    assert max(counts.values()) == 1
    statuses = Counter(i["status"] for i in items_of(ws, source).values())
    assert set(statuses) == {"completed"}, (source, statuses)


def assert_nothing_misfiled(ws: Workspace, base: str) -> None:
    for record in ws.records():
        if record["source_name"] == "site":
            assert record["source_system"] == "http_scrape" and record["resource_id"].startswith(base), record
        else:
            assert record["source_system"] == "mediawiki" and not record["resource_id"].startswith("http"), record
    for item in ws.work_items():
        assert item["dedupe_key"].startswith(f"{item['source_system']}:{item['source_name']}:"), item
        if item["source_name"] == "site":
            assert item["request_uri"].startswith(base), item
        else:
            assert "api.php" in item["request_uri"], item


def leave_leftovers(ws: Workspace, spider: str, *args: str) -> dict[str, dict]:
    """A crawl stopped early (a few items): its source keeps pending work in the shared database."""
    slow = {"CLOSESPIDER_PAGECOUNT": "3", "CONCURRENT_REQUESTS": "1", "HOLOCRON_FRONTIER_CLAIM_SIZE": "2"}
    finish(start(ws, spider, *args, settings=slow))
    source = next(a.split("=", 1)[1] for a in args if a.startswith("source="))
    left = items_of(ws, source)
    assert any(i["status"] == "pending" for i in left.values()), Counter(i["status"] for i in left.values())
    return left


def test_sources_one_after_the_other_touch_only_their_own_items(mediawiki, site, tmp_path):
    ws = Workspace(tmp_path)
    write_config(ws, mediawiki.api_url)
    wiki_pages = set(mediawiki.model.reachable(WIKI_SEEDS, 1))
    site_pages = {f"{site}/index.html", *(f"{site}/{p}" for p in PAGES)}

    # The http source stops early; a MediaWiki crawl then runs to its end beside the leftovers.
    site_left = leave_leftovers(ws, "http", *http_args(site))
    finish(start(ws, "mediawiki", *wiki_args("testwiki")))
    assert items_of(ws, "site") == site_left  # not claimed, not counted, not changed at all
    assert_source_complete(ws, "testwiki", wiki_pages)

    # Another MediaWiki source on the same wiki stops early; the first one re-runs beside it.
    mirror_left = leave_leftovers(ws, "mediawiki", *wiki_args("mirrorwiki"))
    err = finish(start(ws, "mediawiki", *wiki_args("testwiki")))
    assert "source mediawiki/testwiki" in err
    assert items_of(ws, "mirrorwiki") == mirror_left and items_of(ws, "site") == site_left

    # Each source, run again, finishes its own work and files it under its own name.
    finish(start(ws, "http", *http_args(site)))
    finish(start(ws, "mediawiki", *wiki_args("mirrorwiki")))
    assert_source_complete(ws, "site", site_pages)
    assert_source_complete(ws, "mirrorwiki", wiki_pages)
    assert_source_complete(ws, "testwiki", wiki_pages)
    assert_nothing_misfiled(ws, site)


def test_sources_at_the_same_time_touch_only_their_own_items(mediawiki, site, tmp_path):
    ws = Workspace(tmp_path)
    write_config(ws, mediawiki.api_url)
    wiki_pages = set(mediawiki.model.reachable(WIKI_SEEDS, 1))
    site_pages = {f"{site}/index.html", *(f"{site}/{p}" for p in PAGES)}
    paced = {"DOWNLOAD_DELAY": "0.05", "RANDOMIZE_DOWNLOAD_DELAY": "0"}  # so that the runs overlap
    procs = [
        start(ws, "http", *http_args(site), settings=paced),
        start(ws, "mediawiki", *wiki_args("testwiki"), settings=paced),
        start(ws, "mediawiki", *wiki_args("mirrorwiki"), settings=paced),
    ]
    for proc in procs:
        finish(proc)
    assert_source_complete(ws, "site", site_pages)
    assert_source_complete(ws, "testwiki", wiki_pages)
    assert_source_complete(ws, "mirrorwiki", wiki_pages)
    assert_nothing_misfiled(ws, site)
    assert max(i["attempt"] for i in ws.work_items()) == 1  # nobody claimed another source's item
