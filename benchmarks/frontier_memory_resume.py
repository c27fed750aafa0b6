"""Memory and resume time of the SQL frontier with a large backlog.

Setup (not timed): a frontier database with ``N`` pending items is built through the store's
``flush`` in batches of 50,000 (rows shaped like the ones the frontier writes for a plain
``Request``; keys are ``request:scrapy:fingerprint:<sha1>``), plus 50 items leased by a dead
process of this host, as a ``kill -9`` leaves them. Each measurement runs in a fresh subprocess
on a fresh copy of that database (warm OS page cache):

* ``scheduler``: imports, ``FrontierScheduler.from_crawler`` + ``open``, the first
  ``next_request()``, then ``claims`` requests handed out and acked through
  ``next_request``/``ack`` (flushed on each claim). Peak RSS (``VmHWM``) at the end.
* ``crawl``: a real crawl process (``CrawlerProcess``, the crawl-rate benchmark's spider and
  frontier settings) resuming on the database: process start to the first request reaching the
  downloader (``request_reached_downloader``), then the spider is closed. For scale, the same
  for Scrapy's in-memory scheduler on a fresh crawl (nothing to resume).

Sizes are interleaved (rotated) within each repeat; the table gives medians.

With ``--backend postgresql`` the frontier is on the machine's PostgreSQL server (127.0.0.1:5432,
user root; :mod:`benchmarks.pg`): each size is built once in a throw-away database (then
``ANALYZE``), and each measurement gets its own copy (``CREATE DATABASE ... TEMPLATE``); every
database is dropped at the end, also on failure or SIGTERM. Peak RSS is that of the crawler's
process (the server's memory is its own, bounded by its configuration).

    python -m benchmarks.frontier_memory_resume            # 1,000,000 vs 10,000 pending, 5,000 claims, 3 repeats
    python -m benchmarks.frontier_memory_resume --quick    # 100,000 vs 10,000 pending, 1,000 claims, 1 repeat
    python -m benchmarks.frontier_memory_resume --backend postgresql
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.crawlproc import repo_root
from benchmarks.frontier_crawl_rate import _print_table

#: The requests point at the discard port: nothing is listening, nothing is fetched.
URL_TEMPLATE = "http://127.0.0.1:9/p/{}"
DEAD_LEASES = 50
BUILD_BATCH = 50_000
RUN_TIMEOUT = 300.0


def _rss_mb() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


# -- setup ----------------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def build_db(url: str, pending: int) -> float:
    """A frontier database at *url* with *pending* pending items; seconds it took."""
    from scrapy import Request
    from scrapy.utils.request import fingerprint

    from holocron_scrapy.frontier.keys import make_dedupe_key
    from holocron_scrapy.frontier.serialization import request_to_row
    from holocron_scrapy.frontier.store import NewItem, open_work_item_store

    started = time.perf_counter()
    store = open_work_item_store(url)
    template = request_to_row(Request(URL_TEMPLATE.format(0)))  # metadata holds no URL: same for all
    seed_fp = fingerprint(Request(URL_TEMPLATE.format(0))).hex()  # the crawl's seed is a known key
    for start in range(0, pending, BUILD_BATCH):
        items = []
        for n in range(start, min(start + BUILD_BATCH, pending)):
            url = URL_TEMPLATE.format(n)
            fp = seed_fp if n == 0 else hashlib.sha1(url.encode()).hexdigest()
            items.append(
                NewItem(
                    dedupe_key=make_dedupe_key("request", "scrapy", "fingerprint", fp),
                    source_system="request",
                    source_name="scrapy",
                    resource_type="fingerprint",
                    resource_id=fp,
                    request_uri=url,
                    request_method="GET",
                    request_headers=template["request_headers"],
                    request_body=None,
                    metadata=template["metadata"],
                    priority=-1,
                    depth=1,
                )
            )
        store.flush(items, [], [])
    store.claim(f"{socket.gethostname()}:{_dead_pid()}:deadbeef", DEAD_LEASES, 600.0)  # a killed worker's leases
    raw = store.engine.raw_connection()  # outside any transaction
    try:
        if url.startswith("sqlite"):
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:  # what autovacuum would have done by the time a crawl resumes
            raw.commit()
            raw.cursor().execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()
    store.close()
    store.engine.dispose()
    return time.perf_counter() - started


class Frontiers:
    """The pristine frontier of each size and the fresh copies the measurements run on."""

    def __init__(self, backend: str, scratch: Path):
        self.backend, self.scratch = backend, scratch
        self.pristine: dict[int, str] = {}  # size -> file path or database name
        self.copies: list[str] = []

    def url(self, where: str) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{where}"
        from benchmarks import pg

        return pg.url_of(where)

    def build(self, size: int) -> tuple[float, float]:
        """(seconds, MB) to build the pristine frontier of *size* pending items."""
        if self.backend == "sqlite":
            where = str(self.scratch / f"pending-{size}.sqlite3")
        else:
            from benchmarks import pg

            where = pg.create()
        self.pristine[size] = where
        took = build_db(self.url(where), size)
        if self.backend == "sqlite":
            return took, Path(where).stat().st_size / 2**20
        from benchmarks import pg

        return took, pg.size_mb(where)

    def fresh_copy(self, size: int) -> tuple[str, Path]:
        """(state URL, work dir) of a new copy of the pristine frontier of *size*."""
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.scratch))
        if self.backend == "sqlite":
            copy = run_dir / "state.sqlite3"
            shutil.copyfile(self.pristine[size], copy)
            return self.url(str(copy)), run_dir
        from benchmarks import pg

        name = pg.create(template=self.pristine[size])
        self.copies.append(name)
        return self.url(name), run_dir

    def discard(self, run_dir: Path) -> None:
        shutil.rmtree(run_dir, ignore_errors=True)
        if self.backend != "sqlite":
            from benchmarks import pg

            while self.copies:
                pg.drop(self.copies.pop())

    def drop_all(self) -> None:
        if self.backend == "sqlite":
            return
        from benchmarks import pg

        for name in [*self.copies, *self.pristine.values()]:
            pg.drop(name)
        self.copies.clear()
        self.pristine.clear()


# -- measurements (each in its own subprocess) --------------------------------------------------
def measure_scheduler(state_url: str, workdir: Path, claims: int) -> dict[str, Any]:
    t_start = time.time()
    from scrapy import Spider
    from scrapy.utils.test import get_crawler

    from benchmarks.frontier_crawl_rate import crawl_settings
    from holocron_scrapy.frontier.contract import ids_of
    from holocron_scrapy.frontier.executor import InlineExecutor
    from holocron_scrapy.frontier.scheduler import FrontierScheduler

    rss_imported = _rss_mb()["VmRSS"]
    settings = crawl_settings("frontier", workdir, state_url=state_url)
    settings.update(HOLOCRON_FRONTIER_FLUSH_INTERVAL=0)

    class ResumeSpider(Spider):
        name = "frontier_bench"

    crawler = get_crawler(ResumeSpider, settings)
    crawler.spider = ResumeSpider.from_crawler(crawler)
    t0 = time.perf_counter()
    scheduler = FrontierScheduler.from_crawler(crawler)
    scheduler.executor = InlineExecutor()  # no reactor in this process: store calls run at once, here
    scheduler.open(crawler.spider)
    t_open = time.perf_counter()
    first = scheduler.next_request()
    t_first = time.perf_counter()
    t_first_wall = time.time()
    assert first is not None, "no request handed out"
    rss_first = _rss_mb()["VmRSS"]
    handed = [first]
    t_loop = time.perf_counter()
    while len(handed) < claims:
        request = scheduler.next_request()
        assert request is not None, f"ran dry after {len(handed)} requests"
        handed.append(request)
        scheduler.ack(list(ids_of(request)))
    scheduler.ack(list(ids_of(first)))
    scheduler.flush()
    t_done = time.perf_counter()
    completed = sum(c["completed"] for c in scheduler.store.counts().values())
    scheduler.close("finished")
    rss = _rss_mb()
    return {
        "start_wall": t_start,
        "first_wall": t_first_wall,
        "open_s": t_open - t0,
        "open_first_s": t_first - t0,
        "claim_ack_per_s": (claims - 1) / (t_done - t_loop),
        "completed": completed,
        "reclaimed": crawler.stats.get_value("frontier/reclaimed", 0),
        "rss_imported_mb": rss_imported,
        "rss_first_mb": rss_first,
        "rss_end_mb": rss["VmRSS"],
        "peak_rss_mb": rss["VmHWM"],
    }


def measure_crawl(state_url: str | None, workdir: Path | None, config: str) -> dict[str, Any]:
    """A crawl process: start to the first request reaching the downloader."""
    t_start = time.time()
    from scrapy import signals
    from scrapy.crawler import CrawlerProcess
    from scrapy.utils.defer import deferred_from_coro

    from benchmarks.frontier_crawl_rate import _bench_spider_class, crawl_settings

    fresh = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="crawl-")) if workdir is None else workdir
    settings = crawl_settings(config, workdir, state_url=state_url)
    settings["LOG_LEVEL"] = "CRITICAL"  # the closed port's connection errors are expected
    marks: dict[str, Any] = {}
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(_bench_spider_class())

    def reached(request: Any, spider: Any) -> None:
        if "first_wall" in marks:
            return
        marks["first_wall"] = time.time()
        marks["url"] = request.url
        deferred_from_coro(crawler.engine.close_spider_async(reason="resume_benchmark"))

    crawler.signals.connect(reached, signal=signals.request_reached_downloader)
    process.crawl(crawler, seed=URL_TEMPLATE.format(0))
    process.start()
    if fresh:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "start_wall": t_start,
        **marks,
        "reclaimed": crawler.stats.get_value("frontier/reclaimed", 0),
        "peak_rss_mb": _rss_mb()["VmHWM"],
    }


def _child(args: list[str]) -> dict[str, Any]:
    t_parent = time.time()
    cmd = [sys.executable, "-m", "benchmarks.frontier_memory_resume", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=repo_root())
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    result = json.loads(lines[-1])
    result["spawn_to_first_s"] = result["first_wall"] - t_parent
    return result


# -- the benchmark -------------------------------------------------------------------------------
def benchmark(small: int, large: int, claims: int, repeats: int, backend: str) -> int:
    from benchmarks import pg

    pg.drop_on_sigterm()  # a stopped benchmark still drops its databases (the finally blocks run)
    scratch = Path(tempfile.mkdtemp(prefix="holocron-memory-bench-"))
    sizes = [large, small]
    frontiers = Frontiers(backend, scratch)
    try:
        for size in sizes:
            took, mb = frontiers.build(size)
            print(
                f"setup: {size:,} pending items built in {took:.1f} s ({mb:.0f} MB, {backend})",
                file=sys.stderr,
                flush=True,
            )
        sched: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
        crawl: dict[Any, list[dict[str, Any]]] = {size: [] for size in sizes}
        crawl["memory"] = []
        for rep in range(repeats):
            order = sizes[rep % 2 :] + sizes[: rep % 2]
            for size in order:
                url, run_dir = frontiers.fresh_copy(size)
                try:
                    args = ["--measure", "scheduler", "--state-url", url, "--workdir", str(run_dir)]
                    r = _child([*args, "--claims", str(claims)])
                finally:
                    frontiers.discard(run_dir)
                sched[size].append(r)
                print(
                    f"repeat {rep + 1} scheduler {size:>9,} pending: open+first {r['open_first_s'] * 1000:.0f} ms,"
                    f" spawn->first {r['spawn_to_first_s']:.2f} s, peak RSS {r['peak_rss_mb']:.1f} MB,"
                    f" {r['claim_ack_per_s']:.0f} claims+acks/s",
                    file=sys.stderr,
                    flush=True,
                )
            for size in [*order, "memory"]:
                copy = None if size == "memory" else frontiers.fresh_copy(size)
                try:
                    args = ["--measure", "crawl", "--config", "memory" if copy is None else "frontier"]
                    r = _child(args + ([] if copy is None else ["--state-url", copy[0], "--workdir", str(copy[1])]))
                finally:
                    if copy is not None:
                        frontiers.discard(copy[1])
                crawl[size].append(r)
                print(
                    f"repeat {rep + 1} crawl {size!s:>9}: spawn->first request {r['spawn_to_first_s']:.2f} s,"
                    f" peak RSS {r['peak_rss_mb']:.1f} MB",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        frontiers.drop_all()
        shutil.rmtree(scratch, ignore_errors=True)

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        f"\nFrontier memory and resume on {backend}: {large:,} vs {small:,} pending items, {claims:,} claims+acks,"
        f" {repeats} repeat(s), medians"
    )
    rows = []
    for size in sizes:
        s = sched[size]
        rows.append(
            [
                f"{size:,}",
                f"{med(s, 'rss_imported_mb'):.1f}",
                f"{med(s, 'peak_rss_mb'):.1f}",
                f"{med(s, 'open_first_s') * 1000:.0f}",
                f"{med(s, 'spawn_to_first_s'):.2f}",
                f"{med(crawl[size], 'spawn_to_first_s'):.2f}",
                f"{med(crawl[size], 'peak_rss_mb'):.1f}",
                f"{med(s, 'claim_ack_per_s'):.0f}",
            ]
        )
    m = crawl["memory"]
    rows.append(
        [
            "memory scheduler, fresh",
            "",
            "",
            "",
            "",
            f"{med(m, 'spawn_to_first_s'):.2f}",
            f"{med(m, 'peak_rss_mb'):.1f}",
            "",
        ]
    )
    _print_table(
        [
            "pending",
            "RSS after imports MB",
            "peak RSS MB",
            "open + 1st next_request ms",
            "process start -> 1st request s",
            "crawl process start -> 1st request s",
            "crawl peak RSS MB",
            "next_request+ack/s",
        ],
        rows,
    )
    peak_ratios = [a["peak_rss_mb"] / b["peak_rss_mb"] for a, b in zip(sched[large], sched[small], strict=True)]
    crawl_ratios = [a["peak_rss_mb"] / b["peak_rss_mb"] for a, b in zip(crawl[large], crawl[small], strict=True)]
    print(
        f"\npeak RSS ratio {large:,} / {small:,} pending: scheduler process {statistics.median(peak_ratios):.3f}x,"
        f" crawl process {statistics.median(crawl_ratios):.3f}x (target <= 1.2x)"
    )
    print(
        f"resume with {large:,} pending: open + first next_request {med(sched[large], 'open_first_s'):.3f} s,"
        f" crawl process start to first request {med(crawl[large], 'spawn_to_first_s'):.2f} s (target < 2 s)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 vs 10,000 pending, 1,000 claims, 1 repeat")
    parser.add_argument("--large", type=int, help="pending items of the big frontier (default 1,000,000)")
    parser.add_argument("--small", type=int, default=10_000, help="pending items of the small frontier")
    parser.add_argument("--claims", type=int, help="requests handed out and acked (default 5,000)")
    parser.add_argument("--repeats", type=int, help="default 3")
    parser.add_argument("--measure", choices=("scheduler", "crawl"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the frontier: SQLite files, or throw-away databases on 127.0.0.1:5432 (default sqlite)",
    )
    parser.add_argument("--state-url", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="frontier", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    claims = args.claims or (1_000 if args.quick else 5_000)
    if args.measure == "scheduler":
        print(json.dumps(measure_scheduler(args.state_url, Path(args.workdir), claims)))
        return 0
    if args.measure == "crawl":
        workdir = Path(args.workdir) if args.workdir else None
        print(json.dumps(measure_crawl(args.state_url, workdir, args.config)))
        return 0
    large = args.large or (100_000 if args.quick else 1_000_000)
    return benchmark(args.small, large, claims, args.repeats or (1 if args.quick else 3), args.backend)


if __name__ == "__main__":
    sys.exit(main())
