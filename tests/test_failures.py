"""holocron_scrapy.failures: the one error taxonomy (pure functions)."""

from __future__ import annotations

import json

import pytest
from scrapy import Request
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
    UnsupportedURLSchemeError,
)
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet import error as net
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from holocron_scrapy import defaults
from holocron_scrapy.failures import (
    PERMANENT,
    TRANSIENT,
    Verdict,
    classify_api_error,
    classify_exception,
    classify_status,
    could_be_one_title,
    decode_api_body,
)
from holocron_scrapy.mediawiki.errors import is_retryable


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 507, 522, 599])
def test_busy_and_server_statuses_are_transient(status: int) -> None:
    verdict = classify_status(status)
    assert verdict == Verdict(True, f"http_{status}")
    assert verdict.category == TRANSIENT and verdict.stat == f"failures/transient/http_{status}"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 414, 451])
def test_client_statuses_are_permanent(status: int) -> None:
    verdict = classify_status(status)
    assert verdict is not None and not verdict.transient and verdict.category == PERMANENT


@pytest.mark.parametrize("status", [200, 204, 301, 304])
def test_success_and_redirects_are_no_failure(status: int) -> None:
    assert classify_status(status) is None


def test_configured_retry_codes_add_transient_statuses() -> None:
    assert classify_status(404, {404}) == Verdict(True, "http_404")
    assert classify_status(418, {404}) == Verdict(False, "http_418")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (CannotResolveHostError("x"), "dns"),
        (net.DNSLookupError("x"), "dns"),
        (DownloadTimeoutError("x"), "timeout"),
        (net.TimeoutError(), "timeout"),
        (net.TCPTimedOutError(), "timeout"),
        (DownloadConnectionRefusedError("x"), "connection_refused"),
        (net.ConnectionRefusedError(), "connection_refused"),
        (ResponseDataLossError("x"), "truncated"),
        (ResponseFailed(["x"]), "truncated"),
        (net.ConnectionLost(), "connection"),
        (net.ConnectionDone(), "connection"),
        (ConnectionResetError(), "connection"),
        (ResponseNeverReceived(["x"]), "connection"),
        (DownloadFailedError("x"), "connection"),
        (RuntimeError("who knows"), "exception_RuntimeError"),
    ],
)
def test_network_failures_are_transient(exc: Exception, kind: str) -> None:
    verdict = classify_exception(exc)
    assert verdict.transient and verdict.kind == kind


def test_requests_refused_before_download_are_permanent() -> None:
    assert classify_exception(IgnoreRequest("Forbidden by robots.txt")) == Verdict(
        False, "not_fetched", "Forbidden by robots.txt"
    )
    assert not classify_exception(UnsupportedURLSchemeError("ftp")).transient


@pytest.mark.parametrize(("status", "transient"), [(404, False), (410, False), (403, False), (503, True), (429, True)])
def test_http_errors_are_judged_by_their_status(status: int, transient: bool) -> None:
    request = Request("http://site.test/x")
    error = HttpError(Response(request.url, status=status, request=request), "Ignoring non-200 response")
    assert classify_exception(error) == Verdict(transient, f"http_{status}")


@pytest.mark.parametrize("code", [*defaults.MEDIAWIKI_RETRYABLE_ERRORS, "internal_api_error_DBUnexpectedError"])
def test_retryable_api_errors_are_transient(code: str) -> None:
    assert classify_api_error(code).transient and is_retryable(code)


@pytest.mark.parametrize("code", ["badvalue", "toomanyvalues", "invalidtitle", "readapidenied", "unknown_action"])
def test_other_api_errors_are_permanent(code: str) -> None:
    verdict = classify_api_error(code, "info")
    assert verdict == Verdict(False, f"api_{code}", "info") and not is_retryable(code)


def test_configured_codes_make_api_errors_transient() -> None:
    assert classify_api_error("badvalue", retryable_codes=("badvalue",)).transient


@pytest.mark.parametrize(
    "body",
    [
        b'{"batchcomplete":true,"query":{"pages":[{"title":"Sarv',  # cut short
        b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",  # an error page with HTTP 200
        b"<b>Fatal error</b>: Allowed memory size exhausted",  # PHP fatal
        b"",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe{}",  # not UTF-8
    ],
)
def test_a_body_that_is_no_json_object_is_transient(body: bytes) -> None:
    decoded, verdict = decode_api_body(body)
    assert decoded is None and verdict is not None
    assert verdict.transient and verdict.stat == "failures/transient/malformed_body"


def test_api_bodies_decode_once_with_their_verdict() -> None:
    good = {"batchcomplete": True, "query": {"pages": []}}
    assert decode_api_body(json.dumps(good).encode()) == (good, None)
    info = "Waiting for db: 7 seconds lagged."
    lagged = {"error": {"code": "maxlag", "info": info}}
    assert decode_api_body(json.dumps(lagged).encode()) == (lagged, Verdict(True, "api_maxlag", info))
    bad = {"error": {"code": "badvalue", "*": "See the API help."}}
    assert decode_api_body(json.dumps(bad).encode())[1] == Verdict(False, "api_badvalue", "See the API help.")


@pytest.mark.parametrize(
    ("code", "info", "retryable", "expected"),
    [
        ("badvalue", 'Unrecognized value for parameter "titles": x.', False, True),
        ("toomanyvalues", 'Too many values supplied for parameter "titles". The limit is 50.', False, True),
        ("internal_api_error_InvalidArgumentException", "[abc] Exception caught: bad title", False, True),
        ("badvalue", 'Unrecognized value for parameter "action": nonexistentaction.', False, False),
        ("missingparam", 'The "prop" parameter must be set.', False, False),
        ("maxlag", "Waiting for db", True, False),  # transient: retried, never split
    ],
)
def test_which_permanent_errors_may_come_from_one_title(code: str, info: str, retryable: bool, expected: bool) -> None:
    assert could_be_one_title(code, info, retryable=retryable) is expected
