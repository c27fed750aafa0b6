"""``scrapy lake verify [--source NAME] [--repair]``: prove that the lake and IngestRecords agree.

Checks that every IngestRecords row has its lake file, holding the payload of the row's
``hash_sha256`` (recomputed with :func:`holocron_scrapy.items.payload_hash`) and the row's
metadata, and that every lake file (outside ``_runs/``; temp files of writes in progress left
out) has its row. Problems, one line each:

* ``missing``: a record whose lake file does not exist;
* ``mismatch``: a record whose lake file exists but is unreadable, or holds another payload or
  other metadata than the record (the fields that differ are named);
* ``orphan``: a lake file that no record names.

The lake names a file by resource and content (:mod:`holocron_scrapy.pipelines.lake`), and a
second write of a version never overwrites the file of a stored record: so a file always holds
its own record's metadata, and two records never share one file. An orphan left by a crawl
killed between a lake write and its record is replaced by the rerun's write of that version (the
same name), so after the rerun it is neither an orphan nor a second copy. Files named the older
way (``<id>_<time>_<ingest8>.json``) are checked the same way: by the record that names them.

It streams: records are read in pages of ``--batch-size`` (keyset on ``ingest_id``), the lake is
walked with ``os.scandir``, and lake files are matched to records in batches by the ``ingest_id``
their metadata names (the key), by ``lake_path`` only for the few files too damaged to name one.
Memory stays flat whatever the size of the lake.

With ``--repair`` the resources of missing and mismatched records are re-queued in the frontier
(``WorkItemStore.requeue_keys``: pending, never attempted); the next crawl fetches them again and,
the payload being unchanged, the change filter rewrites the record's own lake file
(``lake/restored``). Nothing is deleted: orphans are only reported.

Exit status: 0 when the lake and the records agree, 1 when problems were found (also with
``--repair``: they are fixed by the next crawl), 2 when the check could not run (one error line).

The records URL is ``--url``, else ``HOLOCRON_RECORDS_URL``, else ``storage.records_url`` of the
config chosen by ``HOLOCRON_CONFIG``; the lake is ``--lake``, else ``HOLOCRON_LAKE_DIR``, else
``storage.lake_dir``; the state URL (``--repair``) is ``--state-url``, else the crawl's rule
(:mod:`holocron_scrapy.db.targets`: ``HOLOCRON_STATE_URL``, the config's ``state.url`` and
``JOBDIR``/frontier.sqlite3, the one set at the highest priority), else the default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from holocron_scrapy.errors import ConfigError, HolocronError
from holocron_scrapy.items import payload_hash
from holocron_scrapy.records.rows import META_COLUMNS, format_time
from holocron_scrapy.records.store import RecordStore

ACTIONS = ("verify",)
RUNS_DIR = "_runs"
TEMP_PREFIX = ".tmp-"
MISSING, MISMATCH, ORPHAN = "missing", "mismatch", "orphan"
_JSON_COLUMNS = ("request_headers", "response_headers")


@dataclass
class Problem:
    kind: str  # missing | mismatch | orphan
    lake_path: str
    detail: str
    record: dict[str, Any] | None = None

    def line(self) -> str:
        return f"{self.kind:<8} {self.lake_path}: {self.detail}"


@dataclass
class Report:
    records: int = 0
    files: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {MISSING: 0, MISMATCH: 0, ORPHAN: 0})
    requeued: int = 0
    repairable: int = 0

    @property
    def problems(self) -> int:
        return sum(self.counts.values())


def frontier_key(record: dict[str, Any]) -> list[str]:
    """Dedupe keys of the work items that fetch *record*'s resource: the frontier names an HTTP page
    by its ``url`` type (the record by its content kind), and a MediaWiki page requested under
    another title (a redirect) is also keyed by the requested title."""
    from holocron_scrapy.frontier.keys import make_dedupe_key
    from holocron_scrapy.spiders.http import SOURCE_SYSTEM as HTTP_SYSTEM
    from holocron_scrapy.spiders.http import WORK_ITEM_TYPE

    system, name = record["source_system"], record["source_name"]
    kind = WORK_ITEM_TYPE if system == HTTP_SYSTEM else record["resource_type"]
    ids = [record["resource_id"]]
    requested = record.get("requested_id")
    if system != HTTP_SYSTEM and requested and requested != record["resource_id"]:
        ids.append(requested)
    return [make_dedupe_key(system, name, kind, str(rid)) for rid in ids]


def _normal(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if column == "fetched_at_utc":
        return format_time(value)
    return value


def compare(document: Any, record: dict[str, Any]) -> str | None:
    """Why the lake *document* is not *record*'s (None: it is)."""
    if not isinstance(document, dict) or "payload" not in document or not isinstance(document.get("metadata"), dict):
        return "not a lake document (metadata and payload)"
    digest = payload_hash(document["payload"])
    if digest != record["hash_sha256"]:
        return f"payload hash {digest[:12]} differs from the record's {record['hash_sha256'][:12]}"
    metadata = document["metadata"]
    differ = [c for c in META_COLUMNS if c in metadata and _normal(c, metadata[c]) != _normal(c, record.get(c))]
    absent = [c for c in ("ingest_id", "hash_sha256") if c not in metadata]
    if differ or absent:
        return "metadata differs from the record: " + ", ".join(differ + absent)
    return None


