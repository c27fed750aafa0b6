"""A frontier scheduler whose store answers slowly: every call to it takes ``SLOW_STORE_SECONDS`` more.

Used with ``-s SCHEDULER=tests.support.slow_frontier.SlowStoreScheduler`` to show that a slow
database does not stall the downloads of requests already claimed (the store runs off the reactor).
"""

from __future__ import annotations

import os
import time
from typing import Any

from holocron_scrapy.frontier.scheduler import FrontierScheduler


class SlowStore:
    def __init__(self, store: Any, delay: float):
        self._store, self._delay = store, delay

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value) or name in ("describe", "close"):
            return value

        def slow(*args: Any, **kwargs: Any) -> Any:
            time.sleep(self._delay)
            return value(*args, **kwargs)

        return slow


class SlowStoreScheduler(FrontierScheduler):
    @classmethod
    def from_crawler(cls, crawler: Any) -> FrontierScheduler:
        scheduler = super().from_crawler(crawler)
        delay = float(os.environ.get("SLOW_STORE_SECONDS", "2"))
        factory = scheduler.store_factory
        scheduler.store_factory = lambda: SlowStore(factory(), delay)  # type: ignore[assignment]
        return scheduler
