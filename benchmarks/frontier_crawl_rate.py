"""Crawl rate of the SQL frontier against Scrapy's own schedulers.

A loopback HTTP server (asyncio, its own process) serves ``/p/N`` for ``0 <= N < pages``;
page N links to pages ``(10 N + k) mod pages`` for k = 1..10, so a crawl from ``/p/0`` reaches
exactly ``pages`` pages (a 10-ary tree, plus links back to known pages: 10 links per page,
9 of 10 of them duplicates overall). Each configuration crawls the whole graph in its own
subprocess with politeness off (16 concurrent requests):

* ``frontier``: :class:`holocron_scrapy.frontier.scheduler.FrontierScheduler` with the project's
  scheduler, dupe filter and spider middlewares (the ack middleware), a state URL in a temp dir,
  ``HOLOCRON_FRONTIER_PROGRESS_INTERVAL=0`` and every other frontier setting at its default;
* ``memory``: ``scrapy.core.scheduler.Scheduler`` + ``scrapy.dupefilters.RFPDupeFilter``;
* ``jobdir``: the same with ``JOBDIR`` (disk queues, persisted seen set).

Pages per second = ``response_received_count / elapsed_time_seconds`` (Scrapy's stats: spider
opened to spider closed). Configurations are interleaved (rotated) within each repeat and the
frontier's ratio to ``memory`` is taken per repeat; the table gives medians.

    python -m benchmarks.frontier_crawl_rate            # 20,000 pages, 3 repeats
    python -m benchmarks.frontier_crawl_rate --quick    # 2,000 pages, 1 repeat
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS = ("frontier", "memory", "jobdir")
LINKS_PER_PAGE = 10
CRAWL_TIMEOUT = 300.0  # seconds; a crawl taking longer is killed and reported as failed
SERVER_MAX_LIFETIME = 3600.0


# -- the loopback server ---------------------------------------------------------------------
def page_links(n: int, pages: int) -> list[int]:
    return [(n * LINKS_PER_PAGE + k) % pages for k in range(1, LINKS_PER_PAGE + 1)]


def page_body(n: int, pages: int) -> bytes:
    links = "".join(f'<li><a href="/p/{m}">Page {m}</a></li>' for m in page_links(n, pages))
    return (
        f"<!DOCTYPE html><html><head><title>Page {n}</title></head><body><h1>Page {n}</h1>"
        f"<p>Benchmark page {n} of {pages}. Lorem ipsum dolor sit amet, consectetur adipiscing elit,"
        f" sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.</p><ul>{links}</ul></body></html>"
    ).encode()


class _PageProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 (GET, keep-alive, pipelining) serving the benchmark graph."""

    def __init__(self, pages: int):
        self.pages = pages
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
            if path.startswith("/p/") and path[3:].isdigit() and int(path[3:]) < self.pages:
                status, body = b"200 OK", page_body(int(path[3:]), self.pages)
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + body
            )


async def _serve(pages: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _PageProtocol(pages), "127.0.0.1", 0, backlog=256)
    print(server.sockets[0].getsockname()[1], flush=True)
    parent, started = os.getppid(), time.monotonic()
    while os.getppid() == parent and time.monotonic() - started < SERVER_MAX_LIFETIME:
        await asyncio.sleep(0.5)  # exit with the parent (no orphaned server)
    server.close()


