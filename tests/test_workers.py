"""holocron_scrapy.workers.BatchWorker: batches, per-task failures, several threads, results on the reactor."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import pytest_twisted
from twisted.internet import defer

from holocron_scrapy.workers import BatchWorker


class Recorder:
    """A handler that remembers its batches and the threads they ran in; ``"boom"`` fails its task."""

    def __init__(self, pause: float = 0.0):
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.pause = pause
        self.lock = threading.Lock()

    def __call__(self, tasks: Sequence[str]) -> list[str | BaseException]:
        with self.lock:
            self.batches.append(list(tasks))
            self.threads.add(threading.current_thread().name)
        time.sleep(self.pause)
        return [ValueError(f"bad task {t}") if t == "boom" else t.upper() for t in tasks]


@pytest_twisted.ensureDeferred
async def test_results_come_back_in_order_on_the_reactor_thread():
    handler = Recorder()
    worker = BatchWorker(handler, name="test-worker")
    reactor_thread = threading.current_thread()
    seen: list[threading.Thread] = []

    def note(value: str) -> str:
        seen.append(threading.current_thread())
        return value

    try:
        results = await defer.gatherResults([worker.submit(t).addCallback(note) for t in ("a", "b", "c")])
    finally:
        worker.close(wait=5)
    assert results == ["A", "B", "C"]
    assert seen == [reactor_thread] * 3
    assert handler.threads == {"test-worker"}


@pytest_twisted.ensureDeferred
async def test_tasks_submitted_while_the_thread_is_busy_form_one_batch():
    handler = Recorder(pause=0.2)
    worker = BatchWorker(handler, name="test-worker")
    try:
        first = worker.submit("first")
        time.sleep(0.05)  # the thread is now inside the first batch
        rest = [worker.submit(f"t{n}") for n in range(50)]
        await defer.gatherResults([first, *rest])
    finally:
        worker.close(wait=5)
    assert handler.batches[0] == ["first"]
    assert handler.batches[1] == [f"t{n}" for n in range(50)]  # one batch, one reactor call


@pytest_twisted.ensureDeferred
async def test_a_failed_task_fails_alone():
    worker = BatchWorker(Recorder(), name="test-worker")
    try:
        ok = worker.submit("ok")
        bad = worker.submit("boom")
        assert await ok == "OK"
        with pytest.raises(ValueError, match="bad task boom"):
            await bad
    finally:
        worker.close(wait=5)


@pytest_twisted.ensureDeferred
async def test_a_handler_that_raises_fails_its_whole_batch_and_the_thread_goes_on():
    calls = []

    def handler(tasks: Sequence[int]) -> list[int]:
        calls.append(list(tasks))
        if len(calls) == 1:
            raise OSError("disk gone")
        return [t * 2 for t in tasks]

    worker = BatchWorker(handler, name="test-worker")
    try:
        with pytest.raises(OSError, match="disk gone"):
            await worker.submit(1)
        assert await worker.submit(2) == 4  # the thread survived the failed batch
    finally:
        worker.close(wait=5)


@pytest_twisted.ensureDeferred
async def test_a_handler_with_the_wrong_number_of_results_fails_the_batch():
    worker = BatchWorker(lambda tasks: [], name="test-worker")
    try:
        with pytest.raises(RuntimeError, match="returned 0 results for 1 tasks"):
            await worker.submit("x")
    finally:
        worker.close(wait=5)


@pytest_twisted.ensureDeferred
async def test_several_threads_share_the_queue_and_all_stop_on_close():
    handler = Recorder(pause=0.05)
    worker = BatchWorker(handler, name="test-pool", threads=3, max_batch=2)
    results = await defer.gatherResults([worker.submit(f"t{n}") for n in range(30)])
    assert sorted(results) == sorted(f"T{n}" for n in range(30))
    assert max(len(batch) for batch in handler.batches) <= 2
    assert len(handler.threads) > 1  # the batches were spread over the threads
    worker.close(wait=5)
    assert not any(thread.is_alive() for thread in worker._threads)
