"""holocron_scrapy.mediawiki.changes on the recorded recent changes of the lab MediaWiki 1.39,
and once against the live lab wiki.

The recordings (tests/fixtures/mediawiki/listings, see its README) hold the real answers for a
window in which tests/support/record_listings.py made known edits, creations, deletions, a
restore and moves; its constants (``EXPECTED``) are the ground truth.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from holocron_scrapy.mediawiki import changes
from holocron_scrapy.mediawiki.changes import Change, ChangeSet, classify, parse_changes, plan_sync
from holocron_scrapy.mediawiki.errors import ApiError
from holocron_scrapy.mediawiki.parse import MalformedResponse
from tests.support import record_listings as rec
from tests.support.listing_fixtures import body, chain, manifest, raw

UTC = timezone.utc


def window() -> tuple[Change, ...]:
    return parse_changes(raw("rc_window")).changes


def of(*titles: str) -> list[Change]:
    """The recorded changes that concern *titles* (as old title or as a move's target), in order."""
    wanted = set(titles)
    return [c for c in window() if c.title in wanted or c.target in wanted]


def ts(text: str) -> datetime:
    return changes.parse_timestamp(text)


def assert_expected(result: ChangeSet) -> None:
    assert set(result.refetch) == rec.EXPECTED["refetch"]
    assert set(result.created) == rec.EXPECTED["created"]
    assert set(result.deleted) == rec.EXPECTED["deleted"]
    assert result.moved == rec.EXPECTED["moved"]
    for titles in (result.refetch, result.created, result.deleted):
        assert len(titles) == len(set(titles))


# -- requests -------------------------------------------------------------------------------------


def test_recentchanges_params() -> None:
    start = datetime(2026, 12, 4, 14, 15, 0, tzinfo=UTC)
    end = datetime(2026, 12, 5, 14, 20, 0, tzinfo=UTC)
    assert changes.recentchanges_params(start=start, end=end, namespaces=[14, 0]) == {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "list": "recentchanges",
        "rcprop": "title|ids|timestamp|loginfo",
        "rctype": "edit|new|log",
        "rcnamespace": "0|14",
        "rclimit": "max",
        "rcdir": "newer",
        "rcstart": "2026-12-04T14:15:00Z",
        "rcend": "2026-12-05T14:20:00Z",
        "maxlag": "5",
    }
    cont = {"rccontinue": "20261205142017|27", "continue": "-||"}
    params = changes.recentchanges_params(start=start, end=end, continuation=cont, limit=4, maxlag=None)
    assert params["rccontinue"] == "20261205142017|27" and params["rclimit"] == "4" and "maxlag" not in params


def test_window_bounds_are_checked() -> None:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="before it starts"):
        changes.recentchanges_params(start=now, end=now - timedelta(seconds=1))
    with pytest.raises(ValueError, match="naive"):
        changes.recentchanges_params(start=datetime(2026, 12, 4), end=now)
    with pytest.raises(ValueError, match="margin"):
        changes.window_start(now, timedelta(minutes=-1))


def test_recordings_answer_the_requests_built_today() -> None:
    files = manifest()["files"]
    cp, rs = manifest()["checkpoint"], manifest()["run_start"]
    assert files["rc_window"] == rec.window_params(cp, rs)
    assert files["rc_window_limit4_1"] == rec.window_params(cp, rs, limit=4)
    assert files["rc_oldest"] == changes.oldest_change_params()
    assert files["rc_max_age"] == changes.rc_max_age_params()
    assert files["rc_window"]["rcstart"] == cp and files["rc_window"]["rcend"] == rs


# -- answers and continuation ---------------------------------------------------------------------


def test_window_answer() -> None:
    page = parse_changes(raw("rc_window"))
    assert page.continuation is None and len(page.changes) == 26
    assert all(
        cp <= c.timestamp <= rs
        for c in page.changes
        for cp, rs in [(manifest()["checkpoint"], manifest()["run_start"])]
    )
    assert [c.order for c in page.changes] == sorted(c.order for c in page.changes)  # rcdir=newer
    titles = {c.title for c in page.changes}
    assert rec.TALK_EDITED not in titles  # rcnamespace=0|14
    assert rec.AFTER_WINDOW not in titles  # edited after rcend
    assert not titles & set(rec.CATEGORY_TREE)  # made before the checkpoint
    move = next(c for c in page.changes if c.title == rec.MOVED_NO_REDIRECT[0])
    assert (move.type, move.logtype, move.logaction) == ("log", "move", "move")
    assert move.target == rec.MOVED_NO_REDIRECT[1] and move.suppressed_redirect


