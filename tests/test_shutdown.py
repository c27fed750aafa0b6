"""Graceful stop: SIGTERM / Ctrl-C mid-crawl exits within HOLOCRON_SHUTDOWN_TIMEOUT, loses nothing.

Real ``scrapy crawl`` subprocesses against the real test wiki; after each stop a resumed run
completes with every reachable page stored once and ``scrapy lake verify`` clean.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.support.crawl import REPO, Workspace
from tests.test_storage_faults import ARGS, check_complete

pytestmark = pytest.mark.mediawiki

TIMEOUT = 30  # HOLOCRON_SHUTDOWN_TIMEOUT's default


def start(ws: Workspace, settings: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    # A small records batch interval and one page at a time keep the crawl mid-way for a while.
    base = {"HOLOCRON_RECORDS_BATCH_SIZE": "10", "CONCURRENT_REQUESTS": "2"}
    cmd = ws.command("mediawiki", *ARGS, settings={**base, **(settings or {})})
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_records(ws: Workspace, proc: subprocess.Popen, count: int) -> None:
    """Wait (without a time limit on speed, only a generous safety net) until *count* records exist."""
    for _ in range(1200):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if ws.records_db.exists():
            try:
                if len(ws.records()) >= count:
                    return
            except sqlite3.OperationalError:  # busy or not created yet
                pass
        time.sleep(0.05)
    raise AssertionError("the crawl stored nothing")


def stopped(ws: Workspace, proc: subprocess.Popen, *signals: int, timeout: float = TIMEOUT) -> str:
    for number in signals:
        proc.send_signal(number)
        time.sleep(0.05)
    try:
        _, stderr = proc.communicate(timeout=timeout + 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running {timeout + 15} s after the stop signal") from None
    return stderr


def check_nothing_held(ws: Workspace) -> None:
    items = ws.work_items()
    assert not [i for i in items if i["status"] == "failed"]
    assert not [i for i in items if i["status"] == "completed" and i["attempt"] > 0 and i["completed_at"] is None]


def test_sigterm_mid_crawl_stops_in_time_and_a_resumed_run_loses_nothing(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    proc = start(ws)
    wait_for_records(ws, proc, 30)
    stderr = stopped(ws, proc, signal.SIGTERM)
    assert proc.returncode == 3, stderr[-3000:]  # partial
    assert "Closing spider (shutdown)" in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert ws.runs()[-1]["status"] == "partial"
    items = ws.work_items()
    assert [i for i in items if i["status"] == "pending"]  # really stopped mid-way
    assert not [i for i in items if i["status"] == "in_progress"]  # leases handed back
    check_nothing_held(ws)
    resumed = ws.crawl("mediawiki", *ARGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_complete(ws, mediawiki)


def test_stop_timeout_hands_back_what_is_in_flight(mediawiki, tmp_path):
    """A stop that cannot finish in HOLOCRON_SHUTDOWN_TIMEOUT hands back what is in flight."""
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    proc = start(ws, {"HOLOCRON_SHUTDOWN_TIMEOUT": "0.01"})
    wait_for_records(ws, proc, 30)
    stderr = stopped(ws, proc, signal.SIGINT)
    assert proc.returncode == 3, stderr[-3000:]  # partial, whether the stop finished or was cut short
    resumed = ws.crawl("mediawiki", *ARGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_complete(ws, mediawiki)


def test_second_ctrl_c_stops_at_once_and_a_resumed_run_loses_nothing(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    proc = start(ws)
    wait_for_records(ws, proc, 30)
    stderr = stopped(ws, proc, signal.SIGINT, signal.SIGINT)
    assert "Stopped at once" in stderr or "Spider closed" in stderr, stderr[-3000:]
    check_nothing_held(ws)
    resumed = ws.crawl("mediawiki", *ARGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_complete(ws, mediawiki)
