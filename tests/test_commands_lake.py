"""``scrapy lake verify``: records and lake files checked against each other, and repaired by a crawl."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from holocron_scrapy.commands.lake import MISMATCH, MISSING, ORPHAN, Problem, Report, verify
from holocron_scrapy.records.store import open_record_store
from tests.support.crawl import REPO, Workspace

SEEDS = "seeds=Ωmega Station"


def lake_command(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    cmd = [sys.executable, "-m", "scrapy", "lake", "verify", "-s", f"HOLOCRON_CONFIG={ws.config}", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def problems(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {MISSING: [], MISMATCH: [], ORPHAN: []}
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind in found:
            found[kind].append(rest.strip().split(": ", 1)[0])
    return found


@pytest.mark.mediawiki
def test_verify_reports_exactly_the_damage_and_repair_refetches_it(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    first = ws.crawl("mediawiki", "source=testwiki", SEEDS, "max_depth=1")
    assert first.returncode == 0, first.stderr[-2000:]
    clean = lake_command(ws)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    records = [r for r in ws.records() if r["outcome"] == "ok"]
    assert len(records) > 10
    assert f"{len(ws.records())} records, {len(ws.records())} lake files" in clean.stdout

    before = sorted(r["ingest_id"] for r in ws.records())
    deleted, corrupt = records[1], records[2]
    (ws.lake / deleted["lake_path"]).unlink()
    doc = json.loads((ws.lake / corrupt["lake_path"]).read_text("utf-8"))
    doc["payload"]["tampered"] = True
    (ws.lake / corrupt["lake_path"]).write_text(json.dumps(doc), "utf-8")
    stray = ws.lake / "mediawiki" / "testwiki" / "page" / "Stray_20260101_000000_deadbeef.json"
    stray.write_text(json.dumps({"metadata": {"ingest_id": "nobody"}, "payload": {}}), "utf-8")

    damaged = lake_command(ws)
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert problems(damaged.stdout) == {
        MISSING: [deleted["lake_path"]],
        MISMATCH: [corrupt["lake_path"]],
        ORPHAN: [stray.relative_to(ws.lake).as_posix()],
    }, damaged.stdout
    assert "1 missing, 1 mismatched, 1 orphans" in damaged.stdout

    repair = lake_command(ws, "--repair")
    assert repair.returncode == 1 and "nothing deleted" in repair.stdout, repair.stdout + repair.stderr
    assert stray.exists() and not (ws.lake / deleted["lake_path"]).exists()  # repair itself touches no file
    pending = {i["resource_id"] for i in ws.work_items() if i["status"] == "pending"}
    assert {deleted["resource_id"], corrupt["resource_id"]} <= pending

    again = ws.crawl("mediawiki", "source=testwiki", SEEDS, "max_depth=1")
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(r["ingest_id"] for r in ws.records()) == before  # no second record of either page
    run = json.loads(ws.runs()[-1]["summary"])
    assert run["lake/restored"] == 2
    after = lake_command(ws)
    assert after.returncode == 1
    assert problems(after.stdout) == {MISSING: [], MISMATCH: [], ORPHAN: [stray.relative_to(ws.lake).as_posix()]}
    restored = json.loads((ws.lake / corrupt["lake_path"]).read_text("utf-8"))
    assert "tampered" not in restored["payload"] and restored["metadata"]["ingest_id"] == corrupt["ingest_id"]


def test_verify_streams_in_batches(tmp_path):
    """Memory stays flat: records are read in pages and files matched in batches of the given size."""
    from datetime import datetime, timezone

    from holocron_scrapy.items import IngestItem
    from holocron_scrapy.pipelines.lake import encode_document, lake_document, lake_relative_path, write_atomically
    from holocron_scrapy.records.rows import item_row

    lake = tmp_path / "lake"
    store = open_record_store(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    rows = []
    for i in range(25):
        it = IngestItem("mediawiki", "w", "page", f"T{i}", "https://w/api.php", {"i": i},
                        fetched_at_utc=datetime(2026, 1, 1, tzinfo=timezone.utc))  # fmt: skip
        it.lake_path = lake_relative_path(it).as_posix()  # what the lake pipeline writes
        write_atomically(lake / it.lake_path, encode_document(lake_document(it)))
        rows.append(item_row(it))
    store.insert(rows)
    calls = {"pages": [], "ids": []}
    real_iter, real_ids = store.iter_records, store.records_by_ids

    def iter_records(source=None, batch_size=1000):
        for page in real_iter(source, batch_size):
            calls["pages"].append(len(page))
            yield page

    def records_by_ids(ids):
        calls["ids"].append(len(ids))
        return real_ids(ids)

    store.iter_records, store.records_by_ids = iter_records, records_by_ids
    found = list(verify(store, lake, batch_size=10))
    assert found[:-1] == [] and isinstance(found[-1], Report)
    assert (found[-1].records, found[-1].files) == (25, 25)
    assert calls == {"pages": [10, 10, 5], "ids": [10, 10, 5]}
    (lake / rows[3]["lake_path"]).unlink()
    missing = [p for p in verify(store, lake, source="w", batch_size=7) if isinstance(p, Problem)]
    assert [(p.kind, p.lake_path) for p in missing] == [(MISSING, rows[3]["lake_path"])]
    store.close()


def test_verify_without_a_lake_is_one_error_line(tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config("http://127.0.0.1:9/api.php")
    proc = lake_command(ws)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"lake: error: lake_dir: the lake directory {ws.lake} does not exist"]
