"""holocron_scrapy.records.versions: one "which version do we hold?" lookup, batched, off the
reactor, on SQLite and the live PostgreSQL; past the outage limit it stops the crawl cleanly (a
real re-crawl of the test wiki whose PostgreSQL records database goes away)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f
from scrapy.utils.test import get_crawler

from holocron_scrapy.items import IngestItem
from holocron_scrapy.records.rows import item_row
from holocron_scrapy.records.store import open_record_store
from holocron_scrapy.records.versions import Held, VersionLookup, VersionStore, parse_utc
from tests.support.crawl import REPO, Workspace
from tests.support.fault_proxy import FaultProxy
from tests.support.static_site import serve_directory
from tests.test_storage_faults import database_gone

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def row(resource_id: str, payload: dict, *, resource_type: str = "page", at: datetime = T0, **kw) -> dict:
    it = IngestItem(
        source_system="mediawiki",
        source_name="wikipedia",
        resource_type=resource_type,
        resource_id=resource_id,
        request_uri="https://w/api.php",
        payload=payload,
        fetched_at_utc=at,
        lake_path=f"{resource_id}.json",
        **kw,
    )
    return item_row(it)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'r.sqlite3'}"


def key(resource_id: str, resource_type: str | None = "page") -> tuple:
    return ("mediawiki", "wikipedia", resource_type, resource_id)


def test_held_is_the_version_with_its_record_and_validators(url):
    store = open_record_store(url)
    try:
        first = row("A", {"v": 1}, revision_id=7, etag='"a1"')
        store.insert(
            [first, row("B", {"v": 1}, resource_type="error", at=T0 - timedelta(hours=1))], record_versions=True
        )
        store.insert([row("B", {"v": 2}, at=T0)], record_versions=True)
        found = VersionStore(store).held([key("A"), key("B", None), key("B", "error"), key("missing")])
        assert set(found) == {key("A"), key("B", None), key("B", "error")}
        a = found[key("A")]
        assert (a.hash_sha256, a.revision_id, a.etag, a.fetched_at) == (first["hash_sha256"], 7, '"a1"', T0)
        assert a.record["ingest_id"] == first["ingest_id"] and a.record["lake_path"] == "A.json"
        assert found[key("B", None)].resource_type == "page"  # any type: the newest fetch wins
        assert found[key("B", "error")].resource_type == "error"
        assert VersionStore(None).held([key("A")]) == {}
    finally:
        store.close()


def test_a_version_stored_again_becomes_the_one_held(url):
    """A -> B -> A: the third fetch finds A's record (one record per version), and A is held again,
    with the validators of the latest fetch."""
    store = open_record_store(url)
    try:
        a = row("P", {"v": "a"}, revision_id=1)
        store.insert([a], record_versions=True)
        store.insert([row("P", {"v": "b"}, revision_id=2, at=T0 + timedelta(hours=1))], record_versions=True)
        back = row("P", {"v": "a"}, revision_id=3, at=T0 + timedelta(hours=2))
        assert store.insert([back], record_versions=True) == [False]
        held = VersionStore(store).held([key("P")])[key("P")]
        assert (held.hash_sha256, held.revision_id) == (a["hash_sha256"], 3)
        assert held.record["ingest_id"] == a["ingest_id"]  # the record that holds that content
        assert store.count() == 2
    finally:
        store.close()


def test_times_are_compared_as_instants_not_text():
    held = Held("page", "A", "h", 1, None, None, parse_utc("2026-03-01 12:00:00.000000"), None)
    assert held.stored_by("2026-03-01 12:00:00.000000")
    assert held.stored_by("2026-03-01T13:00:00+01:00")  # the same instant, another spelling
    assert not held.stored_by("2026-03-01T12:59:59+01:00")  # as text it would sort after
    assert held.stored_by(T0 + timedelta(microseconds=1))
    assert not held.stored_by(None)


@deferred_f_from_coro_f
async def test_lookups_asked_together_share_one_query_in_a_worker_thread(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    store = open_record_store(url)
    store.insert([row(f"T{i}", {"i": i}) for i in range(40)], record_versions=True)
    store.close()
    crawler = get_crawler(settings_dict={"HOLOCRON_RECORDS_URL": url})
    lookup = VersionLookup.of(crawler)
    assert VersionLookup.of(crawler) is lookup  # one per crawler
    threads_used: set[str] = set()
    lookup.open()
    real = lookup.versions.held

    def spy(keys):
        threads_used.add(threading.current_thread().name)
        return real(keys)

    lookup.versions.held = spy  # type: ignore[method-assign]
    results = await asyncio.gather(*(lookup.held([key(f"T{i}"), key("none")]) for i in range(40)))
    assert all(set(r) == {key(f"T{i}")} for i, r in enumerate(results))
    assert crawler.stats.get_value("versions/queries") == 1  # 40 callers, one batched query
    assert crawler.stats.get_value("versions/lookups") == 41
    assert threads_used and threading.main_thread().name not in threads_used
    # A later round is a new query.
    more = await asyncio.gather(*(lookup.held([key(f"T{i}")]) for i in range(3)))
    assert [len(m) for m in more] == [1, 1, 1] and crawler.stats.get_value("versions/queries") == 2
    assert await lookup.call(lambda s: s.count()) == 40  # other work, on the same thread and store
    lookup.close()


@deferred_f_from_coro_f
async def test_a_failed_query_fails_its_callers_and_the_next_turn_works(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    crawler = get_crawler(settings_dict={"HOLOCRON_RECORDS_URL": url})
    lookup = VersionLookup.of(crawler)
    lookup.open()
    real = lookup.versions.held
    calls = {"n": 0}

    def flaky(keys):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database gone")
        return real(keys)

    lookup.versions.held = flaky  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="database gone"):
        await lookup.held([key("A")])
    assert await lookup.held([key("A")]) == {}
    lookup.close()


def recrawl_with_records_gone(ws: Workspace, command: list[str], proxy: FaultProxy, postgres_url: str) -> str:
    """Run the re-crawl *command*; once its first request reaches *proxy* (slowed: the records store
    is open by then, nothing was looked up yet), take the records database away until the crawl
    ends. Its stderr, after checking what every such crawl must show: exit status 1 with ONE error
    line, close reason ``fatal_storage``, no traceback or spider error per request, the outage
    waited for once, nothing stored or failed."""
    stored = len(ws.records())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    proxy.counts.clear()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not proxy.counts:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the re-crawl sent no request"
            time.sleep(0.02)
        with database_gone(postgres_url):
            _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "Records read failed: " in line]
    assert len(lines) == 1, lines
    assert f"Records read failed: {postgres_url}: " in lines[0] and lines[0].endswith("; stopping the crawl")
    assert "(fatal_storage)" in stderr
    assert "Traceback" not in stderr, stderr[stderr.index("Traceback") - 500 :][:3000]
    assert "Spider error processing" not in stderr
    waited = [line for line in stderr.splitlines() if "The records database" in line]
    assert len(waited) == 1 and "cannot be reached" in waited[0], waited  # waited for, once, before giving up
    assert [r["status"] for r in ws.run_reports()] == ["completed", "failed"]
    assert len(ws.records()) == stored  # nothing stored, nothing lost
    assert not [i for i in ws.work_items() if i["status"] == "failed"]
    return stderr


OUTAGE = {"HOLOCRON_DB_OUTAGE_LIMIT": "1"}


@pytest.mark.mediawiki
def test_a_lastrevid_lookup_past_the_outage_limit_stops_the_crawl_with_fatal_storage(mediawiki, tmp_path, postgres_url):
    """A MediaWiki re-crawl checks every title's ``lastrevid`` against the stored revision (a version
    lookup in the spider's callback) before it fetches content. The records database (PostgreSQL;
    the frontier in SQLite) goes away before that check, for longer than
    ``HOLOCRON_DB_OUTAGE_LIMIT`` (1 s): the crawl waits that long, then stops cleanly."""
    ws = Workspace(tmp_path, records_database=postgres_url)
    ws.write_config(mediawiki.api_url)
    seeds = ("source=testwiki", "seeds=Hub Alpha|Ωmega Station|Loop Alpha", "max_depth=0")
    first = ws.crawl("mediawiki", *seeds)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(ws.records()) >= 3
    # The API answers slowly, so that the database is gone before the first answer reaches the check.
    with FaultProxy(mediawiki.api_url, rate=0, first=["slow"] * 20, slow_seconds=2) as proxy:
        ws.write_config(f"{proxy.url}/api.php")
        command = ws.command("mediawiki", *seeds, "recrawl_after=0s", settings=OUTAGE)
        recrawl_with_records_gone(ws, command, proxy, postgres_url)


def test_a_conditional_request_lookup_past_the_outage_limit_stops_the_crawl_with_fatal_storage(tmp_path, postgres_url):
    """The same for a website re-crawl: the conditional-request middleware asks for each page's
    validators before its download; the database goes away while robots.txt is fetched (slowly)."""
    site = tmp_path / "site"
    site.mkdir()
    pages = ["a", "b", "c", "d"]
    links = "".join(f'<a href="{p}.html">{p}</a>' for p in pages)
    (site / "index.html").write_text(f"<html><body>{links}</body></html>", encoding="utf-8")
    for p in pages:
        (site / f"{p}.html").write_text(f"<html><body>Page {p}</body></html>", encoding="utf-8")
    ws = Workspace(tmp_path / "ws", records_database=postgres_url)
    ws.root.mkdir()
    with serve_directory(site) as (base, _log), FaultProxy(base, rate=0, slow_seconds=2) as proxy:
        ws.config.write_text(
            f"storage:\n  lake_dir: {ws.lake}\n  records_url: {ws.records_url}\n"
            f"state:\n  url: {ws.state_url}\n"
            "sources:\n  - {name: site, type: http, delay: 0, recrawl_after: 0s}\n",
            encoding="utf-8",
        )
        args = ("source=site", f"seeds={proxy.url}/index.html", "max_depth=1")
        first = ws.crawl("http", *args)
        assert first.returncode == 0, first.stderr[-3000:]
        assert len(ws.records()) == 5
        proxy.first = ["slow"] * 3
        recrawl_with_records_gone(ws, ws.command("http", *args, settings=OUTAGE), proxy, postgres_url)
