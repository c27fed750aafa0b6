"""Crawls through tests/support/fault_proxy.py: transient faults cost time, never pages; a title the
API refuses costs only itself; a wrong api_url stops the crawl at once (the API probe).

The proxy stands between a real ``scrapy crawl`` (subprocess) and the real local MediaWiki or a
static site on 127.0.0.1; its RNG is seeded, so every run sees the same sequence of decisions.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.crawl import Workspace
from tests.support.fault_proxy import ALL_KINDS, HTTP_KINDS, FaultProxy
from tests.support.static_site import free_port, serve_directory
from tests.test_spiders_mediawiki import check_against_oracle

# Small waits so that a crawl with many faults stays fast (the logic is the same as in production).
FAST = {
    "HOLOCRON_RETRY_BACKOFF_BASE": "0.02",
    "HOLOCRON_RETRY_BACKOFF_MAX": "0.1",
    "HOLOCRON_FRONTIER_RETRY_BACKOFF": "0.1",
    "RETRY_TIMES": "8",
}


def summary(ws: Workspace) -> dict:
    (run,) = ws.runs()
    return json.loads(run["summary"])


def stderr_lines(proc, text: str) -> list[str]:
    return [line for line in proc.stderr.splitlines() if text in line]


# -- the proxy itself -------------------------------------------------------------------------------


@pytest.fixture
def tiny_site(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "page.html").write_bytes(b"<html><body>" + b"0123456789" * 200 + b"</body></html>")
    with serve_directory(root) as (base, _log):
        yield base


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def test_proxy_forwards_and_injects_each_kind(tiny_site: str) -> None:
    original = fetch(f"{tiny_site}/page.html")[2]
    with FaultProxy(tiny_site, rate=0, first=list(ALL_KINDS), retry_after=1, slow_seconds=0.05) as proxy:
        url = f"{proxy.url}/page.html"
        status, headers, body = fetch(url)  # truncated
        assert status == 200 and len(body) < len(original) and original.startswith(body)
        assert int(headers["Content-Length"]) == len(body)
        with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):  # cut: Content-Length promises more
            fetch(url)
        status, headers, body = fetch(url)  # html_error
        assert status == 200 and headers["Content-Type"].startswith("text/html") and b"Bad Gateway" in body
        assert fetch(url)[:2][0] == 429 and fetch(url)[1]["Retry-After"] == "1"  # status_429, status_503
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected, urllib.error.URLError)):
            fetch(url)  # reset
        assert fetch(url)[2] == original  # slow: the right answer, late
        status, headers, body = fetch(url)  # maxlag
        assert status == 200 and json.loads(body)["error"]["code"] == "maxlag"
        assert headers["MediaWiki-API-Error"] == "maxlag"
        assert fetch(url)[2] == original  # rate 0: forwarded
    assert proxy.counts == Counter({**dict.fromkeys(ALL_KINDS, 1), "forwarded": 1})
    assert proxy.injected == len(ALL_KINDS)


def test_proxy_decisions_follow_the_seed(tiny_site: str) -> None:
    sequences = []
    for _ in range(2):
        with FaultProxy(tiny_site, rate=0.5, seed=42, kinds=("status_503", "slow"), slow_seconds=0) as proxy:
            for _ in range(20):
                fetch(f"{proxy.url}/page.html")
        sequences.append([what for _, what in proxy.log])
    assert sequences[0] == sequences[1]
    assert {"forwarded", "status_503", "slow"} == set(sequences[0])


def test_proxy_rejects_batches_naming_a_title(tiny_site: str) -> None:
    with FaultProxy(tiny_site, rate=0, reject_titles=["Bad"]) as proxy:
        status, headers, body = fetch(f"{proxy.url}/page.html?action=query&titles=A%7CBad%7CC")
        assert status == 200 and json.loads(body)["error"]["code"] == "badvalue"
        assert fetch(f"{proxy.url}/page.html?action=query&titles=A%7CC")[0] == 200
    assert proxy.counts == Counter({"rejected": 1, "forwarded": 1})


# -- MediaWiki through the proxy --------------------------------------------------------------------


@pytest.mark.mediawiki
@pytest.mark.slow
def test_mediawiki_crawl_through_25_percent_faults_loses_nothing(mediawiki, tmp_path: Path) -> None:
    seeds = ["Hub Alpha", "Ωmega Station", "Loop Alpha", "No Such Page Anywhere", "Foo<Bar"]
    with FaultProxy(mediawiki.api_url, rate=0.25, seed=7) as proxy:
        ws = Workspace(tmp_path)
        ws.write_config(f"{proxy.url}/api.php")
        proc = ws.crawl(
            "mediawiki", "source=testwiki", "seeds=" + "|".join(seeds), "max_depth=2", "batch_size=10", settings=FAST
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.injected >= 0.15 * sum(proxy.counts.values()), proxy.counts
    assert all(proxy.counts[kind] >= 1 for kind in ALL_KINDS), proxy.counts  # every kind was met
    expected = check_against_oracle(ws, mediawiki.model, seeds, 2)  # every page once, links exact
    assert len(expected) > 500
    assert Counter(item["status"] for item in ws.work_items()) == {"completed": len(ws.work_items())}
    (report,) = ws.run_reports()
    assert report["status"] == "completed"
    stats = summary(ws)
    assert stats["retry/count"] >= proxy.injected - proxy.counts["slow"] - 1
    for kind in ("malformed_body", "api_maxlag", "http_429", "http_503"):
        assert stats[f"failures/transient/{kind}"] >= 1, kind  # every retried attempt stays visible


@pytest.mark.mediawiki
@pytest.mark.slow
def test_a_title_the_api_refuses_costs_only_itself(mediawiki, tmp_path: Path) -> None:
    titles = sorted(t for t, p in mediawiki.model.pages.items() if p.ns == 0 and p.redirect is None)[:50]
    bad = titles[17]
    with FaultProxy(mediawiki.api_url, rate=0, reject_titles=[bad]) as proxy:
        ws = Workspace(tmp_path)
        ws.write_config(f"{proxy.url}/api.php")
        proc = ws.crawl("mediawiki", "source=testwiki", "seeds=" + "|".join(titles), "max_depth=0", settings=FAST)
    records = {r["resource_id"]: r for r in ws.records()}
    assert len(records) == len(ws.records()) == 50, proc.stderr[-3000:]
    assert records[bad]["outcome"] == "failed" and records[bad]["attempt"] == 1
    assert "badvalue" in records[bad]["error_message"]
    stored = {title for title, r in records.items() if r["outcome"] == "ok"}
    assert stored == set(titles) - {bad}  # the other 49, with their content
    assert all(json.loads(records[t]["payload"])["title"] == t for t in stored)
    states = {item["resource_id"]: (item["status"], item["attempt"]) for item in ws.work_items()}
    assert states.pop(bad) == ("failed", 1)  # permanent: failed at once, not tried again
    assert set(states.values()) == {("completed", 1)}
    stats = summary(ws)
    # 50 -> 25 -> 13 -> 7 -> 4 -> 2 -> 1: one split per level, each a request of two halves
    assert 1 <= stats["mediawiki/bisections"] <= 7
    assert proxy.counts["rejected"] == stats["mediawiki/bisections"] + 1
    assert stats["failures/permanent/api_badvalue"] == proxy.counts["rejected"]


# -- the API probe ----------------------------------------------------------------------------------


def probe_crawl(ws: Workspace, api_url: str, **settings: str):
    ws.root.mkdir(parents=True, exist_ok=True)
    ws.write_config(api_url)
    return ws.crawl("mediawiki", "source=testwiki", "seeds=Hub Alpha", "max_depth=0", settings={**FAST, **settings})


@pytest.mark.mediawiki
def test_probe_passes_on_the_real_wiki(mediawiki, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    proc = probe_crawl(ws, mediawiki.api_url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(r["resource_id"], r["outcome"]) for r in ws.records()] == [("Hub Alpha", "ok")]
    assert summary(ws)["mediawiki/probe/ok"] == 1
    (line,) = stderr_lines(proc, "API probe:")
    assert "Holocron Test Wiki" in line and "MediaWiki 1.39" in line


@pytest.mark.mediawiki
def test_probe_waits_out_a_503_with_retry_after(mediawiki, tmp_path: Path) -> None:
    with FaultProxy(mediawiki.api_url, rate=0, first=["status_503", "status_503"], retry_after=1) as proxy:
        ws = Workspace(tmp_path)
        proc = probe_crawl(ws, f"{proxy.url}/api.php", HOLOCRON_RETRY_BACKOFF_MAX="5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.counts["status_503"] == 2 and all("meta=siteinfo" in path for path, _ in proxy.log[:3])
    assert [(r["resource_id"], r["outcome"]) for r in ws.records()] == [("Hub Alpha", "ok")]
    stats = summary(ws)
    assert stats["mediawiki/probe/ok"] == 1 and stats["failures/transient/http_503"] == 2
    assert stats["retry/waited_seconds"] >= 2  # Retry-After: 1, twice


def check_fatal(ws: Workspace, proc, url: str, *what: str) -> None:
    assert proc.returncode != 0, proc.stderr[-3000:]
    errors = stderr_lines(proc, " ERROR: ")
    assert len(errors) == 1, "\n".join(errors)
    assert "API probe failed" in errors[0] and url in errors[0], errors[0]
    for text in what:
        assert text in errors[0], errors[0]
    assert ws.records() == []
    stats = summary(ws)
    assert stats["finish_reason"] == "fatal_api_probe" and stats["mediawiki/probe/failed"] == 1
    assert stats["downloader/request_count"] == 1  # the probe alone, not retried
    (report,) = ws.run_reports()
    assert report["status"] == "failed"
    assert {item["status"] for item in ws.work_items()} <= {"pending"}  # nothing was tried, nothing lost


def test_probe_of_a_closed_port_stops_at_once(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api.php"
    ws = Workspace(tmp_path)
    proc = probe_crawl(ws, url)
    check_fatal(ws, proc, url, "refused")


@pytest.fixture
def html_site(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_bytes(b"<!DOCTYPE html><html><body><h1>Welcome to our wiki</h1></body></html>")
    with serve_directory(root) as (base, _log):
        yield base


def test_probe_of_a_404_stops_at_once_naming_the_status(html_site: str, tmp_path: Path) -> None:
    url = f"{html_site}/w/api.php"
    ws = Workspace(tmp_path / "ws")
    proc = probe_crawl(ws, url)
    check_fatal(ws, proc, url, "HTTP 404")


def test_probe_of_an_html_page_stops_without_crawling(html_site: str, tmp_path: Path) -> None:
    url = f"{html_site}/index.html"
    ws = Workspace(tmp_path / "ws")
    proc = probe_crawl(ws, url)
    assert proc.returncode != 0, proc.stderr[-3000:]
    errors = stderr_lines(proc, " ERROR: ")
    assert len(errors) == 1 and "API probe failed" in errors[0] and "HTTP 200, text/html" in errors[0], errors
    assert "not MediaWiki API JSON" in errors[0]
    stats = summary(ws)
    assert stats["finish_reason"] == "fatal_api_probe" and ws.records() == []
    assert stats["downloader/request_count"] == 3  # an HTML page is retried twice, not RETRY_TIMES times


# -- a static site through the proxy ----------------------------------------------------------------

PAGES = 120


def write_linked_site(root: Path) -> dict[str, list[str]]:
    """Pages p0..p119 with relative links (a deterministic graph); return {page: links}."""
    links = {
        f"p{i}.html": sorted({f"p{(i * 7 + k) % PAGES}.html" for k in (1, 3, 11)} - {f"p{i}.html"})
        for i in range(PAGES)
    }
    for page, targets in links.items():
        anchors = "".join(f'<li><a href="{t}">{t}</a></li>' for t in targets)
        filler = "<p>" + "lorem ipsum " * 150 + "</p>"  # long enough to be cut mid-body
        (root / page).write_text(f"<html><body><h1>{page}</h1>{filler}<ul>{anchors}</ul></body></html>", "utf-8")
    return links


def reachable(links: dict[str, list[str]], seed: str, max_depth: int) -> set[str]:
    seen, level = {seed}, [seed]
    for _ in range(max_depth):
        level = [t for page in level for t in links[page] if t not in seen]
        seen.update(level)
    return seen


@pytest.mark.slow
def test_http_crawl_through_25_percent_faults_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    links = write_linked_site(root)
    with serve_directory(root) as (base, _log), FaultProxy(base, rate=0.25, seed=3, kinds=HTTP_KINDS) as proxy:
        ws = Workspace(tmp_path / "ws")
        ws.root.mkdir()
        ws.config.write_text(
            "contact: tests@example.org\n"
            f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
            f"state:\n  url: sqlite:///{ws.state_db}\n"
            "sources:\n  - {name: site, type: http, delay: 0, concurrency: 3}\n",
            encoding="utf-8",
        )
        proc = ws.crawl("http", "source=site", f"seeds={proxy.url}/p0.html", "max_depth=5", settings=FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(proxy.counts[kind] >= 1 for kind in HTTP_KINDS), proxy.counts
    expected = reachable(links, "p0.html", 5)
    records = ws.records()
    by_page = {r["resource_id"].rsplit("/", 1)[1]: r for r in records}
    assert len(by_page) == len(records) and set(by_page) == expected
    for page, record in by_page.items():
        assert record["outcome"] == "ok", (page, record["error_message"])
        assert json.loads(record["payload"]) == (root / page).read_text("utf-8"), page  # whole, links exact
    assert Counter(item["status"] for item in ws.work_items() if item["resource_type"] == "url") == {
        "completed": len(expected)
    }
    (report,) = ws.run_reports()
    assert report["status"] == "completed"
    stats = summary(ws)
    assert stats["failures/transient/http_503"] >= 1 and stats["failures/transient/truncated"] >= 1
