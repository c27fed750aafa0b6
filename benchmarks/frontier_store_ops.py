"""Enqueue and claim rates of the SQL frontier, next to Scrapy's own schedulers.

Everything runs in this process, without a reactor, on fresh temp dirs; configurations
alternate within each repeat and the table gives medians (ratios are taken per repeat).

Enqueue (``enqueue_request`` for every request, then ``flush``; the Request objects are built
before the clock starts) of a stream of ``n`` requests for ``n/2`` distinct URLs:

* ``dupes in process``: every other request repeats an earlier URL of the same stream, so the
  dupe filter's in-process memory catches it. Frontier vs Scrapy's ``Scheduler`` +
  ``RFPDupeFilter`` in memory and with ``JOBDIR``.
* ``dupes from an earlier run``: ``n/2`` URLs were enqueued (and flushed) by a scheduler that is
  closed since; a new one (nothing in memory) gets those ``n/2`` again interleaved with ``n/2`` new
  ones: the frontier's unique key rejects the known ones in SQL; JOBDIR's seen file was loaded.

Dequeue from a backlog of ``n/2`` items:

* ``store.claim`` of 50 at a time (``claim_size``), each batch acked with ``store.flush``;
* ``FrontierScheduler.next_request`` + ``ack`` (claims, rebuilds the requests, flushes acks);
* Scrapy's ``Scheduler.next_request`` (memory, JOBDIR), for scale.

The frontier scheduler normally runs its store calls in a worker thread and hands the results back
through the reactor; there is no reactor here, so every case sets ``scheduler.executor =
InlineExecutor()`` before ``open()``: the store calls run at once on this thread (``open`` and
``close`` return Deferreds that have already fired), and what is timed is the work itself.

Scrapy's default priority queue asks the downloader which slots are busy: a stub downloader
with no active download stands in for it.

    python -m benchmarks.frontier_store_ops            # 100,000 requests, 3 repeats
    python -m benchmarks.frontier_store_ops --quick    # 10,000 requests, 1 repeat
    python -m benchmarks.frontier_store_ops --state-url postgresql://root@127.0.0.1:5432/holocron_bench
    python -m benchmarks.frontier_store_ops --postgresql    # a throw-away database on 127.0.0.1:5432

With ``--state-url`` the frontier runs on that store (e.g. an existing PostgreSQL database) instead
of a fresh SQLite file per case; its ``work_items`` table is emptied before every case.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.frontier_crawl_rate import _print_table
from holocron_scrapy.db.engine import masked_url

URL_TEMPLATE = "http://127.0.0.1:9/p/{}"
CLAIM_SIZE = 50
ENQUEUE_KINDS = ("frontier", "memory", "jobdir")
DEQUEUE_KINDS = ("frontier-store", "frontier", "memory", "jobdir")
#: The frontier's store URL (``--state-url``); None: a fresh SQLite file in each case's directory.
STATE_URL: str | None = None


def _spider():
    from scrapy import Spider

    class StoreOpsSpider(Spider):
        name = "frontier_bench"

    return StoreOpsSpider


def _open(kind: str, workdir: Path) -> tuple[Any, Any]:
    """(crawler, opened scheduler) of *kind*: frontier, memory or jobdir."""
    from scrapy.utils.test import get_crawler

    from benchmarks.frontier_crawl_rate import crawl_settings

    settings = crawl_settings(kind, workdir)
    if kind == "frontier":
        settings["HOLOCRON_FRONTIER_FLUSH_INTERVAL"] = 0  # no reactor here: flushed by size, claim and close
        if STATE_URL:
            settings["HOLOCRON_STATE_URL"] = STATE_URL
    spidercls = _spider()
    crawler = get_crawler(spidercls, settings)
    crawler.spider = spidercls.from_crawler(crawler)
    if kind == "frontier":
        from holocron_scrapy.frontier.executor import InlineExecutor
        from holocron_scrapy.frontier.scheduler import FrontierScheduler

        scheduler = FrontierScheduler.from_crawler(crawler)
        scheduler.executor = InlineExecutor()  # no reactor here: store calls run at once, on this thread
    else:
        from scrapy.core.scheduler import Scheduler
        from scrapy.utils.httpobj import urlparse_cached

        downloader = SimpleNamespace(slots={}, get_slot_key=lambda request: urlparse_cached(request).hostname or "")
        crawler.engine = SimpleNamespace(downloader=downloader)
        scheduler = Scheduler.from_crawler(crawler)
    scheduler.open(crawler.spider)
    return crawler, scheduler


def _empty_state() -> None:
    """Empty the ``--state-url`` store's ``work_items`` before a case (a fresh SQLite file needs nothing)."""
    if not STATE_URL:
        return
    import sqlalchemy as sa

    from holocron_scrapy.db.engine import open_engine

    engine = open_engine(STATE_URL)
    try:
        if not sa.inspect(engine).has_table("work_items"):
            return  # a new database: the first scheduler creates it
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM work_items"))
    finally:
        engine.dispose()


