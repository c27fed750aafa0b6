"""Drop items whose payload is unchanged since the last stored record of the resource.

Records are append-only: a resource gets a new record (and lake file) only when its payload
hash differs from the newest STORED one. Nothing is judged "unchanged" against a version that
is not stored yet: when the same version of a resource is already on its way to the store (two
redirects to one page in flight), the second item waits until the first has left the pipelines,
then is compared with what was actually stored (so a first copy lost to a storage fault does not
take the second one with it).

An unchanged item whose stored record has lost its lake file (missing, or not the payload the
record names: see ``scrapy lake verify``) restores that file at the record's ``lake_path``, from
this payload (same hash) and the record's metadata, before the item is dropped: stat
``lake/restored``. A restore that fails is a storage fault (:mod:`holocron_scrapy.pipelines.faults`).

Stats: ``recrawl/unchanged``, ``recrawl/changed``, ``records/new_resources``,
``records/repeated_failures`` (a ``failed`` record identical to the last one: dropped too, but not
counted as unchanged), ``lake/restored``.

Settings: ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_RECORDS_SQLSERVER``, ``HOLOCRON_LAKE_DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer

from holocron_scrapy import defaults
from holocron_scrapy.items import FAILED, payload_hash
from holocron_scrapy.pipelines.faults import FaultHandler
from holocron_scrapy.records.store import RecordStore, format_time, open_record_store

Key = tuple[str, str, str, str]


class UnchangedError(DropItem):
    """The payload equals the newest stored record of the same resource."""


def restored_document(item: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The lake document of *record* rebuilt from *item* (same payload hash): the record's own
    metadata (ingest id, fetch time, request ...) over the item's."""
    from holocron_scrapy.pipelines.lake import lake_document

    document = lake_document(item)
    metadata = document["metadata"]
    for column, value in record.items():
        if column in ("request_headers", "response_headers") and isinstance(value, str):
            value = json.loads(value)
        metadata[column] = format_time(value)
    return document


def lake_file_matches(path: Path, record: dict[str, Any]) -> bool:
    """Whether the lake file at *path* holds the payload and identity *record* names."""
    try:
        document = json.loads(path.read_bytes())
        metadata = document["metadata"]
        return (
            payload_hash(document["payload"]) == record["hash_sha256"]
            and metadata.get("ingest_id") == record["ingest_id"]
            and metadata.get("hash_sha256") == record["hash_sha256"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


class ChangeFilterPipeline:
    def __init__(
        self,
        url: str,
        *,
        sqlserver_config: dict[str, Any] | None = None,
        stats: Any = None,
        lake_dir: str | None = None,
        faults: FaultHandler | None = None,
    ):
        self.url = url
        self.sqlserver_config = sqlserver_config
        self.stats = stats
        self.lake_dir = Path(lake_dir).expanduser().resolve() if lake_dir else None
        self.faults = faults
        self.store: RecordStore | None = None
        # Passed this filter, not yet out of the pipelines: key -> {item id: (hash, settled)}.
        self._inflight: dict[Key, dict[int, tuple[str, defer.Deferred]]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ChangeFilterPipeline:
        s = crawler.settings
        pipeline = cls(
            s.get("HOLOCRON_RECORDS_URL") or defaults.RECORDS_URL,
            sqlserver_config=s.getdict("HOLOCRON_RECORDS_SQLSERVER"),
            stats=crawler.stats,
            lake_dir=s.get("HOLOCRON_LAKE_DIR") or defaults.LAKE_DIR,
            faults=FaultHandler.of(crawler),
        )
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(pipeline.settled, signal=signal)
        return pipeline

    def open_spider(self) -> None:
        self.store = open_record_store(self.url, sqlserver_config=self.sqlserver_config)

    def close_spider(self) -> None:
        waiting = [settled for entries in self._inflight.values() for _, settled in entries.values()]
        self._inflight.clear()
        for settled in waiting:
            if not settled.called:
                settled.callback(None)
        if self.store is not None:
            self.store.close()
            self.store = None

    @staticmethod
    def _key(adapter: ItemAdapter) -> Key:
        return (adapter["source_system"], adapter["source_name"], adapter["resource_type"], adapter["resource_id"])

    def settled(self, item: Any, **kwargs: Any) -> None:
        """An item left the pipelines (stored, dropped or failed): release whoever waits on it."""
        try:
            key = self._key(ItemAdapter(item))
        except (TypeError, KeyError):
            return
        entries = self._inflight.get(key)
        entry = entries.pop(id(item), None) if entries is not None else None
        if entries is not None and not entries:
            del self._inflight[key]
        if entry is not None and not entry[1].called:
            entry[1].callback(None)

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        key = self._key(adapter)
        digest = adapter["hash_sha256"]
        while same := [d for h, d in self._inflight.get(key, {}).values() if h == digest]:
            await maybe_deferred_to_future(same[0])  # the same version in flight: wait for its outcome
        assert self.store is not None
        latest = self.store.latest_record(*key)
        if latest is None:
            self._inc("records/new_resources")
        elif latest["hash_sha256"] == digest:
            self._restore_if_lost(item, latest)
            # A failure that repeats is no page found unchanged (the run summary counts those as successes).
            self._inc("records/repeated_failures" if adapter.get("outcome") == FAILED else "recrawl/unchanged")
            raise UnchangedError(f"unchanged since the last stored record: {item!r}", log_level="DEBUG")
        else:
            self._inc("recrawl/changed")
        self._inflight.setdefault(key, {})[id(item)] = (digest, defer.Deferred())
        return item

    def _restore_if_lost(self, item: Any, record: dict[str, Any]) -> None:
        """Rewrite the lake file of the stored *record* if it is missing or corrupt."""
        from holocron_scrapy.pipelines.lake import encode_document, write_atomically

        if self.lake_dir is None or not record.get("lake_path"):
            return
        path = self.lake_dir / record["lake_path"]
        if lake_file_matches(path, record):
            return
        try:
            if not self.lake_dir.is_dir():
                raise FileNotFoundError(2, "the lake directory is gone", str(self.lake_dir))
            write_atomically(path, encode_document(restored_document(item, record)))
        except OSError as exc:
            if self.faults is None:
                raise
            raise self.faults.hand_back(item, "Lake write", str(exc.filename or path), exc) from exc
        self._inc("lake/restored")

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)
