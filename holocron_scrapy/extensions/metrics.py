"""An optional Prometheus endpoint for a crawl: the frontier's gauges and the crawl's counters.

Off by default. With ``HOLOCRON_METRICS_PORT`` set, the extension starts prometheus_client's HTTP
server on ``HOLOCRON_METRICS_HOST`` (default ``127.0.0.1``: not exposed unless asked) when the
spider opens and stops it when the spider closes. Each worker of a fleet serves its own port;
Prometheus scrapes them all (``docs/operations.md``, "Watching a fleet").

What it serves, in its own registry (nothing of the process's default collectors):

* ``holocron_frontier_items{source, status}``: a gauge, the items of every source of the shared
  frontier per status. It is read by :meth:`WorkItemStore.counts` every :data:`INTERVAL` seconds
  in the reactor's thread pool (never on the reactor thread, never at scrape time: a scrape costs
  no database query, and a slow database only makes the gauge older, see
  ``holocron_frontier_read_timestamp_seconds``);
* counters copied from this crawl's Scrapy stats at the same interval (on the reactor, where the
  stats live): ``holocron_pages_stored_total`` (``records/written/ok``), ``holocron_requests_total``
  (``downloader/request_count``), ``holocron_responses_total{status}``
  (``downloader/response_status_count/<status>``), ``holocron_records_written_total{outcome}``
  (``records/written/<outcome>``), ``holocron_lake_bytes_total`` (``lake/bytes``) and
  ``holocron_outages_total{store}`` (``frontier/outages``, ``records/outages``). They restart at 0
  with each crawl process, as Prometheus counters may (``rate()`` handles the reset).

A port that cannot be bound is logged as an error; the crawl goes on without the endpoint.

Settings read: ``HOLOCRON_METRICS_PORT``, ``HOLOCRON_METRICS_HOST``, and for the frontier's URL
those of :func:`holocron_scrapy.db.targets.resolve_store_target` (``HOLOCRON_STATE_URL``,
``HOLOCRON_CONFIG``, ``JOBDIR`` ...). Stats written: none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from twisted.internet import task, threads
from twisted.internet.defer import Deferred

from holocron_scrapy import defaults

logger = logging.getLogger(__name__)

#: Seconds between two reads of the frontier's counts and of the crawl's stats.
INTERVAL = 5.0
#: (metric name, help, Scrapy stats key or prefix, label name or None for a single value).
COUNTERS = (
    ("holocron_pages_stored", "Pages stored (records written with outcome ok)", "records/written/ok", None),
    ("holocron_requests", "Requests sent by the downloader", "downloader/request_count", None),
    ("holocron_responses", "Responses received, by HTTP status", "downloader/response_status_count/", "status"),
    ("holocron_records_written", "Records written, by outcome", "records/written/", "outcome"),
    ("holocron_lake_bytes", "Bytes written to the JSON lake", "lake/bytes", None),
)
OUTAGES = {"frontier": "frontier/outages", "records": "records/outages"}


class FleetMetrics:
    def __init__(self, crawler: Crawler, host: str, port: int, interval: float = INTERVAL):
        from prometheus_client import CollectorRegistry

        self.crawler = crawler
        self.host, self.port, self.interval = host, port, interval
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Snapshot(self))
        #: The last reads, replaced whole (the HTTP server's thread reads them at scrape time).
        self.stats: dict[str, Any] = {}
        self.frontier: dict[str, dict[str, int]] = {}
        self.frontier_read_at: float | None = None
        self._server: Any = None
        self._thread: Any = None
        self._loop: task.LoopingCall | None = None
        self._store: Any = None
        self._reading: Deferred[None] | None = None
        self._read_failed = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FleetMetrics:
        port = crawler.settings.getint("HOLOCRON_METRICS_PORT", 0)
        if not port:
            raise NotConfigured  # off by default: no warning (Scrapy logs one for a message)
        host = crawler.settings.get("HOLOCRON_METRICS_HOST") or defaults.METRICS_HOST
        ext = cls(crawler, host, port)
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_opened(self, spider: Any) -> None:
        from prometheus_client import start_http_server

        try:  # a numeric address: binding does not wait on a resolver
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            logger.error("Metrics endpoint not started: cannot listen on %s:%s (%s)", self.host, self.port, exc)
            return
        logger.info("Metrics endpoint: http://%s:%s/metrics", self.host, self.port)
        self._loop = task.LoopingCall(self.poll)
        self._loop.start(self.interval, now=True)

    def poll(self) -> None:
        """On the reactor: copy the stats; read the frontier in the thread pool unless a read is running."""
        self.stats = _copy(self.crawler.stats.get_stats() if self.crawler.stats else {})
        if self._reading is None:
            self._reading = threads.deferToThread(self._read_frontier)
            self._reading.addBoth(self._read_done)

    def _read_frontier(self) -> None:
        """In a pool thread: open the frontier (first time) and read its counts."""
        if self._store is None:
            from holocron_scrapy.db.targets import STATE, resolve_store_target
            from holocron_scrapy.frontier.store import open_work_item_store

            target = resolve_store_target(STATE, self.crawler.settings)
            self._store = open_work_item_store(target.url, sqlserver_config=target.sqlserver_config)
        self.frontier = self._store.counts()
        self.frontier_read_at = time.time()

    def _read_done(self, result: Any) -> None:
        self._reading = None
        if hasattr(result, "getErrorMessage"):  # a Failure: logged once, the gauges keep their last value
            if not self._read_failed:
                logger.warning("Metrics: cannot read the frontier's counts: %s", result.getErrorMessage())
            self._read_failed = True

    def spider_closed(self, spider: Any) -> Deferred[None]:
        """Stop the endpoint and close the store, in the pool (``shutdown`` waits for the server's
        loop), after any read still running (a read may be opening the store)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._reading is not None:
            return self._reading.addBoth(lambda _: threads.deferToThread(self._shut_down))
        if self._server is None and self._store is None:
            return _done()
        return threads.deferToThread(self._shut_down)

    def _shut_down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        store, self._store = self._store, None
        if store is not None:
            store.close()