def _close(scheduler: Any) -> None:
    scheduler.close("finished")


def _requests(ids: list[int]) -> list[Any]:
    from scrapy import Request

    return [Request(URL_TEMPLATE.format(i)) for i in ids]


def _enqueue(scheduler: Any, requests: list[Any]) -> tuple[float, int]:
    started = time.perf_counter()
    accepted = sum(1 for request in requests if scheduler.enqueue_request(request))
    if hasattr(scheduler, "flush"):
        scheduler.flush()
    return time.perf_counter() - started, accepted


def stream_in_process(n: int, rng: random.Random) -> list[int]:
    """n ids: even positions new, odd positions a random earlier one."""
    out: list[int] = []
    for i in range(n):
        out.append(i // 2 if i % 2 == 0 else rng.randrange(i // 2 + 1))
    return out


def enqueue_in_process(kind: str, n: int, workdir: Path, rng: random.Random) -> dict[str, float]:
    requests = _requests(stream_in_process(n, rng))
    _, scheduler = _open(kind, workdir)
    try:
        took, accepted = _enqueue(scheduler, requests)
    finally:
        _close(scheduler)
    assert accepted <= n // 2 + 1, accepted
    return {"rate": n / took, "accepted": accepted}


def enqueue_earlier_run(kind: str, n: int, workdir: Path, rng: random.Random) -> dict[str, float]:
    half = n // 2
    _, first = _open(kind, workdir)
    _enqueue(first, _requests(list(range(half))))  # an earlier run: n/2 known URLs
    _close(first)
    ids = [i for pair in zip(range(half, 2 * half), rng.sample(range(half), half), strict=True) for i in pair]
    requests = _requests(ids)
    crawler, scheduler = _open(kind, workdir)  # nothing in memory but what the backend loads
    try:
        took, accepted = _enqueue(scheduler, requests)
    finally:
        _close(scheduler)
    if kind == "frontier":  # accepted at once, the known keys filtered by the flush's insert-if-new
        accepted = crawler.stats.get_value("frontier/enqueued", 0)
    assert accepted == half, accepted
    return {"rate": len(requests) / took, "accepted": accepted}


def dequeue(kind: str, n: int, workdir: Path) -> dict[str, float]:
    """Hand out a backlog of n/2 items; items per second."""
    half = n // 2
    _, scheduler = _open("frontier" if kind == "frontier-store" else kind, workdir)
    _enqueue(scheduler, _requests(list(range(half))))
    try:
        if kind == "frontier-store":
            store, owner = scheduler.store, scheduler.owner
            started, got = time.perf_counter(), 0
            while rows := store.claim(owner, CLAIM_SIZE, 600.0):
                store.flush([], [row["seq"] for row in rows], [])
                got += len(rows)
        elif kind == "frontier":
            from holocron_scrapy.frontier.contract import ids_of

            started, got = time.perf_counter(), 0
            while (request := scheduler.next_request()) is not None:
                scheduler.ack(list(ids_of(request)))
                got += 1
            scheduler.flush()
        else:
            started, got = time.perf_counter(), 0
            while scheduler.next_request() is not None:
                got += 1
        took = time.perf_counter() - started
    finally:
        _close(scheduler)
    assert got == half, (kind, got)
    return {"rate": got / took}


def benchmark(n: int, repeats: int) -> int:
    rng = random.Random(20261122)
    in_process, earlier = "enqueue, 50% dupes in process", "enqueue, 50% dupes from an earlier run"
    cases: list[tuple[str, str, Any]] = [
        *((in_process, kind, lambda d, k=kind: enqueue_in_process(k, n, d, rng)) for kind in ENQUEUE_KINDS),
        *((earlier, kind, lambda d, k=kind: enqueue_earlier_run(k, n, d, rng)) for kind in ("frontier", "jobdir")),
        *(("dequeue", kind, lambda d, k=kind: dequeue(k, n, d)) for kind in DEQUEUE_KINDS),
    ]
    results: dict[tuple[str, str], list[float]] = {(c, k): [] for c, k, _ in cases}
    scratch = Path(tempfile.mkdtemp(prefix="holocron-store-bench-"))
    try:
        for rep in range(repeats):
            # alternate the configurations of each case; reverse the order every other repeat
            for case, kind, run in cases if rep % 2 == 0 else cases[::-1]:
                workdir = Path(tempfile.mkdtemp(prefix="case-", dir=scratch))
                _empty_state()
                try:
                    rate = run(workdir)
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
                results[(case, kind)].append(rate["rate"])
                print(f"repeat {rep + 1} {case} / {kind}: {rate['rate']:,.0f}/s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    labels = {
        "frontier": "FrontierScheduler",
        "frontier-store": "store.claim(50) + flush(acks)",
        "memory": "Scrapy Scheduler, memory",
        "jobdir": "Scrapy Scheduler, JOBDIR",
    }
    where = f", frontier on {masked_url(STATE_URL)}" if STATE_URL else ""
    print(f"\nFrontier store operations: {n:,} requests for {n // 2:,} URLs, {repeats} repeat(s), medians{where}")
    rows = []
    for case, kind, _ in cases:
        rates = results[(case, kind)]
        base_kind = "memory" if (case, "memory") in results else "jobdir"
        base = results[(case, base_kind)]
        ratio = statistics.median(a / b for a, b in zip(rates, base, strict=True))
        rows.append(
            [
                case,
                labels[kind],
                f"{statistics.median(rates):,.0f}",
                f"{ratio:.2f}x {'memory' if base_kind == 'memory' else 'JOBDIR'}",
            ]
        )
    _print_table(["operation", "implementation", "per second", "vs Scrapy"], rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 requests, 1 repeat (smoke run)")
    parser.add_argument("-n", type=int, help="requests per enqueue run (default 100,000)")
    parser.add_argument("--repeats", type=int, help="default 3")
    parser.add_argument(
        "--state-url",
        help="the frontier's store URL, e.g. postgresql://USER@HOST:PORT/DB (emptied before each case;"
        " default: a fresh SQLite file per case)",
    )
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="the frontier on a throw-away database of 127.0.0.1:5432 (user root), dropped at the end",
    )
    args = parser.parse_args(argv)
    global STATE_URL
    STATE_URL = args.state_url
    n = args.n or (10_000 if args.quick else 100_000)
    repeats = args.repeats or (1 if args.quick else 3)
    if not args.postgresql:
        return benchmark(n, repeats)
    from benchmarks import pg

    pg.drop_on_sigterm()  # the database is dropped also when the benchmark is stopped
    with pg.throwaway_database() as (_, url):
        STATE_URL = url
        return benchmark(n, repeats)


if __name__ == "__main__":
    sys.exit(main())
