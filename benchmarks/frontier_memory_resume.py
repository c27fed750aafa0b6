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

    python -m benchmarks.frontier_memory_resume            # 1,000,000 vs 10,000 pending, 5,000 claims, 3 repeats
    python -m benchmarks.frontier_memory_resume --quick    # 100,000 vs 10,000 pending, 1,000 claims, 1 repeat
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

from benchmarks.frontier_crawl_rate import _print_table, _repo_root

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


def build_db(path: Path, pending: int) -> float:
    """A frontier database with *pending* pending items; seconds it took."""
    from scrapy import Request
    from scrapy.utils.request import fingerprint

    from holocron_scrapy.frontier.keys import make_dedupe_key
    from holocron_scrapy.frontier.serialization import request_to_row
    from holocron_scrapy.frontier.store import NewItem, open_work_item_store

    started = time.perf_counter()
    store = open_work_item_store(f"sqlite:///{path}")
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
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    store.close()
    return time.perf_counter() - started


def fresh_copy(pristine: Path, scratch: Path) -> Path:
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    copy = run_dir / "state.sqlite3"
    shutil.copyfile(pristine, copy)
    return copy


# -- measurements (each in its own subprocess) --------------------------------------------------
def measure_scheduler(db: Path, claims: int) -> dict[str, Any]:
    t_start = time.time()
    from scrapy import Spider
    from scrapy.utils.test import get_crawler

    from benchmarks.frontier_crawl_rate import crawl_settings
    from holocron_scrapy.frontier.acks import IDS_META
    from holocron_scrapy.frontier.scheduler import FrontierScheduler

    rss_imported = _rss_mb()["VmRSS"]
    settings = crawl_settings("frontier", db.parent)
    settings.update(HOLOCRON_STATE_URL=f"sqlite:///{db}", HOLOCRON_FRONTIER_FLUSH_INTERVAL=0)

    class ResumeSpider(Spider):
        name = "frontier_bench"

    crawler = get_crawler(ResumeSpider, settings)
    crawler.spider = ResumeSpider.from_crawler(crawler)
    t0 = time.perf_counter()
    scheduler = FrontierScheduler.from_crawler(crawler)
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
        scheduler.ack(list(request.meta[IDS_META]))
    scheduler.ack(list(first.meta[IDS_META]))
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


def measure_crawl(db: Path | None, config: str) -> dict[str, Any]:
    """A crawl process: start to the first request reaching the downloader."""
    t_start = time.time()
    from scrapy import signals
    from scrapy.crawler import CrawlerProcess
    from scrapy.utils.defer import deferred_from_coro

    from benchmarks.frontier_crawl_rate import _bench_spider_class, crawl_settings

    workdir = Path(tempfile.mkdtemp(prefix="crawl-")) if db is None else db.parent
    settings = crawl_settings(config, workdir)
    settings["LOG_LEVEL"] = "CRITICAL"  # the closed port's connection errors are expected
    if db is not None:
        settings["HOLOCRON_STATE_URL"] = f"sqlite:///{db}"
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
    if db is None:
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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=_repo_root())
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    result = json.loads(lines[-1])
    result["spawn_to_first_s"] = result["first_wall"] - t_parent
    return result


# -- the benchmark -------------------------------------------------------------------------------
def benchmark(small: int, large: int, claims: int, repeats: int) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="holocron-memory-bench-"))
    sizes = [large, small]
    try:
        pristine = {}
        for size in sizes:
            pristine[size] = scratch / f"pending-{size}.sqlite3"
            took = build_db(pristine[size], size)
            print(
                f"setup: {size:,} pending items built in {took:.1f} s ({pristine[size].stat().st_size / 2**20:.0f} MB)",
                file=sys.stderr,
                flush=True,
            )
        sched: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
        crawl: dict[Any, list[dict[str, Any]]] = {size: [] for size in sizes}
        crawl["memory"] = []
        for rep in range(repeats):
            order = sizes[rep % 2 :] + sizes[: rep % 2]
            for size in order:
                copy = fresh_copy(pristine[size], scratch)
                try:
                    r = _child(["--measure", "scheduler", "--db", str(copy), "--claims", str(claims)])
                finally:
                    shutil.rmtree(copy.parent, ignore_errors=True)
                sched[size].append(r)
                print(
                    f"repeat {rep + 1} scheduler {size:>9,} pending: open+first {r['open_first_s'] * 1000:.0f} ms,"
                    f" spawn->first {r['spawn_to_first_s']:.2f} s, peak RSS {r['peak_rss_mb']:.1f} MB,"
                    f" {r['claim_ack_per_s']:.0f} claims+acks/s",
                    file=sys.stderr,
                    flush=True,
                )
            for size in [*order, "memory"]:
                copy = None if size == "memory" else fresh_copy(pristine[size], scratch)
                try:
                    args = ["--measure", "crawl", "--config", "memory" if copy is None else "frontier"]
                    r = _child(args + ([] if copy is None else ["--db", str(copy)]))
                finally:
                    if copy is not None:
                        shutil.rmtree(copy.parent, ignore_errors=True)
                crawl[size].append(r)
                print(
                    f"repeat {rep + 1} crawl {size!s:>9}: spawn->first request {r['spawn_to_first_s']:.2f} s,"
                    f" peak RSS {r['peak_rss_mb']:.1f} MB",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        f"\nFrontier memory and resume: {large:,} vs {small:,} pending items, {claims:,} claims+acks,"
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
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="frontier", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    claims = args.claims or (1_000 if args.quick else 5_000)
    if args.measure == "scheduler":
        print(json.dumps(measure_scheduler(Path(args.db), claims)))
        return 0
    if args.measure == "crawl":
        print(json.dumps(measure_crawl(Path(args.db) if args.db else None, args.config)))
        return 0
    large = args.large or (100_000 if args.quick else 1_000_000)
    return benchmark(args.small, large, claims, args.repeats or (1 if args.quick else 3))


if __name__ == "__main__":
    sys.exit(main())
