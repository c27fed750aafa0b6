"""holocron_scrapy.frontier.scheduler: enqueue, claim, batching, acks and order modes."""

from __future__ import annotations

import time
import types

import pytest
from scrapy import Request, Spider
from scrapy.exceptions import DontCloseSpider
from scrapy.utils.test import get_crawler

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.contract import ids_of, work_meta, work_of
from holocron_scrapy.frontier.executor import InlineExecutor
from holocron_scrapy.frontier.keys import Resource
from holocron_scrapy.frontier.scheduler import FrontierScheduler
from holocron_scrapy.items import FAILED, IngestItem


class PageSpider(Spider):
    name = "pages"

    def parse(self, response):
        pass


class BatchSpider(PageSpider):
    """A :class:`~holocron_scrapy.frontier.contract.BatchingSpider` of two titles per request."""

    name = "batches"
    frontier_hold = False
    frontier_batch_size = 2

    def build_batch_request(self, requests):
        titles = [title_of(r) for r in requests]
        return Request("https://w/api.php?titles=" + "|".join(titles), meta={"titles": titles}, dont_filter=True)


def title_of(request: Request) -> str:
    return work_of(request).resource.resource_id


def page(title: str, depth: int = 0, priority: int = 0, batch: bool = False) -> Request:
    batching = {"batch_key": "https://w/api.php", "batch_size": 2} if batch else {}
    meta = work_meta(Resource("mediawiki", "w", "page", title), depth=depth, **batching)
    return Request(f"https://w/{title}", meta=meta, priority=priority)


def make(tmp_path, spidercls=PageSpider, **settings):
    crawler = get_crawler(
        spidercls,
        {
            "ADDONS": {"holocron_scrapy.addons.Frontier": 0},  # the frontier's defaults
            "HOLOCRON_STATE_URL": f"sqlite:///{tmp_path / 'f.sqlite3'}",
            "DUPEFILTER_CLASS": "holocron_scrapy.frontier.dupefilter.FrontierDupeFilter",
            "HOLOCRON_FRONTIER_FLUSH_INTERVAL": 0,
            **settings,
        },
    )
    crawler.spider = spidercls()
    scheduler = FrontierScheduler.from_crawler(crawler)
    scheduler.executor = InlineExecutor()  # the logic, without the worker thread (tested in crawls)
    scheduler.open(crawler.spider)
    return crawler, scheduler


def drain(scheduler) -> list[Request]:
    out = []
    while (request := scheduler.next_request()) is not None:
        out.append(request)
    return out


def test_enqueue_dedupes_and_hands_out_with_ids(tmp_path):
    crawler, s = make(tmp_path)
    assert s.enqueue_request(page("A"))
    assert not s.enqueue_request(page("A"))  # same resource: filtered
    assert s.enqueue_request(page("B"))
    assert s.has_pending_requests()
    got = drain(s)
    assert [r.url for r in got] == ["https://w/A", "https://w/B"]
    assert all(len(list(ids_of(r))) == 1 for r in got)
    s.ack(list(ids_of(got[0])))
    s.fail(list(ids_of(got[1])), "HTTP 404", retryable=False)
    s.flush()
    assert s.store.counts()["w"] == {"pending": 0, "in_progress": 0, "completed": 1, "failed": 1}
    assert not s.has_pending_requests()
    assert crawler.stats.get_value("frontier/filtered") == 1
    s.close("finished")


def test_requests_that_own_ids_stay_in_memory(tmp_path):
    _, s = make(tmp_path)
    s.enqueue_request(page("A"))
    (first,) = drain(s)
    continuation = first.replace(url="https://w/A?continue=1")
    assert s.enqueue_request(continuation)
    assert s.next_request() is continuation
    assert s.store.counts()["w"]["in_progress"] == 1
    s.close("finished")


