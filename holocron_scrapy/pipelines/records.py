"""Insert one IngestRecords row per item, in batches, off the reactor thread.

``process_item`` returns only once the item's batch is committed, so whatever runs
after the pipelines (the frontier's acknowledgement) never runs ahead of storage.
A batch is written when it holds ``HOLOCRON_RECORDS_BATCH_SIZE`` rows or its oldest row
has waited ``HOLOCRON_RECORDS_FLUSH_INTERVAL`` seconds; a kill loses at most that batch,
whose work items are not acknowledged and so are fetched again.
A row whose resource already has a record with the same hash (another worker won the
race) is dropped and its lake file removed. Stats: ``records/written``, ``records/batches``,
``records/duplicates``.

Settings: ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_RECORDS_SQLSERVER``, ``HOLOCRON_RECORDS_BATCH_SIZE``,
``HOLOCRON_RECORDS_FLUSH_INTERVAL``, ``HOLOCRON_LAKE_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer, threads

from holocron_scrapy import defaults
from holocron_scrapy.records.store import RecordStore, item_row, open_record_store
from holocron_scrapy.records.versions import VersionStore


class IngestRecordsPipeline:
    def __init__(
        self,
        url: str,
        *,
        sqlserver_config: dict[str, Any] | None = None,
        batch_size: int = defaults.RECORDS_BATCH_SIZE,
        flush_interval: float = defaults.RECORDS_FLUSH_INTERVAL,
        stats: Any = None,
        lake_dir: str | None = None,
    ):
        self.url = url
        self.lake_dir = lake_dir
        self.sqlserver_config = sqlserver_config
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.stats = stats
        self.store: RecordStore | None = None
        self.versions: VersionStore | None = None
        self._rows: list[dict[str, Any]] = []
        self._waiters: list[defer.Deferred] = []
        self._timer: Any = None
        self._lock = defer.DeferredLock()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> IngestRecordsPipeline:
        s = crawler.settings
        return cls(
            s.get("HOLOCRON_RECORDS_URL") or defaults.RECORDS_URL,
            sqlserver_config=s.getdict("HOLOCRON_RECORDS_SQLSERVER"),
            batch_size=s.getint("HOLOCRON_RECORDS_BATCH_SIZE", defaults.RECORDS_BATCH_SIZE),
            flush_interval=s.getfloat("HOLOCRON_RECORDS_FLUSH_INTERVAL", defaults.RECORDS_FLUSH_INTERVAL),
            stats=crawler.stats,
            lake_dir=s.get("HOLOCRON_LAKE_DIR") or defaults.LAKE_DIR,
        )

    def open_spider(self) -> None:
        self.store = open_record_store(self.url, sqlserver_config=self.sqlserver_config)
        self.versions = VersionStore(self.store)

    async def close_spider(self) -> None:
        await maybe_deferred_to_future(self.flush())
        if self.store is not None:
            self.store.close()
            self.store = None

    async def process_item(self, item: Any) -> Any:
        done: defer.Deferred = defer.Deferred()
        self._rows.append(item_row(item))
        self._waiters.append(done)
        if len(self._rows) >= self.batch_size:
            self.flush()
        elif self._timer is None:
            from twisted.internet import reactor

            self._timer = reactor.callLater(self.flush_interval, self.flush)
        inserted = await maybe_deferred_to_future(done)
        if not inserted:  # another worker stored this very version first
            self._remove_lake_file(item)
            if self.stats is not None:
                self.stats.inc_value("records/duplicates")
            raise DropItem(f"already stored by another worker: {item!r}", log_level="DEBUG")
        return item

    def _remove_lake_file(self, item: Any) -> None:
        path = ItemAdapter(item).get("lake_path")
        if path and self.lake_dir:
            (Path(self.lake_dir) / path).unlink(missing_ok=True)

    def _insert(self, rows: list[dict[str, Any]]) -> list[bool]:
        assert self.store is not None
        inserted = self.store.insert(rows)
        if self.versions is not None:
            self.versions.upsert([row for row, ok in zip(rows, inserted, strict=True) if ok])
        return inserted

    def flush(self) -> defer.Deferred:
        """Write the buffered rows; their items' ``process_item`` calls return afterwards."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters = [], []
        if not rows:
            return defer.succeed(None)
        return self._lock.run(self._write, rows, waiters)

    @defer.inlineCallbacks
    def _write(self, rows: list[dict[str, Any]], waiters: list[defer.Deferred]):
        assert self.store is not None
        try:
            inserted = yield threads.deferToThread(self._insert, rows)
        except Exception as exc:  # every item of the batch fails; none is acknowledged
            for waiter in waiters:
                waiter.errback(exc)
            return
        if self.stats is not None:
            self.stats.inc_value("records/written", sum(inserted))
            self.stats.inc_value("records/batches")
        for waiter, ok in zip(waiters, inserted, strict=True):
            waiter.callback(ok)
