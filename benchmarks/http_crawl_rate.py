"""The cost of storing: the ``http`` spider with the full stack against bare Scrapy, same spider, same site.

The site is the loopback server of :mod:`benchmarks.frontier_crawl_rate` (its own process, asyncio):
``--pages`` pages (default 5,000), page N linking to pages ``(10 N + k) mod pages``, so a crawl from
``/p/0`` fetches every page once (depth 4 for 5,000 pages; ``max_depth`` is set above that). Both
configurations run the project's ``http`` spider (``scrapy crawl http``: link extraction, canonical
URLs, the item built from each response) with the project's settings and downloader, politeness
off (no delay, AutoThrottle off, robots.txt off, 16 concurrent requests, 16 per host), each crawl
in its own process:

* ``full``: the full stack, as a user runs it: the frontier (``FrontierScheduler``, its dupe filter
  and ack middleware) on SQLite, the change filter, the lake (one JSON file per page) and
  ``IngestRecordsPipeline`` (records and ``seen_resources`` in SQLite), the run summary;
  with ``--backend postgresql`` the state and records stores are a throw-away PostgreSQL database
  on 127.0.0.1:5432 (:mod:`benchmarks.pg`, dropped after the crawl, also on failure);
* ``bare``: bare Scrapy on the same spider: ``scrapy.core.scheduler.Scheduler`` + ``RFPDupeFilter``
  (in memory), no item pipelines, no ack middleware, no run summary: nothing is stored.

Pages per second = ``response_received_count / elapsed_time_seconds`` (Scrapy's stats, spider
opened to spider closed). By default the crawls run one at a time, rotated within each repeat;
with ``--paired`` both crawl at the same time and are compared in the time window where both run
(past their first and before their last 5% of pages), so that load from other processes on the
machine weighs on both alike. Ratios are taken per repeat; the table gives medians.

``--profile FILE`` runs one ``full`` crawl (``--profile-config bare``: a bare one) under
``py-spy record`` (``--format raw``: collapsed stacks) and prints where the time goes (own time per
function, grouped by layer; see :func:`summarise_profile`).

    python -m benchmarks.http_crawl_rate                    # 5,000 pages, 3 repeats, one crawl at a time
    python -m benchmarks.http_crawl_rate --paired           # 3 rounds of simultaneous crawls
    python -m benchmarks.http_crawl_rate --quick            # 1,000 pages, 1 repeat
    python -m benchmarks.http_crawl_rate --profile /tmp/http.txt   # py-spy profile of one full crawl
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import crawlproc
from benchmarks.crawlproc import traced_crawl
from benchmarks.frontier_crawl_rate import PageServer, _at, _print_table, common_window

CONFIGS = ("full", "bare")
# Ablations: the full stack with one part left out or swapped for plain Scrapy's, to see what each
# costs (``--ablations no-lake,memory-frontier``: each runs beside full and bare).
ABLATIONS: dict[str, dict[str, Any]] = {
    "memory-frontier": {
        "SCHEDULER": "scrapy.core.scheduler.Scheduler",
        "DUPEFILTER_CLASS": "scrapy.dupefilters.RFPDupeFilter",
        "SPIDER_MIDDLEWARES": {
            "holocron_scrapy.frontier.acks.FrontierAckMiddleware": None,
            "holocron_scrapy.frontier.acks.FrontierHandOffMiddleware": None,
        },
    },
    "no-pipelines": {"ITEM_PIPELINES": {}},
    "no-lake": {"ITEM_PIPELINES": {"holocron_scrapy.pipelines.lake.JsonLakePipeline": None}},
    "no-records": {"ITEM_PIPELINES": {"holocron_scrapy.pipelines.records.IngestRecordsPipeline": None}},
    "no-changes": {"ITEM_PIPELINES": {"holocron_scrapy.pipelines.changes.ChangeFilterPipeline": None}},
    "no-gc-freeze": {"HOLOCRON_GC_FREEZE": False},
    # Per-process politeness (issue 12): the full stack takes a fleet-wide slot per request by default.
    "local-politeness": {"HOLOCRON_FRONTIER_POLITENESS": "local"},
    "bare-gc-freeze": {},  # not of the full stack: bare Scrapy with the same gc.freeze() (see crawl_settings)
}


def _ablated(name: str) -> dict[str, Any]:
    """The settings of ablation *name*: the pipelines named (all of them for an empty dict) are disabled
    with None; the Holocron add-on adds the others (an empty dict would disable none)."""
    from holocron_scrapy.addons import HOLOCRON_ITEM_PIPELINES

    changes = dict(ABLATIONS[name])
    if "ITEM_PIPELINES" in changes:
        changes["ITEM_PIPELINES"] = dict.fromkeys(changes["ITEM_PIPELINES"] or HOLOCRON_ITEM_PIPELINES)
    return changes


CRAWL_TIMEOUT = 900.0
MAX_DEPTH = 20  # above the graph's depth: every page is reached


# -- one crawl (in a subprocess) -------------------------------------------------------------
def write_config(workdir: Path, store_url: str | None) -> Path:
    """The crawl's YAML config: lake in *workdir*, records and state in SQLite there or at *store_url*."""
    records = store_url or f"sqlite:///{workdir / 'records.sqlite3'}"
    state = store_url or f"sqlite:///{workdir / 'state.sqlite3'}"
    path = workdir / "holocron.yaml"
    path.write_text(
        "contact: bench@example.org\n"
        f"storage:\n  lake_dir: {workdir / 'lake'}\n  records_url: {records}\n"
        f"state:\n  url: {state}\n"
        "sources:\n  - {name: bench, type: http, delay: 0, concurrency: 16}\n",
        encoding="utf-8",
    )
    return path


