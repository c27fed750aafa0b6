"""Which store a command or a crawl works on: one rule for ``scrapy db``, ``scrapy frontier``,
``scrapy lake`` and the crawl's scheduler.

The records store: the command's ``--url``, else the ``HOLOCRON_RECORDS_URL`` setting, else
``storage.records_url`` of the config chosen by ``HOLOCRON_CONFIG`` (whose default is
``defaults.RECORDS_URL``).

The state store (the frontier): the command's ``--url``, else the crawl's rule. A crawl puts the
config's ``state.url`` into ``HOLOCRON_STATE_URL`` at ``spider`` priority; of that setting and
``JOBDIR`` (``JOBDIR``/frontier.sqlite3) the one set at the higher priority wins, the URL on a tie.
So ``-s JOBDIR=crawls/run1`` beats the config's ``state.url``, and an explicit
``-s HOLOCRON_STATE_URL`` beats ``-s JOBDIR``. Without any of them: ``defaults.STATE_URL``.

SQL Server settings (the YAML ``sqlserver`` section) are the ``HOLOCRON_RECORDS_SQLSERVER`` /
``HOLOCRON_STATE_SQLSERVER`` setting when set, else the config's ``storage.sql_server`` /
``state.sqlserver``; they are looked up only for a SQL Server URL, and the config is read only
when the answer depends on it.

Settings read: ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_STATE_URL``, ``HOLOCRON_RECORDS_SQLSERVER``,
``HOLOCRON_STATE_SQLSERVER``, ``JOBDIR``, ``HOLOCRON_CONFIG``. Stats written: none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holocron_scrapy import defaults
from holocron_scrapy.db.connection import SQLSERVER, StoreURL, dialect_of, parse_store_url
from holocron_scrapy.errors import ConfigError

STATE, RECORDS = "state", "records"
STORES = (STATE, RECORDS)
#: The priority at which a crawl applies the config file (``scrapy.settings.SETTINGS_PRIORITIES``).
CONFIG_PRIORITY = 30
_EXPLICIT = 1_000  # a plain dict's value: above every Scrapy priority


@dataclass(frozen=True)
class StoreTarget:
    """A store URL, where it came from (an option, setting or config key, for error messages) and
    its SQL Server settings section."""

    store: str
    url: str
    origin: str
    sqlserver_config: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> str | None:
        return dialect_of(self.url)

    def parsed(self) -> StoreURL:
        return parse_store_url(self.url, setting=self.origin)


def setting_name(store: str) -> str:
    return f"HOLOCRON_{store.upper()}_URL"


def _priority(settings: Any, name: str) -> int:
    getpriority = getattr(settings, "getpriority", None)
    if getpriority is None:  # a plain dict: what is there was set on purpose
        return _EXPLICIT if settings.get(name) else 0
    return getpriority(name) or 0


def jobdir_state_url(jobdir: str) -> str:
    return "sqlite:///" + str(Path(jobdir, defaults.JOBDIR_STATE_FILE).resolve())


def load_command_config(settings: Any) -> Any:
    """The config chosen by ``HOLOCRON_CONFIG`` (the setting, then the environment, then the packaged one)."""
    from holocron_scrapy.config import load_config

    try:
        return load_config(settings.get("HOLOCRON_CONFIG"))
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration: {exc}", key="HOLOCRON_CONFIG") from exc


@dataclass(frozen=True)
class _NoConfig:
    """What a crawl's settings stand for: the spider applied the config to them already."""

    records_url: str = defaults.RECORDS_URL
    state_url: str | None = None
    records_sqlserver: dict[str, Any] = field(default_factory=dict)
    state_sqlserver: dict[str, Any] = field(default_factory=dict)


def resolve_store_target(
    store: str,
    settings: Any,
    *,
    url: str | None = None,
    option: str = "--url",
    config: Callable[[], Any] | None = None,
    read_config: bool = True,
) -> StoreTarget:
    """The store *store* (``state`` or ``records``): *url* (the value of a command's *option*) when
    given, else the rule of the module doc. *config* loads the config (default:
    :func:`load_command_config`); it is called at most once, and only when needed; with
    *read_config* False (a crawl, whose spider applied the config to the settings) it is not read. The
    URL is not parsed here: :meth:`StoreTarget.parsed` does it, naming its origin.

    This is the one implementation of the rule: :func:`crawl_store_target` and the ``*_from_settings``
    helpers below call it."""
    if store not in STORES:
        raise ValueError(f"unknown store {store!r}")
    loaded: list[Any] = []

    def cfg() -> Any:
        if not loaded:
            if not read_config:
                loaded.append(_NoConfig())
            else:
                loaded.append(config() if config is not None else load_command_config(settings))
        return loaded[0]

    name = setting_name(store)
    if url:
        raw, origin = url, option
    elif store == RECORDS:
        raw, origin = settings.get(name), name
        if not raw:
            raw, origin = cfg().records_url, "storage.records_url"
    else:
        raw, origin = _state_url(settings, cfg)
    section: dict[str, Any] = {}
    if dialect_of(raw) == SQLSERVER:
        section = _getdict(settings, f"HOLOCRON_{store.upper()}_SQLSERVER")
        if not section:
            section = dict(cfg().records_sqlserver if store == RECORDS else cfg().state_sqlserver)
    return StoreTarget(store, raw, origin, section)


def crawl_store_target(store: str, settings: Any) -> StoreTarget:
    """The store of a crawl (the scheduler, the pipelines, the extensions): the crawl's settings
    only, which hold the config's values already (the spider set them at ``spider`` priority)."""
    return resolve_store_target(store, settings, read_config=False)


def state_url_from_settings(settings: Any) -> str:
    """The crawl's state URL: of ``HOLOCRON_STATE_URL`` and ``JOBDIR`` the higher priority wins (the
    URL on a tie, and for a plain dict), else the default."""
    return crawl_store_target(STATE, settings).url


def records_url_from_settings(settings: Any) -> str:
    """The crawl's records URL: ``HOLOCRON_RECORDS_URL``, else the default."""
    return crawl_store_target(RECORDS, settings).url


def _getdict(settings: Any, name: str) -> dict[str, Any]:
    if hasattr(settings, "getdict"):
        return dict(settings.getdict(name) or {})
    return dict(settings.get(name) or {})


def _state_url(settings: Any, cfg: Callable[[], Any]) -> tuple[str, str]:
    origin = "HOLOCRON_STATE_URL"
    url, url_priority = settings.get(origin), _priority(settings, origin)
    jobdir, jobdir_priority = settings.get("JOBDIR"), _priority(settings, "JOBDIR")
    beats_config = (url and url_priority > CONFIG_PRIORITY) or (jobdir and jobdir_priority > CONFIG_PRIORITY)
    if not beats_config:
        config_url = cfg().state_url
        if config_url and (not url or CONFIG_PRIORITY >= url_priority):
            url, url_priority, origin = config_url, CONFIG_PRIORITY, "state.url"
    if jobdir and (not url or jobdir_priority > url_priority):
        return jobdir_state_url(jobdir), "JOBDIR"
    if url:
        return url, origin
    return defaults.STATE_URL, "HOLOCRON_STATE_URL"
