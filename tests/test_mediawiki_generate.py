"""Generators as seeds (holocron_scrapy/mediawiki/generate.py): a listing streamed into the frontier.

* On the store (SQLite and PostgreSQL), with the recorded listing answers of the lab wiki: each
  answer's titles go in with the walk's checkpoint in one transaction; a resumed listing asks for
  exactly the next request; a completed one is skipped; another spec is another listing.
* Options and config: ``-a generator`` / the source's ``generator:`` key, seeds and a generator not
  both, a generator crawl follows no links (``max_depth`` is the depth of subcategories).
* End to end against the real MediaWiki: ``allpages`` stores every page of namespace 0 once within
  1.5x ``ceil(P/500) + ceil(P/50)`` requests and a rerun lists nothing; ``categorymembers`` with a
  depth stores exactly the category tree's members; kill -9 twice during the listing, rerun: every
  title once, the crawl completes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from typing import Any

import pytest

from holocron_scrapy.addons import HOLOCRON_DOWNLOADER_MIDDLEWARES, apply_addons
from holocron_scrapy.config import parse_config
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.store import NewItem
from holocron_scrapy.mediawiki.generate import CHECKPOINT_PREFIX, GeneratorIntake, fed, spec_digest
from holocron_scrapy.mediawiki.listings import ListingWalk, parse_generator
from holocron_scrapy.spiders.mediawiki_options import mediawiki_options
from tests.support import listing_fixtures, wikigen
from tests.support.crawl import REPO, Workspace
from tests.support.fault_proxy import FaultProxy
from tests.support.frontier_items import title_items


def recorded(name: str) -> Any:
    return listing_fixtures.body(name.removesuffix(".json"))


def items_of(titles: list[str]) -> list[NewItem]:
    return title_items(titles)


@pytest.fixture
def store(any_work_item_store):
    return any_work_item_store


def resource_ids(store) -> Counter[str]:
    with store.engine.connect() as conn:
        return Counter(conn.exec_driver_sql("SELECT resource_id FROM work_items").scalars())


ALLPAGES = parse_generator("allpages", namespaces=(0,))
ALLPAGES_ANSWERS = ("allpages_ns0_1.json", "allpages_ns0_2.json")


def take_answer(intake: GeneratorIntake, store, name: str) -> int:
    assert intake.state is not None
    walk, page = fed(intake.state.walk, recorded(name))
    inserted = intake.commit(store, walk, page)
    intake.advance(walk, page, inserted)
    return inserted


# -- on the store, with recorded answers ----------------------------------------------------------


def test_each_answer_goes_in_with_its_checkpoint_and_a_rerun_lists_nothing(store):
    intake = GeneratorIntake(ALLPAGES, "mediawiki", "wiki", items_of)
    state = intake.begin(store)
    assert not state.skipped and not state.resumed and state.walk.next_params()["aplimit"] == "max"
    first = take_answer(intake, store, ALLPAGES_ANSWERS[0])
    assert first == 500 and sum(resource_ids(store).values()) == 500
    cp = store.checkpoint(intake.key)
    assert intake.key.name == CHECKPOINT_PREFIX + spec_digest(ALLPAGES)
    assert cp["done"] is False and cp["walk"]["titles"] == 500 and cp["walk"]["continuation"]["apcontinue"]
    second = take_answer(intake, store, ALLPAGES_ANSWERS[1])
    assert second == 76 and intake.state is not None and intake.state.done
    assert store.checkpoint(intake.key)["done"] is True
    counts = resource_ids(store)
    assert len(counts) == 576 and max(counts.values()) == 1

    again = GeneratorIntake(ALLPAGES, "mediawiki", "wiki", items_of).begin(store)
    assert again.skipped and again.done and again.walk.titles == 576


def test_an_interrupted_listing_resumes_at_exactly_the_next_request(store):
    intake = GeneratorIntake(ALLPAGES, "mediawiki", "wiki", items_of)
    intake.begin(store)
    take_answer(intake, store, ALLPAGES_ANSWERS[0])
    assert intake.state is not None
    expected = intake.state.walk.next_params()

    resumed = GeneratorIntake(ALLPAGES, "mediawiki", "wiki", items_of)
    state = resumed.begin(store)
    assert state.resumed and not state.skipped and state.walk.next_params() == expected
    assert take_answer(resumed, store, ALLPAGES_ANSWERS[1]) == 76
    assert len(resource_ids(store)) == 576


def test_a_failed_commit_leaves_neither_titles_nor_checkpoint(store):
    def broken(titles: list[str]) -> list[NewItem]:
        items = items_of(titles)
        items[-1].status = "bogus"  # the insert fails: the transaction rolls back, checkpoint included
        return items

    intake = GeneratorIntake(ALLPAGES, "mediawiki", "wiki", broken)
    state = intake.begin(store)
    walk, page = fed(state.walk, recorded(ALLPAGES_ANSWERS[0]))
    with pytest.raises(Exception, match="(?i)check|constraint"):
        intake.commit(store, walk, page)
    assert store.checkpoint(intake.key) is None and not resource_ids(store)
    assert intake.state is not None and intake.state.walk.requests == 0  # the walk in memory stayed too
    # the same answer again (as after the outage watch's retry, or a rerun): all of it goes in once
    good = GeneratorIntake(ALLPAGES, "mediawiki", "wiki", items_of)
    good.begin(store)
    assert take_answer(good, store, ALLPAGES_ANSWERS[0]) == 500


def test_an_answer_that_is_an_error_moves_nothing():
    walk = ListingWalk.start(ALLPAGES)
    before = walk.to_dict()
    with pytest.raises(Exception):  # noqa: B017 - MalformedResponse
        fed(walk, b"<html>oops</html>")
    assert walk.to_dict() == before


def test_another_spec_is_another_listing(store):
    specs = [
        ALLPAGES,
        parse_generator("allpages", namespaces=(0, 14)),
        parse_generator("prefix:Listing page", namespaces=(0,)),
        parse_generator("categorymembers:Category:Listing root", namespaces=(0,), max_depth=1),
        parse_generator("categorymembers:Category:Listing root", namespaces=(0,), max_depth=2),
    ]
    assert len({spec_digest(s) for s in specs}) == len(specs)
    assert spec_digest(parse_generator("prefix:Listing_page ", namespaces=(0,))) == spec_digest(specs[2])
    intake = GeneratorIntake(ALLPAGES, "mediawiki", "wiki", items_of)
    intake.begin(store)
    take_answer(intake, store, ALLPAGES_ANSWERS[0])
    take_answer(intake, store, ALLPAGES_ANSWERS[1])
    other = GeneratorIntake(specs[1], "mediawiki", "wiki", items_of).begin(store)
    assert not other.skipped and not other.resumed and len(other.walk.pending) == 2


# -- options and config ---------------------------------------------------------------------------


def config_text(source: str) -> str:
    return f"sources:\n  - name: w\n    type: mediawiki\n    api_url: http://127.0.0.1:9/api.php\n{source}"


def test_generator_argument_sets_the_spec_and_turns_link_discovery_off():
    source = parse_config(config_text("    seeds: [A]\n")).source("w")
    options = mediawiki_options(source, {"generator": "categorymembers:Category:Jedi", "max_depth": "2"})
    assert options.seeds is None and options.generator is not None
    assert options.generator.category == "Category:Jedi" and options.generator.max_depth == 2
    assert (options.max_depth, options.follow_links, options.follow_categories) == (0, False, False)
    spec = mediawiki_options(source, {"generator": "allpages", "namespaces": "0|4"}).generator
    assert spec is not None and spec.namespaces == (0, 4)
    # -a seeds replaces the source's generator, -a generator the source's seeds
    gen_source = parse_config(config_text("    generator: 'prefix:Star Wars'\n")).source("w")
    assert gen_source.generator == "prefix:Star Wars"
    from_source = mediawiki_options(gen_source, {})
    assert from_source.generator is not None and from_source.generator.prefix == "Star Wars"
    seeded = mediawiki_options(gen_source, {"seeds": "A|B"})
    assert seeded.generator is None and seeded.seeds is not None and seeded.follow_links


@pytest.mark.parametrize(
    ("source", "kwargs", "key", "problem"),
    [
        ("", {"seeds": "A", "generator": "allpages"}, "generator", "give seeds or a generator, not both"),
        ("", {"generator": "allpages", "discover": "links"}, "discover", "a generator crawl follows no links"),
        ("", {"generator": "everything"}, "generator", "expected allpages, prefix:<title prefix> or"),
        ("", {"generator": "categorymembers:Jedi"}, "generator", "did you mean Category:Jedi?"),
        ("", {}, "seeds", "-a generator=allpages, or set seeds or generator on source 'w'"),
    ],
)
def test_bad_seeding_arguments_are_one_line_errors(source, kwargs, key, problem):
    with pytest.raises(ConfigError) as err:
        mediawiki_options(parse_config(config_text(source)).source("w"), kwargs)
    assert err.value.key == key and problem in str(err.value) and "\n" not in str(err.value)


def test_a_generator_with_discover_none_is_fine():
    options = mediawiki_options(
        parse_config(config_text("")).source("w"), {"generator": "allpages", "discover": "none"}
    )
    assert options.generator is not None and not options.follow_links


@pytest.mark.parametrize(
    ("source", "key", "problem"),
    [
        ("    generator: 'categorymembers:Foo'\n", "sources[0].generator", "did you mean Category:Foo?"),
        ("    generator: allpages\n    seeds: [A]\n", "sources[0].generator", "give seeds or a generator, not both"),
        ("    generator: ''\n", "sources[0].generator", ""),
        ("    generator: 'prefix:X'\n    discovery: {max_depth: 0, namespaces: [0, 14]}\n", None, None),
    ],
)
def test_the_source_generator_key_is_checked_by_the_spec_parser(source, key, problem):
    if key is None:
        assert parse_config(config_text(source)).source("w").generator == "prefix:X"
        return
    with pytest.raises(ConfigError) as err:
        parse_config(config_text(source), "holocron.yaml")
    assert "holocron.yaml" in str(err.value) and key in str(err.value) and problem in str(err.value)


def test_only_mediawiki_sources_have_a_generator():
    text = "sources:\n  - name: site\n    type: http\n    seeds: ['https://a.example/']\n    generator: allpages\n"
    with pytest.raises(ConfigError, match="only mediawiki sources have one"):
        parse_config(text)


def test_the_mediawiki_spiders_keep_the_polite_retry_middleware_and_the_bot_login():
    """Listing and content requests get maxlag/Retry-After handling: the spider's own settings no longer
    replace the project's downloader middlewares (they did once the bot login set its own dict there)."""
    from scrapy.settings import Settings
    from scrapy.utils.conf import build_component_list

    from holocron_scrapy.spiders.mediawiki import MediaWikiSpider, WikipediaSpider

    for spider in (MediaWikiSpider, WikipediaSpider):
        settings = Settings()
        settings.setmodule("holocron_scrapy.settings", priority="project")
        spider.update_settings(settings)
        settings = apply_addons(settings)  # as the crawler does, after the spider's own settings
        enabled = build_component_list(settings.getwithbase("DOWNLOADER_MIDDLEWARES"))
        assert "holocron_scrapy.middlewares.retry.PoliteRetryMiddleware" in enabled
        assert "holocron_scrapy.mediawiki.auth.BotLoginMiddleware" in enabled
        assert "scrapy.downloadermiddlewares.retry.RetryMiddleware" not in enabled
        assert settings.getint("URLLENGTH_LIMIT") == 0  # a 500-title continuation is not dropped


