"""The ``http`` spider end to end: real ``scrapy crawl`` against static sites on 127.0.0.1."""

from __future__ import annotations

import json
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
from scrapy.linkextractors import IGNORED_EXTENSIONS

from holocron_scrapy import __version__
from holocron_scrapy.web.urls import canonical_url
from tests.support.crawl import Workspace
from tests.support.static_site import PYTHON_DOCS, free_port, read_log, serve_directory, write_edge_site


def http_config(ws: Workspace, source: str = "") -> None:
    ws.config.write_text(
        "contact: tests@example.org\n"
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
        f"state:\n  url: sqlite:///{ws.state_db}\n"
        "sources:\n" + (source or "  - {name: unused, type: http}\n"),
        encoding="utf-8",
    )


@pytest.fixture
def edge_site(tmp_path):
    port = free_port()
    root = tmp_path / "site"
    write_edge_site(root, port)
    with serve_directory(root, port) as (base, log):
        yield base, log


def by_id(ws: Workspace) -> dict[str, dict]:
    records = ws.records()
    counts = Counter(r["resource_id"] for r in records)
    assert max(counts.values()) == 1, counts
    return {r["resource_id"]: r for r in records}


def test_edge_site_crawl(edge_site, tmp_path):
    base, log = edge_site
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    http_config(ws, "  - {name: site, type: http, delay: 0, store_binary: false, max_body_bytes: 5000}\n")
    proc = ws.crawl("http", "source=site", f"seeds={base}/index.html|{base}/image.png", "max_depth=2")
    assert proc.returncode == 3, proc.stderr[-3000:]  # missing.html answers 404: partial (exit status 3)
    got = by_id(ws)
    expected = {
        f"{base}/{p}"
        for p in (
            "index.html",
            "image.png",
            "a.html",
            "b.html?x=1&y=2",
            "sub",
            "data.json",
            "feed.xml",
            "notes.txt",
            "big.html",
            "broken.html",
            "latin1.html",
            "missing.html",
            "deep/d1.html",
            "b.html",
        )
    }
    assert set(got) == expected
    kinds = {rid.rsplit("/", 1)[1]: r["resource_type"] for rid, r in got.items()}
    assert kinds["index.html"] == "raw_html" and kinds["data.json"] == "json" and kinds["feed.xml"] == "xml"
    assert kinds["notes.txt"] == "text" and kinds["image.png"] == "binary" and kinds["missing.html"] == "error"
    assert json.loads(got[f"{base}/data.json"]["payload"]) == {"name": "Ωmega", "links": ["not/followed.html"]}
    assert json.loads(got[f"{base}/image.png"]["payload"])["omitted"] is True
    big = got[f"{base}/big.html"]
    assert json.loads(big["payload"])["omitted"] is True and big["error_message"] == "body too large"
    missing = got[f"{base}/missing.html"]
    assert missing["outcome"] == "failed" and missing["status_code"] == 404
    assert json.loads(got[f"{base}/sub"]["response_headers"])["Content-Type"].startswith("text/html")
    assert "Caf" in json.loads(got[f"{base}/latin1.html"]["payload"])
    requested = Counter(entry["path"] for entry in read_log(log))
    assert not any(path.startswith("/private/") for path in requested)  # robots.txt Disallow
    assert "/elsewhere.html" not in requested and "/deep/d2.html" not in requested
    assert requested["/robots.txt"] == 1 and requested["/missing.html"] == 1  # 404: not retried
    # one canonical URL, one fetch: a.html#section is a.html; the two b.html queries are one page
    assert requested["/a.html"] == 1 and requested["/b.html?x=1&y=2"] + requested["/b.html?y=2&x=1"] == 1
    assert max(requested.values()) == 1, [p for p, n in requested.items() if n > 1]
    assert all(entry["user_agent"] == f"holocron_scrapy/{__version__} (tests@example.org)" for entry in read_log(log))
    states = {i["resource_id"]: i["status"] for i in ws.work_items()}
    assert states[f"{base}/missing.html"] == "failed" and states[f"{base}/private/secret.html"] == "failed"
    assert states[f"{base}/sub/"] == "completed"  # the redirect target is known
    lake = {p.relative_to(ws.lake).parts[:3] for p in ws.lake.rglob("*.json") if "_runs" not in p.parts}
    assert ("http_scrape", "site", "raw_html") in lake and ("http_scrape", "site", "binary") in lake


