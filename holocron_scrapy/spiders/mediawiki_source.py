"""The ``mediawiki`` source type: its validated model (a ``sources:`` entry and the ``-a`` arguments of
``scrapy crawl mediawiki``), registered for ``type: mediawiki``.

It lives beside :mod:`holocron_scrapy.spiders.mediawiki` rather than in it so that loading the config
validates sources without importing the spider (already the project's longest module) and the
frontier it pulls in.

Checked while the file loads: ``api_url`` (an http(s) URL), ``batch_size`` (1-50, 1-500 with a bot
login, whose rights are checked at login), ``auth`` (:func:`~holocron_scrapy.mediawiki.auth.parse_auth_config`),
``generator`` (the spec parser, with the source's namespaces and depth; not with ``seeds``),
``recrawl`` (``changes``; not with ``recrawl_after``) and ``discovery``.

``-a`` arguments (strings): ``api_url``, ``batch_size``, ``generator``, ``max_depth``, ``namespaces``
(``"0|4"``) and ``discover`` (``links|categories|both|none``) map to the entry's keys
(:meth:`MediaWikiSource.argument_entry`); ``-a seeds`` replaces the entry's ``generator`` and
``-a generator`` its ``seeds``; ``recrawl`` is read by :func:`holocron_scrapy.mediawiki.sync.recrawl_mode`.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from holocron_scrapy import defaults
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.mediawiki.auth import AUTH_TYPE as BOTPASSWORD
from holocron_scrapy.mediawiki.auth import BotPasswordAuth, parse_auth_config
from holocron_scrapy.mediawiki.listings import parse_generator
from holocron_scrapy.sources import Boolean, Integer, SourceModel, Text, at_least, register_source_type

TYPE = "mediawiki"
#: ``-a discover``: which links to follow.
DISCOVER = {"links": (True, False), "categories": (False, True), "both": (True, True), "none": (False, False)}
#: The re-crawl modes besides ``recrawl_after`` (the full ``lastrevid`` sweep): ``changes``.
RECRAWL_MODES = ("changes",)


def parse_recrawl_mode(value: Any, *, key: str = "recrawl", source_type: str = TYPE) -> str:
    """``recrawl`` (source key or ``-a recrawl``): ``changes``, for mediawiki sources only."""
    mode = str(value).strip().lower()
    if mode not in RECRAWL_MODES:
        raise ConfigError(
            f"expected {' or '.join(RECRAWL_MODES)} (a sync from recent changes; recrawl_after is the full sweep),"
            f" got {value!r}",
            key=key,
        )
    if source_type != TYPE:
        raise ConfigError(f"recrawl: {mode} reads a wiki's recent changes: for mediawiki sources only", key=key)
    return mode


def batch_size_problem(size: int) -> str:
    """Why a ``batch_size`` above 50 is refused for a client without a bot login."""
    low, high = 1, defaults.MEDIAWIKI_MAX_BATCH_SIZE
    return (
        f"must be between {low} and {high}, got {size}: batch_size {size} needs a bot account with apihighlimits;"
        f" add auth: {{type: {BOTPASSWORD}, username: Name@app, password_env: VAR}} to the source"
    )


class Discovery(BaseModel):
    """What a crawl follows from a page: its links, its categories, how deep, in which namespaces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    links: Boolean = True
    categories: Boolean = False
    max_depth: Annotated[Integer, at_least(0)] = defaults.MEDIAWIKI_MAX_DEPTH
    namespaces: tuple[Annotated[Integer, at_least(0)], ...] = defaults.MEDIAWIKI_NAMESPACES

    @field_validator("namespaces", mode="before")
    @classmethod
    def _namespace_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # -a namespaces=0|4
            parts = [p.strip() for p in value.replace(",", "|").split("|") if p.strip()]
            if not parts:
                raise ValueError("expected namespace numbers such as 0 or 0|14")
            return sorted(set(parts), key=lambda p: (len(p), p))
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError("expected a non-empty list of namespace numbers")
        return value


