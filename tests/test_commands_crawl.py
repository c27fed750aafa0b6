"""``scrapy crawl`` end to end: exit statuses that tell the truth (0 completed, 3 partial, 1 failed,
2 bad input), input checks as one line without a traceback, and a quiet log."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

import pytest

from tests.support.crawl import Workspace
from tests.support.static_site import free_port, serve_directory, write_edge_site

SUMMARY = re.compile(
    r"Run (\S+) (completed|partial|failed): (\d+) stored, (\d+) unchanged, (\d+) missing, (\d+) failed"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("site")
    port = free_port()
    write_edge_site(root, port)
    with serve_directory(root, port) as (base, _):
        yield base


def workspace(tmp_path, source: str = "  - {name: site, type: http, delay: 0}\n", frontier: str = "") -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir(parents=True)
    ws.config.write_text(
        "contact: tests@example.org\n"
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
        f"state:\n  url: sqlite:///{ws.state_db}\n"
        + (f"frontier:\n{frontier}" if frontier else "")
        + "sources:\n"
        + source,
        encoding="utf-8",
    )
    return ws


def summary_line(stderr: str) -> tuple[str, ...]:
    found = SUMMARY.findall(stderr)
    assert len(found) == 1, stderr[-3000:]
    return found[0][1:]


@pytest.mark.parametrize(
    ("seeds", "code", "summary"),
    [
        (["b.html"], 0, ("completed", "1", "0", "0", "0")),
        (["b.html", "missing.html"], 3, ("partial", "1", "0", "0", "1")),  # a 404 fails for good
        (["missing.html"], 1, ("failed", "0", "0", "0", "1")),  # its failure record is no stored page
    ],
)
def test_exit_status_and_summary_tell_the_truth(site, tmp_path, seeds, code, summary):
    ws = workspace(tmp_path)
    proc = ws.crawl("http", "source=site", "seeds=" + "|".join(f"{site}/{s}" for s in seeds), "max_depth=0")
    assert proc.returncode == code, proc.stderr[-3000:]
    assert summary_line(proc.stderr) == summary
    assert f"exit status {code})" in proc.stderr
    (report,) = ws.run_reports()
    assert report["status"] == summary[0] and report["pages_stored"] == int(summary[1])
    assert report["pages_failed"] == int(summary[4])
    (run,) = ws.runs()
    assert run["status"] == summary[0] and run["pages_stored"] == int(summary[1])


def test_a_page_limit_reached_is_a_normal_end(site, tmp_path):
    ws = workspace(tmp_path)
    proc = ws.crawl("http", "source=site", f"seeds={site}/a.html", "max_depth=2", "max_pages=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finish reason max_pages, exit status 0" in proc.stderr
    assert summary_line(proc.stderr)[0] == "completed"


def test_a_wiki_that_cannot_be_reached_fails_the_run(tmp_path):
    """The README's quick start offline: nothing can be fetched, and the exit status says so."""
    ws = Workspace(tmp_path)
    ws.write_config(f"http://127.0.0.1:{free_port()}/w/api.php")
    proc = ws.crawl("mediawiki", "source=testwiki", "seeds=Star Wars|Luke Skywalker", "max_depth=0")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert summary_line(proc.stderr)[:2] == ("failed", "0")


def assert_one_error_line(proc, code: int, *needles: str) -> str:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Engine slot" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Run run_" not in proc.stderr  # no bogus summary
    return errors[0]


def test_an_unknown_spider_argument_is_named_with_the_accepted_ones(site, tmp_path):
    ws = workspace(tmp_path)
    proc = ws.crawl("http", "source=site", f"seeds={site}/b.html", "max_dept=0")
    line = assert_one_error_line(proc, 2, "max_dept", "did you mean max_depth?", "accepted: ", "max_pages", "seeds")
    assert line.startswith("holocron_scrapy: error: -a max_dept: unknown argument of the 'http' spider")
    assert not ws.lake.exists() and not ws.records_db.exists() and not ws.state_db.exists()
    wiki = Workspace(tmp_path / "wiki")
    wiki.root.mkdir()
    wiki.write_config("http://127.0.0.1:9/w/api.php")
    proc = wiki.crawl("mediawiki", "source=testwiki", "seeds=A", "batchsize=5")
    assert_one_error_line(proc, 2, "-a batchsize", "did you mean batch_size?", "api_url", "namespaces")


