"""Three workers on three hosts, every response 50 ms: the speed-up over one worker (issue 12).

The graph of :mod:`benchmarks.frontier_crawl_rate` (page N links to ``(10 N + k) mod pages``) split
over three loopback hosts: host ``N mod 3`` serves page N, and every link is absolute, so each worker
fetches from all three hosts. By default the hosts are three addresses, ``127.0.0.1``, ``127.0.0.2``
and ``127.0.0.3`` (each on its own port): three hosts for Scrapy's own per-host slots (keyed by host
name, without the port) and for the fleet's shared politeness (keyed by ``host:port``). With
``--one-address`` they are three ports of ``127.0.0.1``: three keys for the shared politeness but one
Scrapy slot per worker, so a worker sends at most ``--per-domain`` requests to the three together.

The three servers are listeners of one asyncio process (:class:`HostsServer`, started afresh for
each case); every response is held ``--latency`` seconds. Each server counts the page requests it is
answering and reports the most at once (the peak in flight per host) and the pages it served more
than once. The workers and cases are those of :mod:`benchmarks.frontier_shared` (``run_case``): the
project's scheduler and ``DOWNLOADER``, ``CONCURRENT_REQUESTS_PER_DOMAIN`` ``--per-domain`` (2), no
delay, 16 concurrent requests per worker, shared politeness (the default), a fresh frontier per case
on SQLite or, with ``--backend postgresql``, on a throw-away database (:mod:`benchmarks.pg`):

* ``1 worker``: the baseline;
* ``N workers`` (``--workers``, 3): worker 0 starts, the others ``--stagger`` seconds later.

With shared politeness the fleet may have ``per-domain`` requests in flight per host, so three hosts
allow 3 x 2 requests at once: ``6 / latency`` = 120 pages/s at 50 ms, whatever the number of workers.

Reported: pages per second over the crawl (first worker's start to last worker's close), the
speed-up over one worker, pages fetched more than once (by the workers' counts and by the servers'),
each worker's share, the peak in flight at each host, the pages each host served, and the requests
that waited for a shared politeness slot (``politeness/waits``, with ``politeness/waited_seconds``
summed over the workers). The exit status
is 1 if a page was fetched twice, an item did not end ``completed`` or a host saw more than
``--per-domain`` requests at once.

    python -m benchmarks.fleet_hosts                     # 6,000 pages, 50 ms, 2 per host, 1 and 3 workers
    python -m benchmarks.fleet_hosts --quick             # 900 pages
    python -m benchmarks.fleet_hosts --one-address       # three ports of 127.0.0.1
    python -m benchmarks.fleet_hosts --backend postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
from typing import Any

from benchmarks.crawlproc import repo_root
from benchmarks.frontier_crawl_rate import SERVER_MAX_LIFETIME, _PageProtocol, _print_table
from benchmarks.frontier_shared import run_case

HOSTS = 3


class HostMeter:
    """What one host saw: page requests being answered now, the most at once, and pages served."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.served: collections.Counter[int] = collections.Counter()

    def begin(self, n: int) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if n >= 0:
            self.served[n] += 1

    def end(self) -> None:
        self.in_flight -= 1

    def figures(self) -> dict[str, int]:
        return {
            "peak": self.peak,
            "served": sum(self.served.values()),
            "served_twice": sum(1 for c in self.served.values() if c > 1),
        }