def test_continuation_chain_gives_the_same_changes() -> None:
    files = manifest()["files"]
    parts = chain("rc_window_limit4")
    assert len(parts) == 7
    collected: list[Change] = []
    for i, name in enumerate(parts):
        page = parse_changes(raw(name))
        collected += page.changes
        if i + 1 < len(parts):
            assert page.continuation is not None
            assert json.loads(json.dumps(page.continuation)) == page.continuation  # checkpointable
            params = rec.window_params(
                manifest()["checkpoint"], manifest()["run_start"], limit=4, continuation=page.continuation
            )
            assert params == files[parts[i + 1]]
        else:
            assert page.continuation is None
    assert collected == list(window())
    assert_expected(classify(collected))


# -- classification -------------------------------------------------------------------------------


def test_the_recorded_window_classifies_as_made() -> None:
    result = classify(window())
    assert_expected(result)
    assert result.changes == 26
    assert result.newest == window()[-1].timestamp
    assert set(result.to_fetch) == rec.EXPECTED["refetch"] | rec.EXPECTED["created"]
    assert len(result.to_fetch) == 16
    saved = json.loads(json.dumps(result.to_dict()))
    assert saved["moved"] == rec.EXPECTED["moved"]
    assert {m["old"]: m["redirect"] for m in saved["moves"]} == {
        old: old != rec.MOVED_NO_REDIRECT[0] for old in rec.EXPECTED["moved"]
    }


def test_edits_are_deduplicated_and_ordered_by_their_last_change() -> None:
    result = classify(of(*rec.EDITED))
    first = rec.EDITED[0]  # edited twice: once in the list, after the others' first edits
    assert result.refetch == [*rec.EDITED[1:], first]
    assert result.changes == 8 and not result.created and not result.deleted


def test_edited_then_deleted_is_deleted() -> None:
    history = of(rec.EDITED_THEN_DELETED)
    # MediaWiki removed the edit's row when the page was deleted: only the log entry is left.
    assert [(c.type, c.logaction) for c in history] == [("log", "delete")]
    edit = Change(
        rcid=history[0].rcid - 1, timestamp=history[0].timestamp, type="edit", ns=0, title=rec.EDITED_THEN_DELETED
    )
    for window_changes in (history, [edit, *history]):
        result = classify(window_changes)
        assert result.deleted == [rec.EDITED_THEN_DELETED] and not result.refetch


def test_deleted_then_restored_is_refetched() -> None:
    history = of(rec.DELETED_THEN_RESTORED)
    assert [(c.logtype, c.logaction) for c in history] == [("delete", "delete"), ("delete", "restore")]
    result = classify(history)
    assert result.refetch == [rec.DELETED_THEN_RESTORED] and not result.deleted


def test_moved_then_edited_is_fetched_under_its_new_title() -> None:
    old, new = rec.MOVED_THEN_EDITED
    result = classify(of(old, new))
    assert result.refetch == [new] and result.moved == {old: new}
    assert result.moves == [changes.Move(old, new, redirect=True)]


def test_moved_twice_gives_the_first_and_last_title() -> None:
    first, middle, last = rec.MOVED_TWICE
    history = of(first, middle, last)
    assert [(c.title, c.target) for c in history] == [(first, middle), (middle, last)]
    result = classify(history)
    assert result.moved == {first: last} and result.refetch == [last]
    assert middle not in result.to_fetch + result.deleted


def test_moved_then_deleted_is_a_move_and_a_deletion() -> None:
    old, new = rec.MOVED
    move = of(old, new)[0]
    gone = replace(of(rec.DELETED)[0], rcid=move.rcid + 1, title=new, timestamp=move.timestamp)
    result = classify([move, gone])
    assert result.moved == {old: new} and result.deleted == [new] and not result.to_fetch


def test_a_merge_refetches_both_pages() -> None:
    base = window()[0]
    merge = replace(base, rcid=10_000, type="log", logtype="merge", logaction="merge", target="Nordol IV")
    assert set(classify([merge]).refetch) == {base.title, "Nordol IV"}
    entry = {"type": "log", "ns": 0, "title": "A", "rcid": 5, "timestamp": base.timestamp}
    entry |= {"logtype": "merge", "logaction": "merge", "logparams": {"dest_ns": 0, "dest_title": "B"}}
    assert Change.from_api(entry).target == "B"


def test_a_move_without_redirect_says_so() -> None:
    old, new = rec.MOVED_NO_REDIRECT
    result = classify(of(old, new))
    assert result.moves == [changes.Move(old, new, redirect=False)] and result.refetch == [new]
    assert old not in result.deleted  # the page moved; its old title's record follows the redirect rules


def test_moved_away_and_back_is_a_refetch_not_a_move() -> None:
    title, away = rec.MOVED_AND_BACK
    history = of(title, away)
    # Moving back over the redirect is move_redir, and the replaced redirect's deletion is logged after it.
    assert [(c.logtype, c.logaction, c.title) for c in history] == [
        ("move", "move", title),
        ("move", "move_redir", away),
        ("delete", "delete_redir", title),
    ]
    result = classify(history)
    assert result.refetch == [title] and not result.moved and not result.deleted


