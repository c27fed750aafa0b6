"""``scrapy frontier``: stats, retry-failed, recrawl, release-leases on a real SQLite frontier."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from holocron_scrapy.frontier.store import STATUSES, FailedItem, NewItem, open_work_item_store, utcnow
from tests.support.crawl import REPO, Workspace
from tests.support.static_site import read_log, serve_directory


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


def counts(report: dict) -> dict:
    """``{source: {status: items}}`` of a ``stats --json`` report."""
    return {name: {s: entry[s] for s in STATUSES} for name, entry in report["sources"].items()}


def test_stats_json_and_table(tmp_path):
    url = seeded(tmp_path)
    report = json.loads(frontier("stats", "--json", "--url", url).stdout)
    assert counts(report) == {"wiki": {"pending": 1, "in_progress": 1, "completed": 1, "failed": 1}}
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
    still = frontier("watch", "--interval", "0", "--url", seeded(tmp_path / "c"))
    assert still.returncode == 1 and "--interval: must be a positive number of seconds" in still.stderr


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
    assert counts(report) == {"wiki": {"pending": 1, "in_progress": 1, "completed": 1, "failed": 1}}
    assert report["failure_reasons"] == [["HTTP 404", 1]]
    assert "1 failed items back to pending" in frontier("retry-failed", "--source", "wiki", *by_config).stdout
    assert "1 leased items back to pending" in frontier("release-leases", "--url", postgres_url).stdout
    assert "1 completed items" in frontier("recrawl", "--source", "wiki", "--url", postgres_url).stdout
    report = json.loads(frontier("stats", "--json", "--url", postgres_url).stdout)
    assert counts(report) == {"wiki": {"pending": 4, "in_progress": 0, "completed": 0, "failed": 0}}
    unknown = frontier("stats", "--source", "nope", "--url", postgres_url)
    assert unknown.returncode == 1 and "unknown source 'nope'" in unknown.stderr


# -- the fleet view: stats per source and host, workers, blocks; watch --------------------------------
# (key, source, URI, status, attempt, updated minutes ago, lease owner, lease expires in seconds)
FLEET = [
    *[(f"w{i}", "wiki", f"http://wiki.test/w/api.php?titles=W{i}", "completed", 1, 1, None, None) for i in range(4)],
    ("w4", "wiki", "http://wiki.test/w/api.php?titles=W4", "completed", 1, 10, None, None),  # before the window
    ("w5", "wiki", "http://wiki.test/w/api.php?titles=W5", "failed", 3, 2, None, None),
    *[
        (f"w{i}", "wiki", f"http://wiki.test/w/api.php?titles=W{i}", "in_progress", 1, 0.5, "hostA:111:aaaa", 590)
        for i in (6, 7)
    ],
    *[(f"w{i}", "wiki", f"http://wiki.test/w/api.php?titles=W{i}", "pending", 0, 0, None, None) for i in (8, 9)],
    *[(f"p{i}", "site", f"http://a.test:8080/p{i}", "completed", 1, 1, None, None) for i in (0, 1)],
    ("p2", "site", "http://a.test:8080/p2", "pending", 1, 1, None, None),  # failed once, in its retry backoff
    ("p3", "site", "http://a.test:8080/p3", "in_progress", 1, 12, "hostB:222:bbbb", -60),  # its worker is gone
    *[(f"p{i}", "site", f"http://a.test:8080/p{i}", "pending", 0, 0, None, None) for i in (4, 5)],
    ("q0", "site", "https://user@B.test/q?x=0", "completed", 0, 0, None, None),  # a redirect target: no request
    ("q1", "site", "https://user@B.test/q?x=1", "completed", 1, 3, None, None),
    *[(f"q{i}", "site", f"https://user@B.test/q?x={i}", "pending", 0, 0, None, None) for i in (2, 3)],
]


def prepare_fleet(url: str, *, blocked: bool) -> datetime:
    """A frontier in the state of :data:`FLEET` (times relative to now, which is returned); with
    *blocked*, ``frontier_hosts`` holds one active and one expired block."""
    import sqlalchemy as sa

    from holocron_scrapy.db.schema import frontier_hosts, work_items

    store = open_work_item_store(url)
    store.flush([NewItem(k, "test", src, "page", k, uri) for k, src, uri, *_ in FLEET], [], [])
    now = utcnow()
    with store.engine.begin() as conn:
        for key, _src, _uri, status, attempt, ago, owner, expires in FLEET:
            conn.execute(
                sa.update(work_items)
                .where(work_items.c.dedupe_key == key)
                .values(
                    status=status,
                    attempt=attempt,
                    updated_at=now - timedelta(minutes=ago),
                    lease_owner=owner,
                    lease_expires_at=None if expires is None else now + timedelta(seconds=expires),
                )
            )
        if blocked:
            table = frontier_hosts
            conn.execute(
                sa.insert(table),
                [
                    {
                        "politeness_key": "wiki.test",
                        "blocked_until": now + timedelta(seconds=120),
                        "block_reason": "429",
                        "updated_at": now,
                    },
                    {
                        "politeness_key": "a.test:8080",
                        "blocked_until": now - timedelta(seconds=5),
                        "block_reason": "x",
                        "updated_at": now,
                    },
                ],
            )
    store.close()
    return now


def expected_fleet(now: datetime) -> dict:
    renewed = now + timedelta(seconds=590) - timedelta(seconds=600)  # hostA's lease, renewed 10 s ago
    gone = now - timedelta(seconds=60) - timedelta(seconds=600)  # hostB's last renewal (after its claim)
    return {
        "window_seconds": 300.0,
        "sources": {
            "site": {
                "pending": 5,
                "in_progress": 1,
                "completed": 4,
                "failed": 0,
                "hosts": {
                    "a.test:8080": {
                        "pending": 3,
                        "in_progress": 1,
                        "completed": 2,
                        "failed": 0,
                        "requests_per_minute": 0.6,
                    },
                    "b.test": {"pending": 2, "in_progress": 0, "completed": 2, "failed": 0, "requests_per_minute": 0.2},
                },
                "requests_per_minute": 0.8,
                "eta_seconds": 450.0,
            },
            "wiki": {
                "pending": 2,
                "in_progress": 2,
                "completed": 5,
                "failed": 1,
                "hosts": {
                    "wiki.test": {
                        "pending": 2,
                        "in_progress": 2,
                        "completed": 5,
                        "failed": 1,
                        "requests_per_minute": 1.0,
                    }
                },
                "requests_per_minute": 1.0,
                "eta_seconds": 240.0,
            },
        },
        "workers": [
            {
                "owner": "hostA:111:aaaa",
                "host": "hostA",
                "pid": 111,
                "items": 2,
                "live_leases": 2,
                "last_seen": renewed.isoformat(),
            },
            {
                "owner": "hostB:222:bbbb",
                "host": "hostB",
                "pid": 222,
                "items": 1,
                "live_leases": 0,
                "last_seen": gone.isoformat(),
            },
        ],
    }


def check_fleet_json(url: str, blocked: bool) -> None:
    now = prepare_fleet(url, blocked=blocked)
    done = frontier("stats", "--json", "--url", url, "-s", "HOLOCRON_FRONTIER_LEASE_SECONDS=600")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    taken = datetime.fromisoformat(report.pop("generated_at"))
    assert now <= taken < now + timedelta(seconds=60)
    for worker in report["workers"]:  # seconds since last seen: depends on when the command ran
        ago = worker.pop("seen_seconds_ago")
        assert abs(ago - (taken - datetime.fromisoformat(worker["last_seen"])).total_seconds()) < 0.2
    blocks = report.pop("blocks")
    if blocked:  # the active block only, its time left counted from when the command ran
        assert [(b["key"], b["reason"]) for b in blocks] == [("wiki.test", "429")]
        assert blocks[0]["blocked_until"] == (now + timedelta(seconds=120)).isoformat()
        assert 60 < blocks[0]["remaining_seconds"] <= 120
    else:
        assert blocks == []
    assert report.pop("oldest_lease")["lease_owner"] == "hostB:222:bbbb"
    assert report.pop("failure_reasons") == [["(none)", 1]]
    assert report == expected_fleet(now)


def test_stats_json_per_source_and_host_with_rates_workers_and_blocks(tmp_path):
    check_fleet_json(f"sqlite:///{tmp_path / 'blocked.sqlite3'}", blocked=True)
    check_fleet_json(f"sqlite:///{tmp_path / 'plain.sqlite3'}", blocked=False)


def test_stats_json_on_postgresql(postgres_url):
    check_fleet_json(postgres_url, blocked=True)


def test_stats_table_and_watch_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    prepare_fleet(url, blocked=False)
    table = frontier("stats", "--url", url).stdout
    assert "  b.test " in table and "workers: 1 live, 1 with expired leases only" in table
    assert "blocks: no blocks" in table
    frame = frontier("watch", "--once", "--url", url)
    assert frame.returncode == 0, frame.stderr
    assert re.search(r"^site +\[#{12}\.{18}\]  40\.0%  4/10  0\.8 req/min  eta 7m30s$", frame.stdout, re.M), (
        frame.stdout
    )
    assert re.search(r"^wiki +\[#{18}\.{12}\]  60\.0%  6/10  1\.0 req/min  eta 4m00s$", frame.stdout, re.M)
    assert "\x1b[2J" not in frame.stdout  # --once: one frame, the screen left alone
    one = frontier("watch", "--once", "--source", "wiki", "--url", url).stdout
    assert "wiki " in one and "site " not in one


def test_watch_redraws_until_interrupted(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    prepare_fleet(url, blocked=False)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "scrapy", "frontier", "watch", "--interval", "0.2", "--url", url]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.count("\x1b[H\x1b[2J") >= 2 and out.count("holocron frontier") == out.count("\x1b[H\x1b[2J")
    assert "Traceback" not in err


# -- stats --json during a real three-worker crawl, against a server that logs every request ---------
def write_pages(root: Path, pages: int) -> None:
    """A site of *pages* small pages, all linked from index.html."""
    root.mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="p{i}.html">{i}</a> ' for i in range(pages))
    (root / "index.html").write_text(f"<html><body>{links}</body></html>", "utf-8")
    for i in range(pages):
        (root / f"p{i}.html").write_text(f"<html><body><h1>Page {i}</h1></body></html>", "utf-8")


def http_workspace(root: Path, database: str | None = None) -> Workspace:
    ws = Workspace(root, database=database)
    root.mkdir(parents=True, exist_ok=True)
    ws.config.write_text(
        "contact: tests@example.org\n"
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: {ws.records_url}\n"
        f"state:\n  url: {ws.state_url}\n"
        "sources:\n  - {name: site, type: http, delay: 0.1, concurrency: 2}\n",
        encoding="utf-8",
    )
    return ws


def start_http_crawl(ws: Workspace, base: str, run_id: str, **settings: str) -> subprocess.Popen:
    paced = {
        "HOLOCRON_RUN_ID": run_id,
        "RANDOMIZE_DOWNLOAD_DELAY": "0",
        "HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.1",
        "HOLOCRON_RECORDS_FLUSH_INTERVAL": "0.1",
        "HOLOCRON_RECORDS_BATCH_SIZE": "5",
        **settings,
    }
    command = ws.command("http", "source=site", f"seeds={base}/index.html", "max_depth=1", settings=paced)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def page_requests(log: Path) -> int:
    """The server's own count of page requests (robots.txt is not a work item)."""
    return sum(1 for entry in read_log(log) if entry["path"].endswith(".html"))


