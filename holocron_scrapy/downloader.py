"""Scrapy's downloader with its per-host concurrency limit enforced when there is no delay.

Scrapy 2.19's ``Downloader._process_queue`` takes requests off a slot's queue while
``slot.free_transfer_slots() > 0``, but on the asyncio reactor each download runs in a task
that adds its request to ``slot.transferring`` only when the task first runs. With a zero
download delay the loop therefore sees free slots all along and starts the whole queue at once:
``CONCURRENT_REQUESTS_PER_DOMAIN`` (a source's ``concurrency``) is not a limit at all, and only
``CONCURRENT_REQUESTS`` bounds what a host receives. (With a delay the loop stops after one
request, so the limit holds.)

:class:`PoliteDownloader` gives every slot a queue that marks a request as transferring at the
moment it is taken, which is what the limit counts; the download task adds the same request to
the same set again and removes it when it ends, as before.

With shared politeness (:mod:`holocron_scrapy.frontier.politeness`, the default when the frontier
scheduler runs) each request also takes a slot of its host from the frontier database before it is
sent, so that a source's ``delay`` and ``concurrency`` hold for every worker together; the request
keeps its local transfer slot while it waits (on a timer, never the reactor), and the shared slot is
given back when the download ends, however it ends.

Enabled by the ``DOWNLOADER`` setting. Reads the same settings as Scrapy's downloader, and those of
:mod:`holocron_scrapy.frontier.politeness`. Stats: ``politeness/*`` (see that module).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from scrapy import Request
from scrapy.core.downloader import Downloader, Slot
from scrapy.crawler import Crawler
from scrapy.http import Response

from holocron_scrapy.frontier.politeness import SharedPoliteness, politeness_key
from holocron_scrapy.middlewares.retry import retry_after_seconds


class _MarkingQueue(deque):
    """A slot queue whose ``popleft`` counts the request as transferring at once."""

    def __init__(self, slot: Slot, pending: Any = ()):
        super().__init__(pending)
        self.slot = slot

    def popleft(self) -> Any:
        entry = super().popleft()
        self.slot.transferring.add(entry[0])
        return entry


class PoliteDownloader(Downloader):
    def __init__(self, crawler: Crawler):
        super().__init__(crawler)
        #: The fleet-wide politeness, or None (``local``: each process on its own, as before).
        self.politeness: SharedPoliteness | None = SharedPoliteness.from_crawler(crawler)
        # The configured figures, not AutoThrottle's (it overrides self._delay with its start delay).
        self._fleet_delay = self.settings.getfloat("DOWNLOAD_DELAY")

    def _fleet_limits(self, key: str, slot: Slot) -> tuple[float, int]:
        """(delay, concurrency) of politeness *key* for the whole fleet."""
        per_slot = self.per_slot_settings.get(key, {})
        delay = float(per_slot.get("delay", self._fleet_delay))
        return delay, max(int(slot.concurrency), 1)

    async def _download(self, slot: Slot, request: Request) -> Response:
        politeness = self.politeness
        if politeness is None:
            return await super()._download(slot, request)
        key = politeness_key(request)
        delay, concurrency = self._fleet_limits(key, slot)
        try:
            slot_id = await politeness.acquire(key, delay, concurrency)
        except BaseException:
            # Cancelled while waiting: the request never reached Scrapy's _download, which would
            # have freed its local transfer slot (taken when it left the queue).
            slot.transferring.discard(request)
            self._process_queue(slot)
            raise
        status: int | None = None
        retry_after: float | None = None
        api_error: str | None = None
        try:
            response = await super()._download(slot, request)
            status = response.status
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            header = response.headers.get("MediaWiki-API-Error")  # maxlag, ratelimited: block with the release
            api_error = header.decode("latin-1") if header else None
            return response
        finally:
            if slot_id is not None:
                politeness.release(key, slot_id, status, retry_after, api_error)

    def close(self) -> None:
        super().close()
        if self.politeness is not None:
            self.politeness.close()

    def _get_slot(self, request: Request, spider: Any = None) -> tuple[str, Slot]:
        key, slot = super()._get_slot(request)
        if not isinstance(slot.queue, _MarkingQueue):
            slot.queue = _MarkingQueue(slot, slot.queue)
        return key, slot
