"""Every default value of holocron_scrapy lives here, and nowhere else."""

from __future__ import annotations

# Configuration file -------------------------------------------------------
CONFIG_ENV = "HOLOCRON_CONFIG"
CONFIG_PATH = "config/holocron.yaml"
PACKAGED_CONFIG = "holocron.default.yaml"  # inside holocron_scrapy/resources

# Storage --------------------------------------------------------------------
LAKE_DIR = "data/lake"
DELTAFETCH_DIR = "data/deltafetch"  # scrapy-deltafetch databases (opt-in per HTTP source)
RECORDS_URL = "sqlite:///data/records.sqlite3"
RECORDS_BATCH_SIZE = 100
RECORDS_FLUSH_INTERVAL = 0.5  # seconds an item may wait for its batch to be committed
GC_FREEZE = True  # gc.freeze() once the engine started: full collections skip the startup objects
METRICS_HOST = "127.0.0.1"  # HOLOCRON_METRICS_PORT (off by default) serves Prometheus metrics here
SHUTDOWN_TIMEOUT = 30.0  # seconds a stop (SIGTERM, Ctrl-C) may take to finish what is in flight

# Frontier (work_items state table) ------------------------------------------
STATE_URL = "sqlite:///data/state.sqlite3"
JOBDIR_STATE_FILE = "frontier.sqlite3"
FRONTIER_ORDER = "bfs"  # or "dfs"
#: Names the resource (hence the dedupe key) of a request; a project may replace it.
FRONTIER_KEYS_CLASS = "holocron_scrapy.frontier.dupefilter.RequestKeys"
FRONTIER_CLAIM_SIZE = 50
FRONTIER_LEASE_SECONDS = 600.0
FRONTIER_MAX_ATTEMPTS = 3
FRONTIER_RETRY_BACKOFF = 30.0  # seconds, doubled per attempt
FRONTIER_FLUSH_INTERVAL = 0.5  # seconds between flushes of buffered enqueues and acks
FRONTIER_PROGRESS_INTERVAL = 60.0  # seconds between progress lines; 0 disables
SEED_CHUNK_SIZE = 5000  # seeds the seed intake inserts per transaction, with its checkpoint
FRONTIER_FILL_BATCHES = True  # hold a half-empty batch while own requests may still add work
DUPEFILTER_CACHE_SIZE = 50_000  # dedupe keys a process remembers (no database round trip for a link seen twice)
FRONTIER_SOLO_AFTER_LOSSES = 2  # an item whose lease was lost this often is only claimed alone
FRONTIER_POLITENESS = "shared"  # a source's delay/concurrency hold fleet-wide ("local": per process)
FRONTIER_POLITENESS_LEASE = 60.0  # seconds a politeness slot lives unless renewed (a killed worker's frees itself)
FRONTIER_QUARANTINE_AFTER = 3  # an item whose worker died this often while it was alone is failed
DB_OUTAGE_LIMIT = 600.0  # seconds a database (state or records) may be unreachable before the crawl gives up
SQLITE_BUSY_TIMEOUT_MS = 30_000

# Politeness ------------------------------------------------------------------
USER_AGENT_TEMPLATE = "holocron_scrapy/{version} ({contact})"
CONCURRENCY_PER_HOST = 3
DOWNLOAD_DELAY = 1.0
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 60.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
RETRY_TIMES = 5
RETRY_BACKOFF_BASE = 2.0  # seconds; doubled per retry when Retry-After is absent
RETRY_BACKOFF_MAX = 300.0
#: Hosts whose operators require a contact address in the User-Agent.
CONTACT_REQUIRED_HOST_SUFFIXES = ("wikipedia.org", "wikimedia.org", "wikidata.org")

# MediaWiki -------------------------------------------------------------------
MEDIAWIKI_BATCH_SIZE = 50
MEDIAWIKI_MAX_BATCH_SIZE = 50  # the limit for clients without apihighlimits
MEDIAWIKI_MAX_BOT_BATCH_SIZE = 500  # with apihighlimits (a bot's BotPassword with the highvolume grant)
MEDIAWIKI_MAXLAG = 5
MEDIAWIKI_MAX_DEPTH = 1
MEDIAWIKI_NAMESPACES = (0,)
#: Retries of the start-up API probe when the answer is not JSON (an HTML page is a wrong api_url).
MEDIAWIKI_PROBE_MALFORMED_RETRIES = 2
MEDIAWIKI_RETRYABLE_ERRORS = (
    "maxlag",
    "ratelimited",
    "readonly",
    "internal_api_error_DBQueryError",
    "internal_api_error_DBConnectionError",
    "internal_api_error_DBQueryTimeoutError",
    "internal_api_error_Exception",
)