def test_stats_during_a_three_worker_crawl_agree_with_the_server(tmp_path, crawl_database):
    """Three real workers share one frontier (SQLite files, then a throw-away PostgreSQL database);
    ``stats --json`` taken mid-crawl shows the three of them live, and the host's requests per minute
    (x 5: the attempts of the 5-minute window, which covers the whole crawl so far) within 10% of the
    requests the server logged meanwhile."""
    pages = 450
    write_pages(tmp_path / "site", pages)
    ws = http_workspace(tmp_path / "ws", crawl_database)
    with serve_directory(tmp_path / "site") as (base, log):
        procs = [start_http_crawl(ws, base, "worker0")]
        try:
            deadline = time.monotonic() + 120
            while page_requests(log) < 20:
                assert procs[0].poll() is None, procs[0].stderr.read()[-3000:]
                assert time.monotonic() < deadline, "the first worker does not crawl"
                time.sleep(0.1)
            procs += [start_http_crawl(ws, base, f"worker{i}") for i in (1, 2)]
            while True:  # until the three hold leases at once, well before the end
                before = page_requests(log)
                assert before < pages - 60, "the crawl ended before three workers were seen"
                done = frontier("stats", "--json", "--url", ws.state_url)
                after = page_requests(log)
                assert done.returncode == 0, done.stderr
                report = json.loads(done.stdout)
                if len([w for w in report["workers"] if w["live_leases"]]) == 3 and before >= 100:
                    break
                time.sleep(0.5)
            for proc in procs:
                _, err = proc.communicate(timeout=240)
                assert proc.returncode == 0, err[-3000:]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
    host = base.removeprefix("http://")
    counted = report["sources"]["site"]["hosts"][host]["requests_per_minute"] * 5
    # the store counts a request once its ack is written: a little after the server saw it
    assert 0.9 * before <= counted <= after, (before, counted, after)
    workers = {w["owner"]: w for w in report["workers"] if w["live_leases"]}
    assert {w["host"] for w in workers.values()} == {socket.gethostname()}
    assert len({w["pid"] for w in workers.values()}) == 3
    assert all(w["seen_seconds_ago"] < 30 for w in workers.values())
    assert page_requests(log) == pages + 1 and len(ws.records()) == pages + 1  # each page once


def test_watch_survives_a_lost_database_connection(postgres_url):
    """PostgreSQL terminates the watch's session mid-watch: one frame says the read failed, the next
    redraw reconnects, and Ctrl-C still ends it cleanly."""
    from tests.support.postgres import admin_connect

    prepare_fleet(postgres_url, blocked=False)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PGAPPNAME": "fleetwatch"}
    cmd = [sys.executable, "-m", "scrapy", "frontier", "watch", "--interval", "0.2", "--url", postgres_url]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        with admin_connect() as admin:
            ended = admin.execute(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'fleetwatch') AS t"
            ).fetchone()
        assert ended and ended[0] >= 1
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    failed = out.find("cannot read the frontier:")
    assert failed > 0 and "trying again in 0.2 s" in out, out[-2000:]
    assert "holocron frontier" in out[failed:]  # redrawn after reconnecting
    assert "Traceback" not in err
