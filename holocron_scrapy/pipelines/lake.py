"""Write one JSON file per stored version of a resource: its metadata and the unaltered payload.

Path: ``<lake>/<source_system>/<source_name>/<resource_type>/<safe_id>_<version16>.json``, where
``version16`` is the first 16 hex digits of the SHA-256 of the exact resource identity (system,
name, type, id) and the payload hash. One name per resource and content, so a second write of
the same version lands on the same file (``ingest_records`` keeps one record per resource and
hash, so one record names a file at most), and the name never depends on when or by whom it
was fetched. Written atomically (temp file, fsync, rename) in the lake's writer thread
(:class:`holocron_scrapy.workers.BatchWorker`): the items that arrive while it writes are written
as one batch, then each directory that got new names is fsynced once (the renames survive a power
loss too), and the batch's results come back to the reactor in one call. The fsync never blocks
the reactor, and the reactor's share per item is small.

A write that finds its file there already decides by the file's owner, the record whose
``ingest_id`` the file's metadata names (a record of this version exists, or none does):

* it holds this very item (a retried write): nothing to do;
* a stored record owns it (another worker stored this version first, or the page went back to
  an earlier content): it is left alone, or restored from that record if damaged (stat
  ``lake/restored``), never overwritten with this item's metadata; the records pipeline then
  finds the version stored and drops the item (``records/duplicates``) without deleting the file;
* no record owns it (an orphan: the process was killed between this write and its record): it
  is replaced atomically by this item's document, whose record follows (stat ``lake/replaced``).

So a kill -9 between a lake write and its record leaves, after the rerun, exactly one file per
resource and content, and it is the one its record names (``scrapy lake verify`` agrees).

A write that fails because of the lake itself (full, read-only, deleted mid-run) is a storage
fault (:mod:`holocron_scrapy.pipelines.faults`): one error line, the crawl stops with
``fatal_storage``, the item's work items are handed back. After ``close_spider`` nothing more is
written (a response that arrives after a forced stop must not leave a file without a record).

Stats: ``lake/written``, ``lake/bytes``, ``lake/replaced``, ``lake/kept``, ``lake/restored``, ``lake/same``.

Settings: ``HOLOCRON_LAKE_DIR`` (and the records store of :mod:`holocron_scrapy.records.versions`,
asked who owns a file found in the way).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import threads

from holocron_scrapy import defaults
from holocron_scrapy.items import INTERNAL_FIELDS, payload_hash
from holocron_scrapy.pipelines.faults import FaultHandler, handed_back, is_storage_error
from holocron_scrapy.records.rows import format_time
from holocron_scrapy.records.store import RecordStore
from holocron_scrapy.records.versions import VersionLookup
from holocron_scrapy.workers import BatchWorker

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

#: Longest file-name stem (in UTF-8 bytes) kept readable; longer ids are cut and hashed.
MAX_STEM_BYTES = 120
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|\s]+')


def safe_component(value: str) -> str:
    """A file-name-safe form of any id: no separators, no leading dots, at most ~200 bytes."""
    text = unicodedata.normalize("NFC", str(value))
    text = _UNSAFE.sub("_", text).strip("._") or "_"
    if len(text.encode("utf-8")) > MAX_STEM_BYTES:
        digest = hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:16]
        cut = text.encode("utf-8")[: MAX_STEM_BYTES - 17].decode("utf-8", "ignore")
        text = f"{cut}~{digest}"
    return text


def version_digest(source_system: str, source_name: str, resource_type: str, resource_id: str, digest: str) -> str:
    """16 hex digits naming one version of one resource (exact identity and payload hash)."""
    identity = "\x00".join((source_system, source_name, resource_type, resource_id, digest))
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


def lake_relative_path(item: Any) -> Path:
    adapter = ItemAdapter(item)
    system, source, rtype, rid = (
        str(adapter[c]) for c in ("source_system", "source_name", "resource_type", "resource_id")
    )
    digest = version_digest(system, source, rtype, rid, adapter["hash_sha256"])
    name = f"{safe_component(adapter['resource_id'])}_{digest}.json"
    return Path(*(safe_component(part) for part in (system, source, rtype)), name)


def lake_document(item: Any) -> dict[str, Any]:
    data = {k: v for k, v in ItemAdapter(item).items() if k not in INTERNAL_FIELDS and k != "payload"}
    data["fetched_at_utc"] = format_time(data["fetched_at_utc"])
    return {"metadata": data, "payload": ItemAdapter(item)["payload"]}


def write_atomically(path: Path, data: bytes) -> None:
    """Put *data* at *path* durably and atomically (temp file, fsync, rename)."""
    place_file(path, *stage_file(path, data))


_TEMP_IDS = itertools.count()


def stage_file(path: Path, data: bytes, directories: set[Path] | None = None) -> tuple[str, int]:
    """Write *data* to a new temp file beside *path* (its directory made if needed, unless it is in
    *directories*, the ones made already); the temp path and its open descriptor, for :func:`place_file`."""
    directory = path.parent
    if directories is None or directory not in directories:
        directory.mkdir(parents=True, exist_ok=True)
        if directories is not None:
            directories.add(directory)
    for _ in range(100):  # a name left by an earlier process with this pid is skipped
        # ".part", not ".json": a temp file left by a kill -9 mid-write is never taken for a lake file
        tmp = str(directory / f".tmp-{os.getpid()}-{next(_TEMP_IDS)}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temp file name", str(directory))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp, fd


def place_file(path: Path, tmp: str, fd: int) -> None:
    """Make the temp file of :func:`stage_file` durable (fsync) and move it to *path* (closes *fd*)."""
    try:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sync_directory(directory: Path) -> None:
    """fsync *directory*, so that the names created or replaced in it survive a power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_document(document: dict[str, Any]) -> bytes:
    """The bytes of a lake file: one line of JSON.

    Not indented: ``json`` writes indented output with its pure-Python encoder, whose closures are
    reference cycles left to the garbage collector (about 25 objects a page, half of a crawl's
    cyclic garbage); the C encoder leaves none. ``jq . file`` shows a file indented."""
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def restored_document(item: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The lake document of *record* rebuilt from *item* (same payload hash): the record's own
    metadata (ingest id, fetch time, request ...) over the item's."""
    document = lake_document(item)
    metadata = document["metadata"]
    for column, value in record.items():
        if column in ("request_headers", "response_headers") and isinstance(value, str):
            value = json.loads(value)
        metadata[column] = format_time(value)
    return document


def read_document(path: Path) -> Any:
    """The parsed lake file at *path*; None if it does not exist; ``...`` if unreadable or not JSON."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return ...


def document_ingest_id(document: Any) -> str | None:
    """The ingest id a lake document's metadata names, if it is a lake document."""
    if isinstance(document, dict) and isinstance(document.get("metadata"), dict):
        value = document["metadata"].get("ingest_id")
        return str(value) if value else None
    return None


def document_matches(document: Any, record: dict[str, Any]) -> bool:
    """Whether a parsed lake *document* holds the payload and identity *record* names."""
    try:
        metadata = document["metadata"]
        return (
            payload_hash(document["payload"]) == record["hash_sha256"]
            and metadata.get("ingest_id") == record["ingest_id"]
            and metadata.get("hash_sha256") == record["hash_sha256"]
        )
    except (KeyError, TypeError, AttributeError):
        return False


def lake_file_matches(path: Path, record: dict[str, Any]) -> bool:
    """Whether the lake file at *path* holds the payload and identity *record* names."""
    return document_matches(read_document(path), record)


def restore_lake_file(lake_dir: Path, item: Any, record: dict[str, Any]) -> bool:
    """Rewrite the lake file of the stored *record* from *item* (same payload) if it is missing or
    not the record's; True if it was rewritten. Blocking: run it in a worker thread."""
    path = lake_dir / record["lake_path"]
    if lake_file_matches(path, record):
        return False
    if not lake_dir.is_dir():
        raise FileNotFoundError(errno.ENOENT, "the lake directory is gone", str(lake_dir))
    write_atomically(path, encode_document(restored_document(item, record)))
    return True


def remove_own_lake_file(lake_dir: Path, relative: str, ingest_id: str) -> bool:
    """Remove the lake file at *relative* if it holds the item *ingest_id* (a file that another
    record's metadata names, or that cannot be read, is left alone); True if removed. Blocking."""
    path = lake_dir / relative
    if document_ingest_id(read_document(path)) != ingest_id:
        return False
    path.unlink(missing_ok=True)
    return True


WRITTEN, SAME, REPLACED, KEPT, RESTORED = "written", "same", "replaced", "kept", "restored"
#: Writer threads: each waits for the GIL after every system call, so a few keep the writes flowing.
WRITER_THREADS = 4
#: A write for the writer thread: the file, the item, the owner of a file in the way, and whether it was asked.
WriteTask = tuple[Path, Any, dict[str, Any] | None, bool]


class JsonLakePipeline:
    def __init__(
        self,
        lake_dir: str,
        *,
        stats: StatsCollector | None = None,
        faults: FaultHandler | None = None,
        versions: VersionLookup | None = None,
    ):
        self.lake_dir = Path(lake_dir).expanduser().resolve()
        self.stats = stats
        self.faults = faults
        self.versions = versions
        self.closed = False
        self._writer: BatchWorker[WriteTask, tuple[str | None, int]] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> JsonLakePipeline:
        return cls(
            crawler.settings.get("HOLOCRON_LAKE_DIR") or defaults.LAKE_DIR,
            stats=crawler.stats,
            faults=FaultHandler.of(crawler),
            versions=VersionLookup.of(crawler),
        )

    def open_spider(self) -> None:
        self.lake_dir.mkdir(parents=True, exist_ok=True)
        self.closed = False

    def close_spider(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _submit(self, task: WriteTask) -> Any:
        """Write in the lake's writer thread (its files are written and fsynced there, in batches)."""
        if self._writer is None:
            self._writer = BatchWorker(self._write_batch, name="holocron-lake", threads=WRITER_THREADS)
        return maybe_deferred_to_future(self._writer.submit(task))

    async def process_item(self, item: Any) -> Any:
        relative = lake_relative_path(item)
        adapter = ItemAdapter(item)
        adapter["lake_path"] = relative.as_posix()
        if self.faults is not None and self.faults.fatal:  # storage failed already: write nothing
            raise self.faults.stopping(item)
        if self.closed:  # a late response after a forced stop: a file now would have no record
            raise handed_back(item, "the lake pipeline is closed")
        path = self.lake_dir / relative
        try:
            outcome, size = await self._submit((path, item, None, False))
            if outcome is None:  # a file of this version is there, not this item's: who owns it?
                try:
                    owner = await self._owner(path, relative.as_posix())
                except Exception as exc:  # the records database is gone (past the outage limit)
                    if self.faults is None or isinstance(exc, OSError) or not is_storage_error(exc):
                        raise
                    where = self.versions.url if self.versions is not None else "records"
                    raise self.faults.hand_back(item, "Records read", where, exc) from exc
                outcome, size = await self._submit((path, item, owner, True))
        except OSError as exc:
            if self.faults is None:
                raise
            raise self.faults.hand_back(item, "Lake write", str(exc.filename or path), exc) from exc
        if self.stats is not None:
            if outcome in (WRITTEN, REPLACED):
                self.stats.inc_value("lake/written")
                self.stats.inc_value("lake/bytes", size)
            if outcome != WRITTEN:
                self.stats.inc_value(f"lake/{outcome}")
        return item

    async def _owner(self, path: Path, relative: str) -> dict[str, Any] | None:
        """The stored record whose file *path* is (None: an orphan), asked off the reactor."""
        document = await maybe_deferred_to_future(threads.deferToThread(read_document, path))
        ingest_id = document_ingest_id(document)

        def find(store: RecordStore) -> dict[str, Any] | None:
            if ingest_id is not None:
                record = store.records_by_ids([ingest_id]).get(ingest_id)
            else:  # too damaged to name its record: the (unindexed) lake path says it
                record = store.records_by_lake_path([relative]).get(relative)
            return record if record is not None and record.get("lake_path") == relative else None

        if self.versions is None:
            return None
        return await self.versions.call(find)

    def _write_batch(self, tasks: Sequence[WriteTask]) -> list[tuple[str | None, int] | BaseException]:
        """Write a batch of documents (in a writer thread) in three steps: every temp file written,
        then each fsynced and renamed into place, then each directory that got a new name fsynced
        once (the renames are as durable as the contents). One journal commit then covers most of
        the batch, and the thread needs the GIL back after fewer system calls."""
        results: list[tuple[str | None, int] | BaseException] = []
        staged: list[tuple[int, Path, str, int]] = []  # (task, final path, temp path, open fd)
        directories: set[Path] = set()
        try:
            self._check_lake_dir()
        except OSError as exc:
            return [exc] * len(tasks)
        for index, (path, item, owner, decided) in enumerate(tasks):

            def stage(target: Path, data: bytes, index: int = index) -> None:
                staged.append((index, target, *stage_file(target, data, directories)))

            try:
                results.append(self._write(path, item, owner, decided=decided, write=stage))
            except Exception as exc:  # noqa: BLE001 - this item's failure, handed to its caller
                results.append(exc)
        renamed: dict[Path, list[int]] = {}
        for index, path, tmp, fd in staged:
            try:
                place_file(path, tmp, fd)
            except OSError as exc:
                results[index] = exc
                continue
            renamed.setdefault(path.parent, []).append(index)
        for directory, indexes in renamed.items():
            try:
                sync_directory(directory)
            except OSError as exc:
                for index in indexes:
                    results[index] = exc
        return results

    def _check_lake_dir(self) -> None:
        if not self.lake_dir.is_dir():  # deleted mid-run: recreating it would hide the loss
            raise FileNotFoundError(errno.ENOENT, "the lake directory is gone", str(self.lake_dir))

    def _write(
        self,
        path: Path,
        item: Any,
        owner: dict[str, Any] | None = None,
        *,
        decided: bool = False,
        write: Callable[[Path, bytes], None] | None = None,
    ) -> tuple[str | None, int]:
        """Write *item*'s document at *path* unless a stored record owns the file (module docstring).
        Not *decided* yet, a file already there that is not this item's returns ``(None, 0)``: the
        caller asks for its *owner* (None: no record owns it) and calls again, *decided*. Returns
        the outcome and the bytes written. *write* puts the bytes at the path (a batch stages them
        and finishes the writes together; default :func:`write_atomically`, after checking that the
        lake directory is there). Blocking: run it in a worker thread."""
        if write is None:
            self._check_lake_dir()
            write = write_atomically
        ingest_id = ItemAdapter(item)["ingest_id"]
        if not decided:
            found = read_document(path)
            if found is not None:
                if document_ingest_id(found) == ingest_id and document_matches(
                    found, {"ingest_id": ingest_id, "hash_sha256": ItemAdapter(item)["hash_sha256"]}
                ):
                    return SAME, 0
                return None, 0
            data = encode_document(lake_document(item))
            write(path, data)
            return WRITTEN, len(data)
        if owner is None:  # no record owns the file in the way: an orphan, replaced by this item's
            data = encode_document(lake_document(item))
            write(path, data)
            return REPLACED, len(data)
        if owner.get("hash_sha256") == ItemAdapter(item)["hash_sha256"] and restore_lake_file(
            self.lake_dir, item, owner
        ):
            return RESTORED, 0
        return KEPT, 0