def walk(lake: Path, source: str | None = None) -> Iterator[tuple[str, Path]]:
    """``(lake_path, file)`` of every lake file, depth first with ``os.scandir`` (one directory
    listing in memory at a time); ``_runs/`` and temp files are left out. With *source*, only the
    ``<system>/<source>/`` folders."""
    from holocron_scrapy.pipelines.lake import safe_component

    if not lake.is_dir():
        return
    tops: list[Path] = [lake]
    if source is not None:
        wanted = safe_component(source)
        tops = [entry / wanted for entry in _dirs(lake) if (entry / wanted).is_dir()]
    for top in tops:
        stack = [top]
        while stack:
            folder = stack.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if folder == lake and entry.name == RUNS_DIR:
                            continue
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(TEMP_PREFIX):
                        path = Path(entry.path)
                        yield path.relative_to(lake).as_posix(), path


def _dirs(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and e.name != RUNS_DIR)


def _read(path: Path) -> tuple[Any, str | None]:
    try:
        return json.loads(path.read_bytes()), None
    except OSError as exc:
        return None, f"unreadable: {exc.strerror or exc}"
    except ValueError as exc:
        return None, f"not valid JSON: {exc}"


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def verify(
    store: RecordStore, lake: Path, *, source: str | None = None, batch_size: int = 500
) -> Iterator[Problem | Report]:
    """Yield each problem as found, then the :class:`Report` (streams; see the module docstring)."""
    report = Report()
    # 1. Every lake file: read once, matched to its record by the ingest id it names.
    for batch in _batches(walk(lake, source), batch_size):
        report.files += len(batch)
        read = [(rel, *_read(path)) for rel, path in batch]
        ids = [
            str(doc["metadata"]["ingest_id"])
            for _, doc, _ in read
            if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict) and doc["metadata"].get("ingest_id")
        ]
        by_id = store.records_by_ids(ids)
        unmatched = [rel for rel, doc, _ in read if _owner(doc, by_id, rel) is None]
        by_path = store.records_by_lake_path(unmatched) if unmatched else {}
        for rel, doc, error in read:
            record = _owner(doc, by_id, rel) or by_path.get(rel)
            if record is None:
                yield Problem(ORPHAN, rel, "no record names this file" + (f" ({error})" if error else ""))
                continue
            why = error or compare(doc, record)
            if why:
                yield Problem(MISMATCH, rel, f"{why} (record {record['ingest_id']})", record)
    # 2. Every record: its file must exist (its content was checked above).
    for page in store.iter_records(source, batch_size):
        report.records += len(page)
        for record in page:
            rel = record.get("lake_path")
            if not rel:
                yield Problem(MISSING, "-", f"record {record['ingest_id']} names no lake file", record)
            elif not (lake / rel).is_file():
                yield Problem(MISSING, rel, f"no lake file for record {record['ingest_id']}", record)
    yield report


