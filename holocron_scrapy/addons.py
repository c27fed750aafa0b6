"""Scrapy add-ons: the SQL frontier for any Scrapy project, and the whole holocron_scrapy product.

Any Scrapy project gets the leased, resumable, shared frontier with two settings::

    ADDONS = {"holocron_scrapy.addons.Frontier": 300}
    HOLOCRON_STATE_URL = "sqlite:///state.sqlite3"   # or postgresql+psycopg://..., mssql+pyodbc://...

* :class:`Frontier` sets ``SCHEDULER`` and ``DUPEFILTER_CLASS`` to the frontier's, adds the ack and
  hand-off spider middlewares (:mod:`holocron_scrapy.frontier.acks`) to the project's own
  ``SPIDER_MIDDLEWARES``, the progress line (:mod:`holocron_scrapy.extensions.progress`) to its
  ``EXTENSIONS``, and registers the frontier's defaults (``HOLOCRON_STATE_URL``,
  ``HOLOCRON_FRONTIER_*``, ...). Leases and their renewal run in the scheduler.
  It brings no lake, no MediaWiki, no pipeline, and touches nothing else.
* :class:`Holocron` is the product: the frontier, the lake and IngestRecords pipelines, the run
  summaries and the other extensions, the polite downloader and retry middleware, and the politeness
  defaults. holocron_scrapy's own ``settings.py`` enables it and sets nothing it sets.

Every value is set at Scrapy's ``addon`` priority and every component is added only when the
project's dict does not name it yet, so a project's own value always wins, including ``None`` to
disable one component (an empty dict does not disable the add-on's components: name them with
``None``). The defaults are registered here, once, from :mod:`holocron_scrapy.defaults`; the
components read their settings without fallbacks.

:func:`frontier_settings` and :func:`apply_addons` build settings with the add-ons applied, as a
Crawler applies them before a crawl, for code that reads them without a crawl (tests, tools).

Settings read: ``ADDONS`` (by :func:`apply_addons`). Settings written (at ``addon`` priority): see
:data:`FRONTIER_SETTINGS`, :data:`FRONTIER_EXTENSIONS`, :data:`FRONTIER_DEFAULTS`, :data:`HOLOCRON_SETTINGS`,
:data:`HOLOCRON_DEFAULTS` and the component dicts below. Stats: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scrapy.settings import BaseSettings, Settings
from scrapy.utils.misc import load_object

from holocron_scrapy import __version__, defaults

ADDON = "addon"

#: What makes the frontier the crawl's queue.
FRONTIER_SETTINGS: dict[str, Any] = {
    "SCHEDULER": "holocron_scrapy.frontier.scheduler.FrontierScheduler",
    "DUPEFILTER_CLASS": "holocron_scrapy.frontier.dupefilter.FrontierDupeFilter",
}
FRONTIER_SPIDER_MIDDLEWARES: dict[str, int] = {
    # Last to see the callback output (closest to the engine): acks what nothing took.
    "holocron_scrapy.frontier.acks.FrontierAckMiddleware": 10,
    # Next to the callback: notes the work item ids each request carries, so that the ack middleware
    # fails (not acks) the ids of a request dropped in between (DepthMiddleware, UrlLengthMiddleware).
    "holocron_scrapy.frontier.acks.FrontierHandOffMiddleware": 990,
}
#: The frontier's progress line (as Scrapy's LogStats), read off the reactor.
FRONTIER_EXTENSIONS: dict[str, int] = {
    "holocron_scrapy.extensions.progress.FrontierProgress": 540,
}
#: The defaults of the settings the frontier's components read (scheduler, dupe filter, seed intake,
#: shared politeness).
FRONTIER_DEFAULTS: dict[str, Any] = {
    "HOLOCRON_STATE_URL": defaults.STATE_URL,
    "HOLOCRON_FRONTIER_ORDER": defaults.FRONTIER_ORDER,
    "HOLOCRON_FRONTIER_CLAIM_SIZE": defaults.FRONTIER_CLAIM_SIZE,
    "HOLOCRON_FRONTIER_LEASE_SECONDS": defaults.FRONTIER_LEASE_SECONDS,
    "HOLOCRON_FRONTIER_MAX_ATTEMPTS": defaults.FRONTIER_MAX_ATTEMPTS,
    "HOLOCRON_FRONTIER_RETRY_BACKOFF": defaults.FRONTIER_RETRY_BACKOFF,
    "HOLOCRON_FRONTIER_FLUSH_INTERVAL": defaults.FRONTIER_FLUSH_INTERVAL,
    "HOLOCRON_FRONTIER_PROGRESS_INTERVAL": defaults.FRONTIER_PROGRESS_INTERVAL,
    "HOLOCRON_FRONTIER_FILL_BATCHES": defaults.FRONTIER_FILL_BATCHES,
    "HOLOCRON_FRONTIER_SOLO_AFTER_LOSSES": defaults.FRONTIER_SOLO_AFTER_LOSSES,
    "HOLOCRON_FRONTIER_QUARANTINE_AFTER": defaults.FRONTIER_QUARANTINE_AFTER,
    "HOLOCRON_FRONTIER_POLITENESS": defaults.FRONTIER_POLITENESS,
    "HOLOCRON_FRONTIER_POLITENESS_LEASE": defaults.FRONTIER_POLITENESS_LEASE,
    "HOLOCRON_SEED_CHUNK_SIZE": defaults.SEED_CHUNK_SIZE,
    "HOLOCRON_DUPEFILTER_CACHE_SIZE": defaults.DUPEFILTER_CACHE_SIZE,
    "HOLOCRON_FRONTIER_KEYS_CLASS": defaults.FRONTIER_KEYS_CLASS,
    "HOLOCRON_DB_OUTAGE_LIMIT": defaults.DB_OUTAGE_LIMIT,
    "HOLOCRON_RETRY_BACKOFF_BASE": defaults.RETRY_BACKOFF_BASE,  # also the shared politeness's backoff
    "HOLOCRON_RETRY_BACKOFF_MAX": defaults.RETRY_BACKOFF_MAX,
}

HOLOCRON_SPIDER_MIDDLEWARES: dict[str, int] = {
    # Opt-in per source (DELTAFETCH_ENABLED); scrapy-deltafetch fixed for async output.
    "holocron_scrapy.middlewares.deltafetch.AsyncDeltaFetch": 100,
}
HOLOCRON_DOWNLOADER_MIDDLEWARES: dict[str, int | None] = {
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "holocron_scrapy.middlewares.retry.PoliteRetryMiddleware": 550,
    # A MediaWiki bot login's session cookie and re-login (does nothing for spiders without one).
    "holocron_scrapy.mediawiki.auth.BotLoginMiddleware": 560,
    "holocron_scrapy.web.auth.SourceAuthMiddleware": 580,
    "holocron_scrapy.middlewares.conditional.ConditionalRequestMiddleware": 585,
}
HOLOCRON_ITEM_PIPELINES: dict[str, int] = {
    "holocron_scrapy.pipelines.changes.ChangeFilterPipeline": 200,
    "holocron_scrapy.pipelines.lake.JsonLakePipeline": 300,
    "holocron_scrapy.pipelines.records.IngestRecordsPipeline": 400,
}
HOLOCRON_EXTENSIONS: dict[str, int] = {
    "holocron_scrapy.extensions.runs.RunSummary": 500,
    # Bounds a stop (SIGTERM, Ctrl-C) by HOLOCRON_SHUTDOWN_TIMEOUT, then hands back what is in flight.
    "holocron_scrapy.extensions.shutdown.GracefulShutdown": 510,
    # gc.freeze() once the engine started: full collections skip what lives as long as the crawl.
    "holocron_scrapy.extensions.collector.FreezeStartupObjects": 520,
    "holocron_scrapy.extensions.metrics.FleetMetrics": 530,  # Prometheus endpoint, off unless HOLOCRON_METRICS_PORT
}
#: Scrapy settings of the product. Per-source values (User-Agent contact, concurrency, delay, storage and
#: state URLs) come from the YAML config and are set by the spiders at ``spider`` priority.
HOLOCRON_SETTINGS: dict[str, Any] = {
    "USER_AGENT": defaults.USER_AGENT_TEMPLATE.format(version=__version__, contact="contact not configured"),
    # No open port a crawler does not need: Scrapy's RemoteControl (on by default since 2.19: an HTTP
    # server on localhost that runs any Python code posted to it, its bearer token written to a job
    # file in the user's profile) and the telnet console (a Python shell on 127.0.0.1:6023) are off.
    # Runs are watched through their logs, stats and run summaries instead.
    "REMOTE_CONTROL_ENABLED": False,
    "TELNETCONSOLE_ENABLED": False,
    # Politeness, on by default. Scrapy's downloader, with CONCURRENT_REQUESTS_PER_DOMAIN also enforced
    # when the delay is 0, and the fleet-wide politeness of the frontier.
    "DOWNLOADER": "holocron_scrapy.downloader.PoliteDownloader",
    "ROBOTSTXT_OBEY": True,
    "AUTOTHROTTLE_ENABLED": True,
    "AUTOTHROTTLE_START_DELAY": defaults.AUTOTHROTTLE_START_DELAY,
    "AUTOTHROTTLE_MAX_DELAY": defaults.AUTOTHROTTLE_MAX_DELAY,
    "AUTOTHROTTLE_TARGET_CONCURRENCY": defaults.AUTOTHROTTLE_TARGET_CONCURRENCY,
    "CONCURRENT_REQUESTS_PER_DOMAIN": defaults.CONCURRENCY_PER_HOST,
    "DOWNLOAD_DELAY": defaults.DOWNLOAD_DELAY,
    "RETRY_TIMES": defaults.RETRY_TIMES,
    # Codes retried besides what holocron_scrapy.failures calls transient (408, 425, 429 and every 5xx,
    # whatever this list says); kept short so Scrapy's "Overridden settings" log line stays one line.
    "RETRY_HTTP_CODES": [408, 429, 500, 502, 503, 504],
    "DEFAULT_REQUEST_HEADERS": {
        "Accept": "application/json, text/html;q=0.9, */*;q=0.8",
        "Accept-Encoding": "gzip, deflate",
    },
    "COMPRESSION_ENABLED": True,
    "DELTAFETCH_ENABLED": False,
    "DEFAULT_DROPITEM_LOG_LEVEL": "DEBUG",
    "FEED_EXPORT_ENCODING": "utf-8",
}
#: The defaults of the product's own settings besides the frontier's.
HOLOCRON_DEFAULTS: dict[str, Any] = {
    "HOLOCRON_LAKE_DIR": defaults.LAKE_DIR,
    "DELTAFETCH_DIR": defaults.DELTAFETCH_DIR,
    "HOLOCRON_RECORDS_URL": defaults.RECORDS_URL,
    "HOLOCRON_RECORDS_BATCH_SIZE": defaults.RECORDS_BATCH_SIZE,
    "HOLOCRON_RECORDS_FLUSH_INTERVAL": defaults.RECORDS_FLUSH_INTERVAL,
    "HOLOCRON_GC_FREEZE": defaults.GC_FREEZE,
    "HOLOCRON_METRICS_HOST": defaults.METRICS_HOST,
    "HOLOCRON_SHUTDOWN_TIMEOUT": defaults.SHUTDOWN_TIMEOUT,
    "HOLOCRON_MEDIAWIKI_RETRYABLE_ERRORS": list(defaults.MEDIAWIKI_RETRYABLE_ERRORS),
}


def set_defaults(settings: BaseSettings, values: Mapping[str, Any]) -> None:
    """Set each of *values* at ``addon`` priority: a value the project, a spider or the command line set
    (any priority above ``addon``) stays."""
    for name, value in values.items():
        settings.set(name, value, priority=ADDON)


def _same_component(key: Any, path: str) -> bool:
    if key == path:
        return True
    try:
        return load_object(key) is load_object(path)
    except (ImportError, NameError, ValueError, AttributeError):
        return False


def add_components(settings: BaseSettings, name: str, components: Mapping[str, int | None]) -> None:
    """Add each of *components* (import path: order) to the component dict *name* (``SPIDER_MIDDLEWARES``,
    ``ITEM_PIPELINES``, ...) unless the dict names it already (by path or as a class, ``None`` included).

    The project's own entries stay, and so does the setting's priority."""
    current = settings.getdict(name)
    added = {path: order for path, order in components.items() if not any(_same_component(k, path) for k in current)}
    if added:
        settings.set(name, {**current, **added}, priority=settings.getpriority(name) or 0)


class Frontier:
    """The SQL frontier in any Scrapy project: scheduler, dupe filter, ack and hand-off middlewares and
    their defaults; nothing else."""

    def update_settings(self, settings: BaseSettings) -> None:
        set_defaults(settings, FRONTIER_SETTINGS)
        add_components(settings, "SPIDER_MIDDLEWARES", FRONTIER_SPIDER_MIDDLEWARES)
        add_components(settings, "EXTENSIONS", FRONTIER_EXTENSIONS)
        set_defaults(settings, FRONTIER_DEFAULTS)


class Holocron:
    """holocron_scrapy entire: :class:`Frontier`, the lake and records pipelines, the run summaries and
    other extensions, the polite downloader and retry middleware, the politeness defaults."""

    def update_settings(self, settings: BaseSettings) -> None:
        Frontier().update_settings(settings)
        set_defaults(settings, HOLOCRON_SETTINGS)
        add_components(settings, "SPIDER_MIDDLEWARES", HOLOCRON_SPIDER_MIDDLEWARES)
        add_components(settings, "DOWNLOADER_MIDDLEWARES", HOLOCRON_DOWNLOADER_MIDDLEWARES)
        add_components(settings, "ITEM_PIPELINES", HOLOCRON_ITEM_PIPELINES)
        add_components(settings, "EXTENSIONS", HOLOCRON_EXTENSIONS)
        set_defaults(settings, HOLOCRON_DEFAULTS)


def apply_addons(settings: Settings) -> Settings:
    """A copy of *settings* with its ``ADDONS`` applied, as a Crawler applies them before a crawl (the
    settings as a crawl's components see them, e.g. the project's with :class:`Holocron`)."""
    from scrapy import Spider
    from scrapy.crawler import Crawler

    crawler = Crawler(Spider, settings)  # copies the settings; builds nothing yet
    crawler.addons.load_settings(crawler.settings)
    return crawler.settings


def frontier_settings(values: Mapping[str, Any] | None = None) -> Settings:
    """*values* at ``project`` priority with :class:`Frontier` applied: what the frontier's components
    read when they are built without a crawl of a project that enables it."""
    settings = Settings(dict(values or {}), priority="project")
    Frontier().update_settings(settings)
    return settings
