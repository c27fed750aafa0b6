"""holocron_scrapy.frontier.jobs: the steps of one background job, their order, and what a failure leaves done."""

from __future__ import annotations

import pytest

from holocron_scrapy.frontier.jobs import ClaimWant, Job, run_job
from holocron_scrapy.frontier.store import FailedItem, NewItem, open_work_item_store

OWNER = "vm:1:aaaa"


def new(key: str, depth: int = 0) -> NewItem:
    return NewItem(
        dedupe_key=f"mediawiki:w:page:{key}",
        source_system="mediawiki",
        source_name="w",
        resource_type="page",
        resource_id=key,
        request_uri=f"http://w/{key}",
        priority=-depth,
        depth=depth,
    )


@pytest.fixture
def store(tmp_path):
    s = open_work_item_store(f"sqlite:///{tmp_path / 'f.sqlite3'}")
    yield s
    s.close()


def test_writes_come_before_the_claim_and_the_reads(store):
    result = run_job(
        store,
        Job(new=[new("A"), new("B")], claim=ClaimWant(limit=10, lease_seconds=60), outstanding=True),
        OWNER,
        None,
    )
    assert result.error is None and result.flushed and result.inserted == 2
    assert sorted(r["resource_id"] for r in result.rows) == ["A", "B"]  # the claim saw the insert
    assert result.outstanding is False  # both leased by us: nothing left for anyone else
    assert store.counts()["w"]["in_progress"] == 2


def test_the_level_gate_gives_back_deeper_rows(store):
    run_job(store, Job(new=[new("A", 0), new("B", 1), new("C", 1)]), OWNER, None)
    result = run_job(store, Job(claim=ClaimWant(limit=10, lease_seconds=60, bfs=True, gate_depths=[0])), OWNER, None)
    assert [r["resource_id"] for r in result.rows] == ["A"]
    assert len(result.gated) == 2 and result.gated_released
    assert store.counts()["w"] == {"pending": 2, "in_progress": 1, "completed": 0, "failed": 0}


def test_a_half_empty_batch_waits(store):
    run_job(store, Job(new=[new("A")]), OWNER, None)
    result = run_job(store, Job(claim=ClaimWant(limit=5, lease_seconds=60, hold_below=True)), OWNER, None)
    assert result.rows == [] and store.counts()["w"]["pending"] == 1


def test_a_failing_step_reports_what_was_done(store):
    (row,) = run_job(store, Job(new=[new("A")], claim=ClaimWant(limit=1, lease_seconds=60)), OWNER, None).rows

    def broken(*args, **kwargs):
        raise RuntimeError("claim broke")

    store.claim = broken
    result = run_job(
        store,
        Job(failed=[FailedItem(row["seq"], "HTTP 500", True)], claim=ClaimWant(limit=1, lease_seconds=60)),
        OWNER,
        None,
    )
    assert isinstance(result.error, RuntimeError)
    assert result.flushed and result.released and result.rows is None  # the failure was written once
    assert store.get("mediawiki:w:page:A")["status"] == "pending"  # back off after the retryable failure

    def flush_broken(*args, **kwargs):
        raise RuntimeError("flush broke")

    store.flush = flush_broken
    result = run_job(store, Job(completed=[row["seq"]]), OWNER, None)
    assert isinstance(result.error, RuntimeError) and not result.flushed  # the scheduler keeps the ack