class PageServer:
    """The server in a subprocess: ``with PageServer(pages) as port: ...``."""

    def __init__(self, pages: int):
        self.pages = pages
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> int:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.frontier_crawl_rate", "--serve", "--pages", str(self.pages)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=_repo_root(),
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
def crawl_settings(config: str, workdir: Path) -> dict[str, Any]:
    """Scrapy settings of *config*: politeness off, no pipelines, no extensions."""
    settings: dict[str, Any] = {
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
        from holocron_scrapy import settings as project

        settings.update(
            SCHEDULER=project.SCHEDULER,
            DUPEFILTER_CLASS=project.DUPEFILTER_CLASS,
            SPIDER_MIDDLEWARES=dict(project.SPIDER_MIDDLEWARES),
            HOLOCRON_STATE_URL=f"sqlite:///{workdir / 'state.sqlite3'}",
            HOLOCRON_FRONTIER_PROGRESS_INTERVAL=0,
        )
        if config == "frontier-dfs":
            settings["HOLOCRON_FRONTIER_ORDER"] = "dfs"
    elif config in ("memory", "jobdir"):
        settings.update(SCHEDULER="scrapy.core.scheduler.Scheduler", DUPEFILTER_CLASS="scrapy.dupefilters.RFPDupeFilter")
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


def run_crawl(config: str, port: int, workdir: Path) -> dict[str, Any]:
    """Crawl the graph in this process; the figures of the run."""
    from scrapy import signals
    from scrapy.crawler import CrawlerProcess

    marks: dict[str, float] = {}

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def engine_started() -> None:
        marks["t0"], marks["cpu0"] = time.perf_counter(), cpu()

    def spider_closed(spider: Any, reason: str) -> None:
        marks["t1"], marks["cpu1"] = time.perf_counter(), cpu()
        marks["reason"] = reason  # type: ignore[assignment]

    process = CrawlerProcess(crawl_settings(config, workdir))
    crawler = process.create_crawler(_bench_spider_class())
    crawler.signals.connect(engine_started, signal=signals.engine_started)
    crawler.signals.connect(spider_closed, signal=signals.spider_closed)
    process.crawl(crawler, seed=f"http://127.0.0.1:{port}/p/0")
    process.start()
    stats = crawler.stats.get_stats()
    return {
        "config": config,
        "reason": marks.get("reason"),
        "responses": stats.get("response_received_count", 0),
        "elapsed": stats.get("elapsed_time_seconds"),
        "wall": marks["t1"] - marks["t0"],
        "cpu": marks["cpu1"] - marks["cpu0"],
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "filtered": stats.get("dupefilter/filtered", 0) + stats.get("frontier/filtered", 0),
        "errors": stats.get("log_count/ERROR", 0),
    }


def crawl_in_subprocess(config: str, port: int, pages: int, scratch: Path) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{config}-", dir=scratch))
    cmd = [sys.executable, "-m", "benchmarks.frontier_crawl_rate", "--crawl", config, "--port", str(port),
           "--workdir", str(workdir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CRAWL_TIMEOUT, cwd=_repo_root())
    except subprocess.TimeoutExpired:
        return {"config": config, "failed": f"timed out after {CRAWL_TIMEOUT:.0f} s"}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"config": config, "failed": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    result = json.loads(lines[-1])
    if result["responses"] != pages:
        result["failed"] = f"expected {pages} responses, got {result['responses']}"
    result["pps"] = result["responses"] / result["elapsed"]
    result["cpu_ms_per_page"] = 1000 * result["cpu"] / max(result["responses"], 1)
    return result


# -- the benchmark -----------------------------------------------------------------------------
def _repo_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def benchmark(pages: int, repeats: int, configs: list[str]) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="holocron-crawl-bench-"))
    runs: list[dict[str, Any]] = []
    failed = False
    try:
        with PageServer(pages) as port:
            for rep in range(repeats):
                order = configs[rep % len(configs) :] + configs[: rep % len(configs)]  # rotate per repeat
                for config in order:
                    result = crawl_in_subprocess(config, port, pages, scratch)
                    result["repeat"] = rep
                    runs.append(result)
                    if "failed" in result:
                        failed = True
                        print(f"repeat {rep + 1} {config}: FAILED: {result['failed']}", file=sys.stderr)
                    else:
                        print(
                            f"repeat {rep + 1} {config:<12} {result['responses']} pages in {result['elapsed']:.2f} s"
                            f" = {result['pps']:.0f} pages/s, cpu {result['cpu_ms_per_page']:.2f} ms/page,"
                            f" peak RSS {result['maxrss_mb']:.0f} MB",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    ok = [r for r in runs if "failed" not in r]
    base = {r["repeat"]: r for r in ok if r["config"] == "memory"}
    print(f"\nCrawl rate: {pages} pages, {LINKS_PER_PAGE} links/page, 16 concurrent requests, {repeats} repeat(s),"
          " medians")
    rows = []
    for config in configs:
        mine = [r for r in ok if r["config"] == config]
        if not mine:
            rows.append([config, "failed", "", "", "", ""])
            continue
        ratios = [r["pps"] / base[r["repeat"]]["pps"] for r in mine if r["repeat"] in base]
        cpu_ratios = [r["cpu_ms_per_page"] / base[r["repeat"]]["cpu_ms_per_page"] for r in mine if r["repeat"] in base]
        rows.append([
            config,
            f"{statistics.median(r['pps'] for r in mine):.0f}",
            f"{statistics.median(ratios):.2f}x" if ratios else "n/a",
            f"{statistics.median(r['cpu_ms_per_page'] for r in mine):.3f}",
            f"{statistics.median(cpu_ratios):.2f}x" if cpu_ratios else "n/a",
            f"{statistics.median(r['maxrss_mb'] for r in mine):.0f}",
        ])
    _print_table(["scheduler", "pages/s", "vs memory", "CPU ms/page", "CPU vs memory", "peak RSS MB"], rows)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 pages, 1 repeat (smoke run)")
    parser.add_argument("--pages", type=int, default=None, help="pages in the graph (default 20,000)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each configuration (default 3)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, of {', '.join(CONFIGS)}, frontier-dfs (default: the first three)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--crawl", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pages = args.pages or (2_000 if args.quick else 20_000)
    if args.serve:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(_serve(pages))
        return 0
    if args.crawl:
        print(json.dumps(run_crawl(args.crawl, args.port, Path(args.workdir))))
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if "memory" not in configs:
        configs.insert(0, "memory")  # the baseline of every ratio
    return benchmark(pages, repeats, configs)


if __name__ == "__main__":
    sys.exit(main())