def test_an_unknown_spider_is_bad_input(tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config("http://127.0.0.1:9/w/api.php")
    assert_one_error_line(ws.crawl("wikipedai"), 2, "unknown spider 'wikipedai'", "http, mediawiki, wikipedia")


def test_scrapyd_job_argument_is_accepted(site, tmp_path):
    ws = workspace(tmp_path)
    proc = ws.crawl("http", "source=site", f"seeds={site}/b.html", "max_depth=0", "_job=0123abcd")
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("HOLOCRON_FRONTIER_ORDER=bsf", ("HOLOCRON_FRONTIER_ORDER: expected bfs or dfs, got 'bsf'",)),
        ("HOLOCRON_FRONTIER_CLAIM_SIZE=abc", ("HOLOCRON_FRONTIER_CLAIM_SIZE: expected an integer, got 'abc'",)),
        ("HOLOCRON_FRONTIER_CLAIM_SIZE=0", ("HOLOCRON_FRONTIER_CLAIM_SIZE: must be at least 1",)),
        ("HOLOCRON_RECORDS_FLUSH_INTERVAL=soon", ("HOLOCRON_RECORDS_FLUSH_INTERVAL: expected a number",)),
        ("HOLOCRON_STATE_URL=mysql://db/x", ("HOLOCRON_STATE_URL: unknown store URL scheme 'mysql'",)),
        ("HOLOCRON_LAKE_DIR=/proc/holocron-lake", ("HOLOCRON_LAKE_DIR", "/proc/holocron-lake", "cannot be created")),
        ("HOLOCRON_LAKE_DIR={config}/lake", ("HOLOCRON_LAKE_DIR", "is not a directory")),
        ("HOLOCRON_STATE_URL=sqlite:///{config}", ("HOLOCRON_STATE_URL", "is not a SQLite database")),
        ("HOLOCRON_RECORDS_URL=sqlite:///{other}", ("HOLOCRON_RECORDS_URL", "is not a holocron_scrapy database")),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(site, tmp_path, setting, needles):
    ws = workspace(tmp_path)
    other = tmp_path / "other.sqlite3"  # another application's database
    sqlite3.connect(other).execute("CREATE TABLE accounts (id INTEGER)").connection.close()
    name, value = setting.split("=", 1)
    proc = ws.crawl(
        "http", "source=site", f"seeds={site}/b.html", settings={name: value.format(config=ws.config, other=other)}
    )
    line = assert_one_error_line(proc, 2, *needles)
    assert line.startswith(f"holocron_scrapy: error: {name}: ")
    assert not ws.records_db.exists() and not ws.state_db.exists()


def test_the_same_mistake_in_the_yaml_file_gets_the_same_exit_status(site, tmp_path):
    ws = workspace(tmp_path, frontier="  order: bsf\n")
    proc = ws.crawl("http", "source=site", f"seeds={site}/b.html")
    assert_one_error_line(proc, 2, "frontier.order", "bfs or dfs", str(ws.config))


def test_an_unknown_holocron_setting_is_a_warning_with_the_closest_name(site, tmp_path):
    ws = workspace(tmp_path)
    proc = ws.crawl(
        "http", "source=site", f"seeds={site}/b.html", "max_depth=0", settings={"HOLOCRON_FRONTEIR_ORDER": "dfs"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "Unknown setting HOLOCRON_FRONTEIR_ORDER" in warnings[0]
    assert "did you mean HOLOCRON_FRONTIER_ORDER?" in warnings[0]


def test_a_one_request_crawl_logs_little_and_a_sitemap_run_warns_nothing(site, tmp_path):
    ws = workspace(tmp_path)
    proc = ws.crawl("http", "source=site", f"seeds={site}/b.html", "max_depth=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    (codes,) = [line for line in lines if "RETRY_HTTP_CODES" in line]  # one line, not one per code
    assert "504" in codes
    assert len(lines) < 130, len(lines)  # 207 before: the codes took 101 lines
    sitemap = workspace(tmp_path / "sitemap")
    proc = sitemap.crawl("http", "source=site", f"seeds={site}/b.html", "max_depth=0", "sitemap=robots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr and "Deprecat" not in proc.stderr, proc.stderr[-3000:]
    assert summary_line(proc.stderr)[:2] == ("completed", "3")  # b.html plus the sitemap's two pages
