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
from holocron_scrapy.pipelines.lake import JsonLakePipeline, lake_relative_path, safe_component, version_digest
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
    """Named by resource and content: the same version always gets the same name, whoever fetched
    it and whenever; another content, or another resource id with the same safe form, another."""
    it = item("Luke Skywalker")
    digest = version_digest("mediawiki", "wikipedia", "page", "Luke Skywalker", it.hash_sha256)
    assert lake_relative_path(it).as_posix() == f"mediawiki/wikipedia/page/Luke_Skywalker_{digest}.json"
    assert len(digest) == 16
    later = item("Luke Skywalker", run_id="other")
    later.fetched_at_utc = datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert lake_relative_path(later) == lake_relative_path(it)
    assert lake_relative_path(item("Luke Skywalker", payload={"v": 2})) != lake_relative_path(it)
    same_payload = {"title": "x"}
    assert lake_relative_path(item("Luke Skywalker", payload=same_payload)) != lake_relative_path(
        item("Luke_Skywalker", payload=same_payload)
    )


@deferred_f_from_coro_f
async def test_lake_pipeline_writes_metadata_and_unaltered_payload(tmp_path):
    crawler = get_crawler(settings_dict={"HOLOCRON_LAKE_DIR": str(tmp_path)})
    pipeline = JsonLakePipeline.from_crawler(crawler)
    pipeline.open_spider()
    payload = {"title": "AT-AT/Walker", "links": [{"ns": 0, "title": "Ωmega"}], "nested": {"a": [1, 2.5, None]}}
    it = item("AT-AT/Walker", payload=payload, work_item_ids=[3])
    await pipeline.process_item(it)
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


