"""holocron_scrapy.frontier.politeness: a source's delay and concurrency hold for every worker of one
frontier together, and a block seen by one worker holds for all.

Real ``scrapy crawl http`` workers (subprocesses) against a small server of ours on 127.0.0.1 that
counts the requests in flight and timestamps every arrival (:class:`CountingSite`), on one SQLite
frontier and on one live PostgreSQL frontier (a throw-away database of ``postgres_url``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from holocron_scrapy.config import load_config
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.politeness import LOCAL, SHARED, politeness_mode
from tests.support.counting_site import CountingSite, counting_relay, counting_site
from tests.support.crawl import Workspace

FAST = {"HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.2"}


def share(concurrency: int) -> dict[str, str]:
    """Small claims and no more requests at once than the source's concurrency, so that every worker
    gets a share of a small site (by default one worker claims batches of 50 while its engine has room
    for 16 requests)."""
    return {"CONCURRENT_REQUESTS": str(concurrency), "HOLOCRON_FRONTIER_CLAIM_SIZE": str(concurrency)}


def workspace(tmp_path, database: str | None, sources: str, frontier: str = "") -> Workspace:
    ws = Workspace(tmp_path / "ws", database=database)
    ws.root.mkdir()
    ws.config.write_text(
        "contact: tests@example.org\n"
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: {ws.records_url}\n"
        f"state:\n  url: {ws.state_url}\n" + (f"frontier:\n{frontier}" if frontier else "") + "sources:\n" + sources,
        encoding="utf-8",
    )
    return ws


def start(ws: Workspace, *args: str, settings: dict[str, str] | None = None, spider: str = "http") -> subprocess.Popen:
    return ws.start(spider, *args, settings={**FAST, **(settings or {})})


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def busiest_window(times: list[float], width: float = 10.0) -> int:
    ordered = sorted(times)
    return max((sum(1 for u in ordered if t <= u < t + width) for t in ordered), default=0)


def assert_paced(times: list[float], delay: float, jitter: float = 0.05) -> None:
    """Arrivals k apart are at least k * *delay* apart, less *jitter* once: the slots are taken *delay*
    apart, and the time from a take to the request's arrival varies (by a few tens of ms on a loaded
    machine), which does not add up over several requests."""
    ordered = sorted(times)
    short = [
        (round(ordered[i + k] - ordered[i], 3), k)
        for k in range(1, len(ordered))
        for i in range(len(ordered) - k)
        if ordered[i + k] - ordered[i] < k * delay - jitter
    ]
    assert not short, short[:5]


def assert_stored_once(ws: Workspace, urls: set[str]) -> None:
    counts = Counter(r["resource_id"] for r in ws.records())
    assert set(counts) == urls, (sorted(urls - set(counts))[:5], sorted(set(counts) - urls)[:5])
    assert max(counts.values()) == 1, counts.most_common(3)


def site_urls(site: CountingSite) -> set[str]:
    return {f"{site.base}/", *(f"{site.base}/p/{n}" for n in range(site.pages))}


# -- the mode ------------------------------------------------------------------------------------
def test_the_mode_is_shared_with_the_frontier_unless_local():
    frontier = {"SCHEDULER": "holocron_scrapy.frontier.scheduler.FrontierScheduler"}
    assert politeness_mode(frontier) == SHARED
    assert politeness_mode({**frontier, "HOLOCRON_FRONTIER_POLITENESS": "local"}) == LOCAL
    assert politeness_mode({"SCHEDULER": "scrapy.core.scheduler.Scheduler"}) == LOCAL


def test_the_config_key_is_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("contact: a@b.org\nfrontier:\n  politeness: local\nsources: []\n", encoding="utf-8")
    assert load_config(str(path)).frontier == {"politeness": "local"}
    path.write_text("contact: a@b.org\nfrontier:\n  politeness: global\nsources: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="frontier.politeness"):
        load_config(str(path))


# -- three workers, one host ---------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def database(request) -> str | None:
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else None


def test_three_workers_together_keep_one_hosts_rate_and_concurrency(database, tmp_path):
    """``concurrency: 1, delay: 0.5`` against one host, three workers: never two requests in flight,
    arrivals at least 0.5 s apart (so at most 21 in any 10 s), every page stored once."""
    with counting_site(pages=16) as site:
        ws = workspace(tmp_path, database, "  - {name: site, type: http, delay: 0.5, concurrency: 1}\n")
        args = ("source=site", f"seeds={site.base}/", "max_depth=1")
        procs = [start(ws, *args, settings=share(1))]
        time.sleep(1.0)  # the first worker creates the databases
        procs += [start(ws, *args, settings=share(1)) for _ in range(2)]
        errs = [finish(p) for p in procs]
        times = site.times()
    assert site.peak == 1
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.45, sorted(gaps)[:5]  # 0.5 s fleet-wide, less a little clock granularity
    assert busiest_window(times) <= 21
    assert sum("'politeness/slots'" in e for e in errs) == 3, errs[1][-4000:]  # all three took part
    assert_stored_once(ws, site_urls(site))


# -- blocks ----------------------------------------------------------------------------------------
def test_a_429_with_retry_after_stops_every_worker_for_that_host(database, tmp_path):
    """One answer ``429, Retry-After: 5``: no worker sends to that host for 5 s, while the workers go on
    with another host; then the crawl completes, every page stored once."""
    # Two host names: Scrapy's own per-host slots are keyed by the name alone (not the port).
    with counting_site(pages=6) as blocked, counting_site(pages=40, latency=0.1, host="localhost") as other:
        blocked.script["/p/1"] = [(429, {"Retry-After": "5"})]
        ws = workspace(tmp_path, database, "  - {name: site, type: http, delay: 0.1, concurrency: 3}\n")
        args = ("source=site", f"seeds={blocked.base}/|{other.base}/", "max_depth=1")
        procs = [start(ws, *args, settings=share(3))]
        time.sleep(1.0)
        procs += [start(ws, *args, settings=share(3)) for _ in range(2)]
        for p in procs:
            finish(p)
        hit = next(t for t, path in blocked.arrivals if path == "/p/1")
        after = [t - hit for t in blocked.times() if t > hit]
        during_other = [t for t in other.times() if hit < t < hit + 5]
    assert after and min(after) >= 4.95, sorted(after)[:3]
    assert len(during_other) >= 5
    assert_stored_once(ws, site_urls(blocked) | site_urls(other))


def test_a_killed_workers_slot_is_freed_and_the_crawl_completes(tmp_path):
    """``concurrency: 1``: a worker's request hangs at the server; a second worker sends nothing while the
    first holds its slot (4 s, longer than the 2 s lease: the holder renews it). The first is kill -9'd:
    its slot is free at once (a dead process of this host holds none, as with its work items' leases;
    on another host its lease would run out, see tests/test_frontier_store.py), and the crawl completes."""
    with counting_site(pages=4) as site:
        site.sleep["/p/2"] = 60.0  # the first request of /p/2 hangs
        ws = workspace(tmp_path, None, "  - {name: site, type: http, delay: 0, concurrency: 1}\n")
        args = ("source=site", f"seeds={site.base}/", "max_depth=1")
        lease = {"HOLOCRON_FRONTIER_POLITENESS_LEASE": "2", "HOLOCRON_FRONTIER_LEASE_SECONDS": "3", **share(1)}
        victim = start(ws, *args, settings=lease)
        deadline = time.monotonic() + 60
        while not any(path == "/p/2" for _, path in site.arrivals):
            assert time.monotonic() < deadline and victim.poll() is None
            time.sleep(0.05)
        hung = time.monotonic()
        survivor = start(ws, *args, settings=lease)
        time.sleep(4.0)  # the survivor is up and waiting; the victim renews its slot meanwhile
        assert [path for t, path in site.arrivals if t > hung] == []
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed = time.monotonic()
        finish(survivor)
        later = [t - killed for t in site.times() if t > killed]
    assert later and min(later) < 1.5, sorted(later)[:3]  # not held until the lease ran out
    assert_stored_once(ws, site_urls(site))


@deferred_f_from_coro_f
async def test_a_mediawiki_maxlag_answer_blocks_the_api_host_for_every_worker(tmp_path):
    """The retry middleware on a recorded MediaWiki 1.39 ``maxlag`` answer (HTTP 200, ``Retry-After: 5``):
    the API host is blocked in the shared store for the whole 5 s (the local retry waits only
    ``HOLOCRON_RETRY_BACKOFF_MAX``), so another worker's slot is refused until then."""
    from types import SimpleNamespace

    from holocron_scrapy.frontier.executor import InlineExecutor
    from holocron_scrapy.frontier.politeness import SharedPoliteness, politeness_key
    from holocron_scrapy.frontier.store import make_owner, open_work_item_store, utcnow
    from tests.test_middlewares_retry import api_request, api_response, make_middleware

    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    crawler, mw = make_middleware(HOLOCRON_RETRY_BACKOFF_MAX=0.1)
    politeness = SharedPoliteness(lambda: open_work_item_store(url), executor=InlineExecutor(), stats=crawler.stats)
    crawler.engine = SimpleNamespace(downloader=SimpleNamespace(politeness=politeness))
    other = open_work_item_store(url)  # another worker's connection
    try:
        request = api_request()
        started = utcnow()
        retry = await mw.process_response(request, api_response(request, "maxlag_error"))
        assert retry is not request and retry.url == request.url  # retried locally after 0.1 s
        key = politeness_key(request)
        assert other.blocked_keys() == [key]
        grant = other.take_slot(key, make_owner(), delay=0.0, concurrency=4, lease_seconds=30)
        assert not grant.taken and grant.reason == "blocked: MediaWiki maxlag"
        assert 4.9 <= (grant.retry_at - started).total_seconds() <= 5.5
        assert crawler.stats.get_value("politeness/blocks") == 1
    finally:
        other.close()
        politeness.close()


