"""Secrets: one place that knows them and masks them.

Every secret value the crawl learns (a source's auth secret, ``INGEST_SQLSERVER_PASSWORD``, the
userinfo and query values of ``HOLOCRON_NOTIFY_WEBHOOK``) is registered here; :func:`mask_text`
replaces each occurrence of a registered value by ``***``. A value is masked where it stands on
its own, never inside a longer word: with the password ``x``, "does not exist" stays intact while
"PWD=x;" becomes "PWD=***;".

:func:`install` (called for every crawl, idempotent) puts a log record factory in place that masks
every log message and traceback before any handler, Scrapy's, Scrapyd's log file or a test's, sees
it; :class:`SecretFilter` does the same as a :class:`logging.Filter` for handlers of one's own.

Settings read: ``HOLOCRON_NOTIFY_WEBHOOK``, ``HOLOCRON_STATE_URL``, ``HOLOCRON_RECORDS_URL`` (via
:func:`register_settings`). Environment read:
``INGEST_SQLSERVER_PASSWORD``, ``HOLOCRON_NOTIFY_WEBHOOK``. Stats written: none.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit, urlunsplit

MASK = "***"
SQLSERVER_PASSWORD_ENV = "INGEST_SQLSERVER_PASSWORD"
WEBHOOK_ENV = "HOLOCRON_NOTIFY_WEBHOOK"

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _variants(value: str) -> set[str]:
    """The forms a secret may take in text: as is, percent-encoded, and base64 (for Basic auth)."""
    forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
    forms.add(base64.b64encode(value.encode("utf-8")).decode("ascii"))
    return {f for f in forms if f}


def register(*values: str | None) -> None:
    """Remember secret values; every later :func:`mask_text` masks them."""
    global _pattern
    new = {form for v in values if v for form in _variants(str(v))}
    with _lock:
        if new <= _secrets:
            return
        _secrets.update(new)
        # Longest first, so a secret containing another is masked whole. A match must not be
        # preceded or followed by a letter or digit: values are masked, not parts of words.
        alternatives = "|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True))
        _pattern = re.compile(rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])")


def registered() -> frozenset[str]:
    return frozenset(_secrets)


def forget_all() -> None:
    """Forget every registered secret (tests)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def mask_text(text: str, extra: Iterable[str] = ()) -> str:
    """*text* with every registered secret (and every value of *extra*) replaced by ``***``."""
    extra = [e for e in extra if e]
    if extra:
        alternatives = "|".join(re.escape(s) for s in sorted(extra, key=len, reverse=True))
        text = re.sub(rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])", MASK, text)
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None and text else text


def url_secrets(url: str) -> list[str]:
    """The parts of *url* that may be credentials: the userinfo and every query value."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [p for p in (parts.username, parts.password) if p]
    found += [value for _, value in parse_qsl(parts.query, keep_blank_values=False)]
    return found


def mask_url(url: str) -> str:
    """*url* with its userinfo and every query value replaced by ``***`` (keys and path kept)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(f"{key}={MASK}" if value else key for key, value in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def register_environment(environ: Mapping[str, str] = os.environ) -> None:
    """Register the secrets the environment holds: the SQL Server password, webhook tokens."""
    register(environ.get(SQLSERVER_PASSWORD_ENV))
    webhook = environ.get(WEBHOOK_ENV)
    if webhook:
        register(*url_secrets(webhook))


def odbc_secrets(conn_str: str) -> list[str]:
    """The ``PWD``/``Password`` values of an ODBC connection string (none if it is malformed)."""
    from holocron_scrapy.db.odbc import parse_odbc

    try:
        return [value for key, value in parse_odbc(conn_str) if key.lower() in ("pwd", "password") and value]
    except Exception:  # noqa: BLE001 - a malformed string is reported where it is used
        return []


def register_settings(settings: Any) -> None:
    """Register the secrets of Scrapy *settings* (``HOLOCRON_NOTIFY_WEBHOOK``; the ODBC passwords in
    ``HOLOCRON_STATE_URL``/``HOLOCRON_RECORDS_URL``, ``sqlserver://?odbc_connect=...``) and of the
    environment."""
    register_environment()
    if settings is None:
        return
    webhook = settings.get("HOLOCRON_NOTIFY_WEBHOOK")
    if webhook:
        register(*url_secrets(str(webhook)))
    for name in ("HOLOCRON_STATE_URL", "HOLOCRON_RECORDS_URL"):
        url = settings.get(name)
        if isinstance(url, str) and "odbc_connect" in url:
            for key, value in parse_qsl(urlsplit(url).query):
                if key == "odbc_connect":
                    register(*odbc_secrets(value))


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask *record*'s message and traceback in place (the message is formatted once, here)."""
    if _pattern is None:
        return record
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is logging's to report, unmasked args are not
        message = str(record.msg)
    masked = mask_text(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = mask_text(record.exc_text)
    if record.stack_info:
        record.stack_info = mask_text(record.stack_info)
    return record


class SecretFilter(logging.Filter):
    """A logging filter that masks registered secrets in every record it passes (drops none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record)
        return True


_installed: Any = None  # the record factory that was in place before install()


def install(settings: Any = None) -> None:
    """Register the secrets of *settings* and the environment, and mask every log record from now
    on (a record factory, so records of every logger and every handler, present or future, are
    covered). Idempotent."""
    global _installed
    register_settings(settings)
    with _lock:
        if _installed is not None:
            return
        previous = _installed = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return mask_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    if sys.excepthook is sys.__excepthook__:  # an uncaught traceback, printed without logging
        sys.excepthook = _masked_excepthook


def _masked_excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    sys.stderr.write(mask_text("".join(traceback.format_exception(kind, value, tb))))


def uninstall() -> None:
    """Put back the record factory :func:`install` replaced (tests)."""
    global _installed
    with _lock:
        if _installed is not None:
            logging.setLogRecordFactory(_installed)
            _installed = None
        if sys.excepthook is _masked_excepthook:
            sys.excepthook = sys.__excepthook__
