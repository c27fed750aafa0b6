"""A whole-wiki ingest (``-a generator=allpages``) of the local test MediaWiki, with and without a bot,
against the request bound.

A generator crawl lists the titles (``list=allpages``: 500 per request, 5,000 with ``apihighlimits``)
and fetches them in full batches (50 titles per request, 500 with a bot), following no links. Its
bound is ``ceil(P/500) + ceil(P/50)`` (bot: ``ceil(P/5000) + ceil(P/500)``) for P pages; a batch whose
pages list more links or categories than one answer holds (500, bot 5,000) needs continuations on top.

    python -m benchmarks.generator_ingest [--bot]

``--bot`` adds the same ingest logged in as a bot with ``apihighlimits`` (``createAndPromote.php --bot``,
BotPassword grants ``basic,highvolume``); its requests count the login's 3 round trips. Every run
counts the API probe. Needs php and Debian's mediawiki package (see README). Prints a table; the
figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import tempfile
from pathlib import Path

from benchmarks.mediawiki_requests import crawl_lab
from tests.support import mediawiki_server as ms
from tests.support import wikigen


def measure(api_url: str, workdir: Path, bot: ms.BotLogin | None = None) -> dict:
    ws, wall = crawl_lab(api_url, workdir, bot, "generator=allpages")
    conn = sqlite3.connect(ws.records_db)
    links = sum(
        len(json.loads(payload).get("links", []))
        for (payload,) in conn.execute("SELECT payload FROM ingest_records WHERE outcome = 'ok'")
    )
    stored = conn.execute("SELECT COUNT(DISTINCT resource_id) FROM ingest_records WHERE outcome = 'ok'").fetchone()[0]
    requests, seconds, summary = conn.execute("SELECT requests, duration_s, summary FROM ingest_runs").fetchone()
    stats = json.loads(summary)
    pages = stats["generator/titles"]
    listing, batch = (5000, 500) if bot else (500, 50)
    bound = math.ceil(pages / listing) + math.ceil(pages / batch)
    overhead = 1 + (3 if bot else 0)  # the API probe, the login's round trips
    return {
        "crawl": "bot" if bot else "anonymous",
        "pages": pages,
        "stored": stored,
        "requests": requests,
        "listing": stats["generator/requests"],
        "continuations": stats.get("mediawiki/continuations", 0),
        "links": links,
        # with links: the content requests cannot be fewer than ceil(links / link limit) either
        "link_bound": math.ceil(pages / listing) + max(math.ceil(pages / batch), math.ceil(links / listing)),
        "overhead": overhead,
        "bound": bound,
        "ratio": (requests - overhead) / bound,
        "response_bytes": stats.get("downloader/response_bytes", 0),
        "crawl_s": seconds,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bot", action="store_true", help="also ingest as a bot with apihighlimits")
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
            rows = [measure(wiki.api_url, Path(tmp) / "anonymous")]
            if bot is not None:
                rows.append(measure(wiki.api_url, Path(tmp) / "bot", bot))
    header = ("crawl", "pages", "stored", "links", "requests", "listing", "continuations", "bound", "ratio", "MB", "s")
    print(" | ".join(header))
    for r in rows:
        print(
            f"{r['crawl']} | {r['pages']} | {r['stored']} | {r['links']}"
            f" | {r['requests']} (incl. {r['overhead']} probe/login)"
            f" | {r['listing']} | {r['continuations']} | {r['bound']} (with links {r['link_bound']}) | {r['ratio']:.2f}"
            f" | {r['response_bytes'] / 1e6:.2f} | {r['crawl_s']:.1f}"
        )


if __name__ == "__main__":
    main()
