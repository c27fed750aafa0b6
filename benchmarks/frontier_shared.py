"""Several crawler processes on one SQL frontier: throughput, overlap and idle time.

The graph and server of :mod:`benchmarks.frontier_crawl_rate` (page N links to ``(10 N + k) mod
pages``), with every response delayed by ``--latency`` seconds as a remote server would, and each
worker polite on its own: ``--per-domain`` concurrent requests to the host (the project's
downloader, which enforces that with no delay), no delay. Each case
crawls the whole graph from ``/p/0`` on a fresh frontier shared by its workers: a SQLite file
(WAL), or with ``--backend postgresql`` a throw-away database on the machine's PostgreSQL server
(127.0.0.1:5432, user root; :mod:`benchmarks.pg`), created for the case and dropped after it, also
when a worker fails or the script is stopped:

* ``1 worker``: the baseline;
* ``N workers``: worker 0 starts, the others ``--stagger`` seconds later (as on a fleet, where
  workers never start at the same instant) and all give the same seed;
* ``N workers, no wake-up`` (``--no-wake-case``): the same, with the scheduler's wake-up switched
  off (``FrontierScheduler._wake`` patched out), so that claimed requests wait for the engine to ask
  (on its 5 s heartbeat when it is idle), as the frontier behaved before 2026-12-02.

Reported: pages per second over the whole crawl (first worker's start to last worker's close),
the speed-up over one worker, pages fetched more than once (the union must be the graph, with no
overlap), each worker's share, and the wake-ups.

    python -m benchmarks.frontier_shared            # 3,000 pages, 50 ms latency, 2 per worker, 3 workers
    python -m benchmarks.frontier_shared --quick    # 600 pages
    python -m benchmarks.frontier_shared --backend postgresql --claim-sizes 50,10
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.crawlproc import repo_root
from benchmarks.frontier_crawl_rate import PageServer, _print_table, run_crawl

CRAWL_TIMEOUT = 600.0


def worker_command(
    port: int,
    workdir: Path,
    per_domain: int,
    run_id: str,
    wake: bool,
    claim: int,
    state_url: str | None,
    seed: str | None = None,
) -> list[str]:
    return [
        *(sys.executable, "-m", "benchmarks.frontier_shared", "--crawl", "--port", str(port)),
        *("--workdir", str(workdir), "--per-domain", str(per_domain), "--run-id", run_id),
        *("--claim-size", str(claim)),
        *(() if wake else ("--no-wake",)),
        *(() if state_url is None else ("--state-url", state_url)),
        *(() if seed is None else ("--seed", seed)),
    ]


def run_worker(
    port: int,
    workdir: Path,
    per_domain: int,
    run_id: str,
    wake: bool,
    claim: int,
    state_url: str | None,
    seed: str | None = None,
) -> dict[str, Any]:
    if not wake:
        from holocron_scrapy.frontier.scheduler import FrontierScheduler

        FrontierScheduler._wake = lambda self, **kwargs: None  # type: ignore[method-assign]
    from holocron_scrapy.addons import HOLOCRON_SETTINGS

    overrides = {
        "CONCURRENT_REQUESTS_PER_DOMAIN": per_domain,
        "DOWNLOADER": HOLOCRON_SETTINGS["DOWNLOADER"],  # enforces the per-host limit with no delay
        "HOLOCRON_RUN_ID": run_id,
        "HOLOCRON_FRONTIER_CLAIM_SIZE": claim,
    }
    result = run_crawl("frontier", port, workdir, overrides=overrides, state_url=state_url, seed=seed)
    result.pop("trace", None)
    return result


def _statuses(state_url: str) -> dict[str, int]:
    """``{status: count}`` of the frontier's work items (the counts ``scrapy frontier stats`` shows)."""
    from holocron_scrapy.frontier.store import open_work_item_store

    store = open_work_item_store(state_url)
    try:
        counts = store.counts()
    finally:
        store.close()
    return dict(sum((collections.Counter(c) for c in counts.values()), collections.Counter()))


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_case(
    port: int,
    pages: int,
    workers: int,
    per_domain: int,
    stagger: float,
    wake: bool,
    claim: int,
    backend: str,
    seed: str | None = None,
) -> dict[str, Any]:
    """One case: *workers* crawl the graph from *seed* (default ``/p/0`` of 127.0.0.1:*port*) on a fresh frontier."""
    from benchmarks import pg

    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as cleanup:  # on the way out: workers killed, workdir removed, database dropped
        workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="holocron-shared-bench-")))
        state_url = f"sqlite:///{workdir / 'state.sqlite3'}"
        if backend == "postgresql":
            _, state_url = cleanup.enter_context(pg.throwaway_database())
        cleanup.callback(_stop, procs)
        for i in range(workers):
            if i == 1 and stagger > 0:
                time.sleep(stagger)
            cmd = worker_command(port, workdir, per_domain, f"worker{i}", wake, claim, state_url, seed)
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          cwd=repo_root()))  # fmt: skip
        results = []
        for i, proc in enumerate(procs):
            out, err = proc.communicate(timeout=CRAWL_TIMEOUT)
            lines = out.strip().splitlines()
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"worker{i} failed (exit {proc.returncode}): {err.strip()[-2000:]}")
            results.append(json.loads(lines[-1]))
        statuses = _statuses(state_url)
    fetched = sum(r["responses"] for r in results)
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return {
        "workers": workers,
        "wake": wake,
        "fetched": fetched,
        "overlap": fetched - pages,
        "completed": statuses.get("completed", 0),
        "statuses": statuses,
        "span": span,
        "pps": pages / span,
        "shares": [r["responses"] for r in results],
        "wakeups": sum(r.get("wakeups", 0) for r in results),
        "politeness_waits": sum(r.get("politeness_waits", 0) for r in results),
        "politeness_waited": sum(r.get("politeness_waited", 0.0) for r in results),
    }


