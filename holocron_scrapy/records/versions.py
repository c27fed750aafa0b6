"""Which version of a resource do we hold? One table, one lookup, batched, off the reactor.

Every check that asks it goes through :class:`VersionLookup`: the change filter (is this payload
the one stored?), the MediaWiki spider's re-crawl check (is ``lastrevid`` the stored revision?),
conditional requests (which ETag / Last-Modified to send) and deltafetch (did this page give a
successful record before?).

The source of truth is ``seen_resources``: one row per resource (primary key: the frontier's
dedupe key of ``source_system:source_name:resource_type:resource_id``) naming the version held
(``last_hash_sha256``) with its validators (revision, ETag, Last-Modified) and the time it was
fetched. It is written in the same transaction as the records (``RecordStore.insert(...,
record_versions=True)``), also for a row that finds its version stored already (another worker's
copy, or a page that went back to an earlier content), so it never runs ahead of the records and
always names a version that has its record. The latest row of ``ingest_records`` could answer
too, but it is an ``ORDER BY fetched_at_utc DESC LIMIT 1`` per resource (not batchable in one
portable statement), it cannot say that a page went back to an older stored version (the
``(resource, hash)`` unique key keeps one record per version), and it holds no validators. The
lookup joins the held version's ``ingest_records`` row (its ingest id, lake path and metadata)
through the unique ``(resource, hash_sha256)`` index, for the change filter's lake check.

:class:`VersionLookup` (one per crawler, :meth:`VersionLookup.of`) keeps the database off the
reactor thread: callers ``await held(keys)``; a server that is gone is waited for (the query is
asked again after a pause, up to ``HOLOCRON_DB_OUTAGE_LIMIT``; :mod:`holocron_scrapy.db.outage`);
keys asked for in the same reactor turn, and all keys asked for while a query runs, go into the
next query (at most one in flight, so the batches
grow with the load and an idle crawl waits for no window). Its store is opened on first use,
closed when the engine stops. Times are compared as instants (``parse_utc``), never as text.

Past the outage limit, or on any other storage fault (:func:`~holocron_scrapy.pipelines.faults.is_storage_error`:
a full or read-only disk ...), the lookup stops the crawl itself, as a failed records write does
(:class:`~holocron_scrapy.pipelines.faults.FaultHandler`: ONE error line ``Records read failed:
<url>: <cause>; stopping the crawl``, close reason ``fatal_storage``, exit status 1). Its callers,
then and until the crawl has stopped, get :class:`RecordsUnreachable` and need no handling of their
own: it is a ``CloseSpider`` (a spider callback that asked, the MediaWiki ``lastrevid`` check,
ends quietly instead of logging a traceback per request) and a ``StoreError`` (the pipelines hand
their items back). An error that is no storage fault (a bug) still reaches the caller as it is.

Settings read: ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_RECORDS_SQLSERVER`` (the records store),
``HOLOCRON_DB_OUTAGE_LIMIT``.
Stats written: ``versions/lookups`` (keys asked for), ``versions/queries`` (batched queries run);
``storage/fatal`` through the fault handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from scrapy import signals
from scrapy.exceptions import CloseSpider
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer, threads
from twisted.python.failure import Failure

from holocron_scrapy.db.outage import RETRY_FIRST, RETRY_MAX, OutageWatch, is_server_gone
from holocron_scrapy.db.targets import RECORDS, crawl_store_target
from holocron_scrapy.errors import StoreError
from holocron_scrapy.failures import failure_error
from holocron_scrapy.pipelines.faults import CLOSE_REASON, FaultHandler, describe, is_storage_error
from holocron_scrapy.reactor import get_reactor
from holocron_scrapy.records.store import RecordStore, open_record_store

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

#: ``(source_system, source_name, resource_type, resource_id)``; a resource type of None matches any.
Key = tuple[str, str, "str | None", str]
T = TypeVar("T")


def parse_utc(value: Any) -> datetime | None:
    """A stored or meta time (aware or naive UTC datetime, or its text) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


class RecordsUnreachable(CloseSpider, StoreError):
    """The version lookup gave up on the records database: the crawl is stopping (``fatal_storage``).

    A ``CloseSpider``, so that a spider callback that asked ends quietly; a ``StoreError``, so that
    a pipeline that asked hands its item back as for any storage fault."""

    def __init__(self, cause: str):
        super().__init__(CLOSE_REASON)
        self.cause = cause

    def __str__(self) -> str:
        return f"the records database cannot be read ({self.cause}); the crawl is stopping"