def test_batches_are_merged_by_the_spider(tmp_path):
    _, s = make(tmp_path, BatchSpider, HOLOCRON_FRONTIER_FILL_BATCHES=False)
    for title in "ABC":
        s.enqueue_request(page(title, batch=True))
    got = drain(s)
    assert [r.meta["titles"] for r in got] == [["A", "B"], ["C"]]
    assert [len(list(ids_of(r))) for r in got] == [2, 1]
    s.close("finished")


class ResizedBatchSpider(BatchSpider):
    name = "resized"
    frontier_batch_size = 3  # what it may send today (e.g. a bot login gained apihighlimits)


def test_the_spiders_current_batch_size_wins_over_the_stored_one(tmp_path):
    _, s = make(tmp_path, ResizedBatchSpider, HOLOCRON_FRONTIER_FILL_BATCHES=False)
    for title in "ABCD":
        s.enqueue_request(page(title, batch=True))  # stored with batches of 2
    got = drain(s)
    assert [r.meta["titles"] for r in got] == [["A", "B", "C"], ["D"]]
    s.close("finished")


def test_item_signals_ack_and_fail(tmp_path):
    crawler, s = make(tmp_path)
    s.enqueue_request(page("A"))
    s.enqueue_request(page("B"))
    a, b = drain(s)
    ok = IngestItem("mediawiki", "w", "page", "A", "u", {}, work_item_ids=list(ids_of(a)))
    bad = IngestItem(
        "mediawiki", "w", "page", "B", "u", {}, outcome=FAILED, error_message="gone", work_item_ids=list(ids_of(b))
    )
    s._item_done(ok)
    s._item_done(bad)
    s.flush()
    assert s.store.get("mediawiki:w:page:A")["status"] == "completed"
    row = s.store.get("mediawiki:w:page:B")
    assert row["status"] == "failed" and row["error_message"] == "gone"
    s.close("finished")


@pytest.mark.parametrize(("order", "expected"), [("bfs", ["root", "d1", "d2"]), ("dfs", ["d2", "d1", "root"])])
def test_order_modes(tmp_path, order, expected):
    _, s = make(tmp_path, HOLOCRON_FRONTIER_ORDER=order)
    s.enqueue_request(page("root", 0))
    s.enqueue_request(page("d1", 1))
    s.enqueue_request(page("d2", 2))
    assert [title_of(r) for r in drain(s)] == expected
    s.close("finished")


def test_priority_comes_before_depth(tmp_path):
    _, s = make(tmp_path)
    s.enqueue_request(page("shallow", 0))
    s.enqueue_request(page("urgent", 3, priority=10))
    assert [title_of(r) for r in drain(s)] == ["urgent", "shallow"]
    s.close("finished")


def test_close_gives_unsent_and_inflight_items_back(tmp_path):
    _, s = make(tmp_path, HOLOCRON_FRONTIER_CLAIM_SIZE=10)
    for title in "ABC":
        s.enqueue_request(page(title))
    s.next_request()  # A is "in flight", B and C claimed but unsent
    s.close("shutdown")
    _, again = make(tmp_path)
    assert again.store.counts()["w"]["pending"] == 3
    assert [title_of(r) for r in drain(again)] == ["A", "B", "C"]
    again.close("finished")


def test_bad_order_setting_is_named(tmp_path):
    with pytest.raises(ConfigError, match="HOLOCRON_FRONTIER_ORDER"):
        make(tmp_path, HOLOCRON_FRONTIER_ORDER="random")


def test_jobdir_holds_the_frontier_without_a_state_url(tmp_path):
    from holocron_scrapy.frontier.scheduler import state_url_from_settings

    assert (
        state_url_from_settings({"JOBDIR": str(tmp_path / "job")})
        == f"sqlite:///{tmp_path / 'job' / 'frontier.sqlite3'}"
    )
    assert state_url_from_settings({"JOBDIR": "x", "HOLOCRON_STATE_URL": "sqlite:///y"}) == "sqlite:///y"