def _done() -> Deferred[None]:
    d: Deferred[None] = Deferred()
    d.callback(None)
    return d


def _copy(stats: dict[str, Any]) -> dict[str, Any]:
    """A copy of the stats that a thread may read; a writer thread may add a key meanwhile: try again."""
    for _ in range(5):
        try:
            return dict(stats)
        except RuntimeError:
            continue
    return {}


class _Snapshot:
    """Yields the metric families from the extension's last reads (runs in the HTTP server's thread)."""

    def __init__(self, ext: FleetMetrics):
        self.ext = ext

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        items = GaugeMetricFamily(
            "holocron_frontier_items", "Work items of the frontier, by source and status", labels=["source", "status"]
        )
        for source, per_status in sorted(self.ext.frontier.items()):
            for status, count in sorted(per_status.items()):
                items.add_metric([source, status], count)
        yield items
        read = GaugeMetricFamily(
            "holocron_frontier_read_timestamp_seconds", "When the frontier's counts were last read (Unix time)"
        )
        if self.ext.frontier_read_at is not None:
            read.add_metric([], self.ext.frontier_read_at)
        yield read
        stats = self.ext.stats
        for name, text, key, label in COUNTERS:
            if label is None:
                family = CounterMetricFamily(name, text)
                family.add_metric([], _number(stats.get(key, 0)))
            else:
                family = CounterMetricFamily(name, text, labels=[label])
                for stat, value in sorted(stats.items()):
                    rest = stat[len(key) :] if stat.startswith(key) else ""
                    if rest and "/" not in rest:
                        family.add_metric([rest], _number(value))
            yield family
        outages = CounterMetricFamily("holocron_outages", "Database outages begun, by store", labels=["store"])
        for store, key in OUTAGES.items():
            outages.add_metric([store], _number(stats.get(key, 0)))
        yield outages


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
