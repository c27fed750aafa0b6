"""One benchmark crawl: run in this process with a progress trace, or driven in a subprocess.

Shared by :mod:`benchmarks.frontier_crawl_rate` and :mod:`benchmarks.http_crawl_rate` (and the
benchmarks built on them), which differ only in their settings, spider and checks:

* :func:`traced_crawl` runs one crawl in this process (``CrawlerProcess``) and returns its figures:
  ``trace`` holds ``(monotonic time, responses, CPU seconds)`` at engine start, every
  ``TRACE_EVERY`` responses and at spider close (the monotonic clock is the same for every process
  of the machine, so traces of simultaneous crawls can be compared in a common time window);
* :class:`CrawlJob` starts ``python -m <module> --crawl <config> --port P --workdir D ...`` (the
  module prints the figures as one JSON line), with its own temp dir and, if asked, its own
  throw-away PostgreSQL database (:mod:`benchmarks.pg`), both removed by :meth:`CrawlJob.result`
  or :meth:`CrawlJob.kill` whatever happened; a crawl past its timeout is killed and reported as
  failed.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

TRACE_EVERY = 200  # responses between two points of a crawl's progress trace


def repo_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def traced_crawl(settings: Any, spider: Any, **spider_args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Crawl with *spider* (a name or a class) under *settings* in this process (once: the reactor
    cannot restart); ``(figures, Scrapy's stats)``."""
    from scrapy import signals
    from scrapy.crawler import CrawlerProcess

    trace: list[tuple[float, int, float]] = []
    reasons: list[str] = []
    received = 0

    def engine_started() -> None:
        trace.append((time.monotonic(), 0, cpu_seconds()))

    def response_received(**kwargs: Any) -> None:
        nonlocal received
        received += 1
        if received % TRACE_EVERY == 0:
            trace.append((time.monotonic(), received, cpu_seconds()))

    def spider_closed(spider: Any, reason: str) -> None:
        reasons.append(reason)
        trace.append((time.monotonic(), received, cpu_seconds()))

    gc_seconds = [0.0, 0.0, 0.0]  # CPU time of the thread that collected, per generation
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.thread_time()
        else:
            gc_seconds[info["generation"]] += time.thread_time() - gc_started[0]

    gc.callbacks.append(on_gc)
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(spider)
    crawler.signals.connect(engine_started, signal=signals.engine_started)
    crawler.signals.connect(response_received, signal=signals.response_received)
    crawler.signals.connect(spider_closed, signal=signals.spider_closed)
    process.crawl(crawler, **spider_args)
    process.start()
    assert crawler.stats is not None
    stats = crawler.stats.get_stats()
    (t0, _, cpu0), (t1, _, cpu1) = trace[0], trace[-1]
    figures = {
        "reason": reasons[0] if reasons else None,
        "responses": stats.get("response_received_count", 0),
        "elapsed": stats.get("elapsed_time_seconds"),
        "t0": t0,
        "t1": t1,
        "wall": t1 - t0,
        "cpu": cpu1 - cpu0,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "errors": stats.get("log_count/ERROR", 0),
        "trace": trace,
        "gc_seconds": [round(seconds, 2) for seconds in gc_seconds],
        "gc_collections": [generation["collections"] for generation in gc.get_stats()],
    }
    gc.callbacks.remove(on_gc)
    return figures, stats


class CrawlJob:
    """One crawl in a subprocess: ``python -m <module> --crawl <config>`` with its own temp dir (and
    its own PostgreSQL database given *database*, its URL passed as ``store_flag``), both removed by
    :meth:`result` or :meth:`kill`. Subclasses name the module and may add checks (:meth:`check`)."""

    module: ClassVar[str]  # the benchmark module whose --crawl runs one crawl and prints its figures
    store_flag: ClassVar[str]  # the option of --crawl that takes the throw-away database's URL
    timeout: ClassVar[float]  # seconds; a crawl taking longer is killed and reported as failed

    def __init__(
        self,
        config: str,
        port: int,
        pages: int,
        scratch: Path,
        args: Sequence[str] = (),
        *,
        database: bool = False,
        prefix: Sequence[str] = (),
    ):
        self.config, self.pages = config, pages
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{config}-", dir=scratch))
        self.database: str | None = None
        cmd = [
            *prefix,
            *(sys.executable, "-m", self.module, "--crawl", config, "--port", str(port)),
            *("--workdir", str(self.workdir), *args),
        ]
        if database:
            from benchmarks import pg

            self.database = pg.create()
            cmd += [self.store_flag, pg.url_of(self.database)]
        self.deadline = time.monotonic() + self.timeout
        env = {**os.environ, "PYTHONPATH": repo_root()}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo_root(), env=env
        )

    def check(self, result: dict[str, Any]) -> str | None:
        """Why the crawl's *result* is not a complete crawl of the graph (None: it is)."""
        if result["responses"] != self.pages:
            return f"expected {self.pages} responses, got {result['responses']}"
        return None

    def result(self) -> dict[str, Any]:
        """The crawl's figures plus ``pps`` and ``cpu_ms_per_page``, or ``failed`` saying why."""
        try:
            out, err = self.proc.communicate(timeout=max(self.deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            self.kill()
            return {"config": self.config, "failed": f"timed out after {self.timeout:.0f} s"}
        finally:
            self.clean_up()
        lines = [line for line in out.strip().splitlines() if line.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            return {"config": self.config, "failed": f"exit {self.proc.returncode}: {err.strip()[-2000:]}"}
        result = json.loads(lines[-1])
        problem = self.check(result)
        if problem is not None:
            result["failed"] = problem
        result["pps"] = result["responses"] / result["elapsed"]
        result["cpu_ms_per_page"] = 1000 * result["cpu"] / max(result["responses"], 1)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self.clean_up()

    def clean_up(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.database is not None:
            from benchmarks import pg

            name, self.database = self.database, None
            pg.drop(name)
