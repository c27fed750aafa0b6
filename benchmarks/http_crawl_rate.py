"""Pages per second of the ``http`` spider on a local static site, against ``scrapy bench``.

    python -m benchmarks.http_crawl_rate [--max-depth 2]

Serves Debian's python3.11-doc HTML tree on 127.0.0.1, crawls it with politeness switched
off (no delay, AutoThrottle off, 16 concurrent requests) through the full stack (frontier,
change filter, lake, IngestRecords), then runs ``scrapy bench`` (Scrapy's own local
benchmark: no storage, no frontier) in the same run for scale.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.crawl import Workspace
from tests.support.static_site import PYTHON_DOCS, serve_directory


def crawl_docs(max_depth: int, tmp: Path) -> dict:
    with serve_directory(PYTHON_DOCS, log=tmp / "requests.jsonl") as (base, _):
        ws = Workspace(tmp)
        ws.config.write_text(
            f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
            f"state:\n  url: sqlite:///{ws.state_db}\n"
            "sources:\n  - {name: pydocs, type: http, delay: 0, concurrency: 16}\n",
            encoding="utf-8",
        )
        started = time.monotonic()
        proc = ws.crawl(
            "http", "source=pydocs", f"seeds={base}/index.html", f"max_depth={max_depth}",
            settings={"LOG_LEVEL": "WARNING", "CONCURRENT_REQUESTS": "16", "HOLOCRON_FRONTIER_PROGRESS_INTERVAL": "0"},
            timeout=1800,
        )
        wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    pages, seconds = sqlite3.connect(ws.records_db).execute(
        "SELECT pages_stored, duration_s FROM ingest_runs"
    ).fetchone()
    return {"pages": pages, "seconds": seconds, "pages_per_s": pages / seconds, "wall_s": wall}


def scrapy_bench(seconds: int = 20) -> float:
    """Pages per second reported by ``scrapy bench`` (median of its per-minute log lines)."""
    proc = subprocess.run(
        [sys.executable, "-m", "scrapy", "bench", "-s", f"CLOSESPIDER_TIMEOUT={seconds}", "-s", "LOGSTATS_INTERVAL=5"],
        cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=seconds + 120,
    )
    counts = [int(n) for n in re.findall(r"Crawled (\d+) pages", proc.stderr)]
    elapsed = re.search(r"'elapsed_time_seconds': ([\d.]+)", proc.stderr)
    if not counts or not elapsed:
        raise SystemExit(proc.stderr[-2000:])
    return max(counts) / float(elapsed.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-depth", type=int, default=2)
    args = parser.parse_args()
    if not PYTHON_DOCS.is_dir():
        raise SystemExit("needs Debian's python3.11-doc (apt-get install python3.11-doc)")
    with tempfile.TemporaryDirectory(prefix="holocron-http-bench-") as tmp:
        ours = crawl_docs(args.max_depth, Path(tmp))
    bench = scrapy_bench()
    print("what | pages | seconds | pages/s")
    print(f"http spider (full stack) | {ours['pages']} | {ours['seconds']:.1f} | {ours['pages_per_s']:.1f}")
    print(f"scrapy bench (no storage) | - | 20 | {bench:.1f}")
    print(f"ratio | | | {ours['pages_per_s'] / bench:.2f}")


if __name__ == "__main__":
    main()