def test_dont_filter_requests_bypass_the_dedupe(tmp_path):
    crawler, s = make(tmp_path)
    assert s.enqueue_request(page("A"))
    again = page("A")
    again.dont_filter = True
    assert s.enqueue_request(again)
    assert len(drain(s)) == 2 and not crawler.stats.get_value("frontier/filtered")
    s.close("finished")


def test_stale_items_are_requeued_at_open(tmp_path):
    _, s = make(tmp_path)
    s.enqueue_request(page("A"))
    (a,) = drain(s)
    s.ack(list(ids_of(a)))
    s.close("finished")
    _, again = make(tmp_path, HOLOCRON_SOURCE_NAME="w", HOLOCRON_RECRAWL_AFTER=0)
    (b,) = drain(again)
    assert title_of(b) == "A" and work_of(b).completed_at
    again.close("finished")


class StubEngine:
    """Just what the wake-up needs from ``ExecutionEngine``: state flags and the slot's ``nextcall``,
    which pulls one request with ``next_request`` (``crawled``) and, as the engine's download of it
    would, hands it back to the scheduler (it holds leased ids: it comes back first)."""

    def __init__(self, scheduler, spider):
        self.scheduler, self.spider = scheduler, spider
        self.running, self.paused = True, False
        # ExecutionEngine's slot: a Deferred once closing
        self._slot = types.SimpleNamespace(closing=None, nextcall=types.SimpleNamespace(schedule=self._loop))
        self.crawled: list[Request] = []

    def _loop(self):
        request = self.scheduler.next_request()
        if request is not None:
            assert self.scheduler.enqueue_request(request)
            self.crawled.append(request)


def test_an_idle_worker_is_woken_when_another_adds_work(tmp_path):
    _, producer = make(tmp_path)
    crawler, idle = make(tmp_path)
    crawler.engine = engine = StubEngine(idle, crawler.spider)
    idle.idle_claim_every = 0  # each tick asks (in a crawl: at most once a second after finding nothing)
    idle._tick()
    assert engine.crawled == []  # nothing to claim: no wake-up
    producer.enqueue_request(page("A"))
    producer.enqueue_request(page("B"))
    producer.flush()
    idle._tick()
    assert len(engine.crawled) == 1 and ids_of(engine.crawled[0])
    drained = drain(idle)
    assert [r.url for r in drained] == ["https://w/A", "https://w/B"]  # the woken one first
    assert crawler.stats.get_value("frontier/wakeups") == 1
    producer.enqueue_request(page("C"))
    producer.flush()
    idle._tick()
    assert len(engine.crawled) == 1  # it still holds leases, so its own downloads drive it
    engine.paused = True
    idle.ack([seq for r in drained for seq in list(ids_of(r))])
    idle._tick()
    assert len(engine.crawled) == 1  # a paused engine is left alone
    engine.paused, engine._slot.closing = False, object()
    idle._tick()
    assert len(engine.crawled) == 1  # nor one that is closing the spider
    engine._slot.closing = None
    idle._tick()
    assert len(engine.crawled) == 2  # C, once the engine runs normally again
    for s in (producer, idle):
        s.close("finished")


def test_an_idle_worker_reclaims_expired_leases_before_it_closes(tmp_path):
    _, gone = make(tmp_path, HOLOCRON_FRONTIER_LEASE_SECONDS=0.2)  # a worker on another host that died
    gone.enqueue_request(page("A"))
    (held,) = drain(gone)
    crawler, idle = make(tmp_path)
    with pytest.raises(DontCloseSpider):  # the lease is live: A is another worker's, so wait for it
        idle._spider_idle(crawler.spider)
    time.sleep(0.3)
    with pytest.raises(DontCloseSpider):  # expired: reclaimed, so not done yet
        idle._spider_idle(crawler.spider)
    assert crawler.stats.get_value("frontier/reclaimed") == 1
    (again,) = drain(idle)
    assert again.url == held.url and list(ids_of(again)) == list(ids_of(held))
    idle.ack(list(ids_of(again)))
    idle.flush()
    idle._spider_idle(crawler.spider)  # drained: nothing raised, the spider may close
    assert idle.store.counts()["w"]["completed"] == 1
    idle.close("finished")


