"""The error taxonomy: one place decides whether a failure is transient or permanent.

* **Transient** (retried with backoff: first by the retry middleware at the download level,
  ``RETRY_TIMES`` times; then by the frontier, up to ``HOLOCRON_FRONTIER_MAX_ATTEMPTS`` attempts):
  a malformed or truncated body and a body that is not the expected JSON (whatever the HTTP
  status), connection resets and refusals, timeouts, DNS failures, lost data, HTTP 408, 425, 429
  and every 5xx, and the MediaWiki API errors ``maxlag``, ``ratelimited``, ``readonly`` and the
  internal database errors (``defaults.MEDIAWIKI_RETRYABLE_ERRORS``, ``internal_api_error_DB*``).
  An unknown exception is transient too: it costs a bounded number of retries, never a page.
* **Permanent** (stored as ``failed`` at once): invalid titles (the API's ``invalid`` pages),
  404, 410 and the other 4xx statuses, requests refused before download (robots.txt, offsite),
  and every other MediaWiki API error (e.g. ``badvalue``, ``toomanyvalues``: a bad parameter).
  A permanent API error that could come from one title (:func:`could_be_one_title`) makes the
  MediaWiki spider split its batch until the bad titles are isolated.

Each verdict has a ``kind`` for the stats key ``failures/<transient|permanent>/<kind>`` (see
:attr:`Verdict.stat`), counted once per failed attempt by the retry middleware (downloads) or
the spiders (what only they see).

Pure: no I/O; reads no settings (callers pass ``RETRY_HTTP_CODES`` and the retryable API codes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
    UnsupportedURLSchemeError,
)
from twisted.internet import error as net
from twisted.python.failure import Failure
from twisted.web.client import PartialDownloadError, ResponseFailed, ResponseNeverReceived

from holocron_scrapy import defaults

TRANSIENT = "transient"
PERMANENT = "permanent"

#: Statuses that say "try again later" (besides every 5xx).
TRANSIENT_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class Verdict:
    """What went wrong, and whether trying again may help."""

    transient: bool
    kind: str
    detail: str = ""

    @property
    def category(self) -> str:
        return TRANSIENT if self.transient else PERMANENT

    @property
    def stat(self) -> str:
        """The stats key counting this kind of failure: ``failures/<category>/<kind>``."""
        return f"failures/{self.category}/{self.kind}"

    def __str__(self) -> str:
        return f"{self.category} {self.kind}" + (f": {self.detail}" if self.detail else "")


# -- HTTP statuses --------------------------------------------------------------------------------


def classify_status(status: int, retry_codes: frozenset[int] | set[int] = frozenset()) -> Verdict | None:
    """The verdict on an HTTP status; None for a success or a redirect (< 400), unless *retry_codes*
    (``RETRY_HTTP_CODES``) lists it."""
    if status in retry_codes or status in TRANSIENT_STATUSES or 500 <= status <= 599:
        return Verdict(True, f"http_{status}")
    if status < 400:
        return None
    return Verdict(False, f"http_{status}")


# -- exceptions -----------------------------------------------------------------------------------

_EXCEPTION_KINDS: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((CannotResolveHostError, net.DNSLookupError), "dns"),
    ((DownloadTimeoutError, net.TimeoutError, net.TCPTimedOutError, TimeoutError), "timeout"),
    ((DownloadConnectionRefusedError, net.ConnectionRefusedError), "connection_refused"),
    ((ResponseNeverReceived,), "connection"),  # a ResponseFailed before any byte of the answer
    ((ResponseDataLossError, ResponseFailed, PartialDownloadError), "truncated"),  # a body cut short
    (
        (
            DownloadFailedError,
            net.ConnectionLost,
            net.ConnectionDone,
            net.ConnectError,
            ConnectionError,
        ),
        "connection",
    ),
)


def failure_error(failure: Failure) -> BaseException:
    """The exception a Twisted Failure holds (Twisted types ``Failure.value`` as optional: it is
    None only between ``Failure.__new__`` and ``__init__``, which raises when there is no error)."""
    error = failure.value
    assert error is not None, "a Failure holds its exception"
    return error


def classify_exception(exc: BaseException) -> Verdict:
    """The verdict on a download exception (or a Failure's value)."""
    if isinstance(exc, IgnoreRequest):  # robots.txt, offsite, max size: asking again gives the same
        response = getattr(exc, "response", None)  # HttpError carries the response
        if response is not None and getattr(response, "status", None):
            verdict = classify_status(int(response.status))
            if verdict is not None:
                return verdict
        return Verdict(False, "not_fetched", str(exc))
    if isinstance(exc, UnsupportedURLSchemeError):
        return Verdict(False, "unsupported_url", _describe(exc))
    for types, kind in _EXCEPTION_KINDS:
        if isinstance(exc, types):
            return Verdict(True, kind, _describe(exc))
    return Verdict(True, "exception_" + type(exc).__name__, _describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- MediaWiki API answers ------------------------------------------------------------------------


def is_retryable_api_error(code: str, retryable_codes: tuple[str, ...] = defaults.MEDIAWIKI_RETRYABLE_ERRORS) -> bool:
    return code in retryable_codes or code.startswith("internal_api_error_DB")


def classify_api_error(
    code: str, info: str = "", retryable_codes: tuple[str, ...] = defaults.MEDIAWIKI_RETRYABLE_ERRORS
) -> Verdict:
    """The verdict on a MediaWiki ``error.code`` (they arrive with HTTP 200)."""
    return Verdict(is_retryable_api_error(code, retryable_codes), f"api_{code}", info)


def malformed(detail: str) -> Verdict:
    """A body that is not the JSON answer expected: cut short, an HTML error page, a PHP fatal."""
    return Verdict(True, "malformed_body", detail)


def decode_api_body(
    body: bytes, retryable_codes: tuple[str, ...] = defaults.MEDIAWIKI_RETRYABLE_ERRORS
) -> tuple[Any, Verdict | None]:
    """Decode a MediaWiki API body once: ``(object, None)`` for a JSON object without an error,
    ``(object, verdict)`` for an API error, ``(None, verdict)`` for anything that is not a JSON
    object (the verdict is then transient ``malformed_body``)."""
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        prefix = body[:60].decode("utf-8", "replace").strip()
        return None, malformed(f"not JSON ({exc}); body starts {prefix!r}")
    if not isinstance(decoded, dict):
        return None, malformed(f"JSON {type(decoded).__name__}, not an object")
    error = decoded.get("error")
    if isinstance(error, dict):
        code = str(error.get("code", "unknown"))
        info = str(error.get("info") or error.get("*") or "")
        return decoded, classify_api_error(code, info, retryable_codes)
    return decoded, None


_PARAMETER = re.compile(r'parameter "?([A-Za-z0-9_]+)"?|"([A-Za-z0-9_]+)" parameter')


def could_be_one_title(code: str, info: str, *, retryable: bool) -> bool:
    """Whether a permanent API error on a batch may come from some of its titles, so that
    splitting the batch isolates them. An error that names another parameter (``action``,
    ``prop`` ...) would fail every part: no."""
    if retryable:
        return False
    named = {a or b for a, b in _PARAMETER.findall(info)}
    return not named or named <= {"titles"}
