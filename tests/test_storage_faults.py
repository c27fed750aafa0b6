"""Storage faults stop the crawl cleanly and lose nothing: a full lake, a read-only records database,
a PostgreSQL records database that goes away mid-crawl.

Each SQLite or lake test mounts a small tmpfs of its own (we run as root in CI; skipped with the
reason where mounting is impossible) under a real ``scrapy crawl`` of the real test wiki; the
PostgreSQL test takes the records database of the live server away (connections refused, our
backends terminated) under a real crawl, then gives it back.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.support import postgres
from tests.support.crawl import REPO, Workspace
from tests.test_commands_lake import lake_command

pytestmark = pytest.mark.mediawiki

SEEDS = ["Hub Alpha", "Ωmega Station"]
ARGS = ("source=testwiki", "seeds=" + "|".join(SEEDS), "max_depth=2")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip() or proc.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    # "ro" fails (busy, status 32) while a write has a file open: lake writes run in worker threads.
    for _ in range(100):
        if subprocess.run(["mount", "-o", f"remount,{options}", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.02)
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def check_complete(ws: Workspace, mediawiki) -> None:
    """Every reachable page stored exactly once, each record with its lake file and vice versa."""
    expected = mediawiki.model.reachable(SEEDS, 2, (0,), follow_links=True, follow_categories=False)
    counts = Counter(r["resource_id"] for r in ws.records())
    assert set(counts) == set(expected), sorted(set(expected) ^ set(counts))[:10]
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1][:10]
    assert {i["status"] for i in ws.work_items()} == {"completed"}
    verified = lake_command(ws)
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr
    assert " 0 missing, 0 mismatched, 0 orphans" in verified.stdout


def fatal_lines(stderr: str, start: str) -> list[str]:
    return [line for line in stderr.splitlines() if start in line]


def test_full_lake_stops_the_crawl_and_a_rerun_loses_nothing(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    with tmpfs(ws.lake, "256k"):
        full = ws.crawl("mediawiki", *ARGS)
        assert full.returncode == 1, full.stderr[-3000:]
        lines = fatal_lines(full.stderr, "Lake write failed: ")
        assert len(lines) == 1, lines
        assert lines[0].endswith(": No space left on device; stopping the crawl"), lines[0]
        assert f"Lake write failed: {ws.lake}/" in lines[0]
        assert "Traceback" not in full.stderr
        assert "(fatal_storage)" in full.stderr
        assert ws.runs()[-1]["status"] == "failed"
        stored = len(ws.records())
        assert 0 < stored < 500  # stopped early
        # Nothing acknowledged without storage: every completed item's page has its record.
        titles = {r["resource_id"] for r in ws.records()}
        done = {i["resource_id"] for i in ws.work_items() if i["status"] == "completed" and i["attempt"] > 0}
        unstored = {t for t in done if mediawiki.model.resolve(t).key not in titles}
        assert not unstored, sorted(unstored)[:10]
        assert not [i for i in ws.work_items() if i["status"] == "failed"]
        partial = lake_command(ws)  # what was stored is consistent: no file without a record
        assert " 0 missing, 0 mismatched, 0 orphans" in partial.stdout, partial.stdout[-3000:]

        remount(ws.lake, "size=64m")  # space is back
        rerun = ws.crawl("mediawiki", *ARGS)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        check_complete(ws, mediawiki)


def test_lake_made_read_only_mid_run_stops_the_crawl_and_a_rerun_loses_nothing(mediawiki, tmp_path):
    from tests.test_shutdown import start, wait_for_records

    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    with tmpfs(ws.lake, "64m"):
        proc = start(ws)
        wait_for_records(ws, proc, 20)
        remount(ws.lake, "ro")
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 1, stderr[-3000:]
        lines = fatal_lines(stderr, "Lake write failed: ")
        assert len(lines) == 1 and lines[0].endswith(": Read-only file system; stopping the crawl"), lines
        assert "Traceback" not in stderr
        assert not [i for i in ws.work_items() if i["status"] == "failed"]
        remount(ws.lake, "rw")
        rerun = ws.crawl("mediawiki", *ARGS)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        check_complete(ws, mediawiki)


def test_full_records_database_stops_the_crawl_and_a_rerun_loses_nothing(mediawiki, tmp_path):
    """The records database refuses writes mid-run (its disk is full). Read-only from the start is
    refused before the crawl opens (one line, exit 2); read-only mid-run is covered in test_pipelines."""
    ws = Workspace(tmp_path)
    with tmpfs(tmp_path / "records", "256k") as folder:
        ws.records_db.symlink_to(folder / "records.sqlite3")
        ws.write_config(mediawiki.api_url)
        refused = ws.crawl("mediawiki", *ARGS)
        assert refused.returncode == 1, refused.stderr[-3000:]
        lines = fatal_lines(refused.stderr, "Records write failed: ")
        assert len(lines) == 1, lines
        assert lines[0].endswith(f"Records write failed: {folder / 'records.sqlite3'}: database or disk is full;"
                                 " stopping the crawl"), lines[0]  # fmt: skip
        assert "Traceback" not in refused.stderr
        stored = len(ws.records())
        assert stored < 500
        assert not [i for i in ws.work_items() if i["status"] == "failed"]
        consistent = lake_command(ws)  # the lake files of the refused records were removed
        assert " 0 missing, 0 mismatched, 0 orphans" in consistent.stdout, consistent.stdout[-3000:]

        remount(folder, "size=64m")
        rerun = ws.crawl("mediawiki", *ARGS)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        check_complete(ws, mediawiki)


@contextlib.contextmanager
def database_gone(url: str) -> Iterator[None]:
    """The PostgreSQL database of *url* refuses new connections and its open ones are terminated
    (as when it is taken down for maintenance); given back on exit."""
    name = sql.Identifier(make_url(url).database)
    with postgres.admin_connect() as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(name))
        # A connection that was starting while the ALTER committed can get through after the first
        # terminate's look at pg_stat_activity: terminate until none is left (under load, a crawl
        # reconnected that way and logged "back" between two "cannot be reached" lines).
        for _ in range(50):
            left = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (make_url(url).database,),
            ).fetchone()
            if not left or not left[0]:
                break
            time.sleep(0.02)
    try:
        yield
    finally:
        with postgres.admin_connect() as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(name))


def test_postgresql_records_database_gone_mid_run_stops_the_crawl_and_a_rerun_loses_nothing(
    mediawiki, tmp_path, postgres_url
):
    """The records on the live PostgreSQL (the frontier in SQLite), taken away mid-crawl for longer than
    ``HOLOCRON_DB_OUTAGE_LIMIT`` (2 s here): the crawl waits that long, then one error line, exit 1,
    nothing acknowledged without its record, and a rerun once it is back completes."""
    ws = Workspace(tmp_path, records_database=postgres_url)
    ws.write_config(mediawiki.api_url)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    slow = {"HOLOCRON_RECORDS_BATCH_SIZE": "10", "CONCURRENT_REQUESTS": "2", "HOLOCRON_DB_OUTAGE_LIMIT": "2"}
    proc = subprocess.Popen(
        ws.command("mediawiki", *ARGS, settings=slow), cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while ws.record_count() < 20:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the crawl stored nothing"
            time.sleep(0.05)
        with database_gone(postgres_url):
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 1, stderr[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    # The first to meet the gone database (the change filter's version lookup, or a records write)
    # names it; nothing else logs a line or a traceback.
    lines = fatal_lines(stderr, "Records read failed: ") + fatal_lines(stderr, "Records write failed: ")
    assert len(lines) == 1, lines
    assert f" failed: {postgres_url}: " in lines[0] and lines[0].endswith("; stopping the crawl"), lines[0]
    assert "Traceback" not in stderr, stderr[stderr.index("Traceback") - 500 :][:3000]
    assert "(fatal_storage)" in stderr
    waited = [line for line in stderr.splitlines() if "The records database" in line]
    assert len(waited) == 1 and "cannot be reached" in waited[0], waited  # waited for, once, before giving up
    assert [r["status"] for r in ws.run_reports()] == ["failed"]  # ingest_runs was gone: the lake has it
    stored = len(ws.records())
    assert 20 <= stored < 500  # stopped early
    # Nothing acknowledged without its record, nothing failed: the refused items were handed back.
    titles = {r["resource_id"] for r in ws.records()}
    done = {i["resource_id"] for i in ws.work_items() if i["status"] == "completed" and i["attempt"] > 0}
    assert not {t for t in done if mediawiki.model.resolve(t).key not in titles}
    assert not [i for i in ws.work_items() if i["status"] == "failed"]
    consistent = lake_command(ws)  # the lake files of the refused records were removed
    assert " 0 missing, 0 mismatched, 0 orphans" in consistent.stdout, consistent.stdout[-3000:]

    rerun = ws.crawl("mediawiki", *ARGS)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_complete(ws, mediawiki)