def benchmark(
    pages: int,
    latency: float,
    per_domain: int,
    workers: int,
    stagger: float,
    claims: list[int],
    backend: str,
    no_wake_case: bool,
) -> int:
    from benchmarks import pg

    pg.drop_on_sigterm()  # a stopped benchmark still drops its databases (the finally blocks run)
    cases = [(1, True, claims[0]), (workers, True, claims[0])]
    cases += [(workers, False, claims[0])] if no_wake_case else []
    cases += [(workers, True, claim) for claim in claims[1:]]
    rows, ok, base = [], True, None
    with PageServer(pages, latency) as port:
        for count, wake, claim in cases:
            r = run_case(port, pages, count, per_domain, stagger, wake, claim, backend)
            name = f"{count} worker{'s' if count > 1 else ''}" + ("" if wake else ", no wake-up")
            name += "" if claim == claims[0] else f", claim size {claim}"
            print(f"{name}: {r}", file=sys.stderr, flush=True)
            ok &= r["completed"] == pages and r["overlap"] == 0
            base = base or r["pps"]
            rows.append(
                [
                    name,
                    f"{r['span']:.1f}",
                    f"{r['pps']:.1f}",
                    f"{r['pps'] / base:.2f}x",
                    str(r["overlap"]),
                    " / ".join(str(n) for n in r["shares"]),
                    str(r["wakeups"]),
                ]
            )
    print(
        f"\nShared frontier on {backend}: {pages} pages, {latency * 1000:.0f} ms per response, {per_domain} concurrent"
        f" requests per worker, workers 2.. started {stagger:.0f} s after the first, claim size {claims[0]}"
    )
    header = ["case", "seconds", "pages/s", "vs 1 worker", "fetched twice", "pages per worker", "wake-ups"]
    _print_table(header, rows)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="600 pages (smoke run)")
    parser.add_argument("--pages", type=int, default=None, help="pages in the graph (default 3,000)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per response (default 0.05)")
    parser.add_argument("--per-domain", type=int, default=2, help="concurrent requests per worker (default 2)")
    parser.add_argument("--workers", type=int, default=3, help="workers of the shared cases (default 3)")
    parser.add_argument("--stagger", type=float, default=2.0, help="seconds before workers 2.. start")
    parser.add_argument(
        "--claim-sizes",
        default="50",
        help="HOLOCRON_FRONTIER_CLAIM_SIZE: the first for every case, the others in extra N-worker cases",
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the shared frontier: a SQLite file, or a throw-away database on 127.0.0.1:5432 (default sqlite)",
    )
    parser.add_argument("--no-wake-case", action="store_true", help="add the N-worker case without wake-ups")
    parser.add_argument("--claim-size", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--state-url", help=argparse.SUPPRESS)
    parser.add_argument("--crawl", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    parser.add_argument("--no-wake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.crawl:
        wake = not args.no_wake
        result = run_worker(
            args.port,
            Path(args.workdir),
            args.per_domain,
            args.run_id,
            wake,
            args.claim_size,
            args.state_url,
            args.seed,
        )
        print(json.dumps(result))
        return 0
    pages = args.pages or (600 if args.quick else 3_000)
    claims = [int(c) for c in args.claim_sizes.split(",") if c.strip()]
    return benchmark(
        pages, args.latency, args.per_domain, args.workers, args.stagger, claims, args.backend, args.no_wake_case
    )


if __name__ == "__main__":
    sys.exit(main())
