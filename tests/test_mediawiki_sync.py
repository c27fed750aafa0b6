"""The daily sync from recent changes (``recrawl=changes``, holocron_scrapy/mediawiki/sync.py): the
pure plan on the recorded window of the lab wiki, the config, and real sync runs on a private copy of
the lab MediaWiki (edits, new pages, a deletion and a move made with its maintenance scripts)."""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime, timezone
from typing import Any

import pytest

from holocron_scrapy.config import load_config
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.mediawiki import changes
from holocron_scrapy.mediawiki.changes import classify
from holocron_scrapy.mediawiki.sync import SyncCheckpoint, deleted_payload, mode_text, plan_fetch
from holocron_scrapy.spiders.mediawiki_options import mediawiki_options
from holocron_scrapy.spiders.mediawiki_source import MediaWikiSource
from tests.support import record_listings as rec
from tests.support.crawl import Workspace
from tests.support.kill_pipeline import PIPELINES
from tests.test_mediawiki_changes import window

SEED = "Ωmega Station"


# -- the plan, on the recorded window -------------------------------------------------------------


def held_all(*titles: str, revision: int = 1) -> dict[str, int | None]:
    return dict.fromkeys(titles, revision)


def test_stored_pages_that_changed_are_refetched_new_pages_enqueued_deletions_recorded() -> None:
    recorded = window()
    change_set = classify(recorded)
    stored = [*change_set.refetch, *change_set.deleted, *change_set.moved]
    stored.remove(rec.CREATED_THEN_DELETED)  # created and deleted within the window: never stored
    plan = plan_fetch(change_set, recorded, held_all(*stored), follow=True)
    expected = rec.EXPECTED
    moved_new = set(change_set.moved.values())
    assert set(plan.refetch) == set(expected["refetch"]) - moved_new
    assert set(plan.created) == set(expected["created"])
    # a move's new title is fetched with the old one (its record follows the redirect rules), except a
    # page moved then deleted: its deletion is recorded under the old title the crawl stored
    assert plan.moved == {old: new for old, new in expected["moved"].items() if new not in change_set.deleted}
    deleted = {title for title, _ in plan.deleted}
    assert deleted == {t for t in expected["deleted"] if t != rec.CREATED_THEN_DELETED}
    assert rec.CREATED_THEN_DELETED in plan.ignored  # never stored: no record
    assert set(plan.titles) == {*plan.refetch, *plan.created, *plan.moved, *plan.moved.values()}
    assert len(plan.titles) == len(set(plan.titles))


def test_pages_the_crawl_never_stored_are_ignored_and_new_pages_need_discovery() -> None:
    recorded = window()
    change_set = classify(recorded)
    plan = plan_fetch(change_set, recorded, {}, follow=False)
    assert plan.refetch == [] and plan.created == [] and plan.moved == {} and plan.deleted == []
    assert set(plan.ignored) >= set(change_set.refetch) - set(change_set.moved.values())


def test_revisions_already_held_are_not_fetched_again() -> None:
    """The margin's overlap with the last run, or a rerun after a kill: a page whose newest revision
    of the window is the one held is not fetched; one a log entry touched (a restore) always is."""
    recorded = window()
    change_set = classify(recorded)
    newest: dict[str, int] = {}
    for change in recorded:
        if change.type in ("edit", "new"):
            newest[change.title] = max(newest.get(change.title, 0), change.revid)
        elif change.logtype == "move" and change.target and change.revid:
            newest[change.target] = max(newest.get(change.target, 0), change.revid)
    stored = [*change_set.refetch, *change_set.created, *change_set.moved, *change_set.moved.values()]
    held: dict[str, int | None] = {t: newest.get(t, 1) for t in stored}
    plan = plan_fetch(change_set, recorded, held, follow=True)
    restored = rec.DELETED_THEN_RESTORED
    assert plan.refetch == [restored]  # a restore carries no revision to compare
    assert plan.created == [] and plan.moved == {}
    older = {**held, rec.EDITED[0]: newest[rec.EDITED[0]] - 1}
    assert rec.EDITED[0] in plan_fetch(change_set, recorded, older, follow=True).refetch


