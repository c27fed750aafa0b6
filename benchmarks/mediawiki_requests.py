"""API requests per stored page crawling the local test MediaWiki, against the lower bound.

A client without ``apihighlimits`` gets at most 50 titles and 500 links (or categories)
per request, so no crawl can use fewer than
``max(ceil(links/500), ceil(categories/500), ceil(titles/50))`` requests.

    python -m benchmarks.mediawiki_requests [--seeds "Hub Alpha|Ωmega Station"] [--max-depth 4]
    python -m benchmarks.mediawiki_requests --batch-sizes 50 --recrawl 30
    python -m benchmarks.mediawiki_requests --batch-sizes 50 --bot

``--bot`` adds a crawl logged in as a bot with ``apihighlimits`` (``createAndPromote.php --bot`` and
``createBotPassword.php --grants basic,highvolume``; batches of 500), against the high-limit bound
``max(Σ depth levels ⌈pages at the level/500⌉, ⌈links/5000⌉, ⌈categories/5000⌉)`` (a breadth-first
crawl cannot merge two levels into one request); its requests count the login's 3 round trips too.

``--recrawl N`` then edits N stored pages (``maintenance/edit.php``) and runs the same crawl again
with ``recrawl_after=0s``: the incremental re-crawl's requests, pages fetched in full and records
added, against the first crawl.

Needs php and Debian's mediawiki package (see README). Prints a table; the figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from tests.support import mediawiki_server as ms
from tests.support import wikigen
from tests.support.crawl import Workspace

BOT_ENV = "HOLOCRON_BENCH_BOT_PASSWORD"


def crawl_lab(api_url: str, workdir: Path, bot: ms.BotLogin | None, *arguments: str) -> tuple[Workspace, float]:
    """One ``scrapy crawl mediawiki`` of the lab wiki in *workdir* (as *bot* if given): the workspace
    and the wall time; exits with the crawl's error output if it failed."""
    workdir.mkdir(parents=True)
    ws = Workspace(workdir)
    source = "testwiki"
    if bot is None:
        ws.write_config(api_url)
    else:
        source = "botwiki"
        os.environ[BOT_ENV] = bot.password
        ws.write_config(
            api_url,
            extra_source=(
                f"  - name: botwiki\n    type: mediawiki\n    api_url: {api_url}\n    delay: 0\n    concurrency: 3\n"
                f"    auth: {{type: botpassword, username: '{bot.username}', password_env: {BOT_ENV}}}\n"
            ),
        )
    started = time.monotonic()
    proc = ws.crawl(
        "mediawiki",
        f"source={source}",
        *arguments,
        settings={"LOG_LEVEL": "WARNING", "HOLOCRON_FRONTIER_PROGRESS_INTERVAL": "0"},
        timeout=1800,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return ws, wall


def measure(
    api_url: str, seeds: str, max_depth: int, batch_size: int | None, workdir: Path, bot: ms.BotLogin | None = None
) -> dict:
    arguments = [f"seeds={seeds}", f"max_depth={max_depth}", *([f"batch_size={batch_size}"] if batch_size else [])]
    ws, wall = crawl_lab(api_url, workdir, bot, *arguments)
    conn = sqlite3.connect(ws.records_db)
    links = categories = 0
    for (payload,) in conn.execute("SELECT payload FROM ingest_records WHERE outcome = 'ok'"):
        page = json.loads(payload)
        links += len(page.get("links", []))
        categories += len(page.get("categories", []))
    stored = conn.execute("SELECT COUNT(*) FROM ingest_records").fetchone()[0]
    run = conn.execute("SELECT requests, duration_s, summary FROM ingest_runs").fetchone()
    levels = dict(
        sqlite3.connect(ws.state_db).execute(
            "SELECT depth, COUNT(*) FROM work_items WHERE status = 'completed' AND attempt > 0 GROUP BY depth"
        )
    )
    titles = sum(levels.values())
    if bot is None:
        bound = max(math.ceil(links / 500), math.ceil(categories / 500), math.ceil(titles / 50))
    else:
        bound = max(
            sum(math.ceil(n / 500) for n in levels.values()), math.ceil(links / 5000), math.ceil(categories / 5000)
        )
    return {
        "batch_size": f"bot {batch_size or 500}" if bot else batch_size,
        "titles": titles,
        "stored": stored,
        "links": links,
        "categories": categories,
        "requests": run[0],
        "response_bytes": json.loads(run[2]).get("downloader/response_bytes", 0),
        "bound": bound,
        "ratio": run[0] / bound,
        "requests_per_page": run[0] / stored,
        "pages_per_s": stored / run[1],
        "crawl_s": run[1],
        "wall_s": wall,
    }


def recrawl(install: ms.WikiInstall, workdir: Path, seeds: str, max_depth: int, edits: int) -> dict:
    """Edit *edits* stored pages, re-crawl incrementally; the second run's figures."""
    ws = Workspace(workdir)
    conn = sqlite3.connect(ws.records_db)
    titles = [t for (t,) in conn.execute(
        "SELECT resource_id FROM ingest_records WHERE outcome = 'ok' AND resource_id NOT LIKE '%:%'"
        " ORDER BY resource_id"
    )]  # fmt: skip
    before = conn.execute("SELECT COUNT(*) FROM ingest_records").fetchone()[0]
    conn.close()
    step = max(1, len(titles) // edits)
    edited = titles[::step][:edits]
    for title in edited:
        ms.edit_page(install, title, f"Edited for the re-crawl benchmark: [[{title}]] changed.")
    proc = ws.crawl(
        "mediawiki", "source=testwiki", f"seeds={seeds}", f"max_depth={max_depth}", "recrawl_after=0s",
        settings={"LOG_LEVEL": "WARNING", "HOLOCRON_FRONTIER_PROGRESS_INTERVAL": "0"}, timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    conn = sqlite3.connect(ws.records_db)
    after = conn.execute("SELECT COUNT(*) FROM ingest_records").fetchone()[0]
    requests, summary, duration = conn.execute(
        "SELECT requests, summary, duration_s FROM ingest_runs ORDER BY started_at DESC LIMIT 1"
    ).fetchone()
    conn.close()
    stats = json.loads(summary)
    return {
        "edited": len(edited),
        "requests": requests,
        "requeued": stats.get("recrawl/requeued", 0),
        "fetched_in_full": stats.get("mediawiki/pages/ok", 0),
        "unchanged": stats.get("recrawl/unchanged", 0),
        "records_added": after - before,
        "response_bytes": stats.get("downloader/response_bytes", 0),
        "crawl_s": duration,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="Hub Alpha|Ωmega Station")
    parser.add_argument("--max-depth", type=int, default=4)
    parser.add_argument("--batch-sizes", default="50,1")
    parser.add_argument("--recrawl", type=int, default=0, help="edit N pages, then re-crawl incrementally")
    parser.add_argument("--bot", action="store_true", help="also crawl as a bot with apihighlimits (batches of 500)")
    args = parser.parse_args()
    reason = ms.unavailable_reason()
    if reason:
        raise SystemExit(f"needs the local MediaWiki: {reason}")
    with tempfile.TemporaryDirectory(prefix="holocron-bench-") as tmp:
        model = wikigen.build_model()
        dump = model.write_dump(Path(tmp) / "dump.xml")
        install = ms.build_wiki(Path(tmp) / "wiki", dump)
        bot = ms.create_bot(install, "HolocronBenchBot") if args.bot else None
        with ms.serve(install) as wiki:
            rows = [
                measure(wiki.api_url, args.seeds, args.max_depth, int(b), Path(tmp) / f"crawl-{b}")
                for b in args.batch_sizes.split(",")
            ]
            if bot is not None:
                rows.append(measure(wiki.api_url, args.seeds, args.max_depth, None, Path(tmp) / "crawl-bot", bot))
            again = None
            if args.recrawl:
                first = Path(tmp) / f"crawl-{rows[0]['batch_size']}"
                again = recrawl(install, first, args.seeds, args.max_depth, args.recrawl)
    header = ("batch", "titles", "stored", "links", "cats", "requests", "bound", "ratio", "req/page", "pages/s")
    print(" | ".join(header))
    for r in rows:
        print(
            f"{r['batch_size']} | {r['titles']} | {r['stored']} | {r['links']} | {r['categories']} | {r['requests']}"
            f" | {r['bound']} | {r['ratio']:.2f} | {r['requests_per_page']:.3f} | {r['pages_per_s']:.1f}"
        )
    if again:
        first = rows[0]
        print(
            f"\nre-crawl after editing {again['edited']} pages (batch {first['batch_size']}):"
            f" {again['requests']} requests (first crawl {first['requests']}),"
            f" {again['response_bytes'] / 1e6:.2f} MB of responses"
            f" (first crawl {first['response_bytes'] / 1e6:.2f} MB),"
            f" {again['requeued']} items re-queued, {again['fetched_in_full']} pages fetched in full,"
            f" {again['unchanged']} unchanged, {again['records_added']} records added, {again['crawl_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
