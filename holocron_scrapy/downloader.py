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

Enabled by the ``DOWNLOADER`` setting. Reads the same settings as Scrapy's downloader.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from scrapy import Request
from scrapy.core.downloader import Downloader, Slot


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
    def _get_slot(self, request: Request, spider: Any = None) -> tuple[str, Slot]:
        key, slot = super()._get_slot(request)
        if not isinstance(slot.queue, _MarkingQueue):
            slot.queue = _MarkingQueue(slot, slot.queue)
        return key, slot