@deferred_f_from_coro_f
async def test_change_filter_drops_unchanged_and_keeps_changed(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    store = open_record_store(url)
    from holocron_scrapy.records.rows import item_row

    store.insert([item_row(item("A", payload={"v": 1}))], record_versions=True)
    store.close()
    crawler = get_crawler(settings_dict={"HOLOCRON_RECORDS_URL": url, "HOLOCRON_LAKE_DIR": str(tmp_path / "lake")})
    pipeline = ChangeFilterPipeline.from_crawler(crawler)
    pipeline.open_spider()
    with pytest.raises(DropItem, match="unchanged"):
        await pipeline.process_item(item("A", payload={"v": 1}))
    assert await pipeline.process_item(item("A", payload={"v": 2}))
    assert await pipeline.process_item(item("B", payload={"v": 1}))
    pipeline.close_spider()
    stats = crawler.stats.get_stats()
    assert stats["recrawl/unchanged"] == 1 and stats["recrawl/changed"] == 1 and stats["records/new_resources"] == 1


@deferred_f_from_coro_f
async def test_change_filter_does_not_count_a_repeated_failure_as_unchanged(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    from holocron_scrapy.records.rows import item_row

    failure = {"error": "DNS lookup failed"}
    store = open_record_store(url)
    store.insert([item_row(item("A", payload=failure, outcome=FAILED))], record_versions=True)
    store.close()
    crawler = get_crawler(settings_dict={"HOLOCRON_RECORDS_URL": url, "HOLOCRON_LAKE_DIR": str(tmp_path / "lake")})
    pipeline = ChangeFilterPipeline.from_crawler(crawler)
    pipeline.open_spider()
    with pytest.raises(DropItem, match="unchanged"):
        await pipeline.process_item(item("A", payload=failure, outcome=FAILED))
    pipeline.close_spider()
    stats = crawler.stats.get_stats()
    assert stats["records/repeated_failures"] == 1 and "recrawl/unchanged" not in stats


def test_payload_must_be_json(tmp_path):
    store = open_record_store(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    from holocron_scrapy.records.rows import item_row

    row = item_row(item("A"))
    row["payload"] = "{not json"
    with pytest.raises(sqlite3.IntegrityError, match="valid JSON"):
        store.insert([row])
    assert store.count() == 0


# -- storage faults and "unchanged" only against what is stored ----------------------------------
async def _lake_item(tmp_path, resource_id="A", payload=None, **kw):
    """An item that went through the lake pipeline (its file written, lake_path set)."""
    crawler = get_crawler(settings_dict={"HOLOCRON_LAKE_DIR": str(tmp_path / "lake")})
    lake = JsonLakePipeline.from_crawler(crawler)
    lake.open_spider()
    return await lake.process_item(item(resource_id, payload=payload, **kw))


@deferred_f_from_coro_f
async def test_lake_deleted_mid_run_is_a_storage_fault_that_hands_the_item_back(tmp_path):
    from holocron_scrapy.pipelines.faults import StorageFault

    crawler = get_crawler(settings_dict={"HOLOCRON_LAKE_DIR": str(tmp_path / "lake")})
    lake = JsonLakePipeline.from_crawler(crawler)
    lake.open_spider()
    (tmp_path / "lake").rmdir()
    it = item("A", work_item_ids=[7])
    with pytest.raises(StorageFault):
        await lake.process_item(it)
    assert it.work_item_ids == []  # handed back: the frontier neither acks nor fails it
    assert not (tmp_path / "lake").exists()  # not silently recreated
    fatal = crawler.holocron_storage_faults.fatal
    assert fatal == f"Lake write failed: {tmp_path / 'lake'}: the lake directory is gone; stopping the crawl"
    later = item("B", work_item_ids=[8])
    with pytest.raises(StorageFault):  # once stopping, nothing more is written
        await lake.process_item(later)
    assert later.work_item_ids == [] and crawler.stats.get_value("storage/faults") == 2


@deferred_f_from_coro_f
async def test_records_db_refusing_writes_removes_the_lake_file_and_hands_back(tmp_path):
    from holocron_scrapy.pipelines.faults import StorageFault

    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    crawler, pipeline = _records_pipeline(
        url, HOLOCRON_RECORDS_FLUSH_INTERVAL=0.01, HOLOCRON_LAKE_DIR=str(tmp_path / "lake")
    )
    pipeline.store.conn.execute("PRAGMA query_only = ON")  # the database refuses writes
    it = await _lake_item(tmp_path, work_item_ids=[3])
    assert (tmp_path / "lake" / it.lake_path).exists()
    with pytest.raises(StorageFault):
        await pipeline.process_item(it)
    assert not (tmp_path / "lake" / it.lake_path).exists()  # no record, so no file either
    assert it.work_item_ids == []
    fatal = crawler.holocron_storage_faults.fatal
    assert fatal.startswith(f"Records write failed: {tmp_path / 'r.sqlite3'}: attempt to write a readonly database")
    assert fatal.endswith("; stopping the crawl")
    pipeline.store.conn.execute("PRAGMA query_only = OFF")
    await pipeline.close_spider()


@deferred_f_from_coro_f
async def test_records_and_seen_versions_commit_together(tmp_path):
    from holocron_scrapy.records.rows import item_row

    store = open_record_store(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    store.conn.execute("CREATE TRIGGER boom BEFORE INSERT ON seen_resources BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.IntegrityError):
        store.insert([item_row(item("A"))], record_versions=True)
    assert store.count() == 0  # no record without its version, and no version without its record
    store.conn.execute("DROP TRIGGER boom")
    assert store.insert([item_row(item("A", etag='"e1"'))], record_versions=True) == [True]
    assert store.versions("mediawiki", "wikipedia", ["A"])["A"]["etag"] == '"e1"'
    store.close()


@deferred_f_from_coro_f
async def test_a_copy_in_flight_is_not_unchanged_until_the_first_is_stored(tmp_path):
    """Two copies of one version in flight: the second waits; if the first is lost to a storage
    fault, the second goes on to be stored instead of being judged unchanged."""
    import asyncio

    from scrapy import signals

    from holocron_scrapy.pipelines.faults import StorageFault

    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    crawler = get_crawler(settings_dict={"HOLOCRON_RECORDS_URL": url, "HOLOCRON_LAKE_DIR": str(tmp_path / "lake")})
    pipeline = ChangeFilterPipeline.from_crawler(crawler)
    pipeline.open_spider()
    first, second = item("A", payload={"v": 1}), item("A", payload={"v": 1})
    assert await pipeline.process_item(first) is first
    waiting = asyncio.ensure_future(pipeline.process_item(second))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    crawler.signals.send_catch_log(signals.item_dropped, item=first, response=None, exception=StorageFault("full"))
    assert await waiting is second  # nothing stored: the second copy is not "unchanged"
    assert crawler.stats.get_value("recrawl/unchanged") is None
    # Once a copy is stored, a later one is unchanged.
    store = open_record_store(url)
    from holocron_scrapy.records.rows import item_row

    store.insert([item_row(second)], record_versions=True)
    store.close()
    crawler.signals.send_catch_log(signals.item_scraped, item=second, response=None)
    with pytest.raises(DropItem, match="unchanged"):
        await pipeline.process_item(item("A", payload={"v": 1}))
    pipeline.close_spider()


@deferred_f_from_coro_f
async def test_unchanged_item_restores_the_lost_lake_file_of_its_record(tmp_path):
    from holocron_scrapy.records.rows import item_row

    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    stored = await _lake_item(tmp_path, payload={"v": 1})
    store = open_record_store(url)
    store.insert([item_row(stored)], record_versions=True)
    store.close()
    path = tmp_path / "lake" / stored.lake_path
    original = json.loads(path.read_text("utf-8"))
    crawler = get_crawler(settings_dict={"HOLOCRON_RECORDS_URL": url, "HOLOCRON_LAKE_DIR": str(tmp_path / "lake")})
    pipeline = ChangeFilterPipeline.from_crawler(crawler)
    pipeline.open_spider()
    for damage in ("delete", "corrupt"):
        if damage == "delete":
            path.unlink()
        else:
            path.write_text('{"metadata": {}, "payload": {"v": 2}}', "utf-8")
        refetch = item("A", payload={"v": 1}, run_id="a later run")
        with pytest.raises(DropItem, match="unchanged"):
            await pipeline.process_item(refetch)
        restored = json.loads(path.read_text("utf-8"))
        assert restored["payload"] == {"v": 1}
        assert restored["metadata"]["ingest_id"] == stored.ingest_id  # the record's own metadata
        assert restored["metadata"]["fetched_at_utc"] == original["metadata"]["fetched_at_utc"]
    with pytest.raises(DropItem, match="unchanged"):  # intact: left alone
        await pipeline.process_item(item("A", payload={"v": 1}))
    assert crawler.stats.get_value("lake/restored") == 2
    pipeline.close_spider()


# -- a version stored again: the lake file of its record is never deleted nor overwritten ----------
def item_row_of(it):
    from holocron_scrapy.records.rows import item_row

    return item_row(it)


async def ensure_awaited(result):
    if hasattr(result, "__await__"):
        await result


async def _through_pipelines(pipelines, it):
    for pipeline in pipelines:
        it = await pipeline.process_item(it)
    return it


@deferred_f_from_coro_f
async def test_a_duplicate_found_late_keeps_the_lake_file_its_record_names(tmp_path):
    """A -> B -> A: the third fetch passes the change filter (B is held), finds A's file owned by
    A's record (kept, not overwritten), is a duplicate for the records (the file stays), and makes A
    the version held: a fourth fetch of A is unchanged. ``scrapy lake verify`` finds nothing."""
    from scrapy import signals

    from holocron_scrapy.commands.lake import Report, verify

    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    lake = tmp_path / "lake"
    settings = {"HOLOCRON_RECORDS_URL": url, "HOLOCRON_LAKE_DIR": str(lake), "HOLOCRON_RECORDS_FLUSH_INTERVAL": 0.01}
    crawler = get_crawler(settings_dict=settings)
    pipelines = [cls.from_crawler(crawler) for cls in (ChangeFilterPipeline, JsonLakePipeline, IngestRecordsPipeline)]
    for pipeline in pipelines:
        pipeline.open_spider()

    async def run(it):
        try:
            return await _through_pipelines(pipelines, it)
        finally:
            crawler.signals.send_catch_log(signals.item_scraped, item=it, response=None)

    first = await run(item("A", payload={"v": "a"}))
    path = lake / first.lake_path
    await run(item("A", payload={"v": "b"}))
    again = item("A", payload={"v": "a"}, run_id="later")
    with pytest.raises(DropItem, match="already stored"):
        await run(again)
    assert again.lake_path == first.lake_path  # one name per resource and content
    assert json.loads(path.read_text("utf-8"))["metadata"]["ingest_id"] == first.ingest_id  # kept as it was
    stats = crawler.stats.get_stats()
    assert stats["lake/kept"] == 1 and stats["records/duplicates"] == 1 and "lake/replaced" not in stats
    with pytest.raises(DropItem, match="unchanged"):
        await run(item("A", payload={"v": "a"}))
    store = open_record_store(url)
    found = list(verify(store, lake))
    store.close()
    assert found[:-1] == [] and isinstance(found[-1], Report) and found[-1].files == 2
    for pipeline in pipelines:
        await ensure_awaited(pipeline.close_spider())


@deferred_f_from_coro_f
async def test_a_duplicate_that_wrote_over_a_records_file_restores_it(tmp_path):
    """A race: another worker stored this version between our lake write and our insert, and our
    document went over its file. The records pipeline gives the file back to the stored record."""
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    lake = tmp_path / "lake"
    ours = await _lake_item(tmp_path, payload={"v": 1})
    theirs = item("A", payload={"v": 1}, run_id="another worker")
    theirs.lake_path = ours.lake_path
    store = open_record_store(url)
    store.insert([item_row_of(theirs)], record_versions=True)
    store.close()
    crawler, pipeline = _records_pipeline(url, HOLOCRON_RECORDS_FLUSH_INTERVAL=0.01, HOLOCRON_LAKE_DIR=str(lake))
    with pytest.raises(DropItem, match="already stored"):
        await pipeline.process_item(ours)
    restored = json.loads((lake / ours.lake_path).read_text("utf-8"))
    assert restored["metadata"]["ingest_id"] == theirs.ingest_id and restored["metadata"]["run_id"] == "another worker"
    assert restored["payload"] == {"v": 1}
    await pipeline.close_spider()


@deferred_f_from_coro_f
async def test_an_orphan_lake_file_is_replaced_by_the_next_write_of_its_version(tmp_path):
    """A file no record names (a kill between the lake write and the record) is replaced."""
    lake = tmp_path / "lake"
    orphan = await _lake_item(tmp_path, payload={"v": 1})
    crawler = get_crawler(
        settings_dict={"HOLOCRON_LAKE_DIR": str(lake), "HOLOCRON_RECORDS_URL": f"sqlite:///{tmp_path / 'r.sqlite3'}"}
    )
    pipeline = JsonLakePipeline.from_crawler(crawler)
    pipeline.open_spider()
    rerun = await pipeline.process_item(item("A", payload={"v": 1}, run_id="rerun"))
    assert rerun.lake_path == orphan.lake_path and len(list(lake.rglob("*.json"))) == 1
    assert json.loads((lake / rerun.lake_path).read_text("utf-8"))["metadata"]["ingest_id"] == rerun.ingest_id
    assert crawler.stats.get_value("lake/replaced") == 1
    assert await pipeline.process_item(rerun) is rerun  # the same write again: nothing to do
    assert crawler.stats.get_value("lake/same") == 1 and crawler.stats.get_value("lake/written") == 1
