"""A lost lease is not a failed attempt: a crawl of the real test wiki killed with kill -9 a dozen
times at random moments, then run to its end, stores every reachable page and fails no work item."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter

import pytest

from tests.support.crawl import REPO, Workspace

pytestmark = [pytest.mark.mediawiki, pytest.mark.slow]

SEEDS = ["Hub Alpha", "Ωmega Station"]
ARGS = ("source=testwiki", "seeds=" + "|".join(SEEDS), "max_depth=2", "batch_size=5")
SETTINGS = {"DOWNLOAD_DELAY": "0.02", "HOLOCRON_RECORDS_BATCH_SIZE": "7", "HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.2"}
KILLS = 12


def start(ws: Workspace, log) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    return subprocess.Popen(
        ws.command("mediawiki", *ARGS, settings=SETTINGS), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log
    )


def wait_until_open(proc: subprocess.Popen, log_path, timeout: float = 60) -> bool:
    """True once this run logged "Frontier open:" (False if it ended first)."""
    deadline = time.monotonic() + timeout
    while "Frontier open:" not in log_path.read_text("utf-8", "replace"):
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the crawl did not open its frontier"
        time.sleep(0.05)
    return True


def test_kill_9_a_dozen_times_fails_nothing(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    rng = random.Random(20261202)
    killed_holding = []  # leased items left behind by each kill
    for run in range(KILLS):
        log_path = tmp_path / f"run{run}.log"
        with log_path.open("w") as log:
            proc = start(ws, log)
            if wait_until_open(proc, log_path):
                time.sleep(rng.uniform(0.2, 2.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        killed_holding.append(sum(1 for i in ws.work_items() if i["status"] == "in_progress"))
    assert sum(1 for n in killed_holding if n) >= KILLS // 2, killed_holding  # most kills hit leased work

    done = ws.crawl("mediawiki", *ARGS, settings=SETTINGS)
    assert done.returncode == 0, done.stderr[-3000:]

    expected = mediawiki.model.reachable(SEEDS, 2)
    counts = Counter(r["resource_id"] for r in ws.records())
    assert set(counts) == set(expected), (sorted(set(expected) - set(counts))[:5], sorted(set(counts) - set(expected)))
    assert max(counts.values()) == 1
    items = ws.work_items()
    statuses = Counter(i["status"] for i in items)
    assert set(statuses) == {"completed"}, (statuses, Counter(i["error_message"] for i in items if i["error_message"]))
    assert max(i["attempt"] for i in items) == 1  # lost leases are not attempts
    assert sum(i["lease_losses"] for i in items) >= sum(killed_holding)  # each one counted as a loss instead
