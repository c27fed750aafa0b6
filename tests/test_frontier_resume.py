"""The frontier survives kill -9 and is shared by several crawlers (real MediaWiki, real processes)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter

import pytest

from tests.support.crawl import REPO, Workspace

pytestmark = [pytest.mark.mediawiki, pytest.mark.slow]

SEEDS = "seeds=Hub Alpha|Ωmega Station"
ARGS = ("source=testwiki", SEEDS, "max_depth=2", "batch_size=5")
SLOW = {"DOWNLOAD_DELAY": "0.02", "HOLOCRON_RECORDS_BATCH_SIZE": "7", "HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.2"}


def record_count(ws: Workspace) -> int:
    if not ws.records_db.exists():
        return 0
    try:
        conn = sqlite3.connect(ws.records_db, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM ingest_records").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def start(ws: Workspace, *args: str, settings: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        ws.command("mediawiki", *args, settings=settings),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_records(ws: Workspace, proc: subprocess.Popen, records: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while record_count(ws) < records:
        assert proc.poll() is None, f"crawl ended before {records} records: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "crawl too slow"
        time.sleep(0.05)


def kill_after(ws: Workspace, proc: subprocess.Popen, records: int, timeout: float = 120) -> None:
    wait_for_records(ws, proc, records, timeout)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def assert_complete(ws: Workspace, model) -> None:
    expected = model.reachable(["Hub Alpha", "Ωmega Station"], 2)
    records = ws.records()
    counts = Counter(r["resource_id"] for r in records)
    assert set(counts) == set(expected), (
        sorted(set(expected) - set(counts))[:5],
        sorted(set(counts) - set(expected))[:5],
    )
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1][:5]
    for record in records:
        assert (ws.lake / record["lake_path"]).is_file()
    statuses = Counter(item["status"] for item in ws.work_items())
    assert set(statuses) == {"completed"}, statuses


def test_kill_9_at_several_points_then_resume(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    total = len(mediawiki.model.reachable(["Hub Alpha", "Ωmega Station"], 2))
    in_flight = 0  # items leased (claimed or being fetched) at the moment of each kill
    for point in (5, total // 3, (2 * total) // 3):
        proc = start(ws, *ARGS, settings=SLOW)
        kill_after(ws, proc, point)
        in_flight += sum(1 for i in ws.work_items() if i["status"] == "in_progress")
    assert in_flight, "the kills should have left leased items behind"
    done = ws.crawl("mediawiki", *ARGS, settings=SLOW)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reclaimed" in done.stderr or "Frontier" in done.stderr
    assert_complete(ws, mediawiki.model)
    # Only what was in flight at a kill was claimed again, once per kill: nothing completed was.
    # A lost lease is counted as such, not as an attempt.
    items = ws.work_items()
    again = sum(i["lease_losses"] for i in items)
    assert 0 < again <= in_flight, (again, in_flight)
    assert max(i["attempt"] for i in items) == 1  # (0: known without a fetch, e.g. a redirect target)


def test_three_crawlers_share_one_frontier(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    # Paced so that one worker alone would need ~20 s: the two started after the first has
    # stored some pages still find most of the frontier ahead of them, however slow the machine.
    paced = {**SLOW, "DOWNLOAD_DELAY": "0.12", "RANDOMIZE_DOWNLOAD_DELAY": "0"}
    procs = [start(ws, *ARGS, settings={**paced, "HOLOCRON_RUN_ID": "worker0"})]
    wait_for_records(ws, procs[0], 10)
    procs += [start(ws, *ARGS, settings={**paced, "HOLOCRON_RUN_ID": f"worker{i}"}) for i in (1, 2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    assert_complete(ws, mediawiki.model)
    assert max(i["attempt"] for i in ws.work_items()) == 1  # no lease expired: no item claimed twice
    by_run = Counter(r["run_id"] for r in ws.records())
    assert len(by_run) == 3 and min(by_run.values()) >= 20, by_run  # all three did real work


def test_jobdir_holds_the_frontier_and_spider_state(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url, state=False)
    jobdir = tmp_path / "crawls" / "run1"
    args = ("source=testwiki", "seeds=Ωmega Station", "max_depth=1")
    proc = start(ws, *args, settings={**SLOW, "JOBDIR": str(jobdir)})
    kill_after(ws, proc, 10)
    assert (jobdir / "frontier.sqlite3").is_file() and not ws.state_db.exists()
    done = ws.crawl("mediawiki", *args, settings={**SLOW, "JOBDIR": str(jobdir)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (jobdir / "spider.state").is_file()  # Scrapy's own JOBDIR state keeps working
    expected = mediawiki.model.reachable(["Ωmega Station"], 1)
    counts = Counter(r["resource_id"] for r in ws.records())
    assert set(counts) == set(expected) and max(counts.values()) == 1


def test_a_jobdir_given_for_the_run_holds_the_frontier_despite_the_config(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)  # the config names state.url
    jobdir = (tmp_path / "crawls" / "run1").resolve()
    args = ("source=testwiki", "seeds=Ωmega Station", "max_depth=0")
    done = ws.crawl("mediawiki", *args, settings={**SLOW, "JOBDIR": str(jobdir)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (jobdir / "frontier.sqlite3").is_file() and not ws.state_db.exists()
    assert f"Frontier open: SQLite {jobdir / 'frontier.sqlite3'} as " in done.stderr
    # an explicit -s HOLOCRON_STATE_URL still wins over JOBDIR
    explicit = tmp_path / "explicit.sqlite3"
    settings = {**SLOW, "JOBDIR": str(tmp_path / "crawls" / "run2"), "HOLOCRON_STATE_URL": f"sqlite:///{explicit}"}
    done = ws.crawl("mediawiki", *args, settings=settings)
    assert done.returncode == 0, done.stderr[-2000:]
    assert explicit.is_file() and not (tmp_path / "crawls" / "run2" / "frontier.sqlite3").exists()
    assert f"Frontier open: SQLite {explicit} as " in done.stderr
