"""Crawl rate of the SQL frontier against Scrapy's own schedulers.

A loopback HTTP server (asyncio, its own process) serves ``/p/N`` for ``0 <= N < pages``;
page N links to pages ``(10 N + k) mod pages`` for k = 1..10, so a crawl from ``/p/0`` reaches
exactly ``pages`` pages (a 10-ary tree, plus links back to known pages: 10 links per page,
9 of 10 of them duplicates overall). Each configuration crawls the whole graph in its own
subprocess with politeness off (16 concurrent requests, no pipelines, no extensions, and
``CONCURRENT_ITEMS`` 16 instead of Scrapy's 100, which spawns 100 tasks per response whatever
its output: the same cost for every scheduler, so the scheduler's share shows more):

* ``frontier``: :class:`holocron_scrapy.frontier.scheduler.FrontierScheduler` with the project's
  scheduler, dupe filter and spider middlewares (the ack middleware), a SQLite state URL in a temp
  dir, ``HOLOCRON_FRONTIER_PROGRESS_INTERVAL=0`` and every other frontier setting at its default;
* ``frontier-pg``: the same on PostgreSQL: a throw-away database on the machine's server
  (127.0.0.1:5432, user root; :mod:`benchmarks.pg`), created by this script for each crawl and
  dropped after it, also when the crawl fails or the script is stopped;
* ``memory``: ``scrapy.core.scheduler.Scheduler`` + ``scrapy.dupefilters.RFPDupeFilter``;
* ``jobdir``: the same with ``JOBDIR`` (disk queues, persisted seen set).

By default the crawls run one at a time, the configurations rotated within each repeat: pages per
second = ``response_received_count / elapsed_time_seconds`` (Scrapy's stats: spider opened to
spider closed). With ``--paired`` the configurations of a repeat crawl simultaneously and are
compared in the time window where all of them run (past their first and before their last 5% of
pages), so that load from other processes weighs on all of them alike. Ratios to ``memory`` are
taken per repeat; the table gives medians.

    python -m benchmarks.frontier_crawl_rate            # 20,000 pages, 3 repeats, one crawl at a time
    python -m benchmarks.frontier_crawl_rate --paired   # 20,000 pages, 3 rounds of simultaneous crawls
    python -m benchmarks.frontier_crawl_rate --quick    # 2,000 pages, 1 repeat
    python -m benchmarks.frontier_crawl_rate --paired --configs frontier,frontier-pg,memory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import crawlproc
from benchmarks.crawlproc import repo_root, traced_crawl

_repo_root = repo_root  # the name benchmarks written before benchmarks.crawlproc import from here

CONFIGS = ("frontier", "memory", "jobdir")
EXTRA_CONFIGS = ("frontier-pg", "frontier-dfs")
LINKS_PER_PAGE = 10
CRAWL_TIMEOUT = 400.0  # seconds; a crawl taking longer is killed and reported as failed
SERVER_MAX_LIFETIME = 3600.0


# -- the loopback server ---------------------------------------------------------------------
def page_links(n: int, pages: int) -> list[int]:
    return [(n * LINKS_PER_PAGE + k) % pages for k in range(1, LINKS_PER_PAGE + 1)]


def page_body(n: int, pages: int, href: Callable[[int], str] | None = None) -> bytes:
    """Page *n*; *href* gives the URL of a linked page (default ``/p/M``, on the same server)."""
    href = href or (lambda m: f"/p/{m}")
    links = "".join(f'<li><a href="{href(m)}">Page {m}</a></li>' for m in page_links(n, pages))
    return (
        f"<!DOCTYPE html><html><head><title>Page {n}</title></head><body><h1>Page {n}</h1>"
        f"<p>Benchmark page {n} of {pages}. Lorem ipsum dolor sit amet, consectetur adipiscing elit,"
        f" sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.</p><ul>{links}</ul></body></html>"
    ).encode()


class _PageProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 (GET, keep-alive, pipelining) serving the benchmark graph.

    Optional, for servers of part of the graph (:mod:`benchmarks.fleet_hosts`): *href* as in
    :func:`page_body`; *owns* says which pages this server has (the others are 404); *meter* is told
    of each page request (``meter.begin(n)``) and of its answer being sent (``meter.end()``).
    """

    def __init__(
        self,
        pages: int,
        latency: float = 0.0,
        href: Callable[[int], str] | None = None,
        owns: Callable[[int], bool] | None = None,
        meter: Any = None,
    ):
        self.pages = pages
        self.latency = latency
        self.href, self.owns, self.meter = href, owns, meter
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
            status, body = b"404 Not Found", b"not found"
            n = int(path[3:]) if path.startswith("/p/") and path[3:].isdigit() else -1
            if 0 <= n < self.pages and (self.owns is None or self.owns(n)):
                status, body = b"200 OK", page_body(n, self.pages, self.href)
            if self.meter is not None:
                self.meter.begin(n)
            response = (
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: keep-alive\r\n\r\n"
                + body
            )
            if self.latency > 0:  # a fixed delay keeps pipelined responses in order
                asyncio.get_running_loop().call_later(self.latency, self._send, response)
            else:
                self._send(response)

    def _send(self, response: bytes) -> None:
        if self.meter is not None:
            self.meter.end()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)


