"""The ``http`` source type: its validated model (a ``sources:`` entry and the ``-a`` arguments of
``scrapy crawl http``), registered for ``type: http``.

It lives beside :mod:`holocron_scrapy.spiders.http` rather than in it so that loading the config
(the ``scrapy db``/``frontier``/``lake`` commands, Scrapyd) validates sources without importing the
spider and the frontier it pulls in.

The values a crawl resolves (ranges, regular expressions, the sitemap URL) are checked when the
crawl merges the ``-a`` arguments in (validation context :data:`~holocron_scrapy.sources.CRAWL_CONTEXT`),
not while the file loads: an argument may replace a bad value of the file, and the error says which
of the two is wrong (``my.yaml: sources[site].max_pages: ...`` or ``max_pages: ...``). The ``auth``
block is read by the spider (its secret comes from the environment; its host defaults to the first
seed's); here only a MediaWiki bot login is refused.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Self

from pydantic import BeforeValidator, ValidationInfo, field_validator, model_validator

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.sources import Boolean, Integer, SourceModel, register_source_type, text_list
from holocron_scrapy.web.urls import validate_seed_url

TYPE = "http"
DEFAULT_MAX_DEPTH = 2
DEFAULT_MAX_BODY = 10 * 1024 * 1024
BOT_AUTH_TYPE = "botpassword"  # holocron_scrapy.mediawiki.auth.AUTH_TYPE (not imported: the mediawiki package)


def _domains(value: Any) -> Any:
    if isinstance(value, str):
        return [d.strip() for d in value.replace(",", "|").split("|") if d.strip()]
    return value


def _regexes(value: Any) -> Any:
    if value is None:
        return ()
    return [value] if isinstance(value, str) else value


class HttpSource(SourceModel):
    """An ``http`` source: a website, crawled politely from its seeds."""

    arguments: ClassVar[tuple[str, ...]] = (
        "allowed_domains",
        "deltafetch",
        "deny",
        "follow",
        "max_body_bytes",
        "max_depth",
        "max_pages",
        "sitemap",
        "store_binary",
    )

    #: Default: the seeds' hosts (subdomains included). ``-a``: ``"a.org|b.org"``.
    allowed_domains: Annotated[tuple[str, ...], BeforeValidator(_domains)] = ()
    max_depth: Integer = DEFAULT_MAX_DEPTH
    max_pages: Integer = 0
    follow: Annotated[tuple[str, ...], BeforeValidator(_regexes)] = ()
    deny: Annotated[tuple[str, ...], BeforeValidator(_regexes)] = ()
    #: A sitemap URL, or ``robots`` (the sitemaps robots.txt names).
    sitemap: str | None = None
    store_binary: Boolean = False
    max_body_bytes: Integer = DEFAULT_MAX_BODY
    #: ``{type: basic|bearer|header, ...}``: read by the spider (holocron_scrapy.web.auth.parse_auth).
    auth: dict[str, Any] | None = None
    deltafetch: Boolean = False
    response_headers: Annotated[tuple[str, ...] | None, BeforeValidator(text_list)] = None

    @field_validator("auth", mode="before")
    @classmethod
    def _not_a_bot_login(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") == BOT_AUTH_TYPE:
            raise ConfigError(
                f"{BOT_AUTH_TYPE} is for mediawiki sources (http: basic, bearer, header)", key="auth.type"
            )
        return value

    @model_validator(mode="after")
    def _crawl_values(self, info: ValidationInfo) -> Self:
        if not (info.context or {}).get("crawl"):
            return self
        for key, low in (("max_depth", 0), ("max_pages", 0), ("max_body_bytes", 1)):
            value = getattr(self, key)
            if value < low:
                raise ConfigError(f"must be at least {low}, got {value}", key=key)
        for key in ("follow", "deny"):
            for pattern in getattr(self, key):
                try:
                    re.compile(pattern)
                except (re.error, TypeError) as exc:
                    raise ConfigError(f"not a valid regular expression {pattern!r}: {exc}", key=key) from None
        if self.sitemap and self.sitemap != "robots":
            validate_seed_url(self.sitemap, key="sitemap")
        return self


register_source_type(TYPE, HttpSource, "holocron_scrapy.spiders.http.HttpSpider")