@deferred_f_from_coro_f
async def test_a_maxlag_answer_blocks_the_host_in_the_transaction_that_gives_its_slot_back(tmp_path):
    """The downloader gives the slot of a maxlag answer back with the block (as a 429's): between the
    release and the retry middleware's own block, no other worker can take a slot of the API host."""
    from holocron_scrapy.frontier.executor import InlineExecutor
    from holocron_scrapy.frontier.politeness import SharedPoliteness
    from holocron_scrapy.frontier.store import make_owner, open_work_item_store, utcnow

    url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    politeness = SharedPoliteness(lambda: open_work_item_store(url), executor=InlineExecutor())
    other = open_work_item_store(url)  # another worker's connection
    try:
        slot = await politeness.acquire("wiki.test", 0.0, 4)
        assert slot is not None
        started = utcnow()
        await politeness.release("wiki.test", slot, 200, 5.0, "maxlag")
        grant = other.take_slot("wiki.test", make_owner(), delay=0.0, concurrency=4, lease_seconds=30)
        assert not grant.taken and grant.reason == "blocked: MediaWiki maxlag"
        assert 4.9 <= (grant.retry_at - started).total_seconds() <= 5.5
        assert other.host_states()[0]["failures"] == 0  # not a 429/5xx: no backoff count
        slot = await politeness.acquire("other.test", 0.0, 4)  # an ordinary answer elsewhere: no block
        await politeness.release("other.test", slot, 200, 5.0, None)
        assert other.blocked_keys() == ["wiki.test"]
    finally:
        other.close()
        politeness.close()


