"""Polite retries: honour ``Retry-After`` (else exponential backoff) before retrying.

Replaces Scrapy's RetryMiddleware (same settings: ``RETRY_ENABLED``, ``RETRY_TIMES``,
``RETRY_HTTP_CODES``, ``RETRY_PRIORITY_ADJUST``). What is retried is decided by
:mod:`holocron_scrapy.failures`: transient statuses (408, 425, 429, every 5xx, and whatever
``RETRY_HTTP_CODES`` adds), transient download exceptions (resets, timeouts, DNS, lost data),
and, for MediaWiki API requests (those with an :class:`~holocron_scrapy.mediawiki.calls.ApiCall`),
answers with HTTP 200 whose body is not a JSON object (cut short, an HTML error page, a PHP
fatal) or carries a retryable ``error.code`` (maxlag, ratelimited, readonly, internal DB errors).
Each is retried like a 503,
so it costs no frontier attempt. A MediaWiki body is decoded here once and handed to the
spider in ``ApiCall.decoded``.

The API probe (``ApiCall.purpose == "probe"``) is not retried when the connection is refused or the host
does not resolve (nothing listens there: the crawl stops at once), and a body that is not JSON
only ``defaults.MEDIAWIKI_PROBE_MALFORMED_RETRIES`` times.

A ``maxlag`` or ``ratelimited`` answer also blocks the API host for every worker of the frontier
(:func:`holocron_scrapy.frontier.politeness.block_host`, shared politeness only) for its whole
``Retry-After`` (the local retry's wait is capped by ``HOLOCRON_RETRY_BACKOFF_MAX``, the block is not),
else for the retry's backoff.

Stats: ``retry/*`` (Scrapy's), ``retry/waited_seconds``, ``failures/<transient|permanent>/<kind>``
(one per failed attempt), ``mediawiki/api_error/<code>`` (retryable codes).

Settings: ``HOLOCRON_RETRY_BACKOFF_BASE``, ``HOLOCRON_RETRY_BACKOFF_MAX``,
``HOLOCRON_MEDIAWIKI_RETRYABLE_ERRORS``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import RetryMiddleware, get_retry_request
from scrapy.http import Response
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import task

from holocron_scrapy import defaults
from holocron_scrapy.failures import Verdict, classify_exception, classify_status, decode_api_body
from holocron_scrapy.frontier.politeness import BLOCKING_API_ERRORS, block_host
from holocron_scrapy.mediawiki.calls import PROBE, api_call

logger = logging.getLogger(__name__)
#: The API probe is not retried when the connection is refused or the host is unknown.
_PROBE_FAIL_FAST = ("connection_refused", "dns")


def retry_after_seconds(value: bytes | str | None) -> float | None:
    """Parse a ``Retry-After`` header: delta seconds or an HTTP date. None if absent/bad."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def backoff_seconds(retry_times: int, base: float, cap: float) -> float:
    """``base * 2**retry_times``, capped."""
    return min(cap, base * (2**retry_times))


class PoliteRetryMiddleware(RetryMiddleware):
    def __init__(self, settings: Any, *, backoff_base: float, backoff_max: float, retryable_errors: tuple[str, ...]):
        super().__init__(settings)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retryable_errors = retryable_errors
        # HOLOCRON_MEDIAWIKI_RETRYABLE_ERRORS extends the defaults, never narrows them.
        self._retryable_codes = tuple(dict.fromkeys((*retryable_errors, *defaults.MEDIAWIKI_RETRYABLE_ERRORS)))

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PoliteRetryMiddleware:
        s = crawler.settings
        mw = cls(
            s,
            backoff_base=s.getfloat("HOLOCRON_RETRY_BACKOFF_BASE"),
            backoff_max=s.getfloat("HOLOCRON_RETRY_BACKOFF_MAX"),
            retryable_errors=tuple(
                s.getlist("HOLOCRON_MEDIAWIKI_RETRYABLE_ERRORS") or defaults.MEDIAWIKI_RETRYABLE_ERRORS
            ),
        )
        mw.crawler = crawler
        return mw

    def _delay(self, request: Request, response: Response | None) -> float:
        retry_after = None if response is None else retry_after_seconds(response.headers.get("Retry-After"))
        if retry_after is None:
            return backoff_seconds(request.meta.get("retry_times", 0), self.backoff_base, self.backoff_max)
        return min(retry_after, self.backoff_max)

    def _count(self, verdict: Verdict) -> None:
        self.crawler.stats.inc_value(verdict.stat)

    async def _retry_later(self, request: Request, response: Response | None, reason: str) -> Request | Response | None:
        """The retry of *request* after its wait, or *response* (None for an exception) when retries are spent."""
        assert self.crawler.spider is not None  # a download runs inside a crawl
        retry = get_retry_request(
            request,
            spider=self.crawler.spider,
            reason=reason,
            max_retry_times=request.meta.get("max_retry_times", self.max_retry_times),
            priority_adjust=request.meta.get("priority_adjust", self.priority_adjust),
            give_up_log_level=request.meta.get("give_up_log_level", self.give_up_log_level),
        )
        if retry is None:
            return response
        delay = self._delay(request, response)
        if delay > 0:
            logger.info("Retrying %s in %.1fs (%s)", request, delay, reason, extra={"spider": self.crawler.spider})
            self.crawler.stats.inc_value("retry/waited_seconds", int(round(delay)))
            from twisted.internet import reactor

            await maybe_deferred_to_future(task.deferLater(reactor, delay))
        return retry

    # async def: Scrapy 2.19 awaits coroutine middleware methods; its RetryMiddleware stubs declare them sync.
    async def process_response(self, request: Request, response: Response) -> Request | Response:  # type: ignore[override]
        if request.meta.get("dont_retry", False):
            return response
        verdict = classify_status(response.status, self.retry_http_codes)
        if verdict is not None:
            self._count(verdict)
            if verdict.transient:
                return await self._retry_later(request, response, f"HTTP {response.status}") or response
            return response
        call = api_call(request)
        if call is None or response.status != 200:
            return response
        decoded, verdict = decode_api_body(response.body, self._retryable_codes)
        if verdict is None:
            call.decoded = decoded
            return response
        self._count(verdict)
        if not verdict.transient:  # a permanent API error: the spider stores it (or bisects the batch)
            call.decoded = decoded
            return response
        if decoded is None:
            reason = "MediaWiki answer not a JSON object"
            if call.purpose == PROBE:  # an HTML page at api_url is most likely the wrong URL
                request.meta.setdefault("max_retry_times", defaults.MEDIAWIKI_PROBE_MALFORMED_RETRIES)
        else:
            code = verdict.kind.removeprefix("api_")
            self.crawler.stats.inc_value(f"mediawiki/api_error/{code}")
            reason = f"MediaWiki {code}"
            if code in BLOCKING_API_ERRORS:  # the server is overloaded: every worker waits, not just this one
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                block_host(self.crawler, request, self._delay(request, response) if wait is None else wait, reason)
        result = await self._retry_later(request, response, reason) or response
        if result is response and decoded is not None:
            call.decoded = decoded
        return result

    async def process_exception(  # type: ignore[override]  # a coroutine, as process_response
        self, request: Request, exception: Exception
    ) -> Request | Response | None:
        if request.meta.get("dont_retry", False):
            return None
        verdict = classify_exception(exception)
        self._count(verdict)
        call = api_call(request)
        probe = call is not None and call.purpose == PROBE
        if not verdict.transient or (probe and verdict.kind in _PROBE_FAIL_FAST):
            return None
        retry = await self._retry_later(request, None, verdict.kind)
        return retry if isinstance(retry, Request) else None
