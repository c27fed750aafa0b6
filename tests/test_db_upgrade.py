"""Files made by an earlier release upgrade in place: holocron_scrapy.db.migrations on real files.

``tests/fixtures/schema_0006`` holds the state database, records database and lake of a crawl made
by the code of commit a13d275 (schema 0006, the hand-written SQLite stores), stopped by
``max_pages`` with two items pending. Today's code opens copies of them, upgrades them in place,
finishes the crawl, and loses nothing: every row keeps its values, nothing stored is fetched again,
and ``scrapy lake verify`` finds records and lake files in agreement.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.support.crawl import REPO, Workspace
from tests.support.static_site import serve_directory

FIXTURE = Path(__file__).parent / "fixtures" / "schema_0006"
PORT = 8799  # the port in the URLs of the fixture's work items
SITE = f"http://127.0.0.1:{PORT}"


def test_schema_0006_files_upgrade_in_place_and_the_crawl_goes_on(tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(FIXTURE, root)
    ws = Workspace(root)  # its SQLite files are the fixture's state.sqlite3 and records.sqlite3
    items_before = {r["dedupe_key"]: r for r in ws.work_items()}
    records_before = {r["ingest_id"]: r for r in ws.records()}
    assert Counter(r["status"] for r in items_before.values()) == {"completed": 7, "pending": 2}
    ws.config.write_text(
        "contact: tests@example.org\n"
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: {ws.records_url}\n"
        f"state:\n  url: {ws.state_url}\n"
        "sources:\n  - {name: site, type: http, delay: 0, concurrency: 1}\n",
        encoding="utf-8",
    )
    with serve_directory(root / "site", port=PORT) as (_, log):
        proc = ws.crawl("http", "source=site", f"seeds={SITE}/p0.html", "max_depth=2", settings={"ROBOTSTXT_OBEY": "0"})
        fetched = [line for line in log.read_text().splitlines()] if log.exists() else []
    assert proc.returncode == 3, proc.stderr[-3000:]  # partial: missing.html is a 404
    assert len(fetched) == 2  # only what was pending: p7.html and missing.html

    items_after = {r["dedupe_key"]: r for r in ws.work_items()}
    for key, before in items_before.items():
        after = items_after[key]
        if before["status"] == "completed":
            assert {k: after[k] for k in before} == before, key  # every column of the old schema kept
        else:
            assert (after["seq"], after["work_item_id"]) == (before["seq"], before["work_item_id"])
    statuses = {r["resource_id"]: r["status"] for r in items_after.values()}
    assert statuses[f"{SITE}/p7.html"] == "completed" and statuses[f"{SITE}/missing.html"] == "failed"

    records_after = {r["ingest_id"]: r for r in ws.records()}
    for ingest_id, before in records_before.items():
        after = records_after[ingest_id]
        assert {k: after[k] for k in before} == before, ingest_id
    per_resource = Counter(r["resource_id"] for r in records_after.values())
    assert len(records_after) == 9 and max(per_resource.values()) == 1

    for store in ("state", "records"):
        versions = [r["version"] for r in ws.rows(store, "SELECT version FROM schema_migrations ORDER BY version")]
        assert versions[:6] == ["0001", "0002", "0003", "0004", "0005", "0006"] and len(versions) >= 6

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    verify = subprocess.run(
        [sys.executable, "-m", "scrapy", "lake", "verify", "-s", f"HOLOCRON_CONFIG={ws.config}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
