"""Seeds at scale (issue 11): peak RSS and the wall time of a resumed run with 1,000,000 seeds against
10,000, end to end with the user's own command against the lab MediaWiki:

    scrapy crawl mediawiki -a source=testwiki -a seeds=@seeds.txt -a max_depth=0

The seeds file holds the lab wiki's articles followed by titles that do not exist (``Absent seed
0000001`` ...), one per line. For each size:

* **first run** (once): the command on an empty state database, stopped with SIGINT (Scrapy's graceful
  stop) as soon as it logs that the seed intake is done; the crawl fetches meanwhile. Peak RSS of the
  process (``ru_maxrss`` from ``wait4``), and the seconds from process start to the end of the intake.
* then, not timed, every work item is marked completed (a crawl that ran to its end: fetching a million
  titles from the lab wiki would take hours);
* **resumed run** (``--repeats`` times): the same command again, to its end (nothing is left to fetch).
  Wall time and peak RSS.

Sizes are interleaved within each repeat; the table gives medians. For "before" figures, run this
file from a ``git archive`` of a commit without the seed intake: its first run is stopped once the
state database holds every seed.

    python -m benchmarks.seed_intake                                  # 1,000,000 vs 10,000 seeds, 3 repeats
    python -m benchmarks.seed_intake --sizes 100000,10000 --repeats 1 # quick

Needs php and Debian's mediawiki package (see README). Prints a table and JSON; the figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support import mediawiki_server as ms
from tests.support import wikigen
from tests.support.crawl import REPO, Workspace

SETTINGS = {"LOG_LEVEL": "INFO", "HOLOCRON_FRONTIER_PROGRESS_INTERVAL": "0"}


def write_seeds(path: Path, size: int, articles: list[str]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for title in articles[:size]:
            out.write(title + "\n")
        for i in range(max(size - len(articles), 0)):
            out.write(f"Absent seed {i:07}\n")


def stored_seeds(ws: Workspace) -> int:
    try:
        conn = sqlite3.connect(ws.state_db)
        try:
            return conn.execute("SELECT COUNT(*) FROM work_items").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def run(
    ws: Workspace, seeds: Path, log: Path, *, stop_after_intake: bool, size: int = 0, timeout: float = 3600
) -> dict[str, Any]:
    """One crawl process: its wall time, peak RSS (MB), exit status, and when the intake ended (code
    without the seed intake, for the "before" figures: when the state database holds every seed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    cmd = ws.command("mediawiki", "source=testwiki", f"seeds=@{seeds}", "max_depth=0", settings=SETTINGS)
    started = time.monotonic()
    intake_done = None
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        if stop_after_intake:
            while proc.poll() is None:
                text = log.read_text("utf-8", "replace")
                ended = "Seed intake: " in text and (" done: " in text or "skipped" in text)
                if ended or ("Seed intake: " not in text and stored_seeds(ws) >= size > 0):
                    intake_done = time.monotonic() - started
                    proc.send_signal(signal.SIGINT)
                    break
                if time.monotonic() - started > timeout:
                    proc.kill()
                    raise SystemExit(f"no end of the intake within {timeout} s: {log}")
                time.sleep(0.05 if size < 100_000 else 1.0)
        _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    text = log.read_text("utf-8", "replace")
    return {
        "wall_s": round(wall, 2),
        "intake_s": None if intake_done is None else round(intake_done, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "exit": os.waitstatus_to_exitcode(status),
        "skipped": "was taken in by an earlier run" in text,
    }


def complete_everything(ws: Workspace) -> int:
    conn = sqlite3.connect(ws.state_db)
    try:
        with conn:
            changed = conn.execute(
                "UPDATE work_items SET status = 'completed', completed_at = updated_at, lease_owner = NULL,"
                " lease_expires_at = NULL WHERE status <> 'completed'"
            ).rowcount
        return changed
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    reason = ms.unavailable_reason()
    if reason:
        raise SystemExit(f"needs the lab MediaWiki: {reason}")
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="seed-intake-") as tmp:
        root = Path(tmp)
        model = wikigen.build_model()
        dump = model.write_dump(root / "dump.xml")
        install = ms.build_wiki(root / "wiki", dump)
        articles = sorted(p.title for p in model.articles())
        with ms.serve(install) as wiki:
            spaces = {}
            for size in sizes:
                ws = Workspace(root / f"ws{size}")
                ws.root.mkdir()
                ws.write_config(wiki.api_url)
                seeds = ws.root / "seeds.txt"
                write_seeds(seeds, size, articles)
                first = run(ws, seeds, ws.root / "first.log", stop_after_intake=True, size=size)
                first["work_items"] = (
                    sqlite3.connect(ws.state_db).execute("SELECT COUNT(*) FROM work_items").fetchone()[0]
                )
                first["completed_after"] = complete_everything(ws)
                print(f"{size:>9,} seeds, first run: {json.dumps(first)}", flush=True)
                results[size] = {"first": first, "resumed": []}
                spaces[size] = (ws, seeds)
            for repeat in range(args.repeats):
                order = sizes[repeat % len(sizes) :] + sizes[: repeat % len(sizes)]
                for size in order:
                    ws, seeds = spaces[size]
                    again = run(ws, seeds, ws.root / f"resumed{repeat}.log", stop_after_intake=False)
                    print(f"{size:>9,} seeds, resumed run {repeat}: {json.dumps(again)}", flush=True)
                    results[size]["resumed"].append(again)
    big, small = max(sizes), min(sizes)
    print()
    print("| seeds | first run: intake done after | first run peak RSS MB | resumed run wall s | resumed peak RSS MB |")
    print("|---|---|---|---|---|")
    for size in sorted(sizes, reverse=True):
        r = results[size]
        walls = [x["wall_s"] for x in r["resumed"]]
        rss = [x["peak_rss_mb"] for x in r["resumed"]]
        print(
            f"| {size:,} | {r['first']['intake_s']} s | {r['first']['peak_rss_mb']} | "
            f"{statistics.median(walls):.2f} | {statistics.median(rss):.1f} |"
        )
    first_ratio = results[big]["first"]["peak_rss_mb"] / results[small]["first"]["peak_rss_mb"]
    wall_ratios = [
        b["wall_s"] / s["wall_s"] for b, s in zip(results[big]["resumed"], results[small]["resumed"], strict=True)
    ]
    rss_ratios = [
        b["peak_rss_mb"] / s["peak_rss_mb"]
        for b, s in zip(results[big]["resumed"], results[small]["resumed"], strict=True)
    ]
    print()
    print(f"first run peak RSS {big:,}/{small:,}: {first_ratio:.3f}x")
    print(f"resumed run peak RSS {big:,}/{small:,}: {statistics.median(rss_ratios):.3f}x (median of per-repeat ratios)")
    print(
        f"resumed run wall time {big:,}/{small:,}: {statistics.median(wall_ratios):.3f}x (median of per-repeat ratios)"
    )
    print(json.dumps({str(k): v for k, v in results.items()}))


if __name__ == "__main__":
    main()
