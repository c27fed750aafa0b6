"""Check the ``HOLOCRON_*`` settings and the spider arguments once, before the engine starts.

A bad value (``-s HOLOCRON_FRONTIER_ORDER=bsf``, ``-s HOLOCRON_FRONTIER_CLAIM_SIZE=abc``, an unknown
state URL scheme, an unwritable ``HOLOCRON_LAKE_DIR``) raises :class:`ConfigError` naming the
setting, the same one-line error (and exit status 2) as the same mistake in the YAML file. An
unknown ``HOLOCRON_*`` name is only warned about, with the closest known name (difflib). An
unknown spider argument is an error naming it and listing the accepted ones (Scrapyd's own
arguments, ``_job`` and the like, are accepted).

Settings read: every ``HOLOCRON_*`` setting. Stats written: none.
"""

from __future__ import annotations

import difflib
import errno
import logging
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from holocron_scrapy import defaults
from holocron_scrapy.config import parse_duration
from holocron_scrapy.db.connection import ensure_sqlite_owned, parse_store_url
from holocron_scrapy.errors import ConfigError, StoreError
from holocron_scrapy.sources import Boolean, Integer, Number

logger = logging.getLogger(__name__)

PREFIX = "HOLOCRON_"
Check = Callable[[Any, str], None]


_INTEGER: TypeAdapter[int] = TypeAdapter(Integer)
_NUMBER: TypeAdapter[float] = TypeAdapter(Number)
_BOOLEAN: TypeAdapter[bool] = TypeAdapter(Boolean)


def _number(value: Any, name: str, kind: type, low: float | None, strict: bool) -> float:
    """Coerced by the types the source models use (holocron_scrapy.sources), so that ``-s``, ``-a`` and
    the YAML accept the same spellings."""
    try:
        number = (_INTEGER if kind is int else _NUMBER).validate_python(value)
    except ValidationError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"expected {what}, got {value!r}", key=name) from None
    if low is not None and (number <= low if strict else number < low):
        raise ConfigError(f"must be {'more than' if strict else 'at least'} {low:g}, got {value!r}", key=name)
    return number


def integer(low: int | None = None) -> Check:
    def check(value: Any, name: str) -> None:
        _number(value, name, int, low, False)

    return check


def number(low: float | None = None, *, strict: bool = False) -> Check:
    def check(value: Any, name: str) -> None:
        _number(value, name, float, low, strict)

    return check


def boolean(value: Any, name: str) -> None:
    try:
        _BOOLEAN.validate_python(value.strip() if isinstance(value, str) else value)
    except ValidationError:
        raise ConfigError(f"expected true or false, got {value!r}", key=name) from None


def choice(*options: str) -> Check:
    def check(value: Any, name: str) -> None:
        if str(value).strip().lower() not in options:
            raise ConfigError(f"expected {' or '.join(options)}, got {value!r}", key=name)

    return check


def text(value: Any, name: str) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {value!r}", key=name)


SQLITE_HEADER = b"SQLite format 3\x00"


def store_url(value: Any, name: str) -> None:
    """A store URL with a known scheme; for SQLite, a file that is a SQLite database (or empty), or
    a place where one can be created."""
    url = parse_store_url(value, setting=name)
    if url.dialect != "sqlite" or url.path in (None, ":memory:"):
        return
    path = Path(url.path)
    if not path.exists():
        writable_dir(str(path.parent), name)
        return
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror or exc}", key=name) from None
    if header and header != SQLITE_HEADER:
        raise ConfigError(f"{str(path)!r} is not a SQLite database", key=name)
    if header:  # a SQLite file of another application is refused (read-only look, nothing written)
        try:
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open {str(path)!r}: {exc}", key=name) from None
        try:
            ensure_sqlite_owned(conn, str(path))
        except StoreError as exc:
            raise ConfigError(str(exc), key=name) from None
        finally:
            conn.close()


def http_url(value: Any, name: str) -> None:
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("expected an http(s) URL", key=name)  # the value may carry a token: not shown


def duration(value: Any, name: str) -> None:
    parse_duration(value, key=name)


def run_id(value: Any, name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(value)):
        raise ConfigError(f"expected letters, digits, '_', '.' or '-' (it names a file), got {value!r}", key=name)


