"""A worker thread that runs blocking work in batches and hands the results back in one reactor call.

Why: the item pipelines do blocking work per item (a lake file written and fsynced). Sending each
item to Twisted's thread pool costs, on the reactor thread, a pool hand-off, a ``callFromThread``
wake-up and a Deferred per item, and ten pool threads contend for the GIL with the reactor. With
a :class:`BatchWorker`, every task submitted while the thread was busy is taken as one batch, run
by one handler call, and all its results come back through one ``callFromThread``: the reactor's
share per item is an append and a callback.

The handler receives the tasks of a batch and returns one result per task, in order; a result
that is an exception fails that task's Deferred only. An exception raised by the handler itself
fails the whole batch.

The threads are daemons (a call stuck in the kernel must not keep a stopped crawl alive).
:meth:`BatchWorker.close` lets them finish what was submitted, then stop. With several threads,
each takes its own batches from the one queue: a thread waiting for the GIL after each system
call (the reactor thread holds it most of the time) does not hold up every other task.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from twisted.internet import defer

from holocron_scrapy.reactor import get_reactor

A = TypeVar("A")
R = TypeVar("R")

#: Tasks taken at most in one batch (a bound on the time one batch holds the thread).
MAX_BATCH = 256


class BatchWorker(Generic[A, R]):
    def __init__(
        self,
        handler: Callable[[Sequence[A]], Sequence[R | BaseException]],
        *,
        name: str,
        threads: int = 1,
        max_batch: int = MAX_BATCH,
    ):
        self.handler = handler
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[A, defer.Deferred[R]] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}" if threads > 1 else name, daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, task: A) -> defer.Deferred[R]:
        """Run *task* in the worker thread; the Deferred fires on the reactor thread."""
        d: defer.Deferred[R] = defer.Deferred()
        self._queue.put((task, d))
        return d

    def close(self, wait: float | None = None) -> None:
        """Stop the threads once the tasks already submitted are done (*wait*: seconds to wait for each)."""
        for _ in self._threads:
            self._queue.put(None)
        if wait is not None:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(wait)

    def _run(self) -> None:
        reactor = get_reactor()

        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    task = self._queue.get_nowait()
                except queue.Empty:
                    break
                if task is None:
                    stopping = True
                    break
                batch.append(task)
            tasks = [task for task, _ in batch]
            results: Sequence[R | BaseException]
            try:
                results = self.handler(tasks)
                if len(results) != len(tasks):
                    raise RuntimeError(f"{self.handler!r} returned {len(results)} results for {len(tasks)} tasks")
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                results = [exc] * len(tasks)
            reactor.callFromThread(_deliver, [d for _, d in batch], results)


def _deliver(waiters: list[defer.Deferred[Any]], results: Sequence[Any]) -> None:
    for d, result in zip(waiters, results, strict=True):
        if isinstance(result, BaseException):
            d.errback(result)
        else:
            d.callback(result)