def test_sitemap_through_robots(edge_site, tmp_path):
    base, _ = edge_site
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    http_config(ws)
    proc = ws.crawl("http", f"seeds={base}/index.html", "max_depth=0", "sitemap=robots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(by_id(ws)) == {f"{base}/index.html", f"{base}/orphan.html"}
    assert {r["source_name"] for r in ws.records()} == {"127.0.0.1"}  # ad-hoc source named after the host


def test_sitemap_url_and_allowed_domains(edge_site, tmp_path):
    base, log = edge_site
    port = base.rsplit(":", 1)[1]
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    http_config(ws)
    proc = ws.crawl(
        "http", f"seeds={base}/index.html", "max_depth=1", f"sitemap={base}/sitemap.xml",
        "allowed_domains=127.0.0.1|localhost", "follow=elsewhere|orphan",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(by_id(ws)) == {
        f"{base}/index.html",
        f"{base}/orphan.html",  # from the sitemap given by URL
        f"http://localhost:{port}/elsewhere.html",  # another allowed host name of the same server
    }
    assert "/private/secret.html" not in {e["path"] for e in read_log(log)}


def test_binary_bodies_can_be_stored(edge_site, tmp_path):
    base, _ = edge_site
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    http_config(ws)
    proc = ws.crawl("http", f"seeds={base}/image.png", "store_binary=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = ws.records()
    payload = json.loads(record["payload"])
    import base64

    assert base64.b64decode(payload["base64"]) == (tmp_path / "site" / "image.png").read_bytes()


def test_auth_reaches_only_the_configured_host(edge_site, tmp_path, monkeypatch):
    base, log = edge_site
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    monkeypatch.setenv("HOLO_TEST_TOKEN", "s3cr3t-t0ken")
    http_config(
        ws,
        "  - name: site\n    type: http\n    delay: 0\n    allowed_domains: [127.0.0.1, localhost]\n"
        "    auth: {type: bearer, token_env: HOLO_TEST_TOKEN}\n",
    )
    proc = ws.crawl("http", "source=site", f"seeds={base}/index.html", "max_depth=1")
    assert proc.returncode == 3, proc.stderr[-2000:]
    entries = read_log(log)
    local = [e for e in entries if e["host"].startswith("127.0.0.1")]
    other = [e for e in entries if e["host"].startswith("localhost")]
    assert other and all(e["authorization"] is None for e in other)
    assert local and all(e["authorization"] == "Bearer s3cr3t-t0ken" for e in local if e["path"] != "/robots.txt")
    for path in (ws.records_db, ws.state_db, *ws.lake.rglob("*.json")):
        assert b"s3cr3t-t0ken" not in Path(path).read_bytes()
    assert "s3cr3t-t0ken" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("seeds=ftp://example.org/",), "expected an http(s) URL, got 'ftp://example.org/'"),
        (("seeds=",), "no seeds given"),
        (("seeds=http://127.0.0.1:9/", "follow=(unclosed"), "follow: not a valid regular expression"),
        (("source=nosuchsite", "seeds=http://127.0.0.1:9/"), "unknown source 'nosuchsite'"),
    ],
)
def test_bad_input_fails_before_any_request(tmp_path, args, message):
    ws = Workspace(tmp_path)
    http_config(ws)
    proc = ws.crawl("http", *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not ws.lake.exists() and not ws.records_db.exists() and not ws.state_db.exists()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("a", "area"):
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def docs_oracle(base: str, seed: str, max_depth: int) -> set[str]:
    """Independent BFS over the docs files: canonical URLs a crawl within *max_depth* must store."""

    def file_of(url: str) -> Path | None:
        path = PYTHON_DOCS / urlsplit(url).path.lstrip("/")
        if path.is_dir():
            path = path / "index.html"
        return path if path.is_file() else None

    seen = {canonical_url(seed)}
    level = [seed]
    for depth in range(max_depth + 1):
        following = []
        for url in level:
            path = file_of(url)
            if depth == max_depth or path is None or path.suffix != ".html":
                continue
            parser = _Links()
            parser.feed(path.read_text("utf-8", "replace"))
            for href in parser.hrefs:
                target = urldefrag(urljoin(url, href.strip()))[0]
                if not target.startswith(base) or target.rsplit(".", 1)[-1].lower() in IGNORED_EXTENSIONS:
                    continue
                key = canonical_url(target)
                if key not in seen:
                    seen.add(key)
                    following.append(target)
        level = following
    return seen


@pytest.mark.skipif(
    not PYTHON_DOCS.is_dir(), reason="Debian's python3.11-doc is not installed (apt-get install python3.11-doc)"
)
def test_real_documentation_site(tmp_path):
    with serve_directory(PYTHON_DOCS, log=tmp_path / "docs.jsonl") as (base, _):
        seed = f"{base}/library/index.html"
        ws = Workspace(tmp_path)
        http_config(ws, "  - {name: pydocs, type: http, delay: 0, concurrency: 8}\n")
        proc = ws.crawl("http", "source=pydocs", f"seeds={seed}", "max_depth=1", timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        expected = docs_oracle(base, seed, 1)
        got = by_id(ws)
        assert set(got) == expected, (sorted(expected - set(got))[:5], sorted(set(got) - expected)[:5])
        assert len(expected) > 250
        assert Counter(r["outcome"] for r in got.values())["ok"] == len(expected)


def test_deltafetch_skips_pages_that_gave_items(edge_site, tmp_path):
    base, log = edge_site
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    http_config(ws, "  - {name: site, type: http, delay: 0, deltafetch: true}\n")
    settings = {
        "DELTAFETCH_DIR": str(tmp_path / "delta"),
        "HOLOCRON_STATE_URL": f"sqlite:///{tmp_path / 'one.sqlite3'}",
    }
    assert ws.crawl("http", "source=site", f"seeds={base}/index.html", "max_depth=1", settings=settings).returncode == 3
    first = len(read_log(log))
    settings["HOLOCRON_STATE_URL"] = f"sqlite:///{tmp_path / 'two.sqlite3'}"  # a fresh frontier: only deltafetch skips
    # full_refresh: no conditional requests either, so the index is parsed again and its links meet deltafetch
    proc = ws.crawl(
        "http", "source=site", f"seeds={base}/index.html", "max_depth=1", "full_refresh=1", settings=settings
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    second = read_log(log)[first:]
    # the seed is always fetched; of its links only the one that failed (404) is tried again
    assert sorted(e["path"] for e in second if e["path"] != "/robots.txt") == ["/index.html", "/missing.html"]
    assert "deltafetch/skipped" in proc.stderr
    assert (tmp_path / "delta" / "http.db").exists() or list((tmp_path / "delta").glob("http.db*"))


def test_follow_deny_and_max_pages(edge_site, tmp_path):
    base, log = edge_site
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    http_config(ws, "  - {name: site, type: http, delay: 0}\n")
    proc = ws.crawl(
        "http", "source=site", f"seeds={base}/index.html", "max_depth=2", r"follow=\.html", "deny=deep|broken"
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    paths = {r["resource_id"].removeprefix(base) for r in ws.records()}
    assert "/a.html" in paths and "/data.json" not in paths and "/sub" not in paths
    assert not any("deep" in p or "broken" in p for p in paths)
    limited = Workspace(tmp_path / "limited")
    limited.root.mkdir()
    http_config(limited, "  - {name: site, type: http, delay: 0, concurrency: 1}\n")
    proc = limited.crawl("http", "source=site", f"seeds={base}/index.html", "max_depth=2", "max_pages=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 3 <= len(limited.records()) <= 4  # the run stops; a page in flight still finishes
    assert limited.runs()[0]["finish_reason"] == "max_pages"
    rerun = limited.crawl("http", "source=site", f"seeds={base}/index.html", "max_depth=2")
    assert rerun.returncode == 3  # the next run continues from the frontier
    assert len(limited.records()) > 4


@pytest.mark.parametrize(
    ("source", "args", "where"),
    [
        ("{name: s, type: http, seeds: ['http://e/'], max_pages: -1}", {}, "my.yaml: sources[s].max_pages"),
        ("{name: s, type: http, seeds: ['http://e/'], follow: '(x'}", {}, "my.yaml: sources[s].follow"),
        ("{name: s, type: http, seeds: ['ftp://e/']}", {}, "my.yaml: sources[s].seeds"),
        ("{name: s, type: http, seeds: ['http://e/']}", {"max_pages": "-1"}, "max_pages: must be at least 0"),
    ],
)
def test_option_errors_say_whether_the_config_or_an_argument_is_wrong(source, args, where):
    from holocron_scrapy.config import parse_config
    from holocron_scrapy.errors import ConfigError
    from holocron_scrapy.spiders.http import HttpSpider

    config = parse_config(f"sources:\n  - {source}\n", "my.yaml")
    with pytest.raises(ConfigError) as info:
        HttpSpider.configure(config, config.source("s"), {"source": "s", **args})
    assert str(info.value).startswith(where)
