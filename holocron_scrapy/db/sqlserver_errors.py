"""What a SQL Server (pyodbc) error is: its SQLSTATE, its native error numbers, transient or not. Pure.

pyodbc raises one exception type per DB-API class and puts the SQLSTATE in ``args[0]`` and the
driver's message, with the server's error numbers in parentheses, in ``args[1]``. The stores and
``scrapy db`` decide from these whether to reconnect and retry, to skip a duplicate, or to stop.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import re
from typing import Any

#: SQLSTATEs and native error numbers worth retrying (connection loss, Azure throttling,
#: server starting up, deadlock victim).
TRANSIENT_SQLSTATES = frozenset({"08S01", "08001", "HYT00", "40001"})
TRANSIENT_ERRORS = frozenset({1205, 40613, 40501, 49918, 49919, 49920, 18401})
DUPLICATE_KEY_ERRORS = frozenset({2601, 2627})
_NATIVE = re.compile(r"\((\d{3,6})\)(?=\s*(?:\(SQL\w+\)|;|$))")
_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a pyodbc error (its first argument), if any."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], str) and _SQLSTATE.match(args[0]):
        return args[0]
    return None


def native_errors(exc: BaseException) -> set[int]:
    """SQL Server error numbers in a pyodbc message, e.g. ``... (2627) (SQLExecDirectW)``."""
    message = " ".join(str(arg) for arg in getattr(exc, "args", ()))
    return {int(number) for number in _NATIVE.findall(message)}


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: lost or refused connections (08S01, 08001, HYT00),
    Azure throttling / unavailability (40613, 40501, 49918-49920), server starting up (18401)
    and deadlock victims (1205 / SQLSTATE 40001)."""
    return sqlstate(exc) in TRANSIENT_SQLSTATES or bool(native_errors(exc) & TRANSIENT_ERRORS)


def is_duplicate_key(exc: BaseException) -> bool:
    """True when *exc* is a unique index (2601) or unique/primary key (2627) violation.

    Also true for SQLite's ``UNIQUE constraint failed``, so writers can share one check.
    """
    if native_errors(exc) & DUPLICATE_KEY_ERRORS:
        return True
    message = str(exc)
    return type(exc).__name__ == "IntegrityError" and (
        "UNIQUE constraint failed" in message or "PRIMARY KEY must be unique" in message
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_text(exc: BaseException) -> str:
    """The message of a pyodbc error (its second argument) on one line, else ``str(exc)``."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    text = args[1] if len(args) >= 2 and isinstance(args[1], str) and sqlstate(exc) else str(exc)
    return _one_line(text)
