"""Polite retries: honour ``Retry-After`` (else exponential backoff) before retrying.

Replaces Scrapy's RetryMiddleware (same settings: ``RETRY_ENABLED``, ``RETRY_TIMES``,
``RETRY_HTTP_CODES``, ``RETRY_PRIORITY_ADJUST``) and adds MediaWiki API errors, which
arrive with HTTP 200: a retryable ``error.code`` (maxlag, ratelimited, readonly, internal
DB errors) is retried like a 503. Stats: ``retry/*`` (Scrapy's), ``retry/waited_seconds``.

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
from holocron_scrapy.mediawiki.errors import api_error_from_bytes

logger = logging.getLogger(__name__)
MEDIAWIKI_META = "holocron_mediawiki"


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

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PoliteRetryMiddleware:
        s = crawler.settings
        mw = cls(
            s,
            backoff_base=s.getfloat("HOLOCRON_RETRY_BACKOFF_BASE", defaults.RETRY_BACKOFF_BASE),
            backoff_max=s.getfloat("HOLOCRON_RETRY_BACKOFF_MAX", defaults.RETRY_BACKOFF_MAX),
            retryable_errors=tuple(
                s.getlist("HOLOCRON_MEDIAWIKI_RETRYABLE_ERRORS") or defaults.MEDIAWIKI_RETRYABLE_ERRORS
            ),
        )
        mw.crawler = crawler
        return mw

    def _delay(self, request: Request, response: Response) -> float:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if retry_after is None:
            return backoff_seconds(request.meta.get("retry_times", 0), self.backoff_base, self.backoff_max)
        return min(retry_after, self.backoff_max)

    async def _retry_later(self, request: Request, response: Response, reason: str) -> Request | Response:
        retry = get_retry_request(
            request,
            spider=self.crawler.spider,
            reason=reason,
            max_retry_times=request.meta.get("max_retry_times", self.max_retry_times),
            priority_adjust=request.meta.get("priority_adjust", self.priority_adjust),
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

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        if request.meta.get("dont_retry", False):
            return response
        if response.status in self.retry_http_codes:
            return await self._retry_later(request, response, f"HTTP {response.status}")
        if request.meta.get(MEDIAWIKI_META) and response.status == 200:
            error = api_error_from_bytes(response.body)
            if error is not None and (error.code in self.retryable_errors or error.retryable):
                self.crawler.stats.inc_value(f"mediawiki/api_error/{error.code}")
                return await self._retry_later(request, response, f"MediaWiki {error.code}")
        return response
