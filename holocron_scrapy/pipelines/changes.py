"""Drop items whose payload is unchanged since the last stored record of the resource.

Records are append-only: a resource gets a new record (and lake file) only when its
payload hash differs from the newest stored one, or from one that passed this filter
moments ago and is still on its way to the store (two redirects to one page in flight). Stats: ``recrawl/unchanged``,
``recrawl/changed``, ``records/new_resources``, ``records/repeated_failures`` (a ``failed`` record
identical to the last one: dropped too, but not counted as unchanged).

Settings: ``HOLOCRON_RECORDS_URL``, ``HOLOCRON_RECORDS_SQLSERVER``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem

from holocron_scrapy import defaults
from holocron_scrapy.items import FAILED
from holocron_scrapy.records.store import RecordStore, open_record_store


class UnchangedError(DropItem):
    """The payload equals the newest stored record of the same resource."""


class ChangeFilterPipeline:
    def __init__(
        self, url: str, *, sqlserver_config: dict[str, Any] | None = None, stats: Any = None, memory: int = 100_000
    ):
        self.url = url
        self.memory = memory
        self._recent: OrderedDict[tuple[str, str, str, str], str] = OrderedDict()  # passed, maybe not yet committed
        self.sqlserver_config = sqlserver_config
        self.stats = stats
        self.store: RecordStore | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ChangeFilterPipeline:
        s = crawler.settings
        return cls(
            s.get("HOLOCRON_RECORDS_URL") or defaults.RECORDS_URL,
            sqlserver_config=s.getdict("HOLOCRON_RECORDS_SQLSERVER"),
            stats=crawler.stats,
        )

    def open_spider(self) -> None:
        self.store = open_record_store(self.url, sqlserver_config=self.sqlserver_config)

    def close_spider(self) -> None:
        if self.store is not None:
            self.store.close()

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        assert self.store is not None
        key = (adapter["source_system"], adapter["source_name"], adapter["resource_type"], adapter["resource_id"])
        latest = self._recent.get(key) or self.store.latest_hash(*key)
        self._recent[key] = adapter["hash_sha256"]
        self._recent.move_to_end(key)
        if len(self._recent) > self.memory:
            self._recent.popitem(last=False)
        if latest is None:
            self._inc("records/new_resources")
        elif latest == adapter["hash_sha256"]:
            # A failure that repeats is no page found unchanged (the run summary counts those as successes).
            self._inc("records/repeated_failures" if adapter.get("outcome") == FAILED else "recrawl/unchanged")
            raise UnchangedError(f"unchanged since the last stored record: {item!r}", log_level="DEBUG")
        else:
            self._inc("recrawl/changed")
        return item

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)
