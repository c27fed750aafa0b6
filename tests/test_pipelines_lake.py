"""holocron_scrapy.pipelines.lake: the batch writer (staged, fsynced, renamed together) and its failures."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from holocron_scrapy.items import IngestItem
from holocron_scrapy.pipelines.lake import (
    SAME,
    WRITTEN,
    JsonLakePipeline,
    lake_relative_path,
    place_file,
    stage_file,
    write_atomically,
)


def page(resource_id: str, source: str = "w") -> IngestItem:
    return IngestItem(
        "mediawiki", source, "page", resource_id, "https://w/api.php", {"title": resource_id},
        fetched_at_utc=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def tasks(lake: Path, *items: IngestItem) -> list:
    return [(lake / lake_relative_path(it), it, None, False) for it in items]


def leftovers(lake: Path) -> list[Path]:
    return sorted(p for p in lake.rglob("*") if p.name.endswith(".part"))


def test_a_batch_writes_every_document_in_place(tmp_path):
    lake = tmp_path / "lake"
    pipeline = JsonLakePipeline(str(lake))
    pipeline.open_spider()
    items = [page(f"T{n}") for n in range(20)]
    results = pipeline._write_batch(tasks(lake, *items))
    assert [outcome for outcome, _ in results] == [WRITTEN] * 20
    for it, (_, size) in zip(items, results, strict=True):
        path = lake / lake_relative_path(it)
        document = json.loads(path.read_bytes())
        assert document["payload"] == {"title": it.resource_id} and path.stat().st_size == size
        assert b"\n" not in path.read_bytes()  # one line, from the C encoder
    assert leftovers(lake) == []
    # The same versions again: found in place, nothing rewritten.
    assert [outcome for outcome, _ in pipeline._write_batch(tasks(lake, *items))] == [SAME] * 20


def test_one_failed_write_fails_alone(tmp_path):
    lake = tmp_path / "lake"
    pipeline = JsonLakePipeline(str(lake))
    pipeline.open_spider()
    blocked = page("B", source="blocked")
    (lake / "mediawiki").mkdir()
    (lake / "mediawiki" / "blocked").write_text("a file where a directory should be")
    good = [page("A"), page("C")]
    batch = tasks(lake, good[0], blocked, good[1])
    batch[1] = (*batch[1][:3], True)  # decided: no record owns what is in the way, so it is written
    results = pipeline._write_batch(batch)
    assert isinstance(results[1], OSError)
    assert [results[0][0], results[2][0]] == [WRITTEN, WRITTEN]
    assert all((lake / lake_relative_path(it)).is_file() for it in good)
    assert leftovers(lake) == []


def test_a_lake_directory_gone_mid_run_fails_the_whole_batch_without_recreating_it(tmp_path):
    lake = tmp_path / "lake"
    pipeline = JsonLakePipeline(str(lake))
    pipeline.open_spider()
    lake.rmdir()
    results = pipeline._write_batch(tasks(lake, page("A"), page("B")))
    assert all(isinstance(r, FileNotFoundError) and "lake directory is gone" in str(r) for r in results)
    assert not lake.exists()


def test_staging_skips_a_temp_name_left_by_an_earlier_process(tmp_path, monkeypatch):
    import holocron_scrapy.pipelines.lake as lake_module

    monkeypatch.setattr(lake_module, "_TEMP_IDS", iter(range(5)))
    (tmp_path / f".tmp-{os.getpid()}-0.part").write_text("left by a kill -9")
    tmp, fd = stage_file(tmp_path / "a.json", b"{}")
    assert tmp.endswith(f".tmp-{os.getpid()}-1.part")
    place_file(tmp_path / "a.json", tmp, fd)
    assert (tmp_path / "a.json").read_bytes() == b"{}" and not Path(tmp).exists()


def test_a_failed_rename_leaves_no_temp_file(tmp_path):
    target = tmp_path / "dir-in-the-way"
    (target / "inside").mkdir(parents=True)  # os.replace cannot put a file over a non-empty directory
    with pytest.raises(OSError):
        write_atomically(target, b"{}")
    assert leftovers(tmp_path) == []
