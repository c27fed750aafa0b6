"""Where the frontier's database calls run: one worker thread, off the reactor.

The scheduler never touches the database on the reactor thread. Every store call goes through a
:class:`StoreExecutor`:

* :class:`ThreadExecutor` (crawls): one dedicated thread runs the calls one after another, in the
  order they were submitted (a store's connections are per thread, and the order of a flush and
  the claim after it matters); the result comes back on the reactor thread as a ``Deferred``.
* :class:`InlineExecutor` (unit tests of the scheduler's logic, and commands without a reactor):
  runs the call at once on the caller's thread and returns a fired ``Deferred``.

:meth:`StoreExecutor.call` runs a call and waits for it, with a timeout: only for a forced stop,
when the reactor may no longer deliver results.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet import defer

from holocron_scrapy.reactor import get_reactor

T = TypeVar("T")


class StoreExecutor(Protocol):
    def submit(self, fn: Callable[[], T]) -> defer.Deferred[T]:
        """Run *fn* (in order after every call submitted before); the Deferred fires on the reactor thread."""
        ...

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        """Run *fn* and wait up to *timeout* seconds for its result (raises ``TimeoutError``)."""
        ...

    def shutdown(self, wait: bool = True) -> None: ...


class InlineExecutor:
    """Runs every call at once on the caller's thread."""

    def submit(self, fn: Callable[[], T]) -> defer.Deferred[T]:
        return defer.maybeDeferred(fn)

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        return fn()

    def shutdown(self, wait: bool = True) -> None:
        pass


class ThreadExecutor:
    """One daemon worker thread fed by a queue; results are handed to the reactor with ``callFromThread``.

    A daemon thread, not a ``ThreadPoolExecutor`` (whose threads the interpreter joins at exit): a call
    that never returns (packets dropped on the way to the database) must not keep a stopped crawl alive."""

    def __init__(self, name: str = "holocron-frontier"):
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (task := self._queue.get()) is not None:
            fn, future = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

    def _submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, future))
        return future

    def submit(self, fn: Callable[[], T]) -> defer.Deferred[T]:
        reactor = get_reactor()

        d: defer.Deferred[T] = defer.Deferred()

        def deliver(future: concurrent.futures.Future[T]) -> None:
            reactor.callFromThread(_fire, d, future)

        self._submit(fn).add_done_callback(deliver)
        return d

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        return self._submit(fn).result(timeout=timeout)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the thread after the calls submitted (``wait``: and wait for it)."""
        self._queue.put(None)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()


def _fire(d: defer.Deferred[Any], future: concurrent.futures.Future[Any]) -> None:
    error = future.exception()
    if error is not None:
        d.errback(error)
    else:
        d.callback(future.result())
