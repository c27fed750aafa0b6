"""Keeping track of a state database that cannot be reached, with one log line each way.

The scheduler's background loop calls :meth:`OutageWatch.failed` when a database call fails and
:meth:`OutageWatch.succeeded` when one works. The first failure logs one warning naming the
error; later failures of the same outage log nothing (no traceback per tick); the first success
after it logs how long the database was gone. An error that is not a lost or refused connection
(a bug, a full disk) is logged with its traceback the first time it is seen, since no amount of
waiting may cure it, and counts towards the same limit.

:meth:`OutageWatch.failed` returns True once the outage has lasted longer than the limit
(``HOLOCRON_FRONTIER_OUTAGE_LIMIT``, read by the scheduler): the crawl then stops with the close
reason :data:`CLOSE_REASON` (a ``fatal_`` reason: the run is ``failed``, exit code 1).

Settings read: none (the scheduler passes the limit). Stats written: ``frontier/outages`` (outages
begun), ``frontier/outage_seconds`` (their total length, counted when each ends).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

CLOSE_REASON = "fatal_frontier_unreachable"


def is_connection_error(exc: BaseException) -> bool:
    """A lost, refused or locked database connection: something that waiting may cure."""
    try:
        import sqlalchemy.exc as sa_exc
    except ImportError:  # pragma: no cover - SQLAlchemy is a requirement
        sa_exc = None
    if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
    if isinstance(exc, (sqlite3.OperationalError, ConnectionError, TimeoutError, OSError)):
        return True
    if sa_exc is not None and isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def describe(exc: BaseException) -> str:
    """One line: the error's class and first line of its message (SQLAlchemy's adds SQL and a link)."""
    try:
        import sqlalchemy.exc as sa_exc

        if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
            exc = exc.orig
    except ImportError:  # pragma: no cover
        pass
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class OutageWatch:
    def __init__(
        self,
        limit: float,
        *,
        what: str = "state database",
        stats: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limit = limit
        self.what = what
        self.stats = stats
        self.clock = clock
        self.since: float | None = None
        self._seen: set[str] = set()

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
            if self.stats is not None:
                self.stats.inc_value("frontier/outages")
            logger.warning(
                "Frontier: the %s cannot be reached (%s); requests already claimed go on, new claims wait"
                " and acknowledgements stay buffered; retrying until it is back (giving up after %.0f s)",
                self.what,
                line,
                self.limit,
                extra={"spider": spider},
            )
        if not is_connection_error(exc) and line not in self._seen:
            self._seen.add(line)
            logger.error("Frontier: unexpected %s error", self.what, exc_info=exc, extra={"spider": spider})
        return self.elapsed() > self.limit

    def succeeded(self, *, spider: Any = None) -> None:
        if self.since is None:
            return
        gone = self.elapsed()
        self.since = None
        self._seen.clear()
        if self.stats is not None:
            self.stats.inc_value("frontier/outage_seconds", round(gone, 1))
        logger.warning(
            "Frontier: the %s is back after %.1f s; the crawl goes on", self.what, gone, extra={"spider": spider}
        )