def test_a_request_that_cannot_be_stored_is_crawled_from_memory_not_raised(tmp_path):
    """As Scrapy's scheduler does with what its disk queue cannot take: the request is kept in memory."""
    crawler, s = make(tmp_path)
    request = page("A")
    request.callback = lambda response: None  # not a spider method: Request.to_dict refuses it
    live = page("B")
    live.meta["object"] = object()  # JSON cannot hold it
    assert s.enqueue_request(request) and s.enqueue_request(live)
    assert crawler.stats.get_value("frontier/unserializable") == 2
    assert s.has_pending_requests()
    assert s.next_request() is request and s.next_request() is live
    assert not s.enqueue_request(page("A"))  # its key is known: a duplicate is still filtered
    s.flush()
    assert s.store.counts() == {}  # nothing stored
    s.close("finished")


def test_fail_counts_final_failures_and_retries_separately(tmp_path):
    crawler, s = make(tmp_path, HOLOCRON_FRONTIER_MAX_ATTEMPTS=2, HOLOCRON_FRONTIER_RETRY_BACKOFF=0.01)
    for title in "ABC":
        s.enqueue_request(page(title))
    a, b, c = drain(s)
    s.fail(list(ids_of(a)), "HTTP 404", retryable=False)  # failed for good
    s.fail(list(ids_of(b)), "HTTP 503")  # attempt 1 of 2: put back
    s.fail(list(ids_of(b)), "HTTP 503")  # no longer leased: not counted twice
    s.ack(list(ids_of(c)))
    s.flush()
    assert crawler.stats.get_value("frontier/failed") == 1
    assert crawler.stats.get_value("frontier/retried") == 1
    time.sleep(0.05)
    (again,) = drain(s)
    assert work_of(again).attempt == 2
    s.fail(list(ids_of(again)), "HTTP 503")  # out of attempts: failed for good
    s.flush()
    assert crawler.stats.get_value("frontier/failed") == 2
    assert crawler.stats.get_value("frontier/retried") == 1
    assert s.store.get("mediawiki:w:page:B")["status"] == "failed"
    s.close("finished")


def test_a_scheduler_with_a_source_touches_only_its_items(tmp_path):
    _, other = make(tmp_path, HOLOCRON_SOURCE_SYSTEM="mediawiki", HOLOCRON_SOURCE_NAME="other")
    other_page = Request("https://o/X", meta=work_meta(Resource("mediawiki", "other", "page", "X")))
    other.enqueue_request(other_page)
    other.flush()
    crawler, s = make(tmp_path, HOLOCRON_SOURCE_SYSTEM="mediawiki", HOLOCRON_SOURCE_NAME="w")
    assert not s.has_pending_requests()  # the other source's pending item is not this crawl's work
    s.enqueue_request(page("A"))
    assert s.enqueue_request(Request("https://w/plain"))  # no resource in meta: filed under this source
    got = drain(s)
    assert sorted(r.url for r in got) == ["https://w/A", "https://w/plain"]
    counts = s.store.counts()
    assert counts["w"]["in_progress"] == 2 and counts["other"]["pending"] == 1 and "scrapy" not in counts
    s.ack([seq for r in got for seq in list(ids_of(r))])
    s.flush()
    s._spider_idle(crawler.spider)  # done, though the other source still has work
    (x,) = drain(other)
    assert x.url == "https://o/X"
    for sched in (other, s):
        sched.close("finished")


def test_an_unscoped_scheduler_works_on_every_source(tmp_path):
    _, s = make(tmp_path)
    s.enqueue_request(page("A"))
    s.enqueue_request(Request("https://o/X", meta=work_meta(Resource("mediawiki", "other", "page", "X"))))
    assert len(drain(s)) == 2
    s.close("finished")