@dataclass(frozen=True)
class Held:
    """The version of a resource we hold."""

    resource_type: str
    resource_id: str
    hash_sha256: str | None
    revision_id: int | None
    etag: str | None
    last_modified: str | None
    fetched_at: datetime | None
    #: The ``ingest_records`` row of this version (``META_COLUMNS``, times as UTC text), if found.
    record: dict[str, Any] | None

    def stored_by(self, moment: Any) -> bool:
        """Whether this version was fetched no later than *moment* (a time or its text)."""
        limit = parse_utc(moment)
        return self.fetched_at is not None and limit is not None and self.fetched_at <= limit

    @classmethod
    def from_store(cls, version: dict[str, Any]) -> Held:
        return cls(
            resource_type=version["resource_type"],
            resource_id=version["resource_id"],
            hash_sha256=version["hash_sha256"],
            revision_id=version["revision_id"],
            etag=version["etag"],
            last_modified=version["last_modified"],
            fetched_at=parse_utc(version["last_fetched_at"]),
            record=version["record"],
        )


class VersionStore:
    """The synchronous, batched lookup on a record store; empty (disabled) without one."""

    def __init__(self, store: RecordStore | None):
        self.store = store

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def held(self, keys: Iterable[Key]) -> dict[Key, Held]:
        """The version held of each of *keys* (those not held are left out)."""
        wanted = list(dict.fromkeys(keys))
        if self.store is None or not wanted:
            return {}
        return {key: Held.from_store(v) for key, v in self.store.held_versions(wanted).items()}

    def lookup(self, source_system: str, source_name: str, resource_ids: list[str]) -> dict[str, dict[str, Any]]:
        """:meth:`held` for resource ids of any type, as version dicts by resource id (``hash_sha256``,
        ``revision_id``, ``etag``, ``last_modified``, ``last_fetched_at``)."""
        found = self.held((source_system, source_name, None, rid) for rid in resource_ids)
        return {
            key[3]: {
                "hash_sha256": v.hash_sha256,
                "revision_id": v.revision_id,
                "etag": v.etag,
                "last_modified": v.last_modified,
                "last_fetched_at": v.fetched_at,
            }
            for key, v in found.items()
        }

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        """Record the versions of stored records (rows from ``item_row``; the records pipeline does it
        in the records' own transaction instead)."""
        if self.store is not None and rows:
            self.store.record_versions(rows)