def crawl_settings(config: str, config_file: Path) -> dict[str, Any]:
    """Overrides of the project's settings for *config* (applied at ``cmdline`` priority)."""
    settings: dict[str, Any] = {
        "HOLOCRON_CONFIG": str(config_file),
        "LOG_LEVEL": "WARNING",
        "ROBOTSTXT_OBEY": False,
        "AUTOTHROTTLE_ENABLED": False,
        "DOWNLOAD_DELAY": 0,
        "CONCURRENT_REQUESTS": 16,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 16,
        "TELNETCONSOLE_ENABLED": False,
        "HOLOCRON_FRONTIER_PROGRESS_INTERVAL": 0,
    }
    if config in ("bare", "bare-gc-freeze"):
        from holocron_scrapy.addons import FRONTIER_EXTENSIONS, HOLOCRON_EXTENSIONS, HOLOCRON_ITEM_PIPELINES

        settings.update(
            SCHEDULER="scrapy.core.scheduler.Scheduler",
            DUPEFILTER_CLASS="scrapy.dupefilters.RFPDupeFilter",
            ITEM_PIPELINES=dict.fromkeys(HOLOCRON_ITEM_PIPELINES),  # None each: the add-on adds no pipeline
            SPIDER_MIDDLEWARES={
                "holocron_scrapy.frontier.acks.FrontierAckMiddleware": None,
                "holocron_scrapy.frontier.acks.FrontierHandOffMiddleware": None,
            },
            # None each: the add-ons add none of their extensions (an empty dict would disable none),
            # gc.freeze() included: bare is Scrapy as it comes.
            EXTENSIONS=dict.fromkeys([*HOLOCRON_EXTENSIONS, *FRONTIER_EXTENSIONS]),
        )
        if config == "bare-gc-freeze":  # bare Scrapy given the same gc.freeze() as the full stack
            settings["EXTENSIONS"] = {
                **settings["EXTENSIONS"],
                "holocron_scrapy.extensions.collector.FreezeStartupObjects": 520,
            }
    elif config in ABLATIONS:
        settings.update(_ablated(config))
    elif config != "full":
        raise ValueError(f"unknown configuration {config!r}")
    return settings