class MediaWikiSource(SourceModel):
    """A ``mediawiki`` source: a wiki crawled through its Action API."""

    arguments: ClassVar[tuple[str, ...]] = (
        "api_url",
        "batch_size",
        "discover",
        "generator",
        "max_depth",
        "namespaces",
        "recrawl",
    )
    key_hints: ClassVar[dict[str, str]] = {
        "generator": "generators list MediaWiki pages: only mediawiki sources have one",
        "recrawl": "recrawl: changes reads a wiki's recent changes: for mediawiki sources only",
    }

    api_url: Text
    batch_size: Integer = defaults.MEDIAWIKI_BATCH_SIZE
    maxlag: Annotated[Integer, at_least(0)] = defaults.MEDIAWIKI_MAXLAG
    #: ``changes``: sync from the wiki's recent changes (holocron_scrapy/mediawiki/sync.py).
    recrawl: str | None = None
    discovery: Discovery = Discovery()
    #: ``allpages``, ``prefix:X``, ``categorymembers:Category:X`` (instead of seeds).
    generator: Text | None = None
    #: The bot login: ``{type: botpassword, username: Name@app, password_env: VAR}``.
    auth: BotPasswordAuth | None = None

    @property
    def batch_size_set(self) -> bool:
        """``batch_size`` was set (not the default): a bot keeps it, else uses its bound."""
        return "batch_size" in self.model_fields_set

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http(s) URL of api.php, got {value!r}")
        return value

    @field_validator("recrawl", mode="before")
    @classmethod
    def _recrawl_mode(cls, value: Any) -> Any:
        return None if value is None else parse_recrawl_mode(value, key="recrawl")

    @field_validator("auth", mode="before")
    @classmethod
    def _bot_login(cls, value: Any) -> Any:
        if value is None or isinstance(value, BotPasswordAuth):
            return value
        return parse_auth_config(value, "auth")

    @model_validator(mode="after")
    def _together(self) -> Self:
        if self.generator is not None:
            if self.seeds:
                raise ConfigError("give seeds or a generator, not both", key="generator")
            found = self.discovery
            parse_generator(self.generator, namespaces=found.namespaces, max_depth=found.max_depth, key="generator")
        if self.recrawl is not None and self.recrawl_after is not None:
            raise ConfigError("recrawl: changes and recrawl_after are two ways to re-crawl: set one", key="recrawl")
        size = self.batch_size
        if size < 1:
            raise ConfigError(f"must be at least 1, got {size}", key="batch_size")
        if self.auth is None and size > defaults.MEDIAWIKI_MAX_BATCH_SIZE:
            raise ConfigError(batch_size_problem(size), key="batch_size")
        if size > defaults.MEDIAWIKI_MAX_BOT_BATCH_SIZE:
            high = defaults.MEDIAWIKI_MAX_BOT_BATCH_SIZE
            raise ConfigError(f"must be between 1 and {high}, got {size}", key="batch_size")
        return self

    @classmethod
    def argument_entry(cls, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {name: kwargs[name] for name in ("api_url", "batch_size") if name in kwargs}
        if "generator" in kwargs:
            entry["generator"], entry["seeds"] = kwargs["generator"], ()
        elif "seeds" in kwargs:
            entry["generator"] = None
        discovery: dict[str, Any] = {}
        if "max_depth" in kwargs:
            discovery["max_depth"] = kwargs["max_depth"]
        if "namespaces" in kwargs:
            discovery["namespaces"] = str(kwargs["namespaces"])
        if "discover" in kwargs:
            choice = str(kwargs["discover"]).strip().lower()
            if choice not in DISCOVER:
                raise ConfigError(f"expected one of {', '.join(DISCOVER)}, got {choice!r}", key="discover")
            discovery["links"], discovery["categories"] = DISCOVER[choice]
        if discovery:
            entry["discovery"] = discovery
        return entry

    @classmethod
    def argument_of(cls, key: str) -> str:
        if key in ("discovery.links", "discovery.categories"):
            return "discover"
        if key.startswith("discovery."):
            return key.split(".")[1]
        return super().argument_of(key)


register_source_type(TYPE, MediaWikiSource, "holocron_scrapy.spiders.mediawiki.MediaWikiSpider")
