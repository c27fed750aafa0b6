"""The item pipelines: change filter, JSON lake and IngestRecords, on temp dirs."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pytest
from scrapy.exceptions import DropItem
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from holocron_scrapy.items import FAILED, IngestItem
from holocron_scrapy.pipelines.changes import ChangeFilterPipeline
from holocron_scrapy.pipelines.lake import JsonLakePipeline, lake_relative_path, safe_component
from holocron_scrapy.pipelines.records import IngestRecordsPipeline
from holocron_scrapy.records.store import open_record_store


def item(resource_id: str = "Star Wars", payload=None, **kw) -> IngestItem:
    return IngestItem(
        source_system="mediawiki",
        source_name="wikipedia",
        resource_type="page",
        resource_id=resource_id,
        request_uri="https://w/api.php",
        payload=payload if payload is not None else {"title": resource_id, "n": 1},
        fetched_at_utc=datetime(2026, 1, 19, 12, 0, 5, tzinfo=timezone.utc),
        **kw,
    )


@pytest.mark.parametrize(
    "title",
    [
        "AT-AT/Walker",
        "../../etc/passwd",
        "Han's Blaster",
        "東京 Base",
        "Ωmega Station",
        ".hidden",
        "a\\b:c*d?e",
        "x" * 400,
        "Ω" * 200,
    ],
)
def test_safe_component_never_escapes_and_stays_short(title):
    name = safe_component(title)
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert len(name.encode("utf-8")) <= 120


def test_long_titles_are_hashed_distinctly():
    assert safe_component("x" * 300 + "a") != safe_component("x" * 300 + "b")


def test_lake_path_layout():
    it = item("Luke Skywalker")
    assert lake_relative_path(it).as_posix() == (
        f"mediawiki/wikipedia/page/Luke_Skywalker_20260119_120005_{it.ingest_id[:8]}.json"
    )


def test_lake_pipeline_writes_metadata_and_unaltered_payload(tmp_path):
    crawler = get_crawler(settings_dict={"HOLOCRON_LAKE_DIR": str(tmp_path)})
    pipeline = JsonLakePipeline.from_crawler(crawler)
    pipeline.open_spider()
    payload = {"title": "AT-AT/Walker", "links": [{"ns": 0, "title": "Ωmega"}], "nested": {"a": [1, 2.5, None]}}
    it = item("AT-AT/Walker", payload=payload, work_item_ids=[3])
    pipeline.process_item(it)
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1 and files[0].parent == tmp_path / "mediawiki/wikipedia/page"
    doc = json.loads(files[0].read_text("utf-8"))
    assert doc["payload"] == payload
    assert doc["metadata"]["resource_id"] == "AT-AT/Walker" and doc["metadata"]["hash_sha256"] == it.hash_sha256
    assert "work_item_ids" not in doc["metadata"] and "payload" not in doc["metadata"]
    assert not list(tmp_path.rglob(".tmp-*"))
    assert crawler.stats.get_value("lake/written") == 1


def _records_pipeline(url: str, **settings):
    crawler = get_crawler(settings_dict={"HOLOCRON_RECORDS_URL": url, **settings})
    pipeline = IngestRecordsPipeline.from_crawler(crawler)
    pipeline.open_spider()
    return crawler, pipeline


@deferred_f_from_coro_f
async def test_records_pipeline_returns_only_after_commit(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    crawler, pipeline = _records_pipeline(url, HOLOCRON_RECORDS_BATCH_SIZE=2, HOLOCRON_RECORDS_FLUSH_INTERVAL=0.05)
    await pipeline.process_item(item("A"))  # flushed by the timer
    conn = sqlite3.connect(tmp_path / "r.sqlite3")
    assert conn.execute("SELECT resource_id FROM ingest_records").fetchall() == [("A",)]
    row = conn.execute("SELECT payload, hash_sha256, fetched_at_utc FROM ingest_records").fetchone()
    assert json.loads(row[0]) == {"title": "A", "n": 1} and len(row[1]) == 64
    assert row[2] == "2026-01-19 12:00:05.000000"
    await pipeline.close_spider()
    assert crawler.stats.get_value("records/written") == 1


@deferred_f_from_coro_f
async def test_records_pipeline_batches(tmp_path):
    import asyncio

    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    crawler, pipeline = _records_pipeline(url, HOLOCRON_RECORDS_BATCH_SIZE=3, HOLOCRON_RECORDS_FLUSH_INTERVAL=5)
    await asyncio.gather(*(pipeline.process_item(item(f"T{i}")) for i in range(3)))
    assert crawler.stats.get_value("records/batches") == 1
    await pipeline.close_spider()


def test_change_filter_drops_unchanged_and_keeps_changed(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    store = open_record_store(url)
    from holocron_scrapy.records.store import item_row

    store.insert([item_row(item("A", payload={"v": 1}))])
    store.close()
    crawler = get_crawler(settings_dict={"HOLOCRON_RECORDS_URL": url})
    pipeline = ChangeFilterPipeline.from_crawler(crawler)
    pipeline.open_spider()
    with pytest.raises(DropItem, match="unchanged"):
        pipeline.process_item(item("A", payload={"v": 1}))
    assert pipeline.process_item(item("A", payload={"v": 2}))
    assert pipeline.process_item(item("B", payload={"v": 1}))
    pipeline.close_spider()
    stats = crawler.stats.get_stats()
    assert stats["recrawl/unchanged"] == 1 and stats["recrawl/changed"] == 1 and stats["records/new_resources"] == 1


def test_change_filter_does_not_count_a_repeated_failure_as_unchanged(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    crawler = get_crawler(settings_dict={"HOLOCRON_RECORDS_URL": url})
    pipeline = ChangeFilterPipeline.from_crawler(crawler)
    pipeline.open_spider()
    failure = {"error": "DNS lookup failed"}
    assert pipeline.process_item(item("A", payload=failure, outcome=FAILED))
    with pytest.raises(DropItem, match="unchanged"):
        pipeline.process_item(item("A", payload=failure, outcome=FAILED))
    pipeline.close_spider()
    stats = crawler.stats.get_stats()
    assert stats["records/repeated_failures"] == 1 and "recrawl/unchanged" not in stats


def test_payload_must_be_json(tmp_path):
    store = open_record_store(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    from holocron_scrapy.records.store import item_row

    row = item_row(item("A"))
    row["payload"] = "{not json"
    with pytest.raises(sqlite3.IntegrityError, match="valid JSON"):
        store.insert([row])
    assert store.count() == 0
