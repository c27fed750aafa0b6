"""MediaWiki API errors (they arrive with HTTP 200 and a JSON ``error``); whether one is
retryable is decided by :mod:`holocron_scrapy.failures`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from holocron_scrapy import defaults
from holocron_scrapy.failures import is_retryable_api_error


@dataclass(frozen=True)
class ApiError(Exception):
    code: str
    info: str
    retryable: bool

    def __str__(self) -> str:
        return f"MediaWiki API error {self.code}: {self.info}"


def is_retryable(code: str, retryable_codes: tuple[str, ...] = defaults.MEDIAWIKI_RETRYABLE_ERRORS) -> bool:
    return is_retryable_api_error(code, retryable_codes)


def api_error(body: Any) -> ApiError | None:
    """The error of a decoded API response, or None when it has none."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = body["error"]
    code = str(error.get("code", "unknown"))
    info = str(error.get("info") or error.get("*") or "")
    return ApiError(code, info, is_retryable(code))


def api_error_from_bytes(body: bytes) -> ApiError | None:
    """Like :func:`api_error` for a raw body; cheap for the usual error-free response."""
    head = body[:1024]
    if b'"error"' not in head:
        return None
    try:
        return api_error(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return None
