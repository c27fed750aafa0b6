"""The frontier survives kill -9 and is shared by several crawlers (real MediaWiki, real processes).

The kill -9 and three-crawler tests run twice: on SQLite files, and with the frontier and the
records in a throw-away database of the live PostgreSQL (``crawl_database``, tests/support/postgres.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from tests.support.crawl import REPO, Workspace
from tests.support.postgres import claims_audit, install_claims_audit

pytestmark = [pytest.mark.mediawiki, pytest.mark.slow]

SEEDS = "seeds=Hub Alpha|Ωmega Station"
ARGS = ("source=testwiki", SEEDS, "max_depth=2", "batch_size=5")
SLOW = {"DOWNLOAD_DELAY": "0.02", "HOLOCRON_RECORDS_BATCH_SIZE": "7", "HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.2"}


def start(
    ws: Workspace, *args: str, settings: dict[str, str] | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
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
    while ws.record_count() < records:
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


def test_kill_9_at_several_points_then_resume(mediawiki, tmp_path, crawl_database):
    """On SQLite files and with the frontier and the records on the live PostgreSQL."""
    ws = Workspace(tmp_path, database=crawl_database)
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


def test_three_crawlers_share_one_frontier(mediawiki, tmp_path, crawl_database):
    """On SQLite files and on the live PostgreSQL, where the server also keeps a claims audit
    (see :func:`check_claims`)."""
    ws = Workspace(tmp_path, database=crawl_database)
    ws.write_config(mediawiki.api_url)
    if ws.database:
        install_claims_audit(ws.database)
    # Paced so that one worker alone would need ~20 s: the two started after the first has
    # stored some pages still find most of the frontier ahead of them, however slow the machine.
    paced = {**SLOW, "DOWNLOAD_DELAY": "0.12", "RANDOMIZE_DOWNLOAD_DELAY": "0"}

    def worker(i: int) -> subprocess.Popen:  # PGAPPNAME: the audit's name for the worker's sessions
        return start(ws, *ARGS, settings={**paced, "HOLOCRON_RUN_ID": f"worker{i}"}, env={"PGAPPNAME": f"worker{i}"})

    procs = [worker(0)]
    wait_for_records(ws, procs[0], 10)
    procs += [worker(1), worker(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    assert_complete(ws, mediawiki.model)
    items = ws.work_items()
    assert max(i["attempt"] for i in items) == 1  # no lease expired: no item fetched twice
    assert sum(i["lease_losses"] for i in items) == 0
    by_run = Counter(r["run_id"] for r in ws.records())
    assert len(by_run) == 3 and min(by_run.values()) >= 20, by_run  # all three did real work
    if ws.database:
        check_claims(claims_audit(ws.database), workers=3)


def check_claims(events: list[dict], workers: int) -> None:
    """The claims audit of a shared frontier: every change of an item's status or lease owner, with
    the row before and after, the server's clock and the worker whose session made it.

    * No claim takes an item whose lease (held by anyone) is still live: the row a claim updates
      is pending, or its lease has expired. (An item may be claimed again by the same worker after
      that worker released it, e.g. an item put back by the depth gate; that is not a double claim.)
    * A live lease ends (acknowledged, failed, released) only by its holder's own worker.
    * Every worker claims through its own lease owner, and all of them claimed work."""
    owner_of: dict[str, str] = {}  # lease owner -> the worker (application_name) that claimed as it
    for event in events:
        held = event["old_status"] == "in_progress"
        live = held and event["old_expires"] > event["at"]
        if event["new_status"] == "in_progress" and (not held or event["old_owner"] != event["new_owner"]):
            assert not live, f"item {event['seq']} claimed by {event['actor']} over a live lease: {event}"
            assert owner_of.setdefault(event["new_owner"], event["actor"]) == event["actor"], event
        elif live and event["new_status"] != "in_progress":
            assert event["actor"] == owner_of.get(event["old_owner"]), f"a live lease ended by another worker: {event}"
    # One lease owner per worker (if the stores ever name their sessions themselves, each worker's
    # name must still be its own for this audit to tell them apart).
    assert len(owner_of) == len(set(owner_of.values())) == workers, owner_of


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
