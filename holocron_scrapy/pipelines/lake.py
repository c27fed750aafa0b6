"""Write one JSON file per fetched resource: its metadata and the unaltered payload.

Path: ``<lake>/<source_system>/<source_name>/<resource_type>/<safe_id>_<YYYYmmdd_HHMMSS>_<ingest8>.json``,
written atomically (temp file, fsync, rename). Stats: ``lake/written``, ``lake/bytes``.

A write that fails because of the lake itself (full, read-only, deleted mid-run) is a storage
fault (:mod:`holocron_scrapy.pipelines.faults`): one error line, the crawl stops with
``fatal_storage``, the item's work items are handed back. After ``close_spider`` nothing more is
written (a response that arrives after a forced stop must not leave a file without a record).

Settings: ``HOLOCRON_LAKE_DIR``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler

from holocron_scrapy import defaults
from holocron_scrapy.items import INTERNAL_FIELDS
from holocron_scrapy.pipelines.faults import FaultHandler, handed_back
from holocron_scrapy.records.store import format_time

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


def lake_relative_path(item: Any) -> Path:
    adapter = ItemAdapter(item)
    fetched: datetime = adapter["fetched_at_utc"]
    name = f"{safe_component(adapter['resource_id'])}_{fetched:%Y%m%d_%H%M%S}_{adapter['ingest_id'][:8]}.json"
    return Path(
        safe_component(adapter["source_system"]),
        safe_component(adapter["source_name"]),
        safe_component(adapter["resource_type"]),
        name,
    )


def lake_document(item: Any) -> dict[str, Any]:
    data = {k: v for k, v in ItemAdapter(item).items() if k not in INTERNAL_FIELDS and k != "payload"}
    data["fetched_at_utc"] = format_time(data["fetched_at_utc"])
    return {"metadata": data, "payload": ItemAdapter(item)["payload"]}


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_document(document: dict[str, Any]) -> bytes:
    """The bytes of a lake file."""
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")


class JsonLakePipeline:
    def __init__(self, lake_dir: str, *, stats: Any = None, faults: FaultHandler | None = None):
        self.lake_dir = Path(lake_dir).expanduser().resolve()
        self.stats = stats
        self.faults = faults
        self.closed = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> JsonLakePipeline:
        return cls(
            crawler.settings.get("HOLOCRON_LAKE_DIR") or defaults.LAKE_DIR,
            stats=crawler.stats,
            faults=FaultHandler.of(crawler),
        )

    def open_spider(self) -> None:
        self.lake_dir.mkdir(parents=True, exist_ok=True)
        self.closed = False

    def close_spider(self) -> None:
        self.closed = True

    def process_item(self, item: Any) -> Any:
        relative = lake_relative_path(item)
        adapter = ItemAdapter(item)
        adapter["lake_path"] = relative.as_posix()
        data = encode_document(lake_document(item))
        path = self.lake_dir / relative
        if self.faults is not None and self.faults.fatal:  # storage failed already: write nothing
            raise self.faults.stopping(item)
        if self.closed:  # a late response after a forced stop: a file now would have no record
            raise handed_back(item, "the lake pipeline is closed")
        try:
            if not self.lake_dir.is_dir():  # deleted mid-run: recreating it would hide the loss
                raise FileNotFoundError(errno.ENOENT, "the lake directory is gone", str(self.lake_dir))
            write_atomically(path, data)
        except OSError as exc:
            if self.faults is None:
                raise
            raise self.faults.hand_back(item, "Lake write", str(exc.filename or path), exc) from exc
        if self.stats is not None:
            self.stats.inc_value("lake/written")
            self.stats.inc_value("lake/bytes", len(data))
        return item