def test_created_pages() -> None:
    assert classify(of(*rec.CREATED)).created == list(rec.CREATED)
    drifting, drifted = rec.CREATED_THEN_MOVED
    moved_new = classify(of(drifting, drifted))
    assert moved_new.created == [drifted] and not moved_new.moved and not moved_new.refetch
    gone = classify(of(rec.CREATED_THEN_DELETED))
    assert gone.deleted == [rec.CREATED_THEN_DELETED] and not gone.created


def test_a_deleted_page_recreated_is_refetched() -> None:
    deleted = of(rec.DELETED)[0]
    recreated = Change(deleted.rcid + 100, deleted.timestamp, "new", 0, rec.DELETED)
    assert classify([deleted, recreated]).refetch == [rec.DELETED]


def test_duplicates_and_order_of_input_do_not_matter() -> None:
    """Overlapping windows (the lag margin) and parts fed out of order classify the same."""
    changes_ = list(window())
    shuffled = changes_ * 2
    random.Random(11).shuffle(shuffled)
    assert classify(shuffled) == classify(changes_)
    halves = changes_[:18] + changes_[10:]  # two windows overlapping by 8 changes
    assert classify(halves) == classify(changes_)


def test_log_entries_that_change_no_content_are_ignored() -> None:
    base = window()[0]
    protect = replace(base, rcid=10_000, type="log", logtype="protect", logaction="protect")
    user = replace(base, rcid=10_001, type="log", logtype="newusers", logaction="create", title="User:Someone")
    assert classify([protect, user]) == ChangeSet(changes=2, newest=base.timestamp)
    imported = replace(base, rcid=10_002, type="log", logtype="import", logaction="upload")
    assert classify([imported]).refetch == [base.title]


def test_an_empty_window() -> None:
    assert classify([]) == ChangeSet()
    assert classify([]).newest is None


# -- stale checkpoints and the plan ---------------------------------------------------------------


def test_what_the_wiki_says_about_its_horizon() -> None:
    assert changes.parse_rc_max_age(raw("rc_max_age")) == 90 * 86400
    oldest, now = changes.parse_oldest_change(raw("rc_oldest"))
    assert oldest is not None and now is not None
    assert oldest == ts(body("rc_oldest")["query"]["recentchanges"][0]["timestamp"])
    assert oldest < ts(manifest()["checkpoint"]) < ts(manifest()["run_start"]) <= now
    assert changes.parse_rc_max_age({"paraminfo": {"modules": [{"parameters": []}]}}) is None
    assert changes.parse_oldest_change({"batchcomplete": True, "query": {"recentchanges": []}}) == (None, None)


def test_plan_reads_from_checkpoint_minus_margin_to_run_start() -> None:
    cp, rs = ts(manifest()["checkpoint"]), ts(manifest()["run_start"])
    plan = plan_sync(cp, rs, rc_max_age=90 * 86400)
    assert (plan.mode, plan.start, plan.end, plan.reason) == ("changes", cp - timedelta(minutes=5), rs, "")
    assert (
        plan.message
        == f"recent changes from {changes.format_timestamp(cp - timedelta(minutes=5))} to {manifest()['run_start']}"
    )
    assert plan_sync(cp, rs, rc_max_age=90 * 86400, margin=timedelta(0)).start == cp
    assert plan_sync(rs + timedelta(hours=1), rs, rc_max_age=1).start == rs  # a checkpoint ahead of the server


def test_first_run_sweeps() -> None:
    plan = plan_sync(None, ts(manifest()["run_start"]), rc_max_age=90 * 86400)
    assert (plan.mode, plan.reason, plan.start) == ("sweep", changes.SWEEP_FIRST_RUN, None)
    assert "first run" in plan.message and "lastrevid sweep" in plan.message


@pytest.mark.parametrize(
    ("age", "rc_max_age", "oldest_age", "stale"),
    [
        (timedelta(days=1), 90 * 86400, None, False),
        (timedelta(days=89, hours=23), 90 * 86400, None, False),
        (timedelta(days=90, minutes=1), 90 * 86400, None, True),  # the margin pushes it past the horizon
        (timedelta(days=91), 90 * 86400, timedelta(days=95), False),  # the wiki still has older changes
        (timedelta(days=1), None, timedelta(days=2), False),
        (timedelta(days=3), None, timedelta(days=2), True),  # older than anything kept: can't tell, sweep
        (timedelta(days=1), None, None, True),  # the wiki keeps nothing and publishes no max age
    ],
)
def test_stale_checkpoints_sweep(
    age: timedelta, rc_max_age: int | None, oldest_age: timedelta | None, stale: bool
) -> None:
    now = datetime(2026, 12, 5, 14, 0, tzinfo=UTC)
    oldest = now - oldest_age if oldest_age is not None else None
    plan = plan_sync(now - age, now, rc_max_age=rc_max_age, oldest_kept=oldest)
    assert (plan.mode == "sweep") == stale
    if stale:
        assert plan.reason == changes.SWEEP_STALE and "is stale" in plan.message and "\n" not in plan.message


