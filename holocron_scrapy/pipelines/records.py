"""Insert one IngestRecords row per item, in batches, off the reactor thread.

``process_item`` returns only once the item's batch is committed, so whatever runs
after the pipelines (the frontier's acknowledgement) never runs ahead of storage.
A batch is written when it holds ``HOLOCRON_RECORDS_BATCH_SIZE`` rows or its oldest row
has waited ``HOLOCRON_RECORDS_FLUSH_INTERVAL`` seconds; a kill loses at most that batch,
whose work items are not acknowledged and so are fetched again.
A row whose resource already has a record with the same hash (another worker won the race, or
the page went back to an earlier content) is dropped (``records/duplicates``), and the lake file
is never removed if a record names it: the lake names a file by resource and content
(:mod:`holocron_scrapy.pipelines.lake`), so the stored record's file is the same path; that
record's version becomes the one held, and a file this item wrote over it (a race) is rewritten
from the record. The rows and their ``seen_resources`` versions are committed in one
transaction, so "seen" is never recorded ahead of the record.

A batch that fails removes the lake files its items wrote (a file without a record would be a
stray); a file whose metadata names another ingest id (a record's, or an orphan's) is left alone.
A database server that is gone (down, unreachable, our connection dropped) is waited for: the
batch is written again when it is back (:func:`holocron_scrapy.db.outage.ride_out`; one log line
each way), its items wait meanwhile, for up to ``HOLOCRON_DB_OUTAGE_LIMIT`` seconds. When the
database itself refuses the write (read-only, full, or gone past that limit) it is a storage
fault (:mod:`holocron_scrapy.pipelines.faults`): one error line, the crawl stops with
``fatal_storage``, the items' work items are handed back. :meth:`IngestRecordsPipeline.abandon`
(a forced stop) removes the lake files of rows still waiting for their batch.

Stats: ``records/written``, ``records/written/<outcome>``, ``records/batches``, ``records/duplicates``,
``records/abandoned``, ``records/outages``, ``records/outage_seconds``.

Settings: ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_RECORDS_SQLSERVER``, ``HOLOCRON_RECORDS_BATCH_SIZE``,
``HOLOCRON_RECORDS_FLUSH_INTERVAL``, ``HOLOCRON_LAKE_DIR``, ``HOLOCRON_DB_OUTAGE_LIMIT``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet import defer, threads

from holocron_scrapy import defaults
from holocron_scrapy.db.outage import OutageWatch, ride_out
from holocron_scrapy.db.targets import RECORDS, crawl_store_target
from holocron_scrapy.pipelines.faults import FaultHandler, handed_back, is_storage_error
from holocron_scrapy.reactor import get_reactor
from holocron_scrapy.records.rows import item_row
from holocron_scrapy.records.store import RecordStore, open_record_store
from holocron_scrapy.records.versions import VersionStore

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)


class IngestRecordsPipeline:
    def __init__(
        self,
        url: str,
        *,
        sqlserver_config: dict[str, Any] | None = None,
        batch_size: int = defaults.RECORDS_BATCH_SIZE,
        flush_interval: float = defaults.RECORDS_FLUSH_INTERVAL,
        stats: StatsCollector | None = None,
        lake_dir: str | None = None,
        faults: FaultHandler | None = None,
        outage: OutageWatch | None = None,
    ):
        self.url = url
        self.faults = faults
        self.outage = outage
        self.lake_dir = lake_dir
        self.sqlserver_config = sqlserver_config
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.stats = stats
        self.store: RecordStore | None = None
        self._rows: list[dict[str, Any]] = []
        self._waiters: list[defer.Deferred] = []
        self._timer: Any = None
        self._lock = defer.DeferredLock()
        self._abandoned = False  # a forced stop: nothing more is stored
        # Batches handed to the writer thread, not finished yet (id -> rows), and which committed.
        self._batches: dict[int, list[dict[str, Any]]] = {}
        self._committed: set[int] = set()
        self._stop = threading.Event()
        self._batch_ids = itertools.count()
        self._writing = threading.Lock()  # held by the writer thread while it inserts

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> IngestRecordsPipeline:
        s = crawler.settings
        records = crawl_store_target(RECORDS, s)
        return cls(
            records.url,
            sqlserver_config=records.sqlserver_config,
            batch_size=s.getint("HOLOCRON_RECORDS_BATCH_SIZE"),
            flush_interval=s.getfloat("HOLOCRON_RECORDS_FLUSH_INTERVAL"),
            stats=crawler.stats,
            lake_dir=s.get("HOLOCRON_LAKE_DIR") or defaults.LAKE_DIR,
            faults=FaultHandler.of(crawler),
            outage=OutageWatch.of_records(crawler),
        )

    def open_spider(self) -> None:
        self.store = open_record_store(self.url, sqlserver_config=self.sqlserver_config)

    async def close_spider(self) -> None:
        await maybe_deferred_to_future(self.flush())
        if self.store is not None:
            self.store.close()
            self.store = None

    async def process_item(self, item: Any) -> Any:
        if self.store is None or self._abandoned:  # closed, or a forced stop: store nothing more
            self._remove_lake_file(item)
            raise handed_back(item, "the records store is closed")
        done: defer.Deferred = defer.Deferred()
        self._rows.append(item_row(item))
        self._waiters.append(done)
        if len(self._rows) >= self.batch_size:
            self.flush()
        elif self._timer is None:
            reactor = get_reactor()

            self._timer = reactor.callLater(self.flush_interval, self.flush)
        try:
            inserted = await maybe_deferred_to_future(done)
        except Exception as exc:
            self._remove_lake_file(item)  # no record: the file would be a stray
            if self._abandoned:
                raise handed_back(item, "a forced stop gave up its records batch") from exc
            if self.faults is not None and is_storage_error(exc):
                raise self.faults.hand_back(item, "Records write", self.url_path(), exc) from exc
            raise
        if not inserted:  # this very version is stored already (its record keeps its lake file)
            if self.stats is not None:
                self.stats.inc_value("records/duplicates")
            raise DropItem(f"already stored by another worker: {item!r}", log_level="DEBUG")
        return item

    def _remove_lake_file(self, item: Any) -> None:
        """Remove the lake file of an item (or row) that gets no record, if it holds that item."""
        from holocron_scrapy.pipelines.lake import remove_own_lake_file

        adapter = item if isinstance(item, dict) else ItemAdapter(item)
        path, ingest_id = adapter.get("lake_path"), adapter.get("ingest_id")
        if path and ingest_id and self.lake_dir:
            try:
                remove_own_lake_file(Path(self.lake_dir).expanduser().resolve(), path, ingest_id)
            except OSError as exc:  # the lake itself may be what failed
                logger.warning("Could not remove the lake file %s of an unstored record: %s", path, exc)

    def url_path(self) -> str:
        """The records database as named in an error line (a SQLite path, else the store's own
        description, which masks passwords)."""
        if self.url.startswith("sqlite:///"):
            return str(Path(self.url[len("sqlite:///") :]).expanduser().resolve())
        describe = getattr(self.store, "describe", None)
        return describe() if callable(describe) else self.url.split("://", 1)[0] + "://..."

    def abandon(self, wait: float = 10.0) -> int:
        """A forced stop: give up the rows not committed yet and remove their lake files (their
        work items are not acknowledged, so the next run fetches them again). A batch the writer
        thread is inserting right now is waited for (up to *wait* seconds): committed, its files
        stay; batches not started are never inserted. Returns how many rows were given up."""
        self._abandoned = True
        self._stop.set()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        rows, self._rows, self._waiters = self._rows, [], []
        if self._writing.acquire(timeout=wait):
            try:
                for batch, batch_rows in list(self._batches.items()):
                    if batch not in self._committed:
                        rows += batch_rows
                self._batches.clear()
            finally:
                self._writing.release()
        else:
            logger.warning("A records batch is still being written after %g s: its lake files are kept", wait)
        for row in rows:
            self._remove_lake_file(row)
        if self.stats is not None and rows:
            self.stats.inc_value("records/abandoned", len(rows))
        return len(rows)

    def _insert(self, rows: list[dict[str, Any]], batch: int) -> list[bool]:
        """Runs in the writer thread."""
        assert self.store is not None
        with self._writing:
            if self._stop.is_set():
                raise RuntimeError("a forced stop gave up this records batch")
            inserted = self.store.insert(rows, record_versions=True)
            self._committed.add(batch)
            duplicates = [row for row, ok in zip(rows, inserted, strict=True) if not ok]
            if duplicates and self.lake_dir:
                self._settle_duplicates(duplicates)
            return inserted

    def _settle_duplicates(self, rows: list[dict[str, Any]]) -> None:
        """Rows whose version was stored already (writer thread): the file at a row's lake path is
        the stored record's when that record names the same path (kept, rewritten from the record
        if this row's write went over it); a file of another path is a stray copy (removed if it
        holds this row)."""
        import json

        from holocron_scrapy.pipelines.lake import remove_own_lake_file, restore_lake_file

        assert self.store is not None and self.lake_dir is not None
        lake = Path(self.lake_dir).expanduser().resolve()
        keys = [(r["source_system"], r["source_name"], r["resource_type"], r["resource_id"]) for r in rows]
        held = VersionStore(self.store).held(keys)
        for key, row in zip(keys, rows, strict=True):
            version = held.get(key)
            record = version.record if version is not None else None
            try:
                if not row.get("lake_path"):
                    continue
                if record is not None and record.get("lake_path") == row["lake_path"]:
                    if record["hash_sha256"] == row["hash_sha256"]:
                        restore_lake_file(lake, {**row, "payload": json.loads(row["payload"])}, record)
                else:
                    remove_own_lake_file(lake, row["lake_path"], row["ingest_id"])
            except OSError as exc:  # the lake itself may be what failed
                logger.warning("Could not settle the lake file %s of a duplicate: %s", row.get("lake_path"), exc)

    def flush(self) -> defer.Deferred:
        """Write the buffered rows; their items' ``process_item`` calls return afterwards."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters = [], []
        if not rows:
            return defer.succeed(None)
        batch = next(self._batch_ids)
        self._batches[batch] = rows
        return self._lock.run(self._write, rows, waiters, batch)

    @defer.inlineCallbacks
    def _write(self, rows: list[dict[str, Any]], waiters: list[defer.Deferred], batch: int):
        assert self.store is not None

        def insert() -> Any:
            return maybe_deferred_to_future(threads.deferToThread(self._insert, rows, batch))

        try:
            if self.outage is None:
                inserted = yield threads.deferToThread(self._insert, rows, batch)
            else:  # a server that is gone is waited for (up to HOLOCRON_DB_OUTAGE_LIMIT), in order
                inserted = yield deferred_from_coro(ride_out(insert, self.outage))
        except Exception as exc:  # every item of the batch fails; none is acknowledged
            for waiter in waiters:
                waiter.errback(exc)
            return
        finally:
            self._batches.pop(batch, None)
            self._committed.discard(batch)
        if self.stats is not None:
            self.stats.inc_value("records/written", sum(inserted))
            self.stats.inc_value("records/batches")
            for row, ok in zip(rows, inserted, strict=True):  # per outcome: the run summary counts pages
                if ok:
                    self.stats.inc_value(f"records/written/{row.get('outcome') or 'ok'}")
        for waiter, ok in zip(waiters, inserted, strict=True):
            waiter.callback(ok)
