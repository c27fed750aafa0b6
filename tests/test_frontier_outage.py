"""The frontier off the reactor: a slow state database does not stall downloads, and a state database
that goes away (PostgreSQL behind a proxy that a test cuts, or its backends terminated) costs no page.

holocron_scrapy.frontier.scheduler, holocron_scrapy.frontier.executor, holocron_scrapy.db.outage; the
records side (holocron_scrapy.pipelines.records, holocron_scrapy.records.versions) rides out the same outage.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg

from tests.support.crawl import REPO, Workspace
from tests.support.postgres import HOST, PORT, USER
from tests.support.static_site import read_log, serve_directory
from tests.support.tcp_proxy import tcp_proxy


def flat_site(root: Path, leaves: int) -> list[str]:
    """index.html linking to *leaves* pages without links; returns the leaf paths."""
    names = [f"p{i:03d}.html" for i in range(leaves)]
    root.mkdir(parents=True)
    links = "".join(f'<a href="{n}">{n}</a> ' for n in names)
    (root / "index.html").write_text(f"<html><body>{links}</body></html>", encoding="utf-8")
    for n in names:
        (root / n).write_text(f"<html><body>page {n}</body></html>", encoding="utf-8")
    return [f"/{n}" for n in names]


def site_config(ws: Workspace, state_url: str, *, delay: float, records_url: str | None = None) -> None:
    ws.config.write_text(
        "contact: tests@example.org\n"
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: {records_url or f'sqlite:///{ws.records_db}'}\n"
        f"state:\n  url: {state_url}\n"
        f"sources:\n  - {{name: site, type: http, delay: {delay}, concurrency: 1}}\n",
        encoding="utf-8",
    )


def start(ws: Workspace, base: str, settings: dict[str, str], env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = ws.command("http", "source=site", f"seeds={base}/index.html", "max_depth=1", settings=settings)
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    environment.pop("HOLOCRON_CONFIG", None)
    return subprocess.Popen(cmd, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def leaf_arrivals(log: Path) -> list[float]:
    return sorted(r["t"] for r in read_log(log) if r["path"].startswith("/p"))


def wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the crawl ended early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the crawl")
        time.sleep(0.05)


def stored_once(ws: Workspace, expected: int) -> None:
    ids = Counter(r["resource_id"] for r in ws.records())
    assert len(ids) == expected and max(ids.values()) == 1, ids.most_common(3)
    lake = Counter(d["metadata"]["resource_id"] for d in ws.lake_documents())
    assert len(lake) == expected and max(lake.values()) == 1, lake.most_common(3)


def pg_statuses(url: str) -> Counter:
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(host=HOST, port=PORT, user=USER, dbname=dbname) as conn:
        return Counter(status for (status,) in conn.execute("SELECT status FROM work_items"))


# -- a slow database does not stall downloads ------------------------------------------------------
def test_a_slow_state_database_does_not_stall_claimed_downloads(tmp_path):
    """Every store call takes 2 s more (flushes, renewals, claims): the 40 leaves, claimed in one
    batch, still arrive at the politeness pace. A store called on the reactor thread would freeze
    the downloads for 2 s at each 0.3 s flush of the acknowledgements."""
    ws = Workspace(tmp_path)
    paths = flat_site(tmp_path / "site", 40)
    site_config(ws, f"sqlite:///{ws.state_db}", delay=0.1)
    with serve_directory(tmp_path / "site") as (base, log):
        proc = start(
            ws,
            base,
            {
                "SCHEDULER": "tests.support.slow_frontier.SlowStoreScheduler",
                "HOLOCRON_FRONTIER_CLAIM_SIZE": "100",
                "HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.3",
                "ROBOTSTXT_OBEY": "0",
            },
            env={"SLOW_STORE_SECONDS": "2"},
        )
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        arrivals = leaf_arrivals(log)
    assert len(arrivals) == len(paths)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert max(gaps) < 1.0, f"downloads stalled: gaps {sorted(gaps)[-5:]}"
    stored_once(ws, len(paths) + 1)


# -- PostgreSQL goes away --------------------------------------------------------------------------
OUTAGE_SETTINGS = {
    "HOLOCRON_FRONTIER_CLAIM_SIZE": "10",
    "HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.2",
    "ROBOTSTXT_OBEY": "0",
}


def test_a_20_second_outage_costs_nothing(tmp_path, postgres_url):
    """The crawl's PostgreSQL (frontier and records, through a proxy) is cut for 20 s in the middle of
    the crawl: claimed downloads go on, the crawl waits, resumes by itself, and stores every page
    exactly once; for each database one log line says it went, one that it is back."""
    ws = Workspace(tmp_path, database=postgres_url)  # read directly, not through the proxy
    paths = flat_site(tmp_path / "site", 60)
    with tcp_proxy(HOST, PORT) as proxy, serve_directory(tmp_path / "site") as (base, log):
        proxied = postgres_url.replace(f":{PORT}/", f":{proxy.port}/")
        site_config(ws, proxied, delay=0.2, records_url=proxied)
        proc = start(ws, base, OUTAGE_SETTINGS)
        wait_for(lambda: len(leaf_arrivals(log)) >= 13, 120, proc)
        proxy.cut()
        cut_at = time.time()
        time.sleep(20)
        proxy.restore()
        restored_at = time.time()
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        arrivals = leaf_arrivals(log)
    assert err.count("The state database cannot be reached") == 1, err[-3000:]
    assert err.count("The state database is back after") == 1
    assert err.count("The records database cannot be reached") <= 1  # only if a write or lookup met the cut
    assert err.count("The records database cannot be reached") == err.count("The records database is back after")
    assert "Traceback" not in err
    assert any(cut_at < t < restored_at for t in arrivals), "claimed downloads should go on during the outage"
    assert len(arrivals) == len(paths)
    stored_once(ws, len(paths) + 1)
    assert pg_statuses(postgres_url) == {"completed": len(paths) + 1}


def test_an_outage_past_the_limit_stops_the_crawl_and_the_next_run_completes_it(tmp_path, postgres_url):
    ws = Workspace(tmp_path)
    paths = flat_site(tmp_path / "site", 60)
    with tcp_proxy(HOST, PORT) as proxy, serve_directory(tmp_path / "site") as (base, log):
        site_config(ws, postgres_url.replace(f":{PORT}/", f":{proxy.port}/"), delay=0.2)
        settings = {**OUTAGE_SETTINGS, "HOLOCRON_DB_OUTAGE_LIMIT": "3"}
        proc = start(ws, base, settings)
        wait_for(lambda: len(leaf_arrivals(log)) >= 13, 120, proc)
        proxy.cut()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err[-3000:]
        assert "unreachable for" in err and "fatal_frontier_unreachable" in err, err[-3000:]
        proxy.restore()
        rerun = ws.crawl("http", "source=site", f"seeds={base}/index.html", "max_depth=1", settings=settings)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    stored_once(ws, len(paths) + 1)
    assert pg_statuses(postgres_url) == {"completed": len(paths) + 1}


def test_terminated_backends_are_reconnected(tmp_path, postgres_url):
    """``pg_terminate_backend`` on the crawl's connections, three times: each is one short outage."""
    ws = Workspace(tmp_path)
    paths = flat_site(tmp_path / "site", 40)
    dbname = postgres_url.rsplit("/", 1)[1]
    with serve_directory(tmp_path / "site") as (base, log):
        site_config(ws, postgres_url, delay=0.1)
        proc = start(ws, base, OUTAGE_SETTINGS)
        wait_for(lambda: len(leaf_arrivals(log)) >= 5, 120, proc)
        killed = 0
        with psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True) as admin:
            for _ in range(3):
                killed += len(
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                        (dbname,),
                    ).fetchall()
                )
                time.sleep(0.7)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
    assert killed >= 1
    stored_once(ws, len(paths) + 1)
    assert pg_statuses(postgres_url) == {"completed": len(paths) + 1}
