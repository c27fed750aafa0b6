"""A crawl killed with kill -9 between a lake write and its record: the rerun leaves exactly one
lake file per resource and content, the one its record names (``scrapy lake verify`` agrees)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from holocron_scrapy.items import payload_hash
from tests.support.crawl import REPO, Workspace
from tests.support.kill_pipeline import PIPELINES
from tests.support.static_site import serve_directory

PAGES = 12


def write_site(root) -> None:
    root.mkdir()
    links = "".join(f'<a href="p{i}.html">{i}</a>' for i in range(PAGES))
    (root / "index.html").write_text(f"<html><body>{links}</body></html>", "utf-8")
    for i in range(PAGES):
        (root / f"p{i}.html").write_text(f"<html><body>page {i}</body></html>", "utf-8")


def lake_files(ws: Workspace) -> list[dict]:
    files = []
    for path in sorted(ws.lake.rglob("*.json")):
        if "_runs" in path.relative_to(ws.lake).parts:
            continue
        doc = json.loads(path.read_text("utf-8"))
        files.append({"path": path.relative_to(ws.lake).as_posix(), **doc})
    return files


def verify(ws: Workspace) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    cmd = [sys.executable, "-m", "scrapy", "lake", "verify", "-s", f"HOLOCRON_CONFIG={ws.config}"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_kill_9_between_lake_write_and_record_leaves_one_file_per_version(tmp_path):
    write_site(tmp_path / "site")
    with serve_directory(tmp_path / "site") as (base, _):
        ws = Workspace(tmp_path / "ws")
        ws.root.mkdir()
        ws.config.write_text(
            f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
            f"state:\n  url: sqlite:///{ws.state_db}\n"
            "sources:\n  - {name: site, type: http, delay: 0, concurrency: 1}\n",
            encoding="utf-8",
        )
        args = ("source=site", f"seeds={base}/index.html", "max_depth=1")
        # Records are written one at a time; the 5th lake file is written, then the process dies.
        kill = {"ITEM_PIPELINES": PIPELINES, "KILL_AFTER_LAKE_ITEMS": "5", "HOLOCRON_RECORDS_BATCH_SIZE": "1"}
        killed = ws.crawl("http", *args, settings=kill)
        assert killed.returncode == -9, killed.stderr[-2000:]
        recorded = {r["lake_path"] for r in ws.records()}
        orphans = [f for f in lake_files(ws) if f["path"] not in recorded]
        assert orphans, "the kill left no lake file without its record"
        assert 0 < len(recorded) < PAGES + 1

        rerun = ws.crawl("http", *args, settings={"HOLOCRON_RECORDS_BATCH_SIZE": "1"})
        assert rerun.returncode == 0, rerun.stderr[-2000:]

    records = ws.records()
    files = lake_files(ws)
    assert len(records) == PAGES + 1  # the index and every page, once
    per_version = Counter((f["metadata"]["resource_id"], payload_hash(f["payload"])) for f in files)
    assert set(per_version.values()) == {1}, per_version  # one file per resource and content
    assert sorted(f["path"] for f in files) == sorted(r["lake_path"] for r in records)
    by_path = {f["path"]: f for f in files}
    for record in records:  # each file is its record's
        assert by_path[record["lake_path"]]["metadata"]["ingest_id"] == record["ingest_id"]
    run = json.loads(ws.runs()[-1]["summary"])
    assert run["lake/replaced"] >= len(orphans)  # the orphans were replaced, not doubled
    checked = verify(ws)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 missing, 0 mismatched, 0 orphans" in checked.stdout
