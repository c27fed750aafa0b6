"""The work items one worker leases, and the writes their outcomes make: memory only.

The scheduler (:mod:`holocron_scrapy.frontier.scheduler`) claims items and hands their requests out;
:class:`Leases` remembers each item it leased (its depth, for the breadth-first level gate, and its
attempt), and turns acks and failures into buffered writes (``completed``, ``failed``), which the
background loop writes in its next job, after that period's enqueues. An item whose lease was lost
before is a *suspect*: it is in flight alone until its request has been fetched and parsed
(:meth:`Leases.fetched`), then its ``lease_solo`` mark is cleared (``end_solo``).

An id is settled once: a second ack or failure of the same item (a retry racing its original, a
request settled twice) changes nothing.

Settings read: none. Stats written: none (the scheduler counts from the return values).
"""

from __future__ import annotations

from collections.abc import Iterable

from holocron_scrapy.frontier.store import FailedItem


class Leases:
    def __init__(self) -> None:
        self.depths: dict[int, int] = {}  # seq -> depth of every item this worker leases
        self.attempts: dict[int, int] = {}  # seq -> its attempt number
        self.suspects: set[int] = set()  # leased items whose lease was lost before (claimed alone)
        # Writes not yet handed to a job:
        self.completed: list[int] = []
        self.failed: list[FailedItem] = []
        self.release: list[int] = []  # claimed but given back unattempted (beyond the level gate)
        self.end_solo: list[int] = []  # suspects fetched and parsed

    def __bool__(self) -> bool:
        """Whether this worker leases any item."""
        return bool(self.depths)

    def __contains__(self, seq: object) -> bool:
        return seq in self.depths

    def held(self) -> set[int]:
        return set(self.depths)

    def take(self, seq: int, *, depth: int, attempt: int, suspect: bool) -> None:
        """A claimed item is leased now."""
        self.depths[seq] = depth
        self.attempts[seq] = attempt
        if suspect:
            self.suspects.add(seq)

    def settle(self, seq: int) -> int | None:
        """Forget a leased item; its attempt number (None if it was not leased)."""
        if self.depths.pop(seq, None) is None:
            return None
        self.suspects.discard(seq)
        return self.attempts.pop(seq, 0)

    def ack(self, seqs: Iterable[int]) -> int:
        """Mark items completed; the number that were leased (the others were settled before)."""
        done = 0
        for seq in seqs:
            if self.settle(seq) is not None:
                self.completed.append(seq)
                done += 1
        return done

    def fail(self, seqs: Iterable[int], error: str, *, retryable: bool, max_attempts: int) -> tuple[int, int]:
        """Record failed attempts; ``(failed for good, put back for another attempt)``."""
        final = retried = 0
        for seq in seqs:
            attempt = self.settle(seq)
            if attempt is None:
                continue
            self.failed.append(FailedItem(seq, error, retryable))
            if retryable and attempt < max_attempts:
                retried += 1
            else:
                final += 1
        return final, retried

    def reject(self, seq: int, error: str) -> None:
        """A claimed item that cannot become a request (its stored request cannot be rebuilt): failed."""
        self.failed.append(FailedItem(seq, error, retryable=False))

    def fetched(self, seqs: Iterable[int]) -> bool:
        """The request holding *seqs* was fetched and parsed: suspects among them may have company
        now. Whether anything changed."""
        done = [seq for seq in seqs if seq in self.suspects]
        if done:
            self.suspects.difference_update(done)
            self.end_solo.extend(done)
        return bool(done)

    def orphans(self, in_memory: set[int]) -> list[int]:
        """Leased items that no request at hand holds any more (their request ended without an outcome)."""
        return sorted(set(self.depths) - in_memory)

    def has_writes(self) -> bool:
        return bool(self.completed or self.failed)

    def take_writes(self) -> tuple[list[int], list[FailedItem], list[int], list[int]]:
        """``(completed, failed, release, end_solo)`` for a job; the buffers start empty again."""
        writes = (self.completed, self.failed, self.release, self.end_solo)
        self.completed, self.failed, self.release, self.end_solo = [], [], [], []
        return writes

    def put_back(
        self,
        completed: list[int] | None = None,
        failed: list[FailedItem] | None = None,
        release: list[int] | None = None,
        end_solo: list[int] | None = None,
    ) -> None:
        """Writes a failed job did not make: ahead of what was buffered since, in their order."""
        self.completed[:0] = completed or []
        self.failed[:0] = failed or []
        self.release[:0] = release or []
        self.end_solo[:0] = end_solo or []