def test_checkpoint_value_and_texts() -> None:
    start = datetime(2026, 12, 5, 14, 0, 1, tzinfo=timezone.utc)
    value = SyncCheckpoint(start, 7_776_000).to_json()
    assert value == {"run_start": "2026-12-05T14:00:01Z", "rc_max_age": 7_776_000}
    assert SyncCheckpoint.from_json(json.loads(json.dumps(value))) == SyncCheckpoint(start, 7_776_000)
    assert SyncCheckpoint.from_json(None) is None and SyncCheckpoint.from_json({"run_start": "yesterday"}) is None
    assert mode_text(changes.plan_sync(None, start)) == "sweep (first run)"
    stale = changes.plan_sync(datetime(2026, 1, 1, tzinfo=timezone.utc), start, rc_max_age=86400)
    assert mode_text(stale) == "sweep (stale checkpoint)"
    assert mode_text(changes.plan_sync(start, start, rc_max_age=86400)) == "changes"
    deletion = next(c for c in window() if c.logtype == "delete" and c.title == rec.DELETED)
    assert deleted_payload(rec.DELETED, deletion) == deleted_payload(rec.DELETED, deletion)  # a rerun adds nothing
    assert deleted_payload(rec.DELETED, deletion)["deletion"]["rcid"] == deletion.rcid


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("type: mediawiki, api_url: 'http://w/api.php', recrawl: daily", "expected changes"),
        ("type: http, recrawl: changes", "for mediawiki sources only"),
        ("type: mediawiki, api_url: 'http://w/api.php', recrawl: changes, recrawl_after: 1d", "set one"),
    ],
)
def test_recrawl_key_is_validated(tmp_path, source: str, problem: str) -> None:
    path = tmp_path / "holocron.yaml"
    path.write_text(f"sources:\n  - {{name: s, {source}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=problem) as err:
        load_config(str(path))
    assert "sources[0].recrawl" in str(err.value) or "recrawl" in str(err.value)


def test_recrawl_key_is_read(tmp_path) -> None:
    path = tmp_path / "holocron.yaml"
    path.write_text("sources:\n  - {name: s, type: mediawiki, api_url: 'http://w/api.php', recrawl: changes}\n")
    assert load_config(str(path)).source("s").recrawl == "changes"


def test_recrawl_argument() -> None:
    source = MediaWikiSource(name="s", type="mediawiki", api_url="http://w/api.php", seeds=("A",), recrawl="changes")
    assert mediawiki_options(source, {}).recrawl == "changes"
    assert mediawiki_options(source, {"recrawl_after": "1d"}).recrawl is None  # -a asks for the sweep
    assert mediawiki_options(source.model_copy(update={"recrawl": None}), {"recrawl": "Changes"}).recrawl == "changes"
    with pytest.raises(ConfigError, match="pass one"):
        mediawiki_options(source, {"recrawl": "changes", "recrawl_after": "1d"})
    with pytest.raises(ConfigError, match="expected changes"):
        mediawiki_options(source, {"recrawl": "daily"})


# -- real sync runs on the lab wiki ---------------------------------------------------------------


def sync_args(*extra: str) -> tuple[str, ...]:
    return ("source=testwiki", f"seeds={SEED}", "max_depth=1", "recrawl=changes", *extra)


def report_of(ws: Workspace, run_id: str) -> dict[str, Any]:
    return next(r for r in ws.run_reports() if r["run_id"] == run_id)


def checkpoint_of(ws: Workspace) -> dict[str, Any] | None:
    """The sync checkpoint in the workspace's state store (SQLite file or PostgreSQL)."""
    rows = ws.rows("state", "SELECT value FROM frontier_checkpoints WHERE name = 'sync/recentchanges'")
    if not rows:
        return None
    value = rows[0]["value"]
    return value if isinstance(value, dict) else json.loads(value)


class Lab:
    """A first sync run (the sweep of a first run), then the changes of the brief on the wiki."""

    def __init__(self, wiki: Any, ws: Workspace):
        self.wiki, self.ws = wiki, ws
        ws.write_config(wiki.api_url)
        first = ws.crawl("mediawiki", *sync_args())
        assert first.returncode == 0, first.stderr[-3000:]
        assert "no recent-changes checkpoint yet (first run): lastrevid sweep" in first.stderr
        self.first_run = ws.runs()[0]["run_id"]
        assert report_of(ws, self.first_run)["sync"] == "sweep (first run)"
        assert checkpoint_of(ws) is not None
        ok = {r["resource_id"] for r in ws.records() if r["outcome"] == "ok" and r["requested_id"] == r["resource_id"]}
        leaves = sorted(
            i["resource_id"]
            for i in ws.work_items()
            if i["depth"] == 1 and i["attempt"] > 0 and i["resource_id"] in ok and ":" not in i["resource_id"]
        )
        assert len(leaves) >= 9, leaves
        self.edited, self.deleted, self.moved = leaves[:7], leaves[7], leaves[8]
        self.moved_to = f"{self.moved} (moved)"
        self.created = ["Sync test new page one", "Sync test new page two"]
        scenario = rec.Scenario(wiki.install, wiki.api_url)
        for i, title in enumerate(self.edited):
            link = f" See [[{self.created[i]}]]." if i < len(self.created) else ""
            scenario.edit(title, f"'''{title}''' was edited for the sync test.{link}\n")
        for title in self.created:
            scenario.edit(title, f"'''{title}''' is new: it was created for the sync test.\n")
        scenario.delete(self.deleted)
        scenario.move(self.moved, self.moved_to)

    @property
    def expected_ok(self) -> list[str]:
        return sorted([*self.edited, *self.created, self.moved_to])

    def check(self, sync_runs: list[str]) -> dict[str, Any]:
        """The records of *sync_runs* are exactly the brief's; returns the last run's report."""
        new = [r for r in self.ws.records() if r["run_id"] in sync_runs]
        assert sorted(r["resource_id"] for r in new if r["outcome"] == "ok") == self.expected_ok
        (deleted,) = [r for r in new if r["outcome"] == "deleted"]
        assert deleted["resource_id"] == self.deleted
        assert len(new) == len(self.expected_ok) + 1  # nothing else: no missing, no failed
        return report_of(self.ws, sync_runs[-1])


def request_bound(report: dict[str, Any], titles: int) -> int:
    stats = report["summary"]
    return math.ceil(stats["sync/changes"] / 500) + math.ceil(titles / 50) + 2


@pytest.mark.mediawiki
def test_sync_fetches_exactly_what_changed(fresh_mediawiki, tmp_path, crawl_database) -> None:
    """On SQLite files, and with the frontier (the checkpoint) and the records on the live PostgreSQL."""
    lab = Lab(fresh_mediawiki, Workspace(tmp_path, database=crawl_database))
    ws = lab.ws
    before = checkpoint_of(ws)
    sync = ws.crawl("mediawiki", *sync_args())
    assert sync.returncode == 0, sync.stderr[-3000:]
    run_id = ws.runs()[-1]["run_id"]
    report = lab.check([run_id])
    stats = report["summary"]
    assert report["sync"] == "changes" and report["status"] == "completed"
    assert report["pages_deleted"] == 1 and report["pages_stored"] == len(lab.expected_ok)
    # no unchanged page fetched in full: content only for the 7 edited, 2 new and the moved page
    assert stats["mediawiki/pages/ok"] == len(lab.expected_ok)
    assert stats.get("recrawl/unchanged", 0) == 0
    assert stats["sync/refetch"] == 7 and stats["sync/created"] == 2 and stats["sync/moved"] == 1
    changed_titles = 7 + 2 + 1 + 1  # edited, created, moved, deleted
    assert report["requests"] <= request_bound(report, changed_titles), report["requests"]
    after = checkpoint_of(ws)
    assert after is not None and before is not None and after["run_start"] > before["run_start"]
    # the checkpoint is the run's start: the next run finds nothing new, in three requests
    again = ws.crawl("mediawiki", *sync_args())
    assert again.returncode == 0, again.stderr[-3000:]
    quiet = ws.runs()[-1]
    assert quiet["pages_stored"] == 0
    quiet_stats = json.loads(quiet["summary"])
    assert quiet_stats.get("mediawiki/pages/ok", 0) == 0 and quiet_stats.get("recrawl/unchanged", 0) == 0
    assert quiet_stats["sync/already_stored"] == len(lab.expected_ok) + 1  # the margin: seen again, held
    assert quiet["requests"] == 3  # probe, oldest change, one page of recent changes


@pytest.mark.mediawiki
def test_a_sync_killed_then_run_again_gives_the_same_result(fresh_mediawiki, tmp_path) -> None:
    lab = Lab(fresh_mediawiki, Workspace(tmp_path))
    ws = lab.ws
    before = checkpoint_of(ws)
    killed = ws.crawl(
        "mediawiki",
        *sync_args(),
        settings={"ITEM_PIPELINES": PIPELINES, "KILL_AFTER_LAKE_ITEMS": "4", "HOLOCRON_RECORDS_BATCH_SIZE": "1"},
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert checkpoint_of(ws) == before  # a killed run does not advance it
    rerun = ws.crawl("mediawiki", *sync_args())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    killed_run = {r["run_id"] for r in ws.records()} - {lab.first_run, ws.runs()[-1]["run_id"]}
    assert len(killed_run) == 1  # the killed run stored part of the sync before it died
    report = lab.check([*killed_run, ws.runs()[-1]["run_id"]])
    assert report["sync"] == "changes"
    assert checkpoint_of(ws) != before


@pytest.mark.mediawiki
def test_a_stale_checkpoint_falls_back_to_the_sweep(fresh_mediawiki, tmp_path) -> None:
    lab = Lab(fresh_mediawiki, Workspace(tmp_path))
    ws = lab.ws
    stale = {"run_start": "2020-01-01T00:00:00Z", "rc_max_age": 86400}
    with sqlite3.connect(ws.state_db) as conn:
        conn.execute("UPDATE frontier_checkpoints SET value = ? WHERE name = 'sync/recentchanges'", [json.dumps(stale)])
    sweep = ws.crawl("mediawiki", *sync_args())
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "recent-changes checkpoint 2020-01-01T00:00:00Z is stale (the wiki keeps 1 days of changes)" in sweep.stderr
    run = ws.runs()[-1]
    report = report_of(ws, run["run_id"])
    assert report["sync"] == "sweep (stale checkpoint)"
    stats = report["summary"]
    assert stats["recrawl/requeued"] >= 14 and stats["recrawl/unchanged"] > 0  # every stored page checked
    stored = {r["resource_id"] for r in ws.records() if r["run_id"] == run["run_id"] and r["outcome"] == "ok"}
    assert set(lab.edited) <= stored and lab.moved_to in stored
    assert checkpoint_of(ws)["run_start"] > stale["run_start"]  # type: ignore[index]


@pytest.mark.mediawiki
@pytest.mark.slow
def test_a_listing_that_cannot_be_read_stops_the_sync_and_keeps_the_checkpoint(fresh_mediawiki, tmp_path) -> None:
    """Every request gets the retryable maxlag error: the oldest-change request is retried, then the
    sync stops and keeps its checkpoint. One retry per request (``RETRY_TIMES=1``): each maxlag answer
    blocks the API host for its ``Retry-After`` (5 s, MediaWiki's least), so the default 5 retries of the
    probe and of the listing cost a minute without showing more."""
    lab = Lab(fresh_mediawiki, Workspace(tmp_path))
    ws = lab.ws
    before = checkpoint_of(ws)
    fresh_mediawiki.set_lag(60)  # every request with maxlag gets the retryable maxlag error
    try:
        lagged = ws.crawl("mediawiki", *sync_args(), settings={"RETRY_TIMES": "1"})
    finally:
        fresh_mediawiki.set_lag(None)
    assert lagged.returncode == 1, lagged.stderr[-3000:]
    assert "failed" in lagged.stderr and "the checkpoint stays where it was" in lagged.stderr
    report = report_of(ws, ws.runs()[-1]["run_id"])
    assert report["finish_reason"] == "fatal_sync" and report["status"] == "failed"
    assert report["summary"]["mediawiki/api_error/maxlag"] == 4  # the probe and the listing, each retried once
    assert checkpoint_of(ws) == before
    again = ws.crawl("mediawiki", *sync_args())
    assert again.returncode == 0, again.stderr[-3000:]
    lab.check([ws.runs()[-1]["run_id"]])