async def _serve(pages: int, latency: float, addresses: list[str]) -> None:
    """Serve the graph from one listener per address; print their base URLs (one JSON line), then, when
    stopped (SIGTERM or the parent gone), each host's figures (one JSON line)."""
    loop = asyncio.get_running_loop()
    hosts = len(addresses)
    meters = [HostMeter() for _ in addresses]
    bases: list[str] = []

    def href(m: int) -> str:
        return f"{bases[m % hosts]}/p/{m}"

    def protocol(i: int) -> _PageProtocol:
        return _PageProtocol(pages, latency, href, lambda n: n % hosts == i, meters[i])

    servers = []
    for i, address in enumerate(addresses):
        server = await loop.create_server(lambda i=i: protocol(i), address, 0, backlog=256)  # type: ignore[misc]
        servers.append(server)
        bases.append(f"http://{address}:{server.sockets[0].getsockname()[1]}")
    print(json.dumps(bases), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    parent, started = os.getppid(), loop.time()
    while not stop.is_set() and os.getppid() == parent and loop.time() - started < SERVER_MAX_LIFETIME:
        try:
            await asyncio.wait_for(stop.wait(), 0.5)  # exit with the parent (no orphaned server)
        except TimeoutError:
            pass
    for server in servers:
        server.close()
    print(json.dumps([m.figures() for m in meters]), flush=True)


class HostsServer:
    """The hosts in a subprocess: ``with HostsServer(pages, latency, addresses) as bases: ...``;
    :attr:`figures` holds each host's figures once the block has ended."""

    def __init__(self, pages: int, latency: float, addresses: list[str]):
        self.args = ["--pages", str(pages), "--latency", str(latency), "--addresses", ",".join(addresses)]
        self.proc: subprocess.Popen | None = None
        self.figures: list[dict[str, int]] = []

    def __enter__(self) -> list[str]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet_hosts", "--serve", *self.args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=repo_root(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        try:
            return [str(b) for b in json.loads(line)]
        except ValueError:
            self.__exit__()
            raise RuntimeError(f"benchmark hosts did not start: {line!r}") from None

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return
        lines = out.strip().splitlines()
        if lines:
            self.figures = json.loads(lines[-1])


def benchmark(
    pages: int, latency: float, per_domain: int, workers: int, stagger: float, claim: int, backend: str, one: bool
) -> int:
    from benchmarks import pg

    pg.drop_on_sigterm()  # a stopped benchmark still drops its databases (the finally blocks run)
    addresses = ["127.0.0.1"] * HOSTS if one else [f"127.0.0.{i + 1}" for i in range(HOSTS)]
    rows, ok, base = [], True, None
    for count in (1, workers):
        hosts = HostsServer(pages, latency, addresses)
        with hosts as bases:
            r = run_case(0, pages, count, per_domain, stagger, True, claim, backend, seed=f"{bases[0]}/p/0")
        figures = hosts.figures
        twice = sum(f["served_twice"] for f in figures) if figures else -1
        peaks = [f["peak"] for f in figures]
        name = f"{count} worker{'s' if count > 1 else ''}"
        print(f"{name}: {r}; hosts {figures}", file=sys.stderr, flush=True)
        ok &= r["completed"] == pages and r["overlap"] == 0 and twice == 0 and 0 < max(peaks, default=0) <= per_domain
        base = base or r["pps"]
        rows.append(
            [
                name,
                f"{r['span']:.1f}",
                f"{r['pps']:.1f}",
                f"{r['pps'] / base:.2f}x",
                f"{r['overlap']} / {twice}",
                " / ".join(str(n) for n in r["shares"]),
                " / ".join(str(p) for p in peaks),
                " / ".join(str(f["served"]) for f in figures),
                f"{r['politeness_waits']} ({r['politeness_waited']:.0f} s)",
            ]
        )
    where = "three ports of 127.0.0.1" if one else "127.0.0.1, .2 and .3"
    print(
        f"\nThree hosts ({where}), frontier on {backend}: {pages} pages, {latency * 1000:.0f} ms per response,"
        f" {per_domain} concurrent requests per host, no delay, shared politeness, workers 2.. started"
        f" {stagger:.0f} s after the first, claim size {claim}"
    )
    header = [
        "case",
        "seconds",
        "pages/s",
        "vs 1 worker",
        "fetched twice (workers / hosts)",
        "pages per worker",
        "peak in flight per host",
        "pages per host",
        "politeness waits",
    ]
    _print_table(header, rows)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="900 pages (smoke run)")
    parser.add_argument("--pages", type=int, default=None, help="pages in the graph (default 6,000)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per response (default 0.05)")
    parser.add_argument("--per-domain", type=int, default=2, help="concurrent requests per host (default 2)")
    parser.add_argument("--workers", type=int, default=3, help="workers of the second case (default 3)")
    parser.add_argument("--stagger", type=float, default=2.0, help="seconds before workers 2.. start (default 2)")
    parser.add_argument("--claim-size", type=int, default=50, help="HOLOCRON_FRONTIER_CLAIM_SIZE (default 50)")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the shared frontier: a SQLite file, or a throw-away database on 127.0.0.1:5432 (default sqlite)",
    )
    parser.add_argument(
        "--one-address", action="store_true", help="the hosts are three ports of 127.0.0.1 (one Scrapy slot)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--addresses", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pages = args.pages or (900 if args.quick else 6_000)
    if args.serve:
        asyncio.run(_serve(pages, args.latency, args.addresses.split(",")))
        return 0
    a = args
    return benchmark(pages, a.latency, a.per_domain, a.workers, a.stagger, a.claim_size, a.backend, a.one_address)


if __name__ == "__main__":
    sys.exit(main())