def test_the_recorded_horizon_decides() -> None:
    oldest, now = changes.parse_oldest_change(raw("rc_oldest"))
    assert oldest is not None and now is not None
    max_age = changes.parse_rc_max_age(raw("rc_max_age"))
    assert plan_sync(ts(manifest()["checkpoint"]), now, oldest_kept=oldest, margin=timedelta(0)).mode == "changes"
    young = oldest + timedelta(minutes=2)
    assert plan_sync(young, now, oldest_kept=oldest, margin=timedelta(0)).mode == "changes"
    # The 5-minute margin reaches back past the oldest change kept: without the max age that
    # cannot be told from a purge, so it sweeps; with it, it is plainly fresh.
    assert plan_sync(young, now, oldest_kept=oldest).mode == "sweep"
    assert plan_sync(young, now, oldest_kept=oldest, rc_max_age=max_age).mode == "changes"
    assert plan_sync(oldest - timedelta(days=1), now, oldest_kept=oldest).mode == "sweep"
    assert plan_sync(oldest - timedelta(days=1), now, rc_max_age=max_age, oldest_kept=oldest).mode == "changes"


# -- errors ---------------------------------------------------------------------------------------


def test_maxlag_is_a_retryable_api_error() -> None:
    with pytest.raises(ApiError) as info:
        parse_changes(raw("rc_maxlag_error"))
    assert info.value.code == "maxlag" and info.value.retryable


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(raw("rc_window")[:1500], id="cut-short"),
        pytest.param(b"<html><body>Service Unavailable</body></html>", id="html"),
        pytest.param(b'{"query": {"recentchanges": [{"title": "A", "ns": 0, "type": "edit"}]}}', id="no-rcid"),
        pytest.param(
            b'{"query": {"recentchanges": [{"title": "A", "rcid": "x", "ns": 0, "type": "edit", "timestamp": "t"}]}}',
            id="bad-rcid",
        ),
        pytest.param(b'{"query": {"recentchanges": {}}}', id="not-a-list"),
    ],
)
def test_bodies_that_are_not_the_answer_are_malformed(broken: bytes) -> None:
    with pytest.raises(MalformedResponse) as info:
        parse_changes(broken)
    assert not isinstance(info.value, ApiError)


def test_bad_timestamps_are_malformed() -> None:
    with pytest.raises(MalformedResponse):
        changes.parse_timestamp("yesterday")
    with pytest.raises(MalformedResponse):
        changes.parse_oldest_change(b'{"query": {"recentchanges": [{"rcid": 1}]}}')


# -- the live lab wiki ----------------------------------------------------------------------------


@pytest.mark.mediawiki
def test_live_scenario_classifies_as_made(fresh_mediawiki) -> None:
    """The same scenario on a fresh copy of the lab wiki, read through the module's own requests
    with a small limit (a continuation chain): the change set is the recorded one's."""
    wiki = fresh_mediawiki
    state = rec.run_scenario(wiki.install, wiki.api_url)
    oldest, now = changes.parse_oldest_change(wiki.server.api(**changes.oldest_change_params()))
    max_age = changes.parse_rc_max_age(wiki.server.api(**changes.rc_max_age_params()))
    assert max_age == 90 * 86400 and now is not None
    checkpoint, run_start = ts(state["checkpoint"]), ts(state["run_start"])
    plan = plan_sync(checkpoint, run_start, rc_max_age=max_age, oldest_kept=oldest, margin=timedelta(0))
    assert plan.mode == "changes" and plan.start is not None
    collected: list[Change] = []
    continuation: dict[str, str] | None = None
    requests = 0
    while True:
        params = changes.recentchanges_params(
            start=plan.start, end=plan.end, namespaces=rec.NAMESPACES, continuation=continuation, limit=5
        )
        page = parse_changes(wiki.server.api(**params))
        requests += 1
        collected += page.changes
        if page.continuation is None:
            break
        continuation = page.continuation
    assert requests == 6  # 26 changes, 5 per request
    result = classify(collected)
    assert_expected(result)
    recorded = classify(window())
    assert replace(result, newest=None) == replace(recorded, newest=None)  # what was recorded is what the wiki does
    assert result.newest is not None and state["checkpoint"] < result.newest < state["run_start"]
