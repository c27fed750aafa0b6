"""A database that cannot be reached: telling it apart from a bad row, and waiting it out with one log line each way.

Both databases of a crawl may go away for a while (a PostgreSQL restart or failover, a SQL Server patch
window, a network blip) and come back. The crawl waits instead of failing:

* the frontier's state database (:mod:`holocron_scrapy.frontier.scheduler`): every failed call is
  retried by its background loop; claimed downloads go on meanwhile;
* the records database (:mod:`holocron_scrapy.pipelines.records`, :mod:`holocron_scrapy.records.versions`):
  a write or lookup that failed because the server is gone (:func:`is_server_gone`) is retried with a
  growing pause (:func:`ride_out`); its items wait. Other errors of the records database (a full disk,
  a read-only file, a bad row) are not waited for: they are storage faults at once
  (:mod:`holocron_scrapy.pipelines.faults`).

:class:`OutageWatch` logs ONE warning when an outage starts (naming the error) and one line when it
ends, not a traceback per retry; an error that is not a lost connection is logged with its
traceback the first time it is seen. Past ``HOLOCRON_DB_OUTAGE_LIMIT`` seconds (default 600)
:meth:`OutageWatch.failed` returns True and the caller gives up: the frontier stops the crawl with
``fatal_frontier_unreachable``, the records side with ``fatal_storage``; both are exit status 1, and
what was not acknowledged goes back to pending on the next run.

Settings read: ``HOLOCRON_DB_OUTAGE_LIMIT`` (:func:`outage_limit`). Stats written:
``<what>/outages`` (outages begun) and ``<what>/outage_seconds`` (their total length, counted when
each ends), with ``<what>`` ``frontier`` or ``records``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Pause before the first retry of a call that found the server gone, doubled up to the maximum.
RETRY_FIRST, RETRY_MAX = 0.5, 5.0


def outage_limit(settings: Any) -> float:
    return settings.getfloat("HOLOCRON_DB_OUTAGE_LIMIT")


def _driver_error(exc: BaseException) -> BaseException:
    import sqlalchemy.exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def is_server_gone(exc: BaseException) -> bool:
    """The database server is down, unreachable, refuses connections or dropped ours: waiting may cure it.

    Not a full disk, a read-only database or a bad statement, and never SQLite (a file, not a server)."""
    import sqlalchemy.exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.DisconnectionError):
        return True
    orig = _driver_error(exc)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a requirement
        pass
    else:
        if isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError)):
            return not isinstance(orig, (psycopg.errors.DiskFull, psycopg.errors.ReadOnlySqlTransaction))
    # pyodbc (imported lazily by the SQL Server engine): SQLSTATE class 08 is a connection exception.
    state = getattr(orig, "args", (None,))[0] if type(orig).__module__ == "pyodbc" else None
    return isinstance(state, str) and state.startswith("08")


def is_connection_error(exc: BaseException) -> bool:
    """A lost, refused or locked connection (a server gone, a SQLite file busy or unreachable), or a
    timeout: something that waiting may cure, logged without a traceback."""
    if is_server_gone(exc):
        return True
    orig = _driver_error(exc)
    return isinstance(orig, (sqlite3.OperationalError, ConnectionError, TimeoutError, OSError))


def describe(exc: BaseException) -> str:
    """One line: the driver error's class and the first line of its message (SQLAlchemy's adds SQL and a link)."""
    orig = _driver_error(exc)
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}".rstrip(": ")


class OutageWatch:
    """One outage at a time of one database (*what*: ``state database``, ``records database``)."""

    def __init__(
        self,
        limit: float,
        *,
        what: str = "state database",
        waiting: str = "what needs it waits, the rest goes on",
        stat_prefix: str = "frontier",
        stats: StatsCollector | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limit = limit
        self.what = what
        self.waiting = waiting
        self.stat_prefix = stat_prefix
        self.stats = stats
        self.clock = clock
        self.since: float | None = None
        self._seen: set[str] = set()

    @classmethod
    def of_records(cls, crawler: Crawler) -> OutageWatch:
        """The crawler's watch over its records database (shared by the lookups and the writes)."""
        watch = getattr(crawler, "holocron_records_outage", None)
        if watch is None:
            watch = cls(
                outage_limit(crawler.settings),
                what="records database",
                waiting="items wait for their records, downloads already under way go on",
                stat_prefix="records",
                stats=crawler.stats,
            )
            crawler.holocron_records_outage = watch  # type: ignore[attr-defined]  # one per crawl
        return watch

    @property
    def down(self) -> bool:
        return self.since is not None

    def elapsed(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since

    def failed(self, exc: BaseException, *, spider: Any = None) -> bool:
        """Note a failed call; True once the outage has lasted past the limit."""
        line = describe(exc)
        if self.since is None:
            self.since = self.clock()
            self._inc("outages", 1)
            logger.warning(
                "The %s cannot be reached (%s); %s; retrying until it is back (giving up after %.0f s)",
                self.what,
                line,
                self.waiting,
                self.limit,
                extra={"spider": spider},
            )
        if not is_connection_error(exc) and line not in self._seen:
            self._seen.add(line)
            logger.error("Unexpected %s error", self.what, exc_info=exc, extra={"spider": spider})
        return self.elapsed() > self.limit

    def succeeded(self, *, spider: Any = None) -> None:
        if self.since is None:
            return
        gone = self.elapsed()
        self.since = None
        self._seen.clear()
        self._inc("outage_seconds", round(gone, 1))
        logger.warning("The %s is back after %.1f s; the crawl goes on", self.what, gone, extra={"spider": spider})

    def _inc(self, key: str, value: float) -> None:
        if self.stats is not None and value:
            self.stats.inc_value(f"{self.stat_prefix}/{key}", value)  # type: ignore[arg-type]  # seconds: a float


async def ride_out(call: Callable[[], Awaitable[T]], watch: OutageWatch, *, spider: Any = None) -> T:
    """Await ``call()``; while it fails because the server is gone, wait and call again (one line when
    the outage starts, one when it ends). Re-raises any other error, and the last one past the limit.
    Runs in a coroutine that Scrapy drives (on the asyncio reactor an asyncio task), so it awaits
    Deferreds through ``maybe_deferred_to_future``."""
    from scrapy.utils.defer import maybe_deferred_to_future
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    pause = RETRY_FIRST
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not is_server_gone(exc) or watch.failed(exc, spider=spider):
                raise
            await maybe_deferred_to_future(deferLater(reactor, pause, lambda: None))
            pause = min(pause * 2, RETRY_MAX)
            continue
        watch.succeeded(spider=spider)
        return result