def run_crawl(config: str, port: int, workdir: Path, store_url: str | None) -> dict[str, Any]:
    """Crawl the site in this process; the figures of the run (``trace``: see :mod:`benchmarks.crawlproc`)."""
    from scrapy.utils.project import get_project_settings

    settings = get_project_settings()
    settings.setdict(crawl_settings(config, write_config(workdir, store_url)), priority="cmdline")
    seeds = f"http://127.0.0.1:{port}/p/0"
    figures, stats = traced_crawl(settings, "http", source="bench", seeds=seeds, max_depth=str(MAX_DEPTH))
    return {
        "config": config,
        **figures,
        "items": stats.get("item_scraped_count", 0),
        "lake_files": sum(1 for _ in (workdir / "lake").rglob("*.json")) if config != "bare" else 0,
    }


class CrawlJob(crawlproc.CrawlJob):
    """One crawl of :func:`run_crawl` in a subprocess (``full`` on ``postgresql``: on its own database)."""

    module = "benchmarks.http_crawl_rate"
    store_flag = "--store-url"
    timeout = CRAWL_TIMEOUT

    def __init__(self, config: str, port: int, pages: int, scratch: Path, backend: str, prefix: tuple[str, ...] = ()):
        database = config == "full" and backend == "postgresql"
        super().__init__(config, port, pages, scratch, database=database, prefix=prefix)

    def check(self, result: dict[str, Any]) -> str | None:
        if result["responses"] < self.pages:
            return f"expected {self.pages} responses, got {result['responses']}"
        if self.config == "full" and result["items"] < self.pages:
            return f"expected {self.pages} items stored, got {result['items']}"
        return None


# -- the profile ----------------------------------------------------------------------------------
#: Layers of the profile, first match of a frame's file (or function) wins; the rest is "Scrapy, Twisted, Python".
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lake writes (serialising, files, fsync)", ("pipelines/lake.py", "lake/", "fsync")),
    ("records inserts (IngestRecords)", ("pipelines/records.py", "records/store.py", "records/")),
    ("change filter lookups", ("pipelines/changes.py", "records/versions.py")),
    ("frontier (scheduler, store, dupe filter, acks)", ("holocron_scrapy/frontier/",)),
    ("the http spider (links, payload, item)", ("holocron_scrapy/spiders/", "holocron_scrapy/web/")),
    ("other holocron_scrapy", ("holocron_scrapy/",)),
    ("database drivers (sqlite3, psycopg, SQLAlchemy)", ("sqlalchemy/", "psycopg/", "sqlite3")),
)


def _layer(stack: list[str]) -> str:
    """The layer a sample belongs to: the innermost frame of ours decides, else the leaf's library."""
    for frame in reversed(stack):
        for name, needles in LAYERS[:6]:
            if any(n in frame for n in needles):
                return name
    leaf = stack[-1] if stack else ""
    if any(n in leaf for n in LAYERS[6][1]):
        return LAYERS[6][0]
    return "Scrapy, Twisted, Python itself"


def _frame_key(frame: str) -> str:
    """``function (file)``; the line is kept for our own files (``write_atomically`` at its ``fsync``)."""
    if "holocron_scrapy/" in frame:
        return frame
    head, _, rest = frame.rpartition(":")
    return head + ")" if head and rest.endswith(")") else frame