def test_an_item_lost_twice_is_claimed_alone(tmp_path):
    crawler, s = make(tmp_path, HOLOCRON_FRONTIER_CLAIM_SIZE=10)
    for title in "ABC":
        s.enqueue_request(page(title))
    s.flush()
    store = s.store
    for _ in range(2):  # two workers died holding A (and nothing else)
        dead = "elsewhere:1:dead"
        (row,) = store.claim(dead, 1, 600)
        store.reclaim([dead])
    assert store.get("mediawiki:w:page:A")["lease_losses"] == 2
    first = s.next_request()
    assert title_of(first) == "A" and s.next_request() is None  # alone
    assert crawler.stats.get_value("frontier/solo_claims") == 1
    assert store.get("mediawiki:w:page:A")["lease_solo"] == 1
    s.fetched(list(ids_of(first)))  # its response was parsed: others may join it before it is stored
    s.flush()  # written by the background loop's next job
    assert store.get("mediawiki:w:page:A")["lease_solo"] == 0
    assert [title_of(r) for r in drain(s)] == ["B", "C"]
    s.ack(list(ids_of(first)))
    s.close("finished")


def test_a_jobdir_given_for_the_run_beats_the_config_state_url(tmp_path):
    from scrapy.settings import Settings

    from holocron_scrapy.frontier.scheduler import state_url_from_settings

    job = tmp_path / "crawls" / "run1"
    settings = Settings()
    settings.set("HOLOCRON_STATE_URL", "sqlite:///config.sqlite3", priority="spider")  # from the config file
    settings.set("JOBDIR", str(job), priority="cmdline")
    assert state_url_from_settings(settings) == f"sqlite:///{job / 'frontier.sqlite3'}"
    settings.set("HOLOCRON_STATE_URL", "sqlite:///explicit.sqlite3", priority="cmdline")
    assert state_url_from_settings(settings) == "sqlite:///explicit.sqlite3"
    project = Settings()
    project.set("JOBDIR", str(job), priority="project")
    project.set("HOLOCRON_STATE_URL", "sqlite:///config.sqlite3", priority="spider")
    assert state_url_from_settings(project) == "sqlite:///config.sqlite3"


def test_the_open_line_names_the_database_and_source(tmp_path, caplog):
    with caplog.at_level("INFO"):
        _, s = make(tmp_path, HOLOCRON_SOURCE_SYSTEM="mediawiki", HOLOCRON_SOURCE_NAME="w")
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Frontier open:")]
    assert f"SQLite {tmp_path / 'f.sqlite3'}" in line and "source mediawiki/w" in line
    s.close("finished")


def test_requests_of_one_priority_are_handed_out_in_the_order_they_were_found(tmp_path):
    """First in, first out within a priority (SQLite), as Scrapy sends its start requests."""
    _, s = make(tmp_path)
    titles = ["Zeta", "Alpha", "Mu", "Beta"]
    for title in titles:
        s.enqueue_request(page(title))
    s.enqueue_request(page("First", priority=1))
    assert [title_of(r) for r in drain(s)] == ["First", *titles]
    s.close("finished")


def test_an_item_whose_request_ended_without_an_outcome_fails_for_good(tmp_path):
    """A download error with no errback: Scrapy does not fetch the request again, nor does the frontier."""
    crawler, s = make(tmp_path)
    s.enqueue_request(page("A"))
    (a,) = drain(s)  # handed to the engine, which drops it without calling back
    with pytest.raises(DontCloseSpider):
        s._spider_idle(crawler.spider)
    s.flush()
    assert crawler.stats.get_value("frontier/failed") == 1 and not crawler.stats.get_value("frontier/retried")
    assert s.store.counts()["w"] == {"pending": 0, "in_progress": 0, "completed": 0, "failed": 1}
    s._spider_idle(crawler.spider)  # nothing left: the spider may close
    s.close("finished")