async def _serve(pages: int, latency: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _PageProtocol(pages, latency), "127.0.0.1", 0, backlog=256)
    print(server.sockets[0].getsockname()[1], flush=True)
    parent, started = os.getppid(), time.monotonic()
    while os.getppid() == parent and time.monotonic() - started < SERVER_MAX_LIFETIME:
        await asyncio.sleep(0.5)  # exit with the parent (no orphaned server)
    server.close()


class PageServer:
    """The server in a subprocess: ``with PageServer(pages) as port: ...``; *latency* (seconds)
    delays every response, like a remote server."""

    def __init__(self, pages: int, latency: float = 0.0):
        self.pages = pages
        self.latency = latency
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> int:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "benchmarks.frontier_crawl_rate", "--serve"),
                *("--pages", str(self.pages), "--latency", str(self.latency)),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=repo_root(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.__exit__()
            raise RuntimeError(f"benchmark server did not start: {line!r}")
        return int(line)

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- one crawl (in a subprocess) -------------------------------------------------------------
def crawl_settings(
    config: str, workdir: Path, concurrent_items: int = 16, state_url: str | None = None
) -> dict[str, Any]:
    """Scrapy settings of *config*: politeness off, no pipelines, no extensions; *state_url* is the
    frontier's store (default: a SQLite file in *workdir*)."""
    settings: dict[str, Any] = {
        "CONCURRENT_ITEMS": concurrent_items,
        "BOT_NAME": "frontier_bench",
        "USER_AGENT": "holocron-frontier-benchmark",
        "ROBOTSTXT_OBEY": False,
        "AUTOTHROTTLE_ENABLED": False,
        "DOWNLOAD_DELAY": 0,
        "CONCURRENT_REQUESTS": 16,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 16,
        "LOG_LEVEL": "WARNING",
        "ITEM_PIPELINES": {},
        "EXTENSIONS": {},
        "TELNETCONSOLE_ENABLED": False,
        "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
    }
    if config == "frontier" or config.startswith("frontier-"):
        settings.update(
            ADDONS={"holocron_scrapy.addons.Frontier": 0},  # scheduler, dupe filter, ack middlewares, defaults
            HOLOCRON_STATE_URL=state_url or f"sqlite:///{workdir / 'state.sqlite3'}",
            HOLOCRON_FRONTIER_PROGRESS_INTERVAL=0,
        )
        if config == "frontier-pg" and not state_url:
            raise ValueError("frontier-pg needs a PostgreSQL state URL")
        if config == "frontier-dfs":
            settings["HOLOCRON_FRONTIER_ORDER"] = "dfs"
    elif config in ("memory", "jobdir"):
        settings.update(
            SCHEDULER="scrapy.core.scheduler.Scheduler", DUPEFILTER_CLASS="scrapy.dupefilters.RFPDupeFilter"
        )
        if config == "jobdir":
            settings["JOBDIR"] = str(workdir / "job")
    else:
        raise ValueError(f"unknown configuration {config!r}")
    return settings


def _bench_spider_class():
    import scrapy

    class FrontierBenchSpider(scrapy.Spider):
        name = "frontier_bench"

        def __init__(self, seed: str = "", **kwargs: Any):
            super().__init__(**kwargs)
            self.seed = seed

        async def start(self):
            yield scrapy.Request(self.seed)

        def parse(self, response):
            for href in response.css("a::attr(href)").getall():
                yield response.follow(href)

    return FrontierBenchSpider


def run_crawl(
    config: str,
    port: int,
    workdir: Path,
    concurrent_items: int = 16,
    overrides: dict[str, Any] | None = None,
    state_url: str | None = None,
    seed: str | None = None,
) -> dict[str, Any]:
    """Crawl the graph in this process from *seed* (default ``/p/0`` of 127.0.0.1:*port*); the
    figures of the run (``trace``: see :mod:`benchmarks.crawlproc`)."""
    settings = {**crawl_settings(config, workdir, concurrent_items, state_url), **(overrides or {})}
    seed = seed or f"http://127.0.0.1:{port}/p/0"
    figures, stats = traced_crawl(settings, _bench_spider_class(), seed=seed)
    return {
        "config": config,
        **figures,
        "filtered": stats.get("dupefilter/filtered", 0) + stats.get("frontier/filtered", 0),
        "wakeups": stats.get("frontier/wakeups", 0),
        "politeness_waits": stats.get("politeness/waits", 0),
        "politeness_waited": stats.get("politeness/waited_seconds", 0.0),
    }


class CrawlJob(crawlproc.CrawlJob):
    """One crawl of :func:`run_crawl` in a subprocess (``frontier-pg``: on its own PostgreSQL database)."""

    module = "benchmarks.frontier_crawl_rate"
    store_flag = "--state-url"
    timeout = CRAWL_TIMEOUT

    def __init__(self, config: str, port: int, pages: int, scratch: Path, concurrent_items: int):
        args = ("--concurrent-items", str(concurrent_items))
        super().__init__(config, port, pages, scratch, args, database=config == "frontier-pg")


def _at(trace: list[list[float]], moment: float) -> tuple[float, float]:
    """(responses, CPU seconds) at *moment*, interpolated linearly in the trace."""
    for (t0, n0, c0), (t1, n1, c1) in zip(trace, trace[1:], strict=False):
        if t0 <= moment <= t1:
            f = (moment - t0) / (t1 - t0) if t1 > t0 else 0.0
            return n0 + f * (n1 - n0), c0 + f * (c1 - c0)
    raise ValueError("moment outside the trace")


def common_window(results: list[dict[str, Any]], pages: int) -> tuple[float, float] | None:
    """The time span in which every crawl ran at full speed (past its first and before its last 5%)."""

    def when(trace: list[list[float]], count: float) -> float:
        return next(t for t, n, _ in trace if n >= count)

    start = max(when(r["trace"], 0.05 * pages) for r in results)
    end = min(when(r["trace"], 0.95 * pages) for r in results)
    return (start, end) if end - start > 1.0 else None


# -- the benchmark -----------------------------------------------------------------------------
def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _median_x(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x" if values else "n/a"


def run_sequential(port: int, pages: int, repeats: int, configs: list[str], scratch: Path, ci: int) -> list[dict]:
    runs = []
    for rep in range(repeats):
        for config in configs[rep % len(configs) :] + configs[: rep % len(configs)]:  # rotate per repeat
            job = CrawlJob(config, port, pages, scratch, ci)
            try:
                result = job.result()
            finally:
                job.kill()
            result["repeat"] = rep
            runs.append(result)
            if "failed" in result:
                print(f"repeat {rep + 1} {config}: FAILED: {result['failed']}", file=sys.stderr)
                continue
            print(
                f"repeat {rep + 1} {config:<12} {result['responses']} pages in {result['elapsed']:.2f} s"
                f" = {result['pps']:.0f} pages/s, cpu {result['cpu_ms_per_page']:.2f} ms/page,"
                f" peak RSS {result['maxrss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    return runs


def run_paired(port: int, pages: int, repeats: int, configs: list[str], scratch: Path, ci: int) -> list[dict]:
    """All configurations crawl at the same time (each its own process); rates in their common window."""
    runs = []
    for rep in range(repeats):
        jobs = []
        try:
            for config in configs[rep % len(configs) :] + configs[: rep % len(configs)]:
                jobs.append(CrawlJob(config, port, pages, scratch, ci))
            results = [job.result() for job in jobs]
        finally:
            for job in jobs:
                job.kill()
        ok = [r for r in results if "failed" not in r]
        window = common_window(ok, pages) if len(ok) == len(results) else None
        for result in results:
            result["repeat"] = rep
            runs.append(result)
            if "failed" in result:
                print(f"round {rep + 1} {result['config']}: FAILED: {result['failed']}", file=sys.stderr)
                continue
            if window is None:
                result["failed"] = "no common window of the simultaneous crawls"
                continue
            (n0, c0), (n1, c1) = _at(result["trace"], window[0]), _at(result["trace"], window[1])
            result["pps"] = (n1 - n0) / (window[1] - window[0])
            result["cpu_ms_per_page"] = 1000 * (c1 - c0) / (n1 - n0)
            print(
                f"round {rep + 1} {result['config']:<12} {n1 - n0:.0f} pages in the common"
                f" {window[1] - window[0]:.1f} s = {result['pps']:.0f} pages/s,"
                f" cpu {result['cpu_ms_per_page']:.2f} ms/page (whole crawl {result['elapsed']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    return runs


def benchmark(pages: int, repeats: int, configs: list[str], concurrent_items: int, paired: bool) -> int:
    from benchmarks import pg

    pg.drop_on_sigterm()  # a stopped benchmark still drops its databases (the finally blocks run)
    scratch = Path(tempfile.mkdtemp(prefix="holocron-crawl-bench-"))
    try:
        with PageServer(pages) as port:
            run = run_paired if paired else run_sequential
            runs = run(port, pages, repeats, configs, scratch, concurrent_items)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    ok = [r for r in runs if "failed" not in r]
    base = {r["repeat"]: r for r in ok if r["config"] == "memory"}
    how = "simultaneous crawls, rates in their common window" if paired else "one crawl at a time"
    print(
        f"\nCrawl rate: {pages} pages, {LINKS_PER_PAGE} links/page, 16 concurrent requests, CONCURRENT_ITEMS"
        f" {concurrent_items}, {how}; {repeats} repeat(s), medians (ratios: per repeat, then median)"
    )
    rows = []
    for config in configs:
        mine = [r for r in ok if r["config"] == config]
        if not mine:
            rows.append([config, "failed", "", "", "", "", ""])
            continue
        paired_with = [(r, base[r["repeat"]]) for r in mine if r["repeat"] in base]
        ratios = [r["pps"] / b["pps"] for r, b in paired_with]
        cpu_ratios = [r["cpu_ms_per_page"] / b["cpu_ms_per_page"] for r, b in paired_with]
        rows.append(
            [
                config,
                f"{statistics.median(r['pps'] for r in mine):.0f}",
                _median_x(ratios),
                " ".join(f"{x:.2f}" for x in ratios),
                f"{statistics.median(r['cpu_ms_per_page'] for r in mine):.3f}",
                _median_x(cpu_ratios),
                f"{statistics.median(r['maxrss_mb'] for r in mine):.0f}",
            ]
        )
    header = ["scheduler", "pages/s", "vs memory", "each repeat", "CPU ms/page", "CPU vs memory", "peak RSS MB"]
    _print_table(header, rows)
    return 0 if len(ok) == len(runs) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 pages, 1 repeat (smoke run)")
    parser.add_argument("--pages", type=int, default=None, help="pages in the graph (default 20,000)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each configuration (default 3)")
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated, of {', '.join(CONFIGS + EXTRA_CONFIGS)} (default: the first three)",
    )
    parser.add_argument(
        "--concurrent-items",
        type=int,
        default=16,
        help="CONCURRENT_ITEMS (default 16, above the 10 outputs of a page; Scrapy's default is 100)",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="run the configurations simultaneously and compare their rates in the common time window",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--crawl", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--state-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pages = args.pages or (2_000 if args.quick else 20_000)
    if args.serve:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(_serve(pages, args.latency))
        return 0
    if args.crawl:
        result = run_crawl(args.crawl, args.port, Path(args.workdir), args.concurrent_items, state_url=args.state_url)
        print(json.dumps(result))
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if "memory" not in configs:
        configs.insert(0, "memory")  # the baseline of every ratio
    return benchmark(pages, repeats, configs, args.concurrent_items, args.paired)


if __name__ == "__main__":
    sys.exit(main())