def summarise_profile(raw: Path, top: int = 30) -> str:
    """Shares of the samples by thread, by layer (all threads, and the reactor thread alone) and by
    function (own time: the leaf frame) from py-spy's collapsed stacks (idle threads not sampled).

    A sample's layer is that of its innermost frame in our code (lake, records, change filter,
    frontier, spider), so the SQLite, JSON and file calls made by a pipeline count for that pipeline;
    samples with no frame of ours are Scrapy, Twisted and Python itself (the reactor loop, the
    downloader, HTML parsing, Scrapy's LinkExtractor, the garbage collector, imports)."""
    own: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    reactor_layers: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()  # inclusive, per function of holocron_scrapy
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.split(";")
        thread, stack = frames[0].split(": ", 1)[-1], frames[1:]
        if not stack:
            continue
        total += count
        threads[thread] += count
        own[_frame_key(stack[-1])] += count
        for name in {f.rpartition(":")[0] for f in stack if "holocron_scrapy/" in f}:
            ours[name + ")"] += count
        layer = _layer(stack)
        layers[layer] += count
        if thread == "MainThread":
            reactor_layers[layer] += count
    main = threads["MainThread"] or 1
    out = [f"{total} samples (threads not idle)", "", "by thread:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in threads.most_common()]
    out += ["", "by layer, all threads (the innermost frame of ours decides):"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in layers.most_common()]
    out += ["", "by layer, the reactor thread (MainThread) alone, share of its samples:"]
    out += [f"  {100 * n / main:5.1f}%  {name}" for name, n in reactor_layers.most_common()]
    out += ["", "functions of holocron_scrapy by inclusive time (all threads, top 20):"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in ours.most_common(20)]
    out += ["", f"top {top} functions by own time (all threads):"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


def profile(
    port: int, pages: int, scratch: Path, backend: str, out: Path, rate: int, config: str = "full", gil: bool = False
) -> int:
    raw = out.with_suffix(".raw.txt")
    spy = ["py-spy", "record", "--format", "raw", "--rate", str(rate), "--threads", "--nonblocking", "-o", str(raw)]
    if gil:  # only the thread holding the GIL: where the interpreter's one core goes
        spy.insert(2, "--gil")
    job = CrawlJob(config, port, pages, scratch, backend, prefix=(*spy, "--"))
    result = job.result()
    if "failed" in result:
        print(f"profiled crawl FAILED: {result['failed']}", file=sys.stderr)
        return 1
    summary = summarise_profile(raw)
    out.write_text(summary + "\n", encoding="utf-8")
    print(f"{config} under py-spy ({rate} samples/s): {result['responses']} pages, {result['pps']:.0f} pages/s")
    print(summary)
    return 0


# -- the benchmark ----------------------------------------------------------------------------------
def run_rounds(
    port: int, pages: int, repeats: int, scratch: Path, backend: str, paired: bool, configs: tuple[str, ...] = CONFIGS
) -> list[dict]:
    runs = []
    for rep in range(repeats):
        order = list(configs if rep % 2 == 0 else configs[::-1])
        jobs: list[CrawlJob] = []
        results = []
        try:
            if paired:
                jobs = [CrawlJob(config, port, pages, scratch, backend) for config in order]
                results = [job.result() for job in jobs]
            else:
                for config in order:
                    jobs.append(CrawlJob(config, port, pages, scratch, backend))
                    results.append(jobs[-1].result())
        finally:
            for job in jobs:
                job.kill()
        window = None
        if paired and all("failed" not in r for r in results):
            window = common_window(results, pages)
        for result in results:
            result["repeat"] = rep
            runs.append(result)
            if "failed" in result:
                print(f"repeat {rep + 1} {result['config']}: FAILED: {result['failed']}", file=sys.stderr)
                continue
            if paired:
                if window is None:
                    result["failed"] = "no common window of the simultaneous crawls"
                    continue
                (n0, c0), (n1, c1) = _at(result["trace"], window[0]), _at(result["trace"], window[1])
                result["pps"] = (n1 - n0) / (window[1] - window[0])
                result["cpu_ms_per_page"] = 1000 * (c1 - c0) / (n1 - n0)
            print(
                f"repeat {rep + 1} {result['config']:<5} {result['responses']} pages, {result['items']} items,"
                f" {result['pps']:.0f} pages/s, cpu {result['cpu_ms_per_page']:.2f} ms/page"
                f" (whole crawl {result['elapsed']:.1f} s), peak RSS {result['maxrss_mb']:.0f} MB,"
                f" GC CPU s by generation {result.get('gc_seconds')}",
                file=sys.stderr,
                flush=True,
            )
    return runs


def benchmark(
    pages: int,
    repeats: int,
    backend: str,
    paired: bool,
    profile_to: Path | None,
    rate: int,
    profiled: str = "full",
    ablations: tuple[str, ...] = (),
    gil: bool = False,
) -> int:
    from benchmarks import pg

    pg.drop_on_sigterm()  # a stopped benchmark still drops its databases (the finally blocks run)
    scratch = Path(tempfile.mkdtemp(prefix="holocron-http-bench-"))
    try:
        with PageServer(pages) as port:
            if profile_to is not None:
                return profile(port, pages, scratch, backend, profile_to, rate, profiled, gil)
            runs = run_rounds(port, pages, repeats, scratch, backend, paired, (*CONFIGS, *ablations))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ok = [r for r in runs if "failed" not in r]
    bare = {r["repeat"]: r for r in ok if r["config"] == "bare"}
    how = "simultaneous crawls, rates in their common window" if paired else "one crawl at a time"
    print(
        f"\nThe cost of storing: {pages} pages, http spider, 16 concurrent requests, stores on {backend};"
        f" {how}; {repeats} repeat(s), medians (ratios per repeat, then median)"
    )
    rows = []
    for config in ("full", *ablations, "bare"):
        mine = [r for r in ok if r["config"] == config]
        x = [r["pps"] / bare[r["repeat"]]["pps"] for r in mine if r["repeat"] in bare]
        cx = [r["cpu_ms_per_page"] / bare[r["repeat"]]["cpu_ms_per_page"] for r in mine if r["repeat"] in bare]
        if not mine:
            rows.append([config, "failed", "", "", "", "", ""])
            continue
        rows.append(
            [
                config,
                f"{statistics.median(r['pps'] for r in mine):.0f}",
                f"{statistics.median(x):.2f}x" if x else "n/a",
                " ".join(f"{v:.2f}" for v in x) if config != "bare" else "-",
                f"{statistics.median(r['cpu_ms_per_page'] for r in mine):.2f}",
                f"{statistics.median(cx):.2f}x" if cx else "n/a",
                f"{statistics.median(r['maxrss_mb'] for r in mine):.0f}",
            ]
        )
    _print_table(["stack", "pages/s", "vs bare", "each repeat", "CPU ms/page", "CPU vs bare", "peak RSS MB"], rows)
    return 0 if len(ok) == len(runs) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 pages, 1 repeat (smoke run)")
    parser.add_argument("--pages", type=int, help="pages of the site (default 5,000)")
    parser.add_argument("--repeats", type=int, help="default 3")
    parser.add_argument("--paired", action="store_true", help="crawl both at once, compare in the common window")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the full stack's state and records stores (default sqlite; postgresql: a throw-away database)",
    )
    parser.add_argument("--profile", type=Path, help="profile one full crawl with py-spy; the summary goes here")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    parser.add_argument("--gil", action="store_true", help="--profile: sample only the thread holding the GIL")
    parser.add_argument(
        "--profile-config", choices=(*CONFIGS, *ABLATIONS), default="full", help="the crawl --profile runs"
    )
    parser.add_argument(
        "--ablations",
        type=lambda value: tuple(v for v in value.split(",") if v),
        default=(),
        help=f"also run these variants of the full stack (comma-separated: {', '.join(ABLATIONS)})",
    )
    parser.add_argument("--crawl", choices=(*CONFIGS, *ABLATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.crawl:
        print(json.dumps(run_crawl(args.crawl, args.port, Path(args.workdir), args.store_url)))
        return 0
    pages = args.pages or (1_000 if args.quick else 5_000)
    repeats = args.repeats or (1 if args.quick else 3)
    unknown = [name for name in args.ablations if name not in ABLATIONS]
    if unknown:
        parser.error(f"unknown ablation(s) {', '.join(unknown)}; known: {', '.join(ABLATIONS)}")
    return benchmark(
        pages,
        repeats,
        args.backend,
        args.paired,
        args.profile,
        args.rate,
        args.profile_config,
        args.ablations,
        args.gil,
    )


if __name__ == "__main__":
    sys.exit(main())
