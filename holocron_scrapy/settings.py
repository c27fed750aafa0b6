"""Scrapy settings of holocron_scrapy.

Per-source values (User-Agent contact, concurrency, delay, storage and state URLs) come
from the YAML config and are applied by the spiders at ``spider`` priority, so ``-s``
on the command line still wins. Defaults live in :mod:`holocron_scrapy.defaults`.
"""

from holocron_scrapy import __version__, defaults

BOT_NAME = "holocron_scrapy"
SPIDER_MODULES = ["holocron_scrapy.spiders"]
NEWSPIDER_MODULE = "holocron_scrapy.spiders"
COMMANDS_MODULE = "holocron_scrapy.commands"

USER_AGENT = f"holocron_scrapy/{__version__} (contact not configured)"

# The SQL frontier -----------------------------------------------------------------
SCHEDULER = "holocron_scrapy.frontier.scheduler.FrontierScheduler"
DUPEFILTER_CLASS = "holocron_scrapy.frontier.dupefilter.FrontierDupeFilter"

SPIDER_MIDDLEWARES = {
    # Last to see the callback output (closest to the engine): acks what nothing took.
    "holocron_scrapy.frontier.acks.FrontierAckMiddleware": 10,
    # Next to the callback: notes the work item ids each request carries, so that the ack middleware
    # fails (not acks) the ids of a request dropped in between (DepthMiddleware, UrlLengthMiddleware).
    "holocron_scrapy.frontier.acks.FrontierHandOffMiddleware": 990,
    # Opt-in per source (DELTAFETCH_ENABLED); scrapy-deltafetch fixed for async output.
    "holocron_scrapy.middlewares.deltafetch.AsyncDeltaFetch": 100,
}
DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "holocron_scrapy.middlewares.retry.PoliteRetryMiddleware": 550,
    # A MediaWiki bot login's session cookie and re-login (does nothing for spiders without one). Here, not
    # in the spider's custom_settings: a dict there replaces this one whole (the retry middleware with it).
    "holocron_scrapy.mediawiki.auth.BotLoginMiddleware": 560,
    "holocron_scrapy.web.auth.SourceAuthMiddleware": 580,
    "holocron_scrapy.middlewares.conditional.ConditionalRequestMiddleware": 585,
}
ITEM_PIPELINES = {
    "holocron_scrapy.pipelines.changes.ChangeFilterPipeline": 200,
    "holocron_scrapy.pipelines.lake.JsonLakePipeline": 300,
    "holocron_scrapy.pipelines.records.IngestRecordsPipeline": 400,
}
EXTENSIONS = {
    "holocron_scrapy.extensions.runs.RunSummary": 500,
    # Bounds a stop (SIGTERM, Ctrl-C) by HOLOCRON_SHUTDOWN_TIMEOUT, then hands back what is in flight.
    "holocron_scrapy.extensions.shutdown.GracefulShutdown": 510,
    # gc.freeze() once the engine started: full collections skip what lives as long as the crawl.
    "holocron_scrapy.extensions.collector.FreezeStartupObjects": 520,
    "holocron_scrapy.extensions.metrics.FleetMetrics": 530,  # Prometheus endpoint, off unless HOLOCRON_METRICS_PORT
    # A progress line of the frontier every HOLOCRON_FRONTIER_PROGRESS_INTERVAL seconds, as LogStats'.
    "holocron_scrapy.extensions.progress.FrontierProgress": 540,
}
# No open port a crawler does not need: Scrapy's RemoteControl (on by default since 2.19: an HTTP
# server on localhost that runs any Python code posted to it, its bearer token written to a job
# file in the user's profile) and the telnet console (a Python shell on 127.0.0.1:6023) are off.
# Runs are watched through their logs, stats and run summaries instead.
REMOTE_CONTROL_ENABLED = False
TELNETCONSOLE_ENABLED = False

# Politeness, on by default ----------------------------------------------------------
# Scrapy's downloader, with CONCURRENT_REQUESTS_PER_DOMAIN also enforced when the delay is 0.
DOWNLOADER = "holocron_scrapy.downloader.PoliteDownloader"
ROBOTSTXT_OBEY = True
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = defaults.AUTOTHROTTLE_START_DELAY
AUTOTHROTTLE_MAX_DELAY = defaults.AUTOTHROTTLE_MAX_DELAY
AUTOTHROTTLE_TARGET_CONCURRENCY = defaults.AUTOTHROTTLE_TARGET_CONCURRENCY
CONCURRENT_REQUESTS_PER_DOMAIN = defaults.CONCURRENCY_PER_HOST
DOWNLOAD_DELAY = defaults.DOWNLOAD_DELAY
RETRY_TIMES = defaults.RETRY_TIMES
# Codes retried besides what holocron_scrapy.failures calls transient (408, 425, 429 and every 5xx,
# whatever this list says); kept short so Scrapy's "Overridden settings" log line stays one line.
RETRY_HTTP_CODES = [408, 429, 500, 502, 503, 504]
DEFAULT_REQUEST_HEADERS = {
    "Accept": "application/json, text/html;q=0.9, */*;q=0.8",
    "Accept-Encoding": "gzip, deflate",
}
COMPRESSION_ENABLED = True

DELTAFETCH_ENABLED = False

LOG_LEVEL = "INFO"
DEFAULT_DROPITEM_LOG_LEVEL = "DEBUG"
FEED_EXPORT_ENCODING = "utf-8"
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
