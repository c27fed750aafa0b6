"""holocron_scrapy.middlewares.retry: Retry-After parsing, backoff, and PoliteRetryMiddleware.

Unit tests use the recorded maxlag/badvalue answers of the local MediaWiki (body and headers);
the end-to-end test makes the real local wiki report database lag during a real crawl.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.http import Response, TextResponse
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from holocron_scrapy import defaults
from holocron_scrapy.mediawiki.calls import PROBE, QUERY, ApiCall, api_call
from holocron_scrapy.middlewares.retry import (
    PoliteRetryMiddleware,
    backoff_seconds,
    retry_after_seconds,
)
from tests.support import mediawiki_server as ms
from tests.support.crawl import REPO, Workspace

FIXTURES = Path(__file__).parent / "fixtures" / "mediawiki"
API = "http://wiki.test/api.php"
URL = f"{API}?action=query&format=json&formatversion=2&maxlag=5&titles=Sarvessha"


# -- retry_after_seconds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (b"5", 5.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),  # never negative
        (b"30\r\n", 30.0),
    ],
)
def test_retry_after_delta_seconds(value: str | bytes, expected: float) -> None:
    assert retry_after_seconds(value) == expected


def test_retry_after_http_date_in_the_future() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    for value in (format_datetime(when, usegmt=True), format_datetime(when, usegmt=True).encode("latin-1")):
        seconds = retry_after_seconds(value)
        assert seconds is not None and 28.0 <= seconds <= 30.0


def test_retry_after_http_date_with_offset_and_without_zone() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=60)
    plus_two = format_datetime(when.astimezone(timezone(timedelta(hours=2))))  # "+0200"
    seconds = retry_after_seconds(plus_two)
    assert seconds is not None and 58.0 <= seconds <= 60.0
    naive = when.strftime("%a, %d %b %Y %H:%M:%S")  # no zone: read as UTC
    seconds = retry_after_seconds(naive)
    assert seconds is not None and 58.0 <= seconds <= 60.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    assert retry_after_seconds("Sun, 06 Nov 1994 08:49:37 GMT") == 0.0


@pytest.mark.parametrize("value", ["soon", "", "   ", "5 seconds", "Mon, 99 Foo 2026 99:99:99 GMT", b"\xff\xfe", "1,5"])
def test_retry_after_garbage_is_none(value: str | bytes) -> None:
    assert retry_after_seconds(value) is None


def test_retry_after_absent_is_none() -> None:
    assert retry_after_seconds(None) is None


# -- backoff_seconds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_times", "base", "cap", "expected"),
    [(0, 2.0, 300.0, 2.0), (1, 2.0, 300.0, 4.0), (3, 2.0, 300.0, 16.0), (7, 2.0, 300.0, 256.0),
     (8, 2.0, 300.0, 300.0), (20, 2.0, 300.0, 300.0), (2, 0.05, 0.2, 0.2), (1, 0.05, 0.2, 0.1), (4, 0.0, 10.0, 0.0)],
)
def test_backoff_seconds(retry_times: int, base: float, cap: float, expected: float) -> None:
    assert backoff_seconds(retry_times, base, cap) == pytest.approx(expected)


def test_backoff_seconds_never_decreases() -> None:
    waits = [backoff_seconds(n, 0.5, 30.0) for n in range(12)]
    assert waits == sorted(waits) and waits[-1] == 30.0


# -- PoliteRetryMiddleware ---------------------------------------------------------------------


def recorded(name: str) -> tuple[bytes, dict[str, str], int]:
    """Body, headers and status of a recorded MediaWiki answer."""
    meta = json.loads((FIXTURES / f"{name}.headers.json").read_text("utf-8"))
    return (FIXTURES / f"{name}.json").read_bytes(), meta["headers"], meta["status"]


def make_middleware(**settings: Any) -> tuple[Crawler, PoliteRetryMiddleware]:
    crawler = get_crawler(Spider, {
        "HOLOCRON_RETRY_BACKOFF_BASE": 0.05, "HOLOCRON_RETRY_BACKOFF_MAX": 0.3, "RETRY_TIMES": 3, **settings,
    })
    crawler.spider = crawler._create_spider("retry-test")
    return crawler, PoliteRetryMiddleware.from_crawler(crawler)


def api_request(purpose: str = QUERY, titles: list[Any] | None = None, **meta: Any) -> Request:
    return Request(URL, meta={"holocron_mediawiki": ApiCall(purpose, titles=titles), **meta}, priority=5)


def api_response(request: Request, name: str, **header_overrides: str) -> TextResponse:
    body, headers, status = recorded(name)
    return TextResponse(request.url, status=status, headers={**headers, **header_overrides}, body=body,
                        request=request)


def http_response(request: Request, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(request.url, status=status, headers=headers or {}, body=b"busy", request=request)


async def timed(mw: PoliteRetryMiddleware, request: Request, response: Response) -> tuple[Request | Response, float]:
    started = time.monotonic()
    result = await mw.process_response(request, response)
    return result, time.monotonic() - started


def test_middleware_reads_its_settings() -> None:
    _, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_BASE=0.5, HOLOCRON_RETRY_BACKOFF_MAX=7, RETRY_TIMES=4)
    assert (mw.backoff_base, mw.backoff_max, mw.max_retry_times) == (0.5, 7.0, 4)
    assert "maxlag" in mw.retryable_errors and 503 in mw.retry_http_codes


@deferred_f_from_coro_f
async def test_the_project_retries_429_and_every_5xx() -> None:
    from scrapy.settings import Settings

    from holocron_scrapy import settings
    from holocron_scrapy.addons import apply_addons

    project = Settings()
    project.setmodule(settings)
    project = apply_addons(project)
    _, mw = make_middleware(RETRY_HTTP_CODES=project.getlist("RETRY_HTTP_CODES"), HOLOCRON_RETRY_BACKOFF_MAX=0)
    request = Request("http://site.test/page")
    for status in (408, 429, 500, 501, 503, 507, 599):
        assert isinstance(await mw.process_response(request, http_response(request, status)), Request), status
    for status in (200, 304, 404, 410):
        response = http_response(request, status)
        assert await mw.process_response(request, response) is response, status


def test_the_project_replaces_scrapys_retry_middleware() -> None:
    from scrapy.settings import Settings

    from holocron_scrapy.addons import apply_addons

    project = Settings()
    project.setmodule("holocron_scrapy.settings", priority="project")
    downloader_middlewares = apply_addons(project).getdict("DOWNLOADER_MIDDLEWARES")
    assert downloader_middlewares["scrapy.downloadermiddlewares.retry.RetryMiddleware"] is None
    assert downloader_middlewares["holocron_scrapy.middlewares.retry.PoliteRetryMiddleware"] == 550


@deferred_f_from_coro_f
async def test_maxlag_is_retried_after_the_capped_retry_after() -> None:
    crawler, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=0.3)  # the server says 5 s; we cap at 0.3 s
    request = api_request(titles=["Sarvessha"])
    result, waited = await timed(mw, request, api_response(request, "maxlag_error"))
    assert isinstance(result, Request) and not isinstance(result, Response)
    assert result.url == request.url and result.dont_filter
    assert result.meta["retry_times"] == 1 and api_call(result).titles == ["Sarvessha"]
    assert api_call(result).purpose == QUERY and result.callback == request.callback
    assert 0.3 <= waited < 3.0
    stats = crawler.stats.get_stats()
    assert stats["mediawiki/api_error/maxlag"] == 1
    assert stats["retry/count"] == 1 and stats["retry/reason_count/MediaWiki maxlag"] == 1


@deferred_f_from_coro_f
async def test_maxlag_waits_the_whole_retry_after_when_below_the_cap() -> None:
    crawler, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=30)
    request = api_request()
    result, waited = await timed(mw, request, api_response(request, "maxlag_error", **{"Retry-After": "1"}))
    assert isinstance(result, Request) and result.meta["retry_times"] == 1
    assert 1.0 <= waited < 4.0
    assert crawler.stats.get_value("retry/waited_seconds") == 1


@deferred_f_from_coro_f
async def test_maxlag_without_retry_after_uses_exponential_backoff() -> None:
    _, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_BASE=0.1, HOLOCRON_RETRY_BACKOFF_MAX=5)
    request = api_request(retry_times=2)  # third attempt: 0.1 * 2**2
    response = api_response(request, "maxlag_error")
    del response.headers["Retry-After"]
    result, waited = await timed(mw, request, response)
    assert isinstance(result, Request) and result.meta["retry_times"] == 3
    assert 0.4 <= waited < 3.0


@deferred_f_from_coro_f
async def test_non_retryable_api_error_passes_through_at_once() -> None:
    crawler, mw = make_middleware()
    request = api_request()
    response = api_response(request, "bad_param_error")
    result, waited = await timed(mw, request, response)
    assert result is response and waited < 0.2
    stats = crawler.stats.get_stats()
    assert "retry/count" not in stats and "mediawiki/api_error/badvalue" not in stats


@deferred_f_from_coro_f
async def test_configured_retryable_errors_extend_the_defaults() -> None:
    crawler, mw = make_middleware(HOLOCRON_MEDIAWIKI_RETRYABLE_ERRORS=["badvalue"], HOLOCRON_RETRY_BACKOFF_MAX=0)
    request = api_request()
    result = await mw.process_response(request, api_response(request, "bad_param_error"))
    assert isinstance(result, Request) and crawler.stats.get_value("mediawiki/api_error/badvalue") == 1
    again = await mw.process_response(request, api_response(request, "maxlag_error"))
    assert isinstance(again, Request)  # maxlag is retryable whatever the setting says


@deferred_f_from_coro_f
async def test_api_errors_are_only_read_on_mediawiki_requests() -> None:
    crawler, mw = make_middleware()
    request = Request(URL)  # no holocron_mediawiki meta: a web page that happens to look like an error
    response = api_response(request, "maxlag_error")
    result, waited = await timed(mw, request, response)
    assert result is response and waited < 0.2 and crawler.stats.get_value("retry/count") is None


@deferred_f_from_coro_f
async def test_successful_api_answer_passes_through() -> None:
    _, mw = make_middleware()
    request = api_request()
    response = TextResponse(URL, status=200, body=(FIXTURES / "batch_ok.json").read_bytes(), request=request,
                            headers={"Content-Type": "application/json; charset=utf-8"})
    assert await mw.process_response(request, response) is response


@deferred_f_from_coro_f
async def test_503_with_retry_after_is_retried_after_it() -> None:
    crawler, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=30)
    request = Request("http://site.test/page")
    result, waited = await timed(mw, request, http_response(request, 503, {"Retry-After": "1"}))
    assert isinstance(result, Request) and result.meta["retry_times"] == 1
    assert 1.0 <= waited < 4.0
    assert crawler.stats.get_value("retry/reason_count/HTTP 503") == 1


@deferred_f_from_coro_f
async def test_429_with_http_date_retry_after() -> None:
    _, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=30)
    request = Request("http://site.test/page")
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    result, waited = await timed(mw, request, http_response(request, 429, {"Retry-After": when}))
    assert isinstance(result, Request)
    assert 0.9 <= waited < 4.0  # the date has a one-second resolution


@deferred_f_from_coro_f
async def test_503_with_huge_retry_after_is_capped() -> None:
    _, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=0.2)
    request = Request("http://site.test/page")
    result, waited = await timed(mw, request, http_response(request, 503, {"Retry-After": "86400"}))
    assert isinstance(result, Request) and 0.2 <= waited < 2.0


@deferred_f_from_coro_f
async def test_garbage_retry_after_falls_back_to_backoff() -> None:
    _, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_BASE=0.1, HOLOCRON_RETRY_BACKOFF_MAX=5)
    request = Request("http://site.test/page", meta={"retry_times": 1})
    result, waited = await timed(mw, request, http_response(request, 502, {"Retry-After": "whenever"}))
    assert isinstance(result, Request) and 0.2 <= waited < 2.0


@deferred_f_from_coro_f
async def test_max_retries_reached_returns_the_response_without_waiting() -> None:
    crawler, mw = make_middleware(RETRY_TIMES=3, HOLOCRON_RETRY_BACKOFF_MAX=30)
    request = api_request(retry_times=3)
    response = api_response(request, "maxlag_error")
    result, waited = await timed(mw, request, response)
    assert result is response and waited < 0.5
    assert crawler.stats.get_value("retry/max_reached") == 1
    http = Request("http://site.test/page", meta={"retry_times": 3})
    http_resp = http_response(http, 503, {"Retry-After": "10"})
    assert await mw.process_response(http, http_resp) is http_resp
    assert crawler.stats.get_value("retry/max_reached") == 2


@deferred_f_from_coro_f
async def test_max_retry_times_meta_overrides_the_setting() -> None:
    _, mw = make_middleware(RETRY_TIMES=5, HOLOCRON_RETRY_BACKOFF_MAX=0)
    request = api_request(retry_times=1, max_retry_times=1)
    response = api_response(request, "maxlag_error")
    assert await mw.process_response(request, response) is response


@deferred_f_from_coro_f
async def test_a_request_is_retried_until_the_limit() -> None:
    crawler, mw = make_middleware(RETRY_TIMES=2, HOLOCRON_RETRY_BACKOFF_MAX=0)
    request = api_request()
    attempts = 0
    while True:
        attempts += 1
        result = await mw.process_response(request, api_response(request, "maxlag_error"))
        if isinstance(result, Response):
            break
        request = result
    assert attempts == 3  # the first try and two retries
    assert crawler.stats.get_value("retry/count") == 2 and crawler.stats.get_value("retry/max_reached") == 1


@deferred_f_from_coro_f
async def test_dont_retry_is_respected() -> None:
    crawler, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=30)
    request = api_request(dont_retry=True)
    maxlag = api_response(request, "maxlag_error")
    result, waited = await timed(mw, request, maxlag)
    assert result is maxlag and waited < 0.2
    http = Request("http://site.test/page", meta={"dont_retry": True})
    busy = http_response(http, 503, {"Retry-After": "10"})
    assert await mw.process_response(http, busy) is busy
    assert crawler.stats.get_value("retry/count") is None
    assert crawler.stats.get_value("mediawiki/api_error/maxlag") is None


@deferred_f_from_coro_f
async def test_other_statuses_pass_through() -> None:
    _, mw = make_middleware()
    request = Request("http://site.test/page")
    for status in (200, 301, 404, 410):
        response = http_response(request, status)
        assert await mw.process_response(request, response) is response


# -- end to end: a real crawl against a lagging real MediaWiki -----------------------------------


class _LineReader(threading.Thread):
    """Collects a subprocess's stderr lines with the monotonic time each arrived."""

    def __init__(self, stream: Any):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[tuple[float, str]] = []
        self.changed = threading.Condition()

    def run(self) -> None:
        for line in self.stream:
            with self.changed:
                self.lines.append((time.monotonic(), line))
                self.changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> float | None:
        """Monotonic time of the first line containing *text*, or None after *timeout*."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for at, line in self.lines:
                    if text in line:
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or (not self.is_alive() and not self.lines):
                    return None
                self.changed.wait(min(left, 0.5))

    def text(self) -> str:
        return "".join(line for _, line in self.lines)


@pytest.mark.mediawiki
@pytest.mark.slow
def test_crawl_waits_out_maxlag_then_stores_the_page(fresh_mediawiki, tmp_path) -> None:
    wiki = fresh_mediawiki
    seed = "Sarvessha"
    wiki.set_lag(10)
    # What the server tells a client while lagging (MediaWiki: Retry-After = max(maxlag, 5)).
    probe = ms.api_request(wiki.api_url, {
        "action": "query", "format": "json", "formatversion": "2", "maxlag": "5", "titles": seed,
    })
    assert probe.json()["error"]["code"] == "maxlag" and probe.headers["MediaWiki-API-Error"] == "maxlag"
    retry_after = float(probe.headers["Retry-After"])
    assert retry_after >= 5

    ws = Workspace(tmp_path)
    ws.write_config(wiki.api_url)
    cmd = ws.command("mediawiki", "source=testwiki", f"seeds={seed}", "max_depth=0",
                     settings={"HOLOCRON_RETRY_BACKOFF_MAX": "30"})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reader = _LineReader(proc.stderr)
    reader.start()
    try:
        first_maxlag = reader.wait_for("(MediaWiki maxlag)", timeout=90)
        assert first_maxlag is not None, f"no maxlag retry was logged:\n{reader.text()[-3000:]}"
        time.sleep(max(0.0, 2.0 - (time.monotonic() - first_maxlag)))  # the lag clears ~2 s later
        wiki.set_lag(None)
        returncode = proc.wait(timeout=120)
        finished = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    log = reader.text()
    assert returncode == 0, log[-3000:]

    records = ws.records()
    assert [(r["resource_id"], r["outcome"]) for r in records] == [(seed, "ok")]
    assert json.loads(records[0]["payload"])["title"] == seed
    # The run waited at least what the server asked between the maxlag answer and the end.
    assert finished - first_maxlag >= retry_after, f"waited {finished - first_maxlag:.1f}s < {retry_after}s"
    assert finished - started >= retry_after

    (run,) = ws.runs()
    summary = json.loads(run["summary"])
    assert summary["mediawiki/api_error/maxlag"] >= 1
    assert summary["retry/count"] >= 1
    assert summary["retry/waited_seconds"] >= retry_after
    assert summary.get("mediawiki/pages/ok") == 1 and "mediawiki/pages/failed" not in summary
    assert run["status"] == "completed" and run["pages_stored"] == 1


# -- the error taxonomy at the download level (holocron_scrapy.failures) --------------------------

NOT_JSON_OBJECTS = {
    "cut-short": b'{"batchcomplete":true,"query":{"pages":[{"pageid":12,"ns":0,"title":"Sarv',
    "html-error-page": b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
    "php-fatal": b"<br />\n<b>Fatal error</b>: Allowed memory size exhausted in <b>/w/includes/x.php</b>",
    "empty": b"",
    "json-list": b"[]",
}


@pytest.mark.parametrize("body", NOT_JSON_OBJECTS.values(), ids=NOT_JSON_OBJECTS.keys())
@deferred_f_from_coro_f
async def test_a_mediawiki_answer_that_is_no_json_object_is_retried(body: bytes) -> None:
    crawler, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=0)
    request = api_request(titles=["Sarvessha"])
    response = TextResponse(URL, status=200, body=body, request=request, headers={"Content-Type": "text/html"})
    result = await mw.process_response(request, response)
    assert isinstance(result, Request) and not isinstance(result, Response)
    assert result.meta["retry_times"] == 1 and api_call(result).titles == ["Sarvessha"]
    assert api_call(result).decoded is None
    stats = crawler.stats.get_stats()
    assert stats["failures/transient/malformed_body"] == 1 and stats["retry/count"] == 1
    assert stats["retry/reason_count/MediaWiki answer not a JSON object"] == 1


@deferred_f_from_coro_f
async def test_a_malformed_answer_is_handed_to_the_spider_when_retries_run_out() -> None:
    crawler, mw = make_middleware(RETRY_TIMES=2, HOLOCRON_RETRY_BACKOFF_MAX=0)
    request = api_request(retry_times=2)
    response = TextResponse(URL, status=200, body=NOT_JSON_OBJECTS["cut-short"], request=request)
    assert await mw.process_response(request, response) is response
    assert crawler.stats.get_value("retry/max_reached") == 1
    assert api_call(request).decoded is None  # the spider decodes it, fails it as retryable


@deferred_f_from_coro_f
async def test_a_good_answer_is_decoded_once_and_handed_to_the_spider() -> None:
    crawler, mw = make_middleware()
    request = api_request()
    body = (FIXTURES / "batch_ok.json").read_bytes()
    response = TextResponse(URL, status=200, body=body, request=request)
    assert await mw.process_response(request, response) is response
    assert api_call(response).decoded == json.loads(body)
    assert not any(key.startswith("failures/") for key in crawler.stats.get_stats())


@deferred_f_from_coro_f
async def test_a_permanent_api_error_is_counted_and_passed_on() -> None:
    crawler, mw = make_middleware()
    request = api_request()
    response = api_response(request, "bad_param_error")
    assert await mw.process_response(request, response) is response
    assert api_call(response).decoded["error"]["code"] == "badvalue"
    assert crawler.stats.get_value("failures/permanent/api_badvalue") == 1


@pytest.mark.parametrize(("status", "retried"), [(507, True), (599, True), (425, True), (404, False), (410, False)])
@deferred_f_from_coro_f
async def test_statuses_follow_the_taxonomy_whatever_retry_http_codes_says(status: int, retried: bool) -> None:
    crawler, mw = make_middleware(RETRY_HTTP_CODES=[503], HOLOCRON_RETRY_BACKOFF_MAX=0)
    request = Request("http://site.test/page")
    response = http_response(request, status)
    result = await mw.process_response(request, response)
    assert isinstance(result, Request) is retried and (result is response) is not retried
    kind = "transient" if retried else "permanent"
    assert crawler.stats.get_value(f"failures/{kind}/http_{status}") == 1


def _exceptions() -> dict[str, Exception]:
    from scrapy.exceptions import (
        CannotResolveHostError,
        DownloadConnectionRefusedError,
        DownloadTimeoutError,
        ResponseDataLossError,
    )
    from twisted.internet.error import ConnectionLost

    return {
        "timeout": DownloadTimeoutError("took too long"),
        "connection_refused": DownloadConnectionRefusedError("refused"),
        "dns": CannotResolveHostError("no such host"),
        "truncated": ResponseDataLossError("lost data"),
        "connection": ConnectionLost("reset by peer"),
    }


@pytest.mark.parametrize("kind", list(_exceptions()))
@deferred_f_from_coro_f
async def test_transient_download_exceptions_are_retried_and_counted(kind: str) -> None:
    crawler, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_BASE=0.01, HOLOCRON_RETRY_BACKOFF_MAX=0.01)
    request = Request("http://site.test/page", meta={"retry_times": 1})
    result = await mw.process_exception(request, _exceptions()[kind])
    assert isinstance(result, Request) and result.meta["retry_times"] == 2
    assert crawler.stats.get_value(f"failures/transient/{kind}") == 1
    assert crawler.stats.get_value("retry/count") == 1


@deferred_f_from_coro_f
async def test_ignored_requests_and_dont_retry_are_not_retried() -> None:
    from scrapy.exceptions import DownloadTimeoutError, IgnoreRequest

    crawler, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=0)
    assert await mw.process_exception(Request("http://site.test/x"), IgnoreRequest("robots.txt")) is None
    assert crawler.stats.get_value("failures/permanent/not_fetched") == 1
    no_retry = Request("http://site.test/x", meta={"dont_retry": True})
    assert await mw.process_exception(no_retry, DownloadTimeoutError("slow")) is None
    assert crawler.stats.get_value("retry/count") is None


@deferred_f_from_coro_f
async def test_the_api_probe_fails_fast_where_nothing_listens() -> None:
    from scrapy.exceptions import CannotResolveHostError, DownloadConnectionRefusedError, DownloadTimeoutError

    crawler, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=0)
    probe = api_request(PROBE)
    assert await mw.process_exception(probe, DownloadConnectionRefusedError("refused")) is None
    assert await mw.process_exception(probe, CannotResolveHostError("typo.example")) is None
    assert isinstance(await mw.process_exception(probe, DownloadTimeoutError("slow")), Request)
    assert crawler.stats.get_value("retry/count") == 1


@deferred_f_from_coro_f
async def test_the_api_probe_retries_a_non_json_answer_only_twice() -> None:
    crawler, mw = make_middleware(RETRY_TIMES=5, HOLOCRON_RETRY_BACKOFF_MAX=0)
    request = api_request(PROBE)
    attempts = 0
    while True:
        attempts += 1
        html = TextResponse(URL, status=200, body=NOT_JSON_OBJECTS["html-error-page"], request=request)
        result = await mw.process_response(request, html)
        if isinstance(result, Response):
            break
        request = result
    assert attempts == 1 + defaults.MEDIAWIKI_PROBE_MALFORMED_RETRIES
    assert crawler.stats.get_value("failures/transient/malformed_body") == attempts
