"""``scrapy frontier``: stats, retry-failed, recrawl, release-leases on a real SQLite frontier."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from holocron_scrapy.frontier.store import FailedItem, NewItem, make_owner, open_work_item_store
from tests.support.crawl import REPO


def frontier(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "scrapy", "frontier", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def seeded(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    store = open_work_item_store(url)
    store.flush([NewItem(f"k:{c}", "mediawiki", "wiki", "page", c, f"http://w/{c}") for c in "ABCD"], [], [])
    rows = store.claim(make_owner(), 3, 600)
    store.flush([], [rows[0]["seq"]], [FailedItem(rows[1]["seq"], "HTTP 404", retryable=False)])
    store.close()
    return url


def test_stats_json_and_table(tmp_path):
    url = seeded(tmp_path)
    report = json.loads(frontier("stats", "--json", "--url", url).stdout)
    assert report["sources"] == {"wiki": {"pending": 1, "in_progress": 1, "completed": 1, "failed": 1}}
    assert report["failure_reasons"] == [["HTTP 404", 1]]
    assert report["oldest_lease"]["dedupe_key"] == "k:C"
    table = frontier("stats", "--url", url).stdout
    assert "wiki" in table and "HTTP 404" in table and "oldest lease: k:C" in table


def test_retry_failed_release_and_recrawl(tmp_path):
    url = seeded(tmp_path)
    assert "1 failed items back to pending" in frontier("retry-failed", "--url", url).stdout
    assert "1 leased items back to pending" in frontier("release-leases", "--url", url).stdout
    assert "0 completed items" in frontier("recrawl", "--source", "wiki", "--older-than", "30d", "--url", url).stdout
    assert "1 completed items" in frontier("recrawl", "--source", "wiki", "--url", url).stdout
    store = open_work_item_store(url)
    assert store.counts()["wiki"]["pending"] == 4
    store.close()


def test_errors_are_one_clear_line(tmp_path):
    bad = frontier("stats", "--url", "mysql://x")
    assert bad.returncode == 1 and "unknown store URL scheme 'mysql'" in bad.stderr and "Traceback" not in bad.stderr
    usage = frontier("launch")
    assert usage.returncode == 2 and "expected one of" in usage.stderr
    assert frontier("recrawl", "--url", seeded(tmp_path)).returncode == 2
    bogus = frontier("recrawl", "--source", "wiki", "--older-than", "bogus", "--url", seeded(tmp_path / "b"))
    assert bogus.returncode == 1 and "--older-than" in bogus.stderr and "Traceback" not in bogus.stderr
