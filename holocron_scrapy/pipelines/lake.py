"""Write one JSON file per fetched resource: its metadata and the unaltered payload.

Path: ``<lake>/<source_system>/<source_name>/<resource_type>/<safe_id>_<YYYYmmdd_HHMMSS>_<ingest8>.json``,
written atomically (temp file, fsync, rename). Stats: ``lake/written``, ``lake/bytes``.

Settings: ``HOLOCRON_LAKE_DIR``.
"""

from __future__ import annotations

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


class JsonLakePipeline:
    def __init__(self, lake_dir: str, *, stats: Any = None):
        self.lake_dir = Path(lake_dir).expanduser().resolve()
        self.stats = stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> JsonLakePipeline:
        return cls(crawler.settings.get("HOLOCRON_LAKE_DIR") or defaults.LAKE_DIR, stats=crawler.stats)

    def open_spider(self) -> None:
        self.lake_dir.mkdir(parents=True, exist_ok=True)

    def process_item(self, item: Any) -> Any:
        relative = lake_relative_path(item)
        adapter = ItemAdapter(item)
        adapter["lake_path"] = relative.as_posix()
        data = json.dumps(lake_document(item), ensure_ascii=False, indent=1).encode("utf-8")
        write_atomically(self.lake_dir / relative, data)
        if self.stats is not None:
            self.stats.inc_value("lake/written")
            self.stats.inc_value("lake/bytes", len(data))
        return item
