"""Drop items whose payload is unchanged since the version of the resource we hold.

Records are append-only: a resource gets a new record (and lake file) only when its payload
hash differs from the version held, as :mod:`holocron_scrapy.records.versions` answers it (one
batched lookup on ``seen_resources``, in a worker thread: items arriving together share one
query, nothing waits on the database on the reactor thread). Nothing is judged "unchanged"
against a version that is not stored yet: when the same version of a resource is already on its
way to the store (two redirects to one page in flight), the second item waits until the first has
left the pipelines, then is compared with what was actually stored (so a first copy lost to a
storage fault does not take the second one with it).

An unchanged item whose stored record has lost its lake file (missing, or not the payload the
record names: see ``scrapy lake verify``) restores that file at the record's ``lake_path``, from
this payload (same hash) and the record's metadata, before the item is dropped: stat
``lake/restored``. The check and the restore run in a worker thread. A restore that fails, and a
version lookup whose records database is gone, are storage faults (:mod:`holocron_scrapy.pipelines.faults`).

Stats: ``recrawl/unchanged``, ``recrawl/changed``, ``records/new_resources``,
``records/repeated_failures`` (a ``failed`` record identical to the last one: dropped too, but not
counted as unchanged), ``lake/restored``.

Settings: ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_RECORDS_SQLSERVER``, ``HOLOCRON_LAKE_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer, threads

from holocron_scrapy import defaults
from holocron_scrapy.db.targets import RECORDS, crawl_store_target
from holocron_scrapy.items import FAILED
from holocron_scrapy.pipelines.faults import FaultHandler, is_storage_error
from holocron_scrapy.records.store import open_record_store
from holocron_scrapy.records.versions import VersionLookup

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

Key = tuple[str, str, str, str]


class UnchangedError(DropItem):
    """The payload equals the newest stored record of the same resource."""


class ChangeFilterPipeline:
    def __init__(
        self,
        url: str,
        *,
        sqlserver_config: dict[str, Any] | None = None,
        stats: StatsCollector | None = None,
        lake_dir: str | None = None,
        faults: FaultHandler | None = None,
        versions: VersionLookup | None = None,
    ):
        self.url = url
        self.sqlserver_config = sqlserver_config
        self.stats = stats
        self.lake_dir = Path(lake_dir).expanduser().resolve() if lake_dir else None
        self.faults = faults
        self.versions = versions or VersionLookup(
            lambda: open_record_store(url, sqlserver_config=sqlserver_config), stats=stats
        )
        self._owns_versions = versions is None
        # Passed this filter, not yet out of the pipelines: key -> {item id: (hash, settled)}.
        self._inflight: dict[Key, dict[int, tuple[str, defer.Deferred]]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ChangeFilterPipeline:
        s = crawler.settings
        records = crawl_store_target(RECORDS, s)
        pipeline = cls(
            records.url,
            sqlserver_config=records.sqlserver_config,
            stats=crawler.stats,
            lake_dir=s.get("HOLOCRON_LAKE_DIR") or defaults.LAKE_DIR,
            faults=FaultHandler.of(crawler),
            versions=VersionLookup.of(crawler),
        )
        for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
            crawler.signals.connect(pipeline.settled, signal=signal)
        return pipeline

    def open_spider(self) -> None:
        self.versions.open()  # a records database that cannot be opened stops the crawl at its start

    def close_spider(self) -> None:
        waiting = [settled for entries in self._inflight.values() for _, settled in entries.values()]
        self._inflight.clear()
        for settled in waiting:
            if not settled.called:
                settled.callback(None)
        if self._owns_versions:
            self.versions.close()

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
        # In flight from now on, before the lookup yields to the reactor: another copy of this version
        # arriving meanwhile waits for this one (released by ``settled`` once it left the pipelines, or
        # here at once if this pipeline drops it).
        self._inflight.setdefault(key, {})[id(item)] = (digest, defer.Deferred())
        try:
            return await self._check(item, adapter, key, digest)
        except BaseException:
            self.settled(item)
            raise

    async def _check(self, item: Any, adapter: ItemAdapter, key: Key, digest: str) -> Any:
        try:
            held = (await self.versions.held([key])).get(key)
        except Exception as exc:  # the records database is gone: a storage fault, as for a failed write
            if self.faults is None or not is_storage_error(exc):
                raise
            raise self.faults.hand_back(item, "Records read", self.url, exc) from exc
        if held is None:
            self._inc("records/new_resources")
        elif held.hash_sha256 == digest:
            if held.record is not None and self.lake_dir is not None and held.record.get("lake_path"):
                await self._restore_if_lost(item, held.record)
            # A failure that repeats is no page found unchanged (the run summary counts those as successes).
            self._inc("records/repeated_failures" if adapter.get("outcome") == FAILED else "recrawl/unchanged")
            raise UnchangedError(f"unchanged since the last stored record: {item!r}", log_level="DEBUG")
        else:
            self._inc("recrawl/changed")
        return item

    async def _restore_if_lost(self, item: Any, record: dict[str, Any]) -> None:
        """Rewrite the lake file of the stored *record* if it is missing or corrupt (checked and
        written in a worker thread)."""
        from holocron_scrapy.pipelines.lake import restore_lake_file

        assert self.lake_dir is not None
        try:
            restored = await maybe_deferred_to_future(
                threads.deferToThread(restore_lake_file, self.lake_dir, item, record)
            )
        except OSError as exc:
            if self.faults is None:
                raise
            path = str(exc.filename or self.lake_dir / record["lake_path"])
            raise self.faults.hand_back(item, "Lake write", path, exc) from exc
        if restored:
            self._inc("lake/restored")

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)
