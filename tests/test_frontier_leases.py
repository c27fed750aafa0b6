"""holocron_scrapy.frontier.leases: what one worker leases, and the writes of the outcomes."""

from __future__ import annotations

from holocron_scrapy.frontier.leases import Leases
from holocron_scrapy.frontier.store import FailedItem


def leased(*seqs: int, attempt: int = 1) -> Leases:
    leases = Leases()
    for seq in seqs:
        leases.take(seq, depth=seq % 2, attempt=attempt, suspect=False)
    return leases


def test_an_item_is_settled_once():
    leases = leased(1, 2)
    assert leases.ack([1, 1, 9]) == 1  # 1 again and 9 (never leased) change nothing
    assert leases.fail([1], "late", retryable=True, max_attempts=3) == (0, 0)
    assert leases.completed == [1] and leases.failed == [] and 2 in leases and 1 not in leases


def test_a_failure_is_final_out_of_attempts_or_not_retryable():
    leases = leased(1, 2, attempt=3)
    assert leases.fail([1], "HTTP 503", retryable=True, max_attempts=3) == (1, 0)  # attempt 3 of 3
    fresh = leased(5)
    assert fresh.fail([5], "HTTP 503", retryable=True, max_attempts=3) == (0, 1)
    assert fresh.failed == [FailedItem(5, "HTTP 503", True)]
    assert leased(6).fail([6], "HTTP 404", retryable=False, max_attempts=3) == (1, 0)


def test_a_suspect_is_cleared_once_fetched():
    leases = Leases()
    leases.take(7, depth=0, attempt=1, suspect=True)
    assert leases.suspects == {7}
    assert leases.fetched([7, 8]) and leases.end_solo == [7] and not leases.suspects
    assert not leases.fetched([7])  # nothing more to clear


def test_orphans_are_the_leased_items_no_request_holds():
    leases = leased(1, 2, 3)
    assert leases.orphans({2}) == [1, 3]


def test_writes_are_taken_whole_and_put_back_in_front():
    leases = leased(1, 2, 3)
    leases.ack([1])
    leases.release.append(9)
    completed, failed, release, end_solo = leases.take_writes()
    assert (completed, failed, release, end_solo) == ([1], [], [9], [])
    assert not leases.has_writes() and leases.release == []
    leases.ack([2])
    leases.put_back(completed=completed, release=release)  # the job failed: written next time, in order
    assert leases.completed == [1, 2] and leases.release == [9]
