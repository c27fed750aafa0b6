"""``scrapy frontier``: stats, retry-failed, recrawl, release-leases on a real SQLite frontier."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from holocron_scrapy.frontier.store import FailedItem, NewItem, open_work_item_store
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
    rows = store.claim(f"{socket.gethostname()}:{dead_pid()}:gone", 3, 600)  # a worker that died
    store.flush([], [rows[0]["seq"]], [FailedItem(rows[1]["seq"], "HTTP 404", retryable=False)])
    store.close()
    return url


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


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


def test_an_unknown_source_is_one_error_line_listing_the_known_ones(tmp_path):
    url = seeded(tmp_path)
    for action in (("recrawl",), ("retry-failed",), ("stats",), ("stats", "--json")):
        done = frontier(*action, "--source", "nosuch", "--url", url)
        assert done.returncode == 1, (action, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "unknown source 'nosuch'" in lines[0] and "wiki" in lines[0], (action, lines)
        assert done.stdout == ""
    store = open_work_item_store(url)
    assert store.counts()["wiki"] == {"pending": 1, "in_progress": 1, "completed": 1, "failed": 1}  # untouched
    store.close()
    assert frontier("stats", "--source", "wiki", "--url", url).returncode == 0


def test_release_leases_spares_live_workers_unless_forced(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    store = open_work_item_store(url)
    store.flush([NewItem(f"k:{i}", "mediawiki", "wiki", "page", str(i), f"http://w/{i}") for i in range(8)], [], [])
    host = socket.gethostname()
    store.claim(f"{host}:{os.getpid()}:alive", 2, 600)  # this very process: alive
    store.claim(f"{host}:{dead_pid()}:dead", 2, 600)  # a process that ended
    store.claim("elsewhere.example:123:live", 2, 600)  # another host, lease still running
    store.claim("elsewhere.example:456:expired", 2, 0.01)  # another host, lease expired
    store.close()
    time.sleep(0.05)
    done = frontier("release-leases", "--url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("4 leased items back to pending")
    assert "skipped 4 held by workers that may still be running" in done.stdout
    store = open_work_item_store(url)
    held = {row[0]: row[1] for row in store.lease_summary()}
    assert held == {f"{host}:{os.getpid()}:alive": 2, "elsewhere.example:123:live": 2}
    assert store.get("k:2")["attempt"] == 0  # released: the interrupted claim was no attempt
    store.close()
    forced = frontier("release-leases", "--force", "--url", url)
    assert forced.returncode == 0 and "4 leased items back to pending" in forced.stdout
    assert "skipped" not in forced.stdout


def test_help_says_what_older_than_defaults_to():
    text = " ".join(frontier("-h").stdout.split())
    assert "--older-than AGE" in text and "default: no limit, every completed item of the source is re-queued" in text
    assert "--force" in text


def test_commands_on_postgresql(postgres_url, tmp_path):
    """The same commands on the live PostgreSQL (a throw-away database), the URL from a config file."""
    store = open_work_item_store(postgres_url)
    store.flush([NewItem(f"k:{c}", "mediawiki", "wiki", "page", c, f"http://w/{c}") for c in "ABCD"], [], [])
    rows = store.claim(f"{socket.gethostname()}:{dead_pid()}:gone", 3, 600)
    store.flush([], [rows[0]["seq"]], [FailedItem(rows[1]["seq"], "HTTP 404", retryable=False)])
    store.close()
    config = tmp_path / "holocron.yaml"
    config.write_text(f"state:\n  url: {postgres_url.replace('postgresql+psycopg', 'postgresql')}\n", "utf-8")
    by_config = ("-s", f"HOLOCRON_CONFIG={config}")
    report = json.loads(frontier("stats", "--json", *by_config).stdout)
    assert report["sources"] == {"wiki": {"pending": 1, "in_progress": 1, "completed": 1, "failed": 1}}
    assert report["failure_reasons"] == [["HTTP 404", 1]]
    assert "1 failed items back to pending" in frontier("retry-failed", "--source", "wiki", *by_config).stdout
    assert "1 leased items back to pending" in frontier("release-leases", "--url", postgres_url).stdout
    assert "1 completed items" in frontier("recrawl", "--source", "wiki", "--url", postgres_url).stdout
    report = json.loads(frontier("stats", "--json", "--url", postgres_url).stdout)
    assert report["sources"] == {"wiki": {"pending": 4, "in_progress": 0, "completed": 0, "failed": 0}}
    unknown = frontier("stats", "--source", "nope", "--url", postgres_url)
    assert unknown.returncode == 1 and "unknown source 'nope'" in unknown.stderr
