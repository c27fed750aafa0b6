"""Load and validate the YAML configuration (sources, storage, state, frontier).

The file is chosen by the ``HOLOCRON_CONFIG`` setting, then the ``HOLOCRON_CONFIG``
environment variable, then ``config/holocron.yaml`` in the working directory, then the
copy packaged in ``holocron_scrapy/resources`` (so a bare ``scrapy crawl`` works, also
inside a Scrapyd egg). Every problem raises :class:`ConfigError` naming file and key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, overload

import yaml

from holocron_scrapy import defaults
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.mediawiki.auth import AUTH_TYPE as BOTPASSWORD
from holocron_scrapy.mediawiki.auth import BotPasswordAuth, parse_auth_config
from holocron_scrapy.mediawiki.listings import parse_generator

SOURCE_TYPES = ("mediawiki", "http")
#: Keys only ``http`` sources have; all but :data:`HTTP_CONFIG_ONLY_KEYS` are also ``-a`` arguments.
HTTP_SOURCE_KEYS = frozenset(
    {
        "allowed_domains",
        "max_depth",
        "max_pages",
        "follow",
        "deny",
        "sitemap",
        "store_binary",
        "max_body_bytes",
        "auth",
        "deltafetch",
        "response_headers",
    }
)
HTTP_CONFIG_ONLY_KEYS = frozenset({"auth", "response_headers"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Discovery:
    links: bool = True
    categories: bool = False
    max_depth: int = defaults.MEDIAWIKI_MAX_DEPTH
    namespaces: tuple[int, ...] = defaults.MEDIAWIKI_NAMESPACES


@dataclass(frozen=True)
class Source:
    """One configured source. ``options`` keeps type-specific keys (validated by its spider)."""

    name: str
    type: str
    api_url: str | None = None
    contact: str | None = None
    concurrency: int = defaults.CONCURRENCY_PER_HOST
    delay: float = defaults.DOWNLOAD_DELAY
    batch_size: int = defaults.MEDIAWIKI_BATCH_SIZE
    maxlag: int = defaults.MEDIAWIKI_MAXLAG
    recrawl_after: float | None = None
    #: ``recrawl: changes``: sync from the wiki's recent changes (mediawiki sources; see mediawiki/sync.py).
    recrawl: str | None = None
    discovery: Discovery = field(default_factory=Discovery)
    seeds: tuple[str, ...] = ()
    #: A mediawiki source's ``generator`` spec (``allpages``, ``prefix:X``, ``categorymembers:Category:X``), checked.
    generator: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: ``batch_size`` was set in the config (not the default): a bot keeps it, else uses its bound.
    batch_size_set: bool = False
    #: A mediawiki source's bot login (``auth: {type: botpassword, ...}``), validated.
    auth: BotPasswordAuth | None = None


@dataclass(frozen=True)
class Config:
    path: str
    contact: str | None = None
    lake_dir: str = defaults.LAKE_DIR
    deltafetch_dir: str = defaults.DELTAFETCH_DIR
    records_url: str = defaults.RECORDS_URL
    state_url: str | None = None  # None: JOBDIR's frontier, else defaults.STATE_URL
    records_sqlserver: dict[str, Any] = field(default_factory=dict)
    state_sqlserver: dict[str, Any] = field(default_factory=dict)
    frontier: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)

    def source(self, name: str) -> Source:
        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(sorted(self.sources)) or "none"
            raise ConfigError(
                f"unknown source {name!r} (configured: {known})", key="sources", source=self.path
            ) from None


def resolve_path(explicit: str | None = None) -> str | None:
    """Return the config file to read, or None for the packaged default."""
    chosen = explicit or os.environ.get(defaults.CONFIG_ENV)
    if chosen:
        if not Path(chosen).is_file():
            raise ConfigError("config file does not exist", source=str(chosen))
        return str(chosen)
    if Path(defaults.CONFIG_PATH).is_file():
        return defaults.CONFIG_PATH
    return None


def load_config(path: str | None = None) -> Config:
    """Load the config from *path* (see :func:`resolve_path`) and validate it."""
    path = resolve_path(path)
    if path is None:
        label = f"<packaged {defaults.PACKAGED_CONFIG}>"
        text = resources.files("holocron_scrapy.resources").joinpath(defaults.PACKAGED_CONFIG).read_text("utf-8")
    else:
        label = path
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read file: {exc}", source=label) from exc
    return parse_config(text, label)


def parse_config(text: str, label: str = "<string>") -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {exc}", source=label) from exc
    if data is None:
        data = {}
    return _Reader(label).config(data)


def parse_duration(value: Any, *, key: str, source: str | None = None) -> float:
    """Parse ``90``, ``30s``, ``15m``, ``6h``, ``1d`` or ``2w`` into seconds."""
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigError(f"not a duration like 30s, 15m, 6h, 1d: {value!r}", key=key, source=source)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


class _Reader:
    """Walks the YAML tree, checking types and naming the offending key."""

    def __init__(self, label: str):
        self.label = label

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(problem, key=key, source=self.label)

    @overload
    def store_url(self, value: Any, key: str, *, optional: Literal[False] = False) -> str: ...
    @overload
    def store_url(self, value: Any, key: str, *, optional: bool) -> str | None: ...
    def store_url(self, value: Any, key: str, *, optional: bool = False) -> str | None:
        """A ``sqlite:///`` or ``sqlserver://`` URL, checked now rather than when a store opens."""
        url = self.string(value, key, optional=optional)
        if url is None:
            return None
        from holocron_scrapy.db.connection import parse_store_url

        try:
            parse_store_url(url, setting=key)
        except ConfigError as exc:
            raise self.fail(key, exc.problem) from None
        return url

    def mapping(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        unknown = sorted(set(map(str, value)) - allowed)
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})"
            )
        return value

    @overload
    def string(self, value: Any, key: str, *, optional: Literal[False]) -> str: ...
    @overload
    def string(self, value: Any, key: str, *, optional: bool = True) -> str | None: ...
    def string(self, value: Any, key: str, *, optional: bool = True) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "expected a non-empty string")
        return value.strip()

    def integer(self, value: Any, key: str, *, low: int | None = None, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {value!r}")
        if low is not None and high is not None and not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, got {value}")
        if low is not None and value < low:
            raise self.fail(key, f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise self.fail(key, f"must be at most {high}, got {value}")
        return value

    def number(self, value: Any, key: str, *, low: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise self.fail(key, f"expected a number >= {low}, got {value!r}")
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def config(self, data: Any) -> Config:
        top = self.mapping(data, "", {"contact", "storage", "state", "frontier", "sources"})
        storage = self.mapping(
            top.get("storage"), "storage", {"lake_dir", "deltafetch_dir", "records_url", "sql_server"}
        )
        state = self.mapping(top.get("state"), "state", {"url", "sqlserver"})
        frontier = self.mapping(
            top.get("frontier"),
            "frontier",
            {"order", "claim_size", "lease_seconds", "max_attempts", "retry_backoff", "politeness"},
        )
        if "order" in frontier and frontier["order"] not in ("bfs", "dfs"):
            raise self.fail("frontier.order", f"expected bfs or dfs, got {frontier['order']!r}")
        # shared: a source's delay and concurrency hold for every worker of the frontier together
        # (holocron_scrapy/frontier/politeness.py); local: per process, as before issue 12.
        if "politeness" in frontier and frontier["politeness"] not in ("shared", "local"):
            raise self.fail("frontier.politeness", f"expected shared or local, got {frontier['politeness']!r}")
        raw_sources = top.get("sources") or []
        if not isinstance(raw_sources, list):
            raise self.fail("sources", "expected a list of sources")
        sources: dict[str, Source] = {}
        for index, raw in enumerate(raw_sources):
            source = self.source(raw, f"sources[{index}]")
            if source.name in sources:
                raise self.fail(f"sources[{index}].name", f"duplicate source name {source.name!r}")
            sources[source.name] = source
        return Config(
            path=self.label,
            contact=self.string(top.get("contact"), "contact"),
            lake_dir=self.string(storage.get("lake_dir", defaults.LAKE_DIR), "storage.lake_dir", optional=False),
            deltafetch_dir=self.string(
                storage.get("deltafetch_dir", defaults.DELTAFETCH_DIR), "storage.deltafetch_dir", optional=False
            ),
            records_url=self.store_url(storage.get("records_url", defaults.RECORDS_URL), "storage.records_url"),
            state_url=self.store_url(state.get("url"), "state.url", optional=True),
            records_sqlserver=self.mapping(storage.get("sql_server"), "storage.sql_server", _SQLSERVER_KEYS),
            state_sqlserver=self.mapping(state.get("sqlserver"), "state.sqlserver", _SQLSERVER_KEYS),
            frontier=dict(frontier),
            sources=sources,
        )

    def source(self, raw: Any, key: str) -> Source:
        common = {
            "name",
            "type",
            "api_url",
            "contact",
            "concurrency",
            "delay",
            "batch_size",
            "maxlag",
            "recrawl_after",
            "recrawl",
            "discovery",
            "seeds",
            "generator",
        }
        raw = self.mapping(raw, key, common | HTTP_SOURCE_KEYS)
        name = self.string(raw.get("name"), f"{key}.name", optional=False)
        kind = raw.get("type")
        if kind not in SOURCE_TYPES:
            raise self.fail(f"{key}.type", f"expected one of {', '.join(SOURCE_TYPES)}, got {kind!r}")
        api_url: str | None
        if kind == "mediawiki":
            api_url = self.string(raw.get("api_url"), f"{key}.api_url", optional=False)
            if not re.match(r"^https?://", api_url):
                raise self.fail(f"{key}.api_url", f"expected an http(s) URL, got {api_url!r}")
        else:
            api_url = self.string(raw.get("api_url"), f"{key}.api_url")
        disc = self.mapping(
            raw.get("discovery"), f"{key}.discovery", {"links", "categories", "max_depth", "namespaces"}
        )
        namespaces = disc.get("namespaces", list(defaults.MEDIAWIKI_NAMESPACES))
        if not isinstance(namespaces, list) or not namespaces:
            raise self.fail(f"{key}.discovery.namespaces", "expected a non-empty list of namespace numbers")
        discovery = Discovery(
            links=self.boolean(disc.get("links", True), f"{key}.discovery.links"),
            categories=self.boolean(disc.get("categories", False), f"{key}.discovery.categories"),
            max_depth=self.integer(
                disc.get("max_depth", defaults.MEDIAWIKI_MAX_DEPTH), f"{key}.discovery.max_depth", low=0
            ),
            namespaces=tuple(self.integer(n, f"{key}.discovery.namespaces", low=0) for n in namespaces),
        )
        seeds = raw.get("seeds") or []
        if not isinstance(seeds, list):
            raise self.fail(f"{key}.seeds", "expected a list of strings")
        generator = self.generator(raw, key, kind, discovery)
        recrawl = raw.get("recrawl_after")
        recrawl_mode = self.recrawl_mode(raw.get("recrawl"), f"{key}.recrawl", kind)
        if recrawl_mode is not None and recrawl is not None:
            raise self.fail(f"{key}.recrawl", "recrawl: changes and recrawl_after are two ways to re-crawl: set one")
        auth = self.bot_auth(raw.get("auth"), f"{key}.auth") if kind == "mediawiki" and "auth" in raw else None
        if kind == "http" and isinstance(raw.get("auth"), dict) and raw["auth"].get("type") == BOTPASSWORD:
            raise self.fail(f"{key}.auth.type", f"{BOTPASSWORD} is for mediawiki sources (http: basic, bearer, header)")
        return Source(
            name=name,
            type=kind,
            api_url=api_url,
            contact=self.string(raw.get("contact"), f"{key}.contact"),
            concurrency=self.integer(
                raw.get("concurrency", defaults.CONCURRENCY_PER_HOST), f"{key}.concurrency", low=1, high=64
            ),
            delay=self.number(raw.get("delay", defaults.DOWNLOAD_DELAY), f"{key}.delay"),
            batch_size=self.batch_size(raw.get("batch_size", defaults.MEDIAWIKI_BATCH_SIZE), f"{key}.batch_size", auth),
            batch_size_set="batch_size" in raw,
            auth=auth,
            maxlag=self.integer(raw.get("maxlag", defaults.MEDIAWIKI_MAXLAG), f"{key}.maxlag", low=0),
            recrawl_after=None
            if recrawl is None
            else parse_duration(recrawl, key=f"{key}.recrawl_after", source=self.label),
            recrawl=recrawl_mode,
            discovery=discovery,
            seeds=tuple(self.string(s, f"{key}.seeds", optional=False) for s in seeds),
            generator=generator,
            options={k: raw[k] for k in HTTP_SOURCE_KEYS if k in raw and not (k == "auth" and kind == "mediawiki")},
        )

    def recrawl_mode(self, value: Any, key: str, kind: str) -> str | None:
        """``recrawl: changes`` (a mediawiki source's daily sync from recent changes), or None."""
        if value is None:
            return None
        try:
            return parse_recrawl_mode(value, key=key, source_type=kind)
        except ConfigError as exc:
            raise self.fail(key, exc.problem) from None

    def generator(self, raw: dict[str, Any], key: str, kind: str, discovery: Discovery) -> str | None:
        """A mediawiki source's ``generator`` (checked by the spec parser with the source's namespaces and
        depth); a source seeds a crawl with ``seeds`` or a ``generator``, not both."""
        if "generator" not in raw:
            return None
        if kind != "mediawiki":
            raise self.fail(f"{key}.generator", "generators list MediaWiki pages: only mediawiki sources have one")
        if raw.get("seeds"):
            raise self.fail(f"{key}.generator", "give seeds or a generator, not both")
        value = self.string(raw.get("generator"), f"{key}.generator", optional=False)
        assert value is not None
        try:
            parse_generator(value, namespaces=discovery.namespaces, max_depth=discovery.max_depth)
        except ConfigError as exc:
            raise self.fail(f"{key}.generator", exc.problem) from None
        return value

    def bot_auth(self, value: Any, key: str) -> BotPasswordAuth:
        try:
            return parse_auth_config(value, key)
        except ConfigError as exc:
            raise self.fail(exc.key or key, exc.problem) from None

    def batch_size(self, value: Any, key: str, auth: BotPasswordAuth | None) -> int:
        """Titles per request: up to 50, or up to 500 with a bot login (its rights are checked at login)."""
        size = self.integer(value, key, low=1)
        if auth is None and size > defaults.MEDIAWIKI_MAX_BATCH_SIZE:
            raise self.fail(key, batch_size_problem(size))
        return self.integer(size, key, low=1, high=defaults.MEDIAWIKI_MAX_BOT_BATCH_SIZE)


#: The re-crawl modes besides ``recrawl_after`` (the full ``lastrevid`` sweep): ``changes``.
RECRAWL_MODES = ("changes",)


def parse_recrawl_mode(value: Any, *, key: str = "recrawl", source_type: str = "mediawiki") -> str:
    """``recrawl`` (source key or ``-a recrawl``): ``changes``, for mediawiki sources only."""
    mode = str(value).strip().lower()
    if mode not in RECRAWL_MODES:
        raise ConfigError(
            f"expected {' or '.join(RECRAWL_MODES)} (a sync from recent changes; recrawl_after is the full sweep),"
            f" got {value!r}",
            key=key,
        )
    if source_type != "mediawiki":
        raise ConfigError(f"recrawl: {mode} reads a wiki's recent changes: for mediawiki sources only", key=key)
    return mode


def batch_size_problem(size: int) -> str:
    """Why a ``batch_size`` above 50 is refused for a client without a bot login."""
    low, high = 1, defaults.MEDIAWIKI_MAX_BATCH_SIZE
    return (
        f"must be between {low} and {high}, got {size}: batch_size {size} needs a bot account with apihighlimits;"
        f" add auth: {{type: {BOTPASSWORD}, username: Name@app, password_env: VAR}} to the source"
    )


_SQLSERVER_KEYS = {
    "host",
    "port",
    "database",
    "user",
    "driver",
    "schema",
    "trust_server_certificate",
    "encrypt",
    "conn_str",
}
