"""Load and validate the YAML configuration (sources, storage, state, frontier).

The file is chosen by the ``HOLOCRON_CONFIG`` setting, then the ``HOLOCRON_CONFIG``
environment variable, then ``config/holocron.yaml`` in the working directory, then the
copy packaged in ``holocron_scrapy/resources`` (so a bare ``scrapy crawl`` works, also
inside a Scrapyd egg). Every problem raises :class:`ConfigError` naming file and key.

This module reads the common parts: the file, ``contact``, ``storage``, ``state``, ``frontier`` and
durations. Each ``sources:`` entry is validated by the model its ``type`` registered
(:mod:`holocron_scrapy.sources`); no key of a source type is known here.

Settings read: none (the caller passes ``HOLOCRON_CONFIG``). Stats written: none.
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
from holocron_scrapy.sources import SourceModel, validate_source

#: A configured source: the model its ``type`` registered (holocron_scrapy.sources).
Source = SourceModel
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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
            source = validate_source(raw, key=f"sources[{index}]", path=self.label)
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
