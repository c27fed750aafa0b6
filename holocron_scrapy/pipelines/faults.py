"""Storage faults: a lake or records write that fails stops the crawl, and loses nothing.

When the lake directory is full, read-only or gone, or the records database refuses a write or
goes away (a SQLite file on a full or read-only disk; a PostgreSQL server that is down, refuses
connections to the database, or dropped our connection mid-write; the engine's pool has already
tried a fresh connection by then), retrying would only fail again (and an item judged
"unchanged" on its retry would be acknowledged with nothing stored). So the first fault logs ONE
error line naming the path and the cause, and closes the spider with the reason ``fatal_storage``
(a ``fatal_`` reason makes the run ``failed``). Every item hit by the fault is handed back: its
work item ids are taken off the item, so the frontier neither acknowledges nor fails them; they
stay leased until the scheduler closes and gives its leases back, and the next run fetches them
again. The item is then dropped with :class:`StorageFault` (a ``DropItem``, logged at DEBUG: no
traceback per item).

Stats: ``storage/faults`` (items handed back), ``storage/fatal`` (1 once the crawl was stopped).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

CLOSE_REASON = "fatal_storage"


class StorageFault(DropItem):
    """An item that could not be stored because storage failed; its work items were handed back."""


def handed_back(item: Any, why: str) -> StorageFault:
    """Take the work item ids off *item* (the frontier then neither acks nor fails them: they stay
    leased until the scheduler gives its leases back) and return the exception to drop it with."""
    adapter = ItemAdapter(item)
    if "work_item_ids" in adapter.field_names():
        adapter["work_item_ids"] = []
    return StorageFault(f"{why}; handed back: {item!r}", log_level="DEBUG")


def describe(exc: BaseException) -> str:
    """The cause of a storage error in a few words (``No space left on device``); for an error that
    SQLAlchemy wrapped, the driver's own message on one line, masked (without SQLAlchemy's statement)."""
    import sqlalchemy.exc

    from holocron_scrapy.db.engine import db_error_text

    if isinstance(exc, sqlalchemy.exc.DBAPIError) and isinstance(exc.orig, BaseException):
        if isinstance(exc.orig, sqlite3.Error):
            return describe(exc.orig)
        return db_error_text(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.strerror or os.strerror(exc.errno)
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def is_storage_error(exc: BaseException) -> bool:
    """Whether *exc* means storage itself failed (disk full, read-only, gone, locked, the database
    server unreachable or our connection to it lost ...), not a bad row."""
    import psycopg
    import sqlalchemy.exc

    from holocron_scrapy.errors import StoreError

    if isinstance(exc, OSError):
        return exc.errno in _STORAGE_ERRNOS or exc.errno is None
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        # A lost connection whatever the class; else the driver's error decides (SQLite's
        # "database or disk is full" arrives as an OperationalError, a bad row as IntegrityError).
        if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.InterfaceError):
            return True
        if exc.orig is not None and is_storage_error(exc.orig):
            return True
        return isinstance(exc, sqlalchemy.exc.OperationalError)
    if isinstance(exc, sqlalchemy.exc.DisconnectionError):  # the pool found its connection dead
        return True
    # psycopg: the server is gone, refuses us (AdminShutdown, database dropped, too many
    # connections, disk full) or the connection is closed, or the database is read-only (a standby);
    # not a constraint violation or bad SQL.
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction)):
        return True
    # sqlite3: OperationalError (read-only, full, locked, gone) and the other DatabaseErrors; not a bad row.
    return isinstance(exc, (sqlite3.DatabaseError, StoreError)) and not isinstance(exc, sqlite3.IntegrityError)


_STORAGE_ERRNOS = {
    errno.ENOSPC,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EIO,
    errno.EDQUOT,
    errno.EFBIG,
    errno.ESTALE,
}


class FaultHandler:
    """One per crawl (``crawler.holocron_storage_faults``): the lake and records pipelines report
    their faults here; the first one stops the crawl."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.stats = getattr(crawler, "stats", None)
        self.fatal: str | None = None  # the one error line, once a fault happened

    @classmethod
    def of(cls, crawler: Crawler) -> FaultHandler:
        handler = getattr(crawler, "holocron_storage_faults", None)
        if handler is None:
            handler = cls(crawler)
            crawler.holocron_storage_faults = handler  # type: ignore[attr-defined]  # one per crawl
        return handler

    def stopping(self, item: Any) -> StorageFault:
        """Hand back an item that reached storage after the crawl began to stop for a fault."""
        if self.stats is not None:
            self.stats.inc_value("storage/faults")
        return handed_back(item, "storage failed, the crawl is stopping")

    def hand_back(self, item: Any, what: str, path: str, exc: BaseException) -> StorageFault:
        """Record the fault, stop the crawl (first time), take the work item ids off *item* and
        return the exception to raise for it."""
        fault = handed_back(item, f"{what} failed ({describe(exc)})")
        if self.stats is not None:
            self.stats.inc_value("storage/faults")
        self.stop(what, path, exc)
        return fault

    def stop(self, what: str, path: str, exc: BaseException) -> None:
        """Stop the crawl for a fault of *what* at *path* (the first fault only: one error line,
        ``storage/fatal``, close reason ``fatal_storage``); for a fault that hit no item."""
        if self.fatal is None:
            self.fatal = f"{what} failed: {path}: {describe(exc)}; stopping the crawl"
            logger.error(self.fatal)
            if self.stats is not None:
                self.stats.set_value("storage/fatal", 1)
            self._close()

    def _close(self) -> None:
        try:
            engine = self.crawler.engine
        except (AttributeError, RuntimeError):  # no crawl running (a pipeline used on its own)
            return
        if engine is None or getattr(engine, "spider", None) is None:
            return
        from scrapy.utils.defer import deferred_from_coro

        deferred_from_coro(engine.close_spider_async(reason=CLOSE_REASON)).addErrback(
            lambda failure: logger.error("Could not stop the crawl: %s", failure.getErrorMessage())
        )