def _owner(doc: Any, by_id: dict[str, dict[str, Any]], rel: str) -> dict[str, Any] | None:
    if not (isinstance(doc, dict) and isinstance(doc.get("metadata"), dict)):
        return None
    record = by_id.get(str(doc["metadata"].get("ingest_id")))
    return record if record is not None and record.get("lake_path") == rel else None


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings = {"LOG_LEVEL": "WARNING"}

    def syntax(self) -> str:
        return "verify [--source NAME] [--repair] [--url URL] [--lake DIR] [--state-url URL]"

    def short_desc(self) -> str:
        return "Check that every record has its lake file and every lake file its record"

    def long_desc(self) -> str:
        return (
            "verify recomputes the payload hash of every lake file and compares it, and the metadata, with "
            "its IngestRecords row; reports records without a file (missing), files that are not their "
            "record's (mismatch) and files without a record (orphan); exits 1 if there is any. --repair "
            "re-queues the resources of missing and mismatched records for the next crawl; nothing is deleted."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        group = parser.add_argument_group(title="Lake options")
        group.add_argument("--source", metavar="NAME", help="only this source's records and files")
        group.add_argument("--repair", action="store_true", help="re-queue missing and mismatched resources")
        group.add_argument("--url", metavar="URL", help="records URL (default: HOLOCRON_RECORDS_URL, then the config)")
        group.add_argument("--lake", metavar="DIR", help="lake directory (default: HOLOCRON_LAKE_DIR, then the config)")
        group.add_argument("--state-url", metavar="URL", help="frontier URL for --repair (default as for crawls)")
        group.add_argument("--batch-size", type=int, default=500, metavar="N", help="records per query (500)")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1 or args[0] not in ACTIONS:
            raise UsageError(f"expected one of: {', '.join(ACTIONS)}", print_help=False)
        if opts.batch_size < 1:
            raise UsageError("--batch-size must be at least 1", print_help=False)
        try:
            self.exitcode = self.do_verify(opts)
        except (HolocronError, OSError) as exc:
            print(f"lake: error: {' '.join(str(exc).split())}", file=sys.stderr)
            self.exitcode = 2

    # -- targets -----------------------------------------------------------------------
    def _config(self) -> Any:
        from holocron_scrapy.config import load_config

        assert self.settings is not None  # set by scrapy.cmdline before run()
        try:
            return load_config(self.settings.get("HOLOCRON_CONFIG"))
        except OSError as exc:
            raise ConfigError(f"cannot read the configuration: {exc}", key="HOLOCRON_CONFIG") from exc

    def records_target(self, opts: argparse.Namespace) -> tuple[str, dict[str, Any]]:
        from holocron_scrapy.db.targets import RECORDS, resolve_store_target

        target = resolve_store_target(RECORDS, self.settings, url=opts.url, config=self._config)
        return target.url, target.sqlserver_config

    def lake_dir(self, opts: argparse.Namespace) -> Path:
        assert self.settings is not None  # set by scrapy.cmdline before run()
        raw = opts.lake or self.settings.get("HOLOCRON_LAKE_DIR") or self._config().lake_dir
        lake = Path(raw).expanduser().resolve()
        if not lake.is_dir():
            raise ConfigError(f"the lake directory {lake} does not exist", key="--lake" if opts.lake else "lake_dir")
        return lake

    def state_target(self, opts: argparse.Namespace) -> tuple[str, dict[str, Any]]:
        from holocron_scrapy.db.targets import STATE, resolve_store_target

        target = resolve_store_target(
            STATE, self.settings, url=opts.state_url, option="--state-url", config=self._config
        )
        return target.url, target.sqlserver_config

    # -- verify ------------------------------------------------------------------------
    def do_verify(self, opts: argparse.Namespace) -> int:
        from holocron_scrapy.frontier.store import WorkItemStore, open_work_item_store
        from holocron_scrapy.records.store import open_record_store

        lake = self.lake_dir(opts)
        url, sqlserver = self.records_target(opts)
        store = open_record_store(url, sqlserver_config=sqlserver)
        frontier: WorkItemStore | None = None
        try:
            if opts.repair:
                state_url, state_sqlserver = self.state_target(opts)
                frontier = open_work_item_store(state_url, sqlserver_config=state_sqlserver)
            report = Report()
            keys: list[str] = []
            for found in verify(store, lake, source=opts.source, batch_size=opts.batch_size):
                if isinstance(found, Report):
                    report = Report(found.records, found.files, report.counts, report.requeued, report.repairable)
                    break
                report.counts[found.kind] += 1
                print(found.line())
                if frontier is not None and found.record is not None:
                    report.repairable += 1
                    keys += frontier_key(found.record)
                    if len(keys) >= opts.batch_size:
                        report.requeued += frontier.requeue_keys(keys)
                        keys = []
            if frontier is not None and keys:
                report.requeued += frontier.requeue_keys(keys)
        finally:
            store.close()
            if frontier is not None:
                frontier.close()
        counts = report.counts
        print(
            f"lake verify: {report.records} records, {report.files} lake files checked in {lake}:"
            f" {counts[MISSING]} missing, {counts[MISMATCH]} mismatched, {counts[ORPHAN]} orphans"
        )
        if opts.repair:
            print(
                f"repair: {report.requeued} work items re-queued for {report.repairable} missing or mismatched"
                " records (the next crawl fetches them again); nothing deleted"
            )
        return 1 if report.problems else 0