class VersionLookup:
    """:class:`VersionStore` for the reactor: batched, coalesced, in a worker thread (module docstring)."""

    def __init__(
        self,
        open_store: Callable[[], RecordStore],
        *,
        stats: StatsCollector | None = None,
        outage: OutageWatch | None = None,
        faults: FaultHandler | None = None,
        url: str = "",
    ):
        self._open_store = open_store
        self.url = url  # the records store's URL, for error lines
        self.stats = stats
        #: A server that is gone is waited for: the query is asked again after a pause (None: fail at once).
        self.outage = outage
        #: Stops the crawl on a storage fault (past the outage limit); None: callers get the raw error.
        self.faults = faults
        self._fatal: RecordsUnreachable | None = None  # once it gave up: what every caller gets
        self._pause = RETRY_FIRST
        self.versions = VersionStore(None)
        # Work waiting for the next turn: keys and their waiters, or a function and its waiter.
        self._keys: list[tuple[list[Key], defer.Deferred]] = []
        self._calls: list[tuple[Callable[[RecordStore], Any], defer.Deferred]] = []
        self._busy = False
        self._scheduled = False
        self._closed = False

    @classmethod
    def of(cls, crawler: Crawler) -> VersionLookup:
        """The crawler's lookup (made on first use, on the crawler's records store)."""
        lookup = getattr(crawler, "holocron_versions", None)
        if lookup is None:
            records = crawl_store_target(RECORDS, crawler.settings)
            url, sqlserver = records.url, records.sqlserver_config
            lookup = cls(
                lambda: open_record_store(url, sqlserver_config=sqlserver),
                stats=crawler.stats,
                outage=OutageWatch.of_records(crawler),
                faults=FaultHandler.of(crawler),
                url=url,
            )
            crawler.holocron_versions = lookup  # type: ignore[attr-defined]  # one per crawl
            crawler.signals.connect(lookup.close, signal=signals.engine_stopped)
        return lookup

    def open(self) -> RecordStore:
        """Open the store now (a pipeline's ``open_spider``: a bad database fails at the start)."""
        if self.versions.store is None:
            self.versions = VersionStore(self._open_store())
        assert self.versions.store is not None
        return self.versions.store

    def close(self) -> None:
        self._closed = True
        store, self.versions = self.versions.store, VersionStore(None)
        if store is not None:
            store.close()

    async def held(self, keys: Iterable[Key]) -> dict[Key, Held]:
        """The version held of each of *keys*, from one batched query shared with concurrent callers."""
        wanted = list(keys)
        if not wanted:
            return {}
        done: defer.Deferred = defer.Deferred()
        self._keys.append((wanted, done))
        self._schedule()
        return await maybe_deferred_to_future(done)

    async def call(self, work: Callable[[RecordStore], T]) -> T:
        """Run ``work(store)`` in the lookup's worker thread, in turn with the queries."""
        done: defer.Deferred = defer.Deferred()
        self._calls.append((work, done))
        self._schedule()
        return await maybe_deferred_to_future(done)

    def _schedule(self) -> None:
        if self._busy or self._scheduled:
            return  # the next turn starts when the running one ends
        reactor = get_reactor()

        self._scheduled = True
        reactor.callLater(0, self._turn)  # gathers what is asked for in this reactor turn

    def _turn(self) -> None:
        self._scheduled = False
        if self._busy or not (self._keys or self._calls):
            return
        if self._fatal is not None:  # the crawl is stopping for a storage fault: no more queries
            keys, self._keys = self._keys, []
            calls, self._calls = self._calls, []
            for _, waiter in [*keys, *calls]:
                waiter.errback(Failure(self._fatal))
            return
        self._busy = True
        keys, self._keys = self._keys, []
        calls, self._calls = self._calls, []
        wanted = list(dict.fromkeys(key for asked, _ in keys for key in asked))
        if self.stats is not None and wanted:
            self.stats.inc_value("versions/lookups", len(wanted))
            self.stats.inc_value("versions/queries")
        d = threads.deferToThread(self._work, wanted, [work for work, _ in calls])
        d.addBoth(self._done, keys, calls)

    def _wait_out(self, error: BaseException) -> bool:
        """Whether to wait for the server (gone, within the outage limit) rather than fail the callers."""
        if self.outage is None or self._closed or not is_server_gone(error):
            return False
        return not self.outage.failed(error)

    def _give_up(self, failure: Failure) -> Failure:
        """A storage fault stops the crawl (once) and becomes :class:`RecordsUnreachable`; other
        errors (and any error without a fault handler) are left as they are."""
        error = failure_error(failure)
        if self.faults is None or not is_storage_error(error):
            return failure
        if self._fatal is None:
            self.faults.stop("Records read", self.url, error)
            self._fatal = RecordsUnreachable(describe(error))
            self._fatal.__cause__ = error
        return Failure(self._fatal)

    def _retry(self) -> None:
        self._busy = False
        self._turn()

    def _work(self, wanted: list[Key], calls: list[Callable[[RecordStore], Any]]) -> tuple[Any, list[Any]]:
        """Runs in a worker thread: the query, then the calls (each result or its Failure)."""
        if self._closed:
            raise RuntimeError("the version lookup is closed")
        try:
            store = self.open()
            held: Any = self.versions.held(wanted)
        except Exception:
            held = Failure()
            return held, [held for _ in calls]
        results: list[Any] = []
        for work in calls:
            try:
                results.append(work(store))
            except Exception:
                results.append(Failure())
        return held, results

    def _done(self, outcome: Any, keys: list[tuple[list[Key], defer.Deferred]], calls: list[Any]) -> None:
        if isinstance(outcome, Failure):
            held, results = outcome, [outcome for _ in calls]
        else:
            held, results = outcome
        if isinstance(held, Failure):
            if self._wait_out(failure_error(held)):
                # The server is gone: ask again after a pause (the calls did not run), with what came meanwhile.
                self._keys[:0], self._calls[:0] = keys, calls
                reactor = get_reactor()

                reactor.callLater(self._pause, self._retry)
                self._pause = min(self._pause * 2, RETRY_MAX)
                return
            held = self._give_up(held)  # past the outage limit, or a fault that waiting does not cure
        results = [self._give_up(r) if isinstance(r, Failure) else r for r in results]
        if not isinstance(held, Failure) and self.outage is not None and any(asked for asked, _ in keys):
            self.outage.succeeded()  # a query ran: the server answered
            self._pause = RETRY_FIRST
        self._busy = False
        for asked, waiter in keys:
            if isinstance(held, Failure):
                waiter.errback(held)
            else:
                waiter.callback({key: held[key] for key in asked if key in held})
        for (_, waiter), result in zip(calls, results, strict=True):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        self._schedule()