@deferred_f_from_coro_f
async def test_a_slot_whose_release_failed_is_given_back_before_the_next_take(postgres_url):
    """The worker's PostgreSQL backend is terminated while it holds a slot (as in
    tests/test_frontier_outage.py), so giving the slot back fails: the slot stays in the database, and
    the worker gives it back before its next take instead of holding it, and the host with it
    (``concurrency: 1``), until its lease runs out."""
    import psycopg

    from holocron_scrapy.frontier.executor import InlineExecutor
    from holocron_scrapy.frontier.politeness import SharedPoliteness
    from holocron_scrapy.frontier.store import make_owner, open_work_item_store
    from tests.support.postgres import HOST, PORT, USER

    politeness = SharedPoliteness(lambda: open_work_item_store(postgres_url), executor=InlineExecutor())
    other = open_work_item_store(postgres_url)  # another worker's connection
    try:
        first = await politeness.acquire("wiki.test", 0.0, 1)
        assert first is not None
        with psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (postgres_url.rsplit("/", 1)[1],),
            )
        await politeness.release("wiki.test", first, 200)  # fails (logged): the slot is still held
        grant = other.take_slot("wiki.test", make_owner(), delay=0.0, concurrency=1, lease_seconds=60)
        assert grant.slot_id is None and grant.reason == "full"
        started = time.monotonic()
        second = await politeness.acquire("wiki.test", 0.0, 1)
        assert second is not None and second != first
        assert time.monotonic() - started < 1.0  # not the 60 s lease
    finally:
        other.close()
        politeness.close()