def writable_dir(value: Any, name: str) -> None:
    """A directory that exists and is writable, or can be created (nothing is created here)."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ConfigError(f"expected a directory, got {value!r}", key=name)
    path = Path(value).expanduser().resolve()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{str(path)!r} cannot be used: {str(probe)!r} is not a directory", key=name)
    try:  # os.access says yes to root everywhere: try it (a file created and removed at once)
        if not os.access(probe, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        fd, tmp = tempfile.mkstemp(prefix=".holocron-check-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        what = "is not writable" if probe == path else f"cannot be created in {str(probe)!r}"
        raise ConfigError(f"{str(path)!r} {what}: {exc.strerror or exc}", key=name) from None


def any_value(value: Any, name: str) -> None:
    return None


#: Every ``HOLOCRON_*`` setting with the check of its value.
CHECKS: dict[str, Check] = {
    "HOLOCRON_CONFIG": text,
    "HOLOCRON_CONTACT": text,
    "HOLOCRON_RUN_ID": run_id,
    "HOLOCRON_LAKE_DIR": writable_dir,
    "HOLOCRON_RECORDS_URL": store_url,
    "HOLOCRON_RECORDS_SQLSERVER": any_value,
    "HOLOCRON_RECORDS_BATCH_SIZE": integer(1),
    "HOLOCRON_RECORDS_FLUSH_INTERVAL": number(0, strict=True),
    "HOLOCRON_STATE_URL": store_url,
    "HOLOCRON_STATE_SQLSERVER": any_value,
    "HOLOCRON_FRONTIER_ORDER": choice("bfs", "dfs"),
    "HOLOCRON_FRONTIER_CLAIM_SIZE": integer(1),
    "HOLOCRON_FRONTIER_LEASE_SECONDS": number(0, strict=True),
    "HOLOCRON_FRONTIER_MAX_ATTEMPTS": integer(1),
    "HOLOCRON_FRONTIER_RETRY_BACKOFF": number(0),
    "HOLOCRON_FRONTIER_FLUSH_INTERVAL": number(0, strict=True),
    "HOLOCRON_FRONTIER_PROGRESS_INTERVAL": number(0),
    "HOLOCRON_FRONTIER_FILL_BATCHES": boolean,
    "HOLOCRON_FRONTIER_POLITENESS": choice("shared", "local"),
    "HOLOCRON_FRONTIER_POLITENESS_LEASE": number(0, strict=True),
    "HOLOCRON_SEED_CHUNK_SIZE": integer(1),
    "HOLOCRON_DB_OUTAGE_LIMIT": number(0),
    "HOLOCRON_DUPEFILTER_CACHE_SIZE": integer(0),
    "HOLOCRON_RETRY_BACKOFF_BASE": number(0),
    "HOLOCRON_RETRY_BACKOFF_MAX": number(0),
    "HOLOCRON_MEDIAWIKI_RETRYABLE_ERRORS": any_value,
    "HOLOCRON_RECRAWL_AFTER": duration,
    "HOLOCRON_FULL_REFRESH": boolean,
    "HOLOCRON_SYNC_MARGIN": number(0),
    "HOLOCRON_NOTIFY_WEBHOOK": http_url,
    "HOLOCRON_NOTIFY_TIMEOUT": number(0, strict=True),
    "HOLOCRON_SHUTDOWN_TIMEOUT": number(0, strict=True),
    "HOLOCRON_GC_FREEZE": boolean,
    "HOLOCRON_METRICS_PORT": integer(0),
    "HOLOCRON_SOURCE_NAME": any_value,
    "HOLOCRON_SOURCE_SYSTEM": any_value,
}


def known_settings() -> set[str]:
    """The checked names, plus ``HOLOCRON_<NAME>`` for every default of :mod:`holocron_scrapy.defaults`
    (so a setting added there with its default is known before it gets a check here)."""
    return set(CHECKS) | {PREFIX + name for name in vars(defaults) if name.isupper()}


def closest(name: str, known: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_settings(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """``(name, closest known name or None)`` for each unknown ``HOLOCRON_*`` name."""
    known = known_settings()
    stems = {name.removeprefix(PREFIX) for name in known}  # the shared prefix would make everything close

    def suggestion(name: str) -> str | None:
        found = closest(name.removeprefix(PREFIX), stems)
        return PREFIX + found if found else None

    return [(n, suggestion(n)) for n in sorted(names) if n.startswith(PREFIX) and n not in known]


def check_settings(settings: Any) -> None:
    """Validate every ``HOLOCRON_*`` setting of *settings* (Scrapy Settings or a mapping); raise
    :class:`ConfigError` naming the first bad one, and warn about unknown names."""
    names = [name for name in _names(settings) if name.startswith(PREFIX)]
    for name, suggestion in unknown_settings(names):
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        logger.warning("Unknown setting %s is ignored%s", name, hint)
    for name in names:
        check = CHECKS.get(name)
        value = settings.get(name)
        if check is None or value is None:
            continue
        check(value, name)


def _names(settings: Any) -> list[str]:
    if isinstance(settings, Mapping):
        return list(settings)
    return [name for name, _ in settings.items()]


def check_arguments(kwargs: Mapping[str, Any], accepted: Iterable[str], spider: str) -> None:
    """Refuse a spider argument that *accepted* does not name (names starting with ``_``, which
    Scrapyd adds, such as ``_job``, are let through)."""
    accepted = sorted(set(accepted))
    for name in kwargs:
        if name.startswith("_") or name in accepted:
            continue
        suggestion = closest(name, accepted)
        hint = f" (did you mean {suggestion}?)" if suggestion else ""
        raise ConfigError(
            f"unknown argument of the {spider!r} spider{hint}; accepted: {', '.join(accepted)}", key=f"-a {name}"
        )
