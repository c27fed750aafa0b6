"""The daily sync from recent changes against the ``lastrevid`` sweep (issue 11), on the lab MediaWiki:

1. a first run ``scrapy crawl mediawiki -a source=testwiki -a seeds="Ωmega Station" -a max_depth=N
   -a recrawl=changes`` (a first run: the sweep of an empty frontier, i.e. a crawl; it stores the
   checkpoint);
2. ``--edits`` stored pages are edited with ``maintenance/edit.php``;
3. the workspace (state, records, lake) is copied; in one copy the same command runs again (the sync:
   recent changes), in the other ``-a recrawl_after=0s`` without ``recrawl=changes`` (the sweep: one
   ``prop=info`` per 50 stored titles, then content for what changed).

Both must store exactly the edited pages. Prints requests, bytes received and sent, and wall time of
each, as a table and JSON; the figures go to docs/benchmarks.md.

    python -m benchmarks.daily_sync                     # 30 edits, max_depth 2
    python -m benchmarks.daily_sync --edits 10 --depth 1

Needs php and Debian's mediawiki package (see README).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support import mediawiki_server as ms
from tests.support import record_listings as rec
from tests.support import wikigen
from tests.support.crawl import Workspace

SEED = "Ωmega Station"
SETTINGS = {"HOLOCRON_FRONTIER_PROGRESS_INTERVAL": "0"}


def crawl(ws: Workspace, *args: str) -> dict[str, Any]:
    started = time.monotonic()
    proc = ws.crawl("mediawiki", "source=testwiki", f"seeds={SEED}", *args, settings=SETTINGS, timeout=1800)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"crawl {args} exited {proc.returncode}: {proc.stderr[-3000:]}")
    run = ws.runs()[-1]
    stats = json.loads(run["summary"])
    return {
        "requests": run["requests"],
        "bytes_received": stats.get("downloader/response_bytes", 0),
        "bytes_sent": stats.get("downloader/request_bytes", 0),
        "pages_stored": run["pages_stored"],
        "pages_ok": stats.get("mediawiki/pages/ok", 0),
        "wall_s": round(wall, 1),
        "run_id": run["run_id"],
    }


def copy_workspace(src: Workspace, dst: Workspace, api_url: str) -> None:
    dst.root.mkdir(parents=True)
    for name in ("state.sqlite3", "records.sqlite3"):
        shutil.copy2(src.root / name, dst.root / name)
    shutil.copytree(src.lake, dst.lake)
    dst.write_config(api_url)  # the same config, with the copy's paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--depth", type=int, default=2)
    args = parser.parse_args(argv)
    depth = f"max_depth={args.depth}"
    with tempfile.TemporaryDirectory(prefix="holocron-sync-bench-") as tmp:
        root = Path(tmp)
        model = wikigen.build_model()
        dump = model.write_dump(root / "dump.xml")
        install = ms.build_wiki(root / "wiki", dump)
        with ms.serve(install) as server:
            sync_ws = Workspace(root / "sync")
            sync_ws.root.mkdir()
            sync_ws.write_config(server.api_url)
            first = crawl(sync_ws, depth, "recrawl=changes")
            stored = sorted(
                r["resource_id"]
                for r in sync_ws.records()
                if r["outcome"] == "ok" and r["requested_id"] == r["resource_id"] and r["resource_id"] != SEED
            )
            if len(stored) < args.edits:
                raise SystemExit(f"only {len(stored)} pages stored; use a larger --depth")
            edited = stored[:: max(len(stored) // max(args.edits, 1), 1)][: args.edits]
            scenario = rec.Scenario(install, server.api_url)
            for i, title in enumerate(edited):
                scenario.edit(title, f"'''{title}''' was edited by the daily sync benchmark ({i}).\n")
            sweep_ws = Workspace(root / "sweep")
            copy_workspace(sync_ws, sweep_ws, server.api_url)
            sync = crawl(sync_ws, depth, "recrawl=changes")
            sweep = crawl(sweep_ws, depth, "recrawl_after=0s")
            for name, ws, result in (("sync", sync_ws, sync), ("sweep", sweep_ws, sweep)):
                new = sorted(r["resource_id"] for r in ws.records() if r["run_id"] == result["run_id"])
                if new != sorted(edited):
                    raise SystemExit(f"the {name} stored {len(new)} pages, not the {len(edited)} edited")
    result = {
        "stored_pages": first["pages_ok"],
        "edits": len(edited),
        "first_run": first,
        "sync": sync,
        "sweep": sweep,
    }
    print(f"{first['pages_ok']} pages stored (max_depth {args.depth}), {len(edited)} edited")
    print(f"{'run':<8}{'requests':>10}{'received':>12}{'sent':>10}{'stored':>8}{'wall s':>8}")
    for name in ("sync", "sweep"):
        r = result[name]
        print(
            f"{name:<8}{r['requests']:>10}{r['bytes_received']:>12}{r['bytes_sent']:>10}"
            f"{r['pages_stored']:>8}{r['wall_s']:>8}"
        )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