# -- the real MediaWiki ---------------------------------------------------------------------------


def stats_of(ws: Workspace) -> dict[str, Any]:
    return json.loads(ws.runs()[-1]["summary"])


def generator_checkpoints(ws: Workspace) -> list[dict[str, Any]]:
    if not ws.state_db.exists():
        return []
    conn = sqlite3.connect(ws.state_db)
    try:
        rows = conn.execute("SELECT name, value FROM frontier_checkpoints").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()
    return [json.loads(value) for name, value in rows if name.startswith(CHECKPOINT_PREFIX)]


@pytest.mark.mediawiki
def test_allpages_stores_every_article_once_within_the_request_bound(mediawiki, tmp_path):
    articles = {p.title for p in mediawiki.model.articles()}
    pages = len(articles)
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    args = ("source=testwiki", "generator=allpages")
    done = ws.crawl("mediawiki", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    records = ws.records()
    assert Counter(r["resource_id"] for r in records) == Counter(articles)  # every article, once
    assert {r["outcome"] for r in records} == {"ok"}
    items = ws.work_items()
    assert len(items) == pages and {(i["depth"], i["status"]) for i in items} == {(0, "completed")}
    stats = stats_of(ws)
    bound = math.ceil(pages / 500) + math.ceil(pages / 50)
    requests = ws.runs()[-1]["requests"]
    assert stats["generator/requests"] == math.ceil(pages / 500) and stats["generator/titles"] == pages
    # the listing and the content requests (the content's link continuations included) against the
    # bound; the one request before them is the API probe
    assert requests - 1 <= 1.5 * bound, (requests, bound)
    print(
        f"allpages: P={pages}: {requests} requests (1 API probe, {stats['generator/requests']} listing,"
        f" {stats.get('mediawiki/continuations', 0)} link continuations), bound {bound}, 1.5x = {1.5 * bound}"
    )
    (cp,) = generator_checkpoints(ws)
    assert cp["done"] and cp["walk"]["titles"] == pages

    again = ws.crawl("mediawiki", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "was listed completely by an earlier run" in again.stderr
    assert ws.runs()[-1]["requests"] == 1  # the API probe only: nothing listed, nothing fetched
    assert len(ws.records()) == len(records)


@pytest.mark.mediawiki
def test_prefix_stores_exactly_the_articles_with_that_prefix(mediawiki, tmp_path):
    expected = {p.title for p in mediawiki.model.articles() if p.title.startswith("Battle")}
    assert len(expected) > 20
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    done = ws.crawl("mediawiki", "source=testwiki", "generator=prefix:Battle", "namespaces=0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert Counter(r["resource_id"] for r in ws.records()) == Counter(expected)
    assert "Generator prefix:Battle in namespace 0 done" in done.stderr


BOT_ENV = "HOLOCRON_TEST_BOT_PASSWORD"


@pytest.mark.mediawiki
def test_allpages_as_a_bot_lists_5000_per_request_within_the_high_limit_bound(bot_mediawiki, tmp_path, monkeypatch):
    """With apihighlimits the listing asks for 5,000 titles and content goes 500 per request: within
    1.5x ``ceil(P/5000) + ceil(P/500)``, plus the API probe and the login's 3 round trips."""
    monkeypatch.setenv(BOT_ENV, bot_mediawiki.bot.password)
    articles = {p.title for p in bot_mediawiki.model.articles()}
    pages = len(articles)
    ws = Workspace(tmp_path)
    ws.write_config(
        bot_mediawiki.api_url,
        extra_source=(
            f"  - name: botwiki\n    type: mediawiki\n    api_url: {bot_mediawiki.api_url}\n    delay: 0\n"
            f"    auth: {{type: botpassword, username: '{bot_mediawiki.bot.username}', password_env: {BOT_ENV}}}\n"
        ),
    )
    done = ws.crawl("mediawiki", "source=botwiki", "generator=allpages", settings={"LOG_LEVEL": "DEBUG"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert Counter(r["resource_id"] for r in ws.records()) == Counter(articles)
    assert "aplimit=5000" in done.stderr and "assert=user" in done.stderr  # the listing request, logged at DEBUG
    stats = stats_of(ws)
    assert stats["mediawiki/login/high_limits"] == 1 and stats["generator/requests"] == math.ceil(pages / 5000)
    bound = math.ceil(pages / 5000) + math.ceil(pages / 500)
    requests = ws.runs()[-1]["requests"]
    print(f"allpages as a bot: P={pages}: {requests} requests (1 probe, 3 login), bound {bound}")
    assert requests - 1 - 3 <= 1.5 * bound, (requests, bound)


@pytest.mark.mediawiki
def test_categorymembers_with_a_depth_stores_exactly_the_category_tree(mediawiki, tmp_path):
    root = "Category:Holocron topics"
    model = mediawiki.model
    subcategories = {t for t in model.category_members(root) if wikigen.namespace_of(t) == 14}
    tree = {root, *subcategories}
    expected = {t for c in tree for t in model.category_members(c) if wikigen.namespace_of(t) == 0}
    assert subcategories and expected != {p.title for p in model.articles()}
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    done = ws.crawl("mediawiki", "source=testwiki", f"generator=categorymembers:{root}", "max_depth=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert Counter(r["resource_id"] for r in ws.records()) == Counter(expected)
    (cp,) = generator_checkpoints(ws)
    assert set(cp["walk"]["queued"]) == {f"categorymembers:{c}" for c in tree}

    # depth 0: the root's own members only (another listing: another checkpoint)
    shallow = Workspace(tmp_path / "shallow")
    shallow.root.mkdir()
    shallow.write_config(mediawiki.api_url)
    done = shallow.crawl("mediawiki", "source=testwiki", f"generator=categorymembers:{root}", "max_depth=0")
    assert done.returncode == 0, done.stderr[-3000:]
    direct = {t for t in model.category_members(root) if wikigen.namespace_of(t) == 0}
    assert {r["resource_id"] for r in shallow.records()} == direct

    # a category that does not exist lists nothing, says so, and the crawl ends cleanly
    empty = Workspace(tmp_path / "empty")
    empty.root.mkdir()
    empty.write_config(mediawiki.api_url)
    done = empty.crawl("mediawiki", "source=testwiki", "generator=categorymembers:Category:No such category")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "listed no titles: check the category" in done.stderr and not empty.records()


def start(ws: Workspace, args: tuple[str, ...], settings: dict[str, str], log) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SMALL_LISTING_LIMIT": "10", "SLOW_STORE_SECONDS": "0.02"}
    env.pop("HOLOCRON_CONFIG", None)
    return subprocess.Popen(
        ws.command("mediawiki", *args, settings=settings), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log
    )


@pytest.mark.mediawiki
@pytest.mark.slow
def test_kill_9_during_the_listing_then_rerun_lists_and_stores_every_title_once(mediawiki, tmp_path):
    articles = {p.title for p in mediawiki.model.articles()}
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    args = ("source=testwiki", "generator=allpages")
    # Killed runs: listing requests ask for 10 titles (tests/support/small_listings.py), so the listing
    # of the ~580 articles takes ~58 answers, each committed with its checkpoint by a slowed store.
    settings = {
        "DOWNLOADER_MIDDLEWARES": json.dumps(
            {**HOLOCRON_DOWNLOADER_MIDDLEWARES, "tests.support.small_listings.SmallListingMiddleware": 50}
        ),
        "SCHEDULER": "tests.support.slow_frontier.SlowStoreScheduler",
        "HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.2",
    }
    reached = []
    for run, at_least in enumerate((100, 300)):
        log_path = tmp_path / f"run{run}.log"
        with log_path.open("w") as log:
            proc = start(ws, args, settings, log)
            deadline = time.monotonic() + 120
            while True:
                cps = generator_checkpoints(ws)
                if cps and cps[0]["walk"]["titles"] >= at_least and not cps[0]["done"]:
                    break
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the listing did not get under way"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        (cp,) = generator_checkpoints(ws)
        assert not cp["done"]
        reached.append(cp["walk"]["titles"])
        # the checkpoint never runs ahead of the work items, and nothing is in twice
        counts = Counter(i["resource_id"] for i in ws.work_items())
        assert sum(counts.values()) >= cp["walk"]["titles"] and max(counts.values()) == 1
    assert "resuming the listing after" in (tmp_path / "run1.log").read_text()
    assert reached[1] > reached[0]

    done = ws.crawl("mediawiki", *args, settings={"HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.2"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the listing after" in done.stderr
    (cp,) = generator_checkpoints(ws)
    assert cp["done"] and cp["walk"]["titles"] == len(articles)
    items = ws.work_items()
    counts = Counter(i["resource_id"] for i in items)
    assert set(counts) == articles and max(counts.values()) == 1
    assert Counter(i["status"] for i in items) == Counter({"completed": len(articles)})
    assert Counter(r["resource_id"] for r in ws.records()) == Counter(articles)  # completed: every title stored once


class ListingFaults(FaultProxy):
    """Faults (its ``first`` list, in order) for listing requests only; everything else is forwarded."""

    def decide(self, path: str) -> str:
        if "list=" not in path:
            with self._lock:
                self.counts["forwarded"] += 1
            return "forwarded"
        return super().decide(path)


@pytest.mark.mediawiki
def test_listing_requests_ride_out_maxlag_and_429_as_content_requests_do(mediawiki, tmp_path):
    """Through a proxy that answers listing requests with MediaWiki's maxlag error (HTTP 200) and HTTP
    429/503 with ``Retry-After``: they go through the retry middleware as content requests do, the
    listing completes, every article is stored once."""
    articles = {p.title for p in mediawiki.model.articles()}
    faults = ["maxlag", "status_429", "maxlag", "status_503"]
    with ListingFaults(mediawiki.api_url, rate=0, first=faults, retry_after=1) as proxy:
        ws = Workspace(tmp_path)
        ws.write_config(f"{proxy.url}/api.php")
        done = ws.crawl("mediawiki", "source=testwiki", "generator=allpages")
    assert done.returncode == 0, done.stderr[-3000:]
    listing = [what for path, what in proxy.log if "list=allpages" in path]
    assert listing[: len(faults)] == faults and listing[len(faults) :] == ["forwarded", "forwarded"], listing
    stats = stats_of(ws)
    assert stats["retry/count"] == len(faults) and stats["mediawiki/api_error/maxlag"] == 2
    assert stats["generator/requests"] == 2 and stats["generator/titles"] == len(articles)
    assert "generator/failed" not in stats
    assert Counter(r["resource_id"] for r in ws.records()) == Counter(articles)
