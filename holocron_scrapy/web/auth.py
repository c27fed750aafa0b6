"""Per-source authentication for the ``http`` spider.

Config (``auth`` of an http source)::

    auth: {type: basic, username: bot, password_env: SITE_PASSWORD, host: api.example.org}
    auth: {type: bearer, token_env: SITE_TOKEN}
    auth: {type: header, header: X-API-Key, value_env: SITE_KEY}

Secrets come only from environment variables; they are added by a downloader
middleware (never stored in the frontier, never logged) and only to requests whose host
is the configured ``host`` (default: the first seed's host). Each secret is registered with
:mod:`holocron_scrapy.secrets` as soon as it is read, so every log line masks it.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scrapy import Request
from scrapy.crawler import Crawler

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.secrets import register as register_secret
from holocron_scrapy.web.urls import host_of

AUTH_TYPES = ("basic", "bearer", "header")


@dataclass(frozen=True)
class SourceAuth:
    host: str
    header: str
    value: str = field(repr=False)

    def __repr__(self) -> str:
        return f"SourceAuth(host={self.host!r}, header={self.header!r}, value='***')"


def _secret(config: Mapping[str, Any], key: str, environ: Mapping[str, str]) -> str:
    name = config.get(key)
    if not name or not isinstance(name, str):
        raise ConfigError(f"needs {key} naming an environment variable", key=f"auth.{key}")
    value = environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set", key=f"auth.{key}")
    register_secret(value)  # masked in every log line from now on
    return value


def parse_auth(config: Any, default_host: str, environ: Mapping[str, str] = os.environ) -> SourceAuth | None:
    """Validate an ``auth`` mapping and read its secret from *environ*."""
    if not config:
        return None
    if not isinstance(config, Mapping):
        raise ConfigError("expected a mapping", key="auth")
    kind = config.get("type")
    if kind not in AUTH_TYPES:
        raise ConfigError(f"expected type {', '.join(AUTH_TYPES)}, got {kind!r}", key="auth.type")
    host = host_of(str(config.get("host") or default_host))
    if kind == "basic":
        user = config.get("username")
        if not user:
            raise ConfigError("basic auth needs a username", key="auth.username")
        token = base64.b64encode(f"{user}:{_secret(config, 'password_env', environ)}".encode()).decode("ascii")
        register_secret(token)
        return SourceAuth(host, "Authorization", f"Basic {token}")
    if kind == "bearer":
        return SourceAuth(host, "Authorization", f"Bearer {_secret(config, 'token_env', environ)}")
    header = config.get("header")
    if not header or not isinstance(header, str):
        raise ConfigError("header auth needs the header name", key="auth.header")
    return SourceAuth(host, header, _secret(config, "value_env", environ))


class SourceAuthMiddleware:
    """Downloader middleware: adds the spider's ``source_auth`` header to requests for its host."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SourceAuthMiddleware:
        return cls(crawler)

    def process_request(self, request: Request) -> None:
        auth: SourceAuth | None = getattr(self.crawler.spider, "source_auth", None)
        if auth is None:
            return None
        if host_of(request.url) == auth.host:
            request.headers[auth.header] = auth.value
        elif auth.header in request.headers:
            del request.headers[auth.header]  # never leak it to another host (e.g. after a redirect)
        return None