# -- the real MediaWiki -------------------------------------------------------------------------
@pytest.mark.mediawiki
@pytest.mark.slow
def test_three_mediawiki_workers_keep_the_api_hosts_rate(mediawiki, tmp_path):
    """Three ``mediawiki`` workers on one SQLite frontier, source ``concurrency: 1, delay: 0.2``, through
    a relay in front of the real MediaWiki 1.39 lab: one request at a time at the API host, arrivals
    0.2 s apart (less a jitter of 0.05 s: see :func:`assert_paced`; at most 51 in any 10 s), every page
    reachable from the seeds stored once.
    (0.2 s, not 0.5: the crawl sends about 110 requests; the http test holds the 0.5 s figures.)"""
    with counting_relay(mediawiki.api_url) as relay:
        api_url = relay.url(urlsplit(mediawiki.api_url).path)
        source = f"  - {{name: testwiki, type: mediawiki, api_url: '{api_url}', delay: 0.2, concurrency: 1}}\n"
        ws = workspace(tmp_path, None, source)
        args = ("source=testwiki", "seeds=Hub Alpha", "max_depth=1", "batch_size=20")
        settings = {"HOLOCRON_FRONTIER_CLAIM_SIZE": "5"}
        procs = [start(ws, *args, settings=settings, spider="mediawiki")]
        time.sleep(1.0)
        procs += [start(ws, *args, settings=settings, spider="mediawiki") for _ in range(2)]
        for p in procs:
            finish(p, timeout=180)
        times = relay.times()
    assert relay.peak == 1
    assert len(times) >= 10
    assert_paced(times, 0.2)
    assert busiest_window(times) <= 51
    expected = mediawiki.model.reachable(["Hub Alpha"], 1)
    counts = Counter(r["resource_id"] for r in ws.records())
    assert set(counts) == set(expected) and max(counts.values()) == 1


@pytest.mark.mediawiki
@pytest.mark.slow
def test_a_mediawiki_maxlag_answer_stops_every_worker_for_the_api_host(database, mediawiki, tmp_path):
    """Two ``mediawiki`` workers and one ``http`` worker on one frontier. Once both wiki workers are at
    work, the real MediaWiki 1.39 lab answers one content request with its genuine ``maxlag`` error
    (HTTP 200, ``Retry-After: 5``: the relay in front of it forwards that one request with
    ``maxlag=-1``): no worker sends anything to the API host until ``Retry-After`` has passed since
    that answer, while the counting site on another host goes on being crawled; then the crawl
    completes, every page stored once."""
    titles = sorted(p.title for p in mediawiki.model.articles())[:48]
    agents = {f"holocron_scrapy/test wiki-worker-{n} (tests@example.org)" for n in (1, 2)}
    with counting_relay(mediawiki.api_url) as relay, counting_site(pages=40, latency=0.05, host="localhost") as other:

        def lag_when(path: str) -> bool:  # a content batch, once both wiki workers have been seen
            seen = {agent for _, _, agent in relay.arrivals}
            done = sum("titles=" in p for _, p, _ in relay.arrivals)
            return "titles=" in path and agents <= seen and done >= 3

        relay.lag_when = lag_when
        api_url = relay.url(urlsplit(mediawiki.api_url).path)
        ws = workspace(
            tmp_path,
            database,
            f"  - {{name: testwiki, type: mediawiki, api_url: '{api_url}', delay: 0.4, concurrency: 2}}\n"
            "  - {name: site, type: http, delay: 0.2, concurrency: 1}\n",
        )
        wiki_args = ("source=testwiki", f"seeds={'|'.join(titles)}", "max_depth=0", "batch_size=4")
        first, second = sorted(agents)
        procs = [start(ws, *wiki_args, settings={"USER_AGENT": first}, spider="mediawiki")]
        time.sleep(1.0)  # the first worker creates the databases
        procs += [
            start(ws, *wiki_args, settings={"USER_AGENT": second}, spider="mediawiki"),
            start(ws, "source=site", f"seeds={other.base}/", "max_depth=1"),
        ]
        errs = [finish(p) for p in procs]
        lagged = relay.lagged
        wiki_times = relay.times()
        wiki_agents = {agent for _, _, agent in relay.arrivals}
        other_times = other.times()
    assert lagged is not None, "no request was lagged"
    error = json.loads(lagged.body)["error"]
    assert lagged.status == 200 and error["code"] == "maxlag", (lagged.status, error)
    assert lagged.headers.get("MediaWiki-API-Error") == "maxlag"
    retry_after = float(lagged.headers["Retry-After"])
    assert retry_after == 5  # MediaWiki 1.39: max(maxlag, 5)
    after = [t - lagged.answered for t in wiki_times if t > lagged.answered]
    assert after and min(after) >= retry_after - 0.05, sorted(after)[:3]  # less a little clock granularity
    assert min(after) < retry_after + 1.5, sorted(after)[:3]  # the wiki workers were waiting for the block
    during = [t for t in other_times if lagged.answered < t < lagged.answered + retry_after]
    assert len(during) >= 5, len(during)
    assert wiki_agents == agents  # both wiki workers sent to the API host
    assert sum("'mediawiki/api_error/maxlag': 1," in e for e in errs[:2]) == 1
    assert sum("'politeness/blocks': 1," in e for e in errs[:2]) == 1
    expected = set(mediawiki.model.reachable(titles, 0)) | site_urls(other)
    assert_stored_once(ws, expected)
