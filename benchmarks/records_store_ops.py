"""Rates of the record store's operations, as the pipelines and ``scrapy lake verify`` use them.

Everything runs in this process, on a fresh database per repeat (a temp SQLite file, or the
database of ``--url``, whose tables must be empty); rows are built before the clock starts.

* ``insert``: ``batches`` batches of 1,000 new rows with their ``seen_resources`` versions
  (``insert(rows, record_versions=True)``, what the records pipeline does per batch);
* ``insert dupes``: the same versions again under new ingest ids (every row skipped);
* ``latest_record``: one lookup per resource (the change filter, per item);
* ``versions``: lookups of 50 resource ids at a time (the incremental re-crawl checks);
* ``iter_records``: every record, in pages of 1,000 (``scrapy lake verify``).

The script only uses the store's public API, so it also runs on an older checkout (run it from
there: ``cd /tmp/old && python -m benchmarks.records_store_ops``) for a before/after ratio.

    python -m benchmarks.records_store_ops                    # 20 batches of 1,000, 3 repeats
    python -m benchmarks.records_store_ops --quick            # 5 batches, 1 repeat
    python -m benchmarks.records_store_ops --url postgresql://root@127.0.0.1:5432/bench
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

BATCH = 1000
OPS = ("insert", "insert dupes", "latest_record", "versions", "iter_records")


def _rows(batches: int) -> list[list[dict[str, Any]]]:
    """*batches* batches of rows; each call gives new ingest ids for the same versions."""
    from holocron_scrapy.items import IngestItem
    from holocron_scrapy.records.rows import item_row

    start = datetime(2026, 1, 19, 12, 0, tzinfo=timezone.utc)
    out = []
    for b in range(batches):
        batch = []
        for i in range(BATCH):
            n = b * BATCH + i
            item = IngestItem(
                source_system="mediawiki",
                source_name="bench",
                resource_type="page",
                resource_id=f"Page {n}",
                request_uri="http://127.0.0.1:9/api.php",
                payload={"title": f"Page {n}", "text": "lorem ipsum " * 40, "links": [f"Page {n + 1}"]},
                fetched_at_utc=start + timedelta(milliseconds=n),
                lake_path=f"mediawiki/bench/page/{n}.json",
                revision_id=n,
            )
            batch.append(item_row(item))
        out.append(batch)
    return out


def run_once(url: str, batches: int) -> dict[str, float]:
    """Rows (or lookups) per second of each operation, on the empty database of *url*."""
    from holocron_scrapy.records.store import open_record_store

    rows, dupes = _rows(batches), _rows(batches)  # the same versions under new ingest ids
    ids = [r["resource_id"] for batch in rows for r in batch]
    rates: dict[str, float] = {}
    store = open_record_store(url)
    try:
        t = time.perf_counter()
        for batch in rows:
            assert all(store.insert(batch, record_versions=True))
        rates["insert"] = len(ids) / (time.perf_counter() - t)
        t = time.perf_counter()
        for batch in dupes:
            assert not any(store.insert(batch, record_versions=True))
        rates["insert dupes"] = len(ids) / (time.perf_counter() - t)
        t = time.perf_counter()
        for rid in ids:
            assert store.latest_record("mediawiki", "bench", "page", rid) is not None
        rates["latest_record"] = len(ids) / (time.perf_counter() - t)
        t = time.perf_counter()
        for start in range(0, len(ids), 50):
            assert len(store.versions("mediawiki", "bench", ids[start : start + 50])) == len(ids[start : start + 50])
        rates["versions"] = len(ids) / (time.perf_counter() - t)
        t = time.perf_counter()
        assert sum(len(page) for page in store.iter_records("bench", BATCH)) == len(ids)
        rates["iter_records"] = len(ids) / (time.perf_counter() - t)
    finally:
        store.close()
    return rates


def _clear(url: str) -> None:
    """Empty the tables of a server database between repeats (creating them the first time)."""
    import sqlalchemy as sa

    from holocron_scrapy.db.engine import open_engine

    engine = open_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE ingest_records, seen_resources, ingest_runs"))
    engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 rows (default 20)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5 batches, 1 repeat")
    parser.add_argument("--url", help="a postgresql:// database to use instead of a temp SQLite file")
    args = parser.parse_args(argv)
    batches, repeats = (5, 1) if args.quick else (args.batches, args.repeats)
    results: dict[str, list[float]] = {op: [] for op in OPS}
    for _ in range(repeats):
        workdir = Path(tempfile.mkdtemp(prefix="records_bench_"))
        try:
            if args.url:
                _clear(args.url)
            url = args.url or f"sqlite:///{workdir / 'records.sqlite3'}"
            for op, rate in run_once(url, batches).items():
                results[op].append(rate)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            if args.url:
                _clear(args.url)
    print(f"{batches * BATCH:,} rows, {repeats} repeat(s), {args.url or 'SQLite'}: rows (lookups) per second, median")
    for op in OPS:
        print(f"  {op:<14} {statistics.median(results[op]):>10,.0f}")


if __name__ == "__main__":
    main()
