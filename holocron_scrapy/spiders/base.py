"""What every holocron spider shares: config loading, spider-argument parsing, and the
per-source settings (User-Agent, politeness, storage and state URLs) applied at
``spider`` priority before the crawl starts (``-s`` still wins).

Before anything else is built, the spider arguments are checked against the ones the spider
accepts (the common ones and those its source type's model names: :mod:`holocron_scrapy.sources`;
the model coerces and validates them in the spider's ``configure``, this module knows no type), and
afterwards every ``HOLOCRON_*`` setting is validated (:mod:`holocron_scrapy.settings_check`); secret
masking is installed for the crawl (:mod:`holocron_scrapy.secrets`).

Seeds (``-a seeds``, a source's ``seeds``) are a :class:`~holocron_scrapy.frontier.intake.SeedList`;
:meth:`HolocronSpider.seed_requests` hands them to the frontier's seed intake (streamed, exactly once,
checkpointed) and each spider says what one seed's request is (``seed_request``).

Settings read: ``HOLOCRON_CONFIG``, ``HOLOCRON_CONTACT``, ``HOLOCRON_RUN_ID``, ``HOLOCRON_SEED_CHUNK_SIZE``
(and all ``HOLOCRON_*``, checked).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scrapy import Request, Spider
from scrapy.crawler import Crawler

from holocron_scrapy import __version__, defaults, secrets
from holocron_scrapy.config import Config, Source, load_config
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.intake import SeedList, run_in_frontier
from holocron_scrapy.frontier.scheduler import scheduler_of
from holocron_scrapy.settings_check import check_arguments, check_settings
from holocron_scrapy.sources import SourceModel, common_arguments, source_type

#: Spider arguments every holocron spider accepts (names starting with ``_``, as Scrapyd's ``_job``, pass too).
COMMON_ARGUMENTS = ("source", "seeds", "recrawl_after", "full_refresh")


def new_run_id() -> str:
    return f"run_{datetime.now(timezone.utc):%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:6]}"


def parse_seeds(value: str | None, *, key: str = "seeds") -> SeedList | None:
    """``"A|B|C"`` or ``@path`` (one seed per line; blank lines and ``#`` comments skipped), as a
    :class:`~holocron_scrapy.frontier.intake.SeedList`: a file is checked and digested here, and
    streamed by the seed intake, never held whole. None when *value* is None."""
    if value is None:
        return None
    return SeedList.parse(value, key=key)


def response_header(response: Any, name: str | bytes) -> str | None:
    """A response header as text (latin-1, as HTTP sends it), or None when absent or empty."""
    value = response.headers.get(name)
    return value.decode("latin-1") if value else None


def user_agent(contact: str | None) -> str:
    return defaults.USER_AGENT_TEMPLATE.format(version=__version__, contact=contact or "contact not configured")


def needs_contact(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == s or host.endswith("." + s) for s in defaults.CONTACT_REQUIRED_HOST_SUFFIXES)


class HolocronSpider(Spider):
    """Base class: subclasses set ``source_type`` (a type registered in :mod:`holocron_scrapy.sources`,
    whose model says which ``-a`` arguments the spider accepts) and implement :meth:`configure`."""

    source_type = ""
    default_source: str | None = None
    run_id: str
    config: Config
    source: Source
    options: Any  # what configure() returned; subclasses declare their options class
    full_refresh: bool  # HOLOCRON_FULL_REFRESH
    records_url: str  # HOLOCRON_RECORDS_URL
    records_sqlserver: dict[str, Any]  # HOLOCRON_RECORDS_SQLSERVER
    frontier_hold = False  # read by the frontier: more work is about to be queued (batching spiders)

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> HolocronSpider:
        settings = crawler.settings
        secrets.install(settings)  # mask secrets in every log line of this crawl
        check_arguments(kwargs, cls.accepted_arguments(), cls.name)
        config = load_config(settings.get("HOLOCRON_CONFIG"))
        source = cls.select_source(config, kwargs)
        options, settings_updates = cls.configure(config, source, kwargs)
        contact = source.contact or settings.get("HOLOCRON_CONTACT") or config.contact
        cls.check_contact(source, contact, cls.target_urls(options))
        run_id = settings.get("HOLOCRON_RUN_ID") or new_run_id()
        updates: dict[str, Any] = {
            "USER_AGENT": user_agent(contact),
            "CONCURRENT_REQUESTS_PER_DOMAIN": source.concurrency,
            "DOWNLOAD_DELAY": source.delay,
            "AUTOTHROTTLE_START_DELAY": max(source.delay, 0.1),
            "HOLOCRON_LAKE_DIR": str(Path(config.lake_dir).expanduser().resolve()),
            "DELTAFETCH_DIR": str(Path(config.deltafetch_dir).expanduser().resolve()),
            "HOLOCRON_RECORDS_URL": config.records_url,
            "HOLOCRON_RECORDS_SQLSERVER": config.records_sqlserver,
            "HOLOCRON_STATE_SQLSERVER": config.state_sqlserver,
            "HOLOCRON_RUN_ID": run_id,
            "HOLOCRON_SOURCE_NAME": source.name,
            "HOLOCRON_SOURCE_SYSTEM": cls.source_system_name(),
        }
        if config.state_url:
            updates["HOLOCRON_STATE_URL"] = config.state_url
        common = common_arguments(kwargs)
        recrawl_after = common.recrawl_after if "recrawl_after" in kwargs else source.recrawl_after
        if recrawl_after is not None:
            updates["HOLOCRON_RECRAWL_AFTER"] = recrawl_after
        if common.full_refresh:
            updates["HOLOCRON_FULL_REFRESH"] = True
        for key, value in config.frontier.items():
            updates[f"HOLOCRON_FRONTIER_{key.upper()}"] = value
        updates.update(settings_updates)
        for name, value in updates.items():
            settings.set(name, value, priority="spider")
        secrets.register_settings(settings)  # the config's store URLs may carry ODBC passwords
        check_settings(settings)  # typed, once, before the engine starts: one clear line, no traceback
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.config = config
        spider.source = source
        spider.options = options
        spider.run_id = settings.get("HOLOCRON_RUN_ID")
        spider.full_refresh = settings.getbool("HOLOCRON_FULL_REFRESH")
        spider.records_url = settings.get("HOLOCRON_RECORDS_URL")
        spider.records_sqlserver = settings.getdict("HOLOCRON_RECORDS_SQLSERVER")
        return spider

    @classmethod
    def source_system_name(cls) -> str:
        return cls.source_type

    # -- seeds -------------------------------------------------------------------------
    def seed_request(self, seed: str) -> Request | None:
        """The start request of one seed (None: the seed is dropped). Pure: the seed intake calls it
        in the frontier's worker thread."""
        raise NotImplementedError

    async def seed_requests(self, seeds: SeedList) -> AsyncIterator[Request]:
        """Hand the seeds over. With the frontier scheduler they go through the seed intake
        (:mod:`holocron_scrapy.frontier.intake`: streamed into ``work_items`` in chunks, off the reactor,
        checkpointed, skipped when an earlier run took the same list in) and nothing is yielded; with
        another scheduler each seed's request is yielded. ``frontier_hold`` is set meanwhile, so that
        the frontier holds half-empty batches until the last seed is in."""
        frontier = scheduler_of(self.crawler)
        if frontier is None or frontier.store is None:
            for seed in seeds:
                request = self.seed_request(seed)
                if request is not None:
                    yield request
            return
        self.frontier_hold = True
        try:
            chunk = self.crawler.settings.getint("HOLOCRON_SEED_CHUNK_SIZE")
            await run_in_frontier(frontier, seeds, self.seed_request, chunk_size=chunk, stats=self.crawler.stats)
        finally:
            self.frontier_hold = False
        frontier.stored_elsewhere(0)  # claim now: a half-empty last batch is no longer held

    @classmethod
    def source_model(cls) -> type[SourceModel]:
        """The model of this spider's source type."""
        return source_type(cls.source_type).model

    @classmethod
    def accepted_arguments(cls) -> tuple[str, ...]:
        """The ``-a`` arguments this spider accepts: :data:`COMMON_ARGUMENTS` plus its source model's."""
        return COMMON_ARGUMENTS + tuple(cls.source_model().arguments)

    @classmethod
    def select_source(cls, config: Config, kwargs: dict[str, Any]) -> Source:
        name = kwargs.get("source") or cls.default_source
        if not name:
            raise ConfigError(
                f"no source given: use -a source=NAME (configured: {', '.join(config.sources) or 'none'})", key="source"
            )
        source = config.source(name)
        if source.type != cls.source_type:
            raise ConfigError(
                f"source {name!r} has type {source.type!r}; the {cls.name!r} spider crawls {cls.source_type!r} sources",
                key="source",
                source=config.path,
            )
        return source

    @classmethod
    def configure(cls, config: Config, source: Source, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Validate spider arguments into an options object; return it and extra settings.

        Raises ConfigError on bad input, before any request is made."""
        raise NotImplementedError

    @classmethod
    def target_urls(cls, options: Any) -> list[str]:
        """The URLs the crawl will contact first (checked for the Wikimedia contact rule)."""
        return []

    @classmethod
    def check_contact(cls, source: Source, contact: str | None, urls: list[str]) -> None:
        if not contact and any(needs_contact(u) for u in urls):
            raise ConfigError(
                "Wikimedia sites require a contact (e-mail or URL) in the User-Agent; set `contact:` in the"
                f" config (top level or on source {source.name!r}) or pass -s HOLOCRON_CONTACT=you@example.org",
                key="contact",
            )
