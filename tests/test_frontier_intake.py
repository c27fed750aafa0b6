"""The seed intake (holocron_scrapy/frontier/intake.py): seed lists streamed into the frontier in chunks,
each chunk inserted with its checkpoint in one transaction.

* On the store (SQLite and PostgreSQL): a list is taken in once, a rerun of the same list takes in
  nothing, an interrupted intake resumes where its checkpoint says, a different list is a new intake.
* Seed lists: comments and blank lines skipped, a missing, unreadable or empty file is a ConfigError
  naming the file.
* End to end against the real MediaWiki: ``scrapy crawl mediawiki -a seeds=@file`` enqueues each seed
  as exactly the work item its start request was; the same command again skips the intake; kill -9
  during the intake, rerun, and every seed is in ``work_items`` once and the crawl completes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.intake import CHECKPOINT_PREFIX, SeedIntake, SeedList
from holocron_scrapy.frontier.store import PENDING, CheckpointKey, NewItem
from tests.support.crawl import REPO, Workspace
from tests.support.frontier_items import title_items


def items_of(titles: list[str]) -> list[NewItem]:
    return title_items(titles)


@pytest.fixture
def store(any_work_item_store):
    return any_work_item_store


def seeds_file(path: Path, titles: list[str], *, noise: bool = True) -> Path:
    lines = ["# a comment", ""] if noise else []
    for i, title in enumerate(titles):
        lines.append(f"  {title}  " if noise and i % 7 == 0 else title)
        if noise and i % 11 == 0:
            lines += ["", "   # another comment"]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def resource_ids(store) -> Counter[str]:
    with store.engine.connect() as conn:
        return Counter(conn.exec_driver_sql("SELECT resource_id FROM work_items").scalars())


# -- seed lists ---------------------------------------------------------------------------------
def test_a_seeds_file_skips_blank_lines_and_comments(tmp_path):
    titles = [f"Title {i}" for i in range(50)]
    seeds = SeedList.parse(f"@{seeds_file(tmp_path / 's.txt', titles)}")
    assert list(seeds) == titles and seeds.first == "Title 0"
    assert seeds.path == (tmp_path / "s.txt").resolve() and not seeds.inline
    # the digest names the content, not the file: a copy is the same list, an edit another one
    copy = seeds_file(tmp_path / "copy.txt", titles)
    assert SeedList.parse(f"@{copy}").digest == seeds.digest
    assert SeedList.parse(f"@{seeds_file(copy, titles[:-1])}").digest != seeds.digest
    # positions are byte offsets after each seed: reading from one gives the rest
    positions = [position for _, position in seeds.read_from(0)]
    assert [s for s, _ in seeds.read_from(positions[9])] == titles[10:]


def test_an_inline_list(tmp_path):
    seeds = SeedList.parse(" Star Wars | |Luke Skywalker|")
    assert list(seeds) == ["Star Wars", "Luke Skywalker"] and seeds.path is None
    assert [s for s, _ in seeds.read_from(1)] == ["Luke Skywalker"]
    assert SeedList.of(["Star Wars", "Luke Skywalker"]).digest == seeds.digest


def test_bad_seed_lists_are_config_errors_naming_the_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=r"seeds file '.*nope\.txt' does not exist") as err:
        SeedList.parse(f"@{missing}")
    assert err.value.key == "seeds"
    (tmp_path / "latin1.txt").write_bytes(b"Caf\xe9\n")
    with pytest.raises(ConfigError, match=r"cannot read seeds file '.*latin1\.txt'"):
        SeedList.parse(f"@{tmp_path / 'latin1.txt'}")
    with pytest.raises(ConfigError, match=r"cannot read seeds file '.*'"):
        SeedList.parse(f"@{tmp_path}")  # a directory
    (tmp_path / "empty.txt").write_text("# only a comment\n\n", "utf-8")
    with pytest.raises(ConfigError, match=r"no seeds in seeds file '.*empty\.txt'"):
        SeedList.parse(f"@{tmp_path / 'empty.txt'}")
    with pytest.raises(ConfigError, match="no seeds given"):
        SeedList.parse(" | ")


# -- the intake on the store --------------------------------------------------------------------
def test_a_list_is_taken_in_once_and_a_rerun_takes_in_nothing(store, tmp_path):
    titles = [f"Title {i}" for i in range(1234)]
    seeds = SeedList.parse(f"@{seeds_file(tmp_path / 's.txt', titles)}")
    state = SeedIntake(seeds, "mediawiki", "wiki", items_of, chunk_size=100).run(store)
    assert (state.read_now, state.inserted_now, state.chunks_now) == (1234, 1234, 13)
    assert not state.skipped and not state.resumed
    assert resource_ids(store) == Counter(titles)
    key = CheckpointKey("mediawiki", "wiki", CHECKPOINT_PREFIX + seeds.digest)
    assert store.checkpoint(key) == {
        "digest": seeds.digest,
        "list": str(seeds.path),
        "position": (tmp_path / "s.txt").stat().st_size,  # after the last seed's line
        "seeds": 1234,
        "done": True,
    }

    calls: list[list[str]] = []
    again = SeedIntake(seeds, "mediawiki", "wiki", lambda c: calls.append(c) or items_of(c), chunk_size=100)
    state = again.run(store)
    assert state.skipped and (state.read_now, state.inserted_now, state.chunks_now) == (0, 0, 0) and not calls


def test_a_chunk_that_ends_the_list_exactly_marks_it_done(store):
    seeds = SeedList.of([f"T{i}" for i in range(200)])
    intake = SeedIntake(seeds, "mediawiki", "wiki", items_of, chunk_size=100)
    intake.begin(store)
    assert intake.step(store) == (100, 100) and not intake.state.done
    assert intake.step(store) == (100, 100) and intake.state.done  # no empty third chunk


def test_an_interrupted_intake_resumes_where_it_stopped(store, tmp_path):
    titles = [f"Title {i}" for i in range(1000)]
    seeds = SeedList.parse(f"@{seeds_file(tmp_path / 's.txt', titles)}")
    first = SeedIntake(seeds, "mediawiki", "wiki", items_of, chunk_size=150)
    first.begin(store)
    for _ in range(3):  # then the process dies
        first.step(store)
    assert sum(resource_ids(store).values()) == 450

    taken: list[str] = []
    second = SeedIntake(seeds, "mediawiki", "wiki", lambda c: taken.extend(c) or items_of(c), chunk_size=150)
    state = second.run(store)
    assert state.resumed and not state.skipped
    assert taken == titles[450:]  # nothing read twice, nothing skipped
    assert (state.read_now, state.inserted_now, state.seeds) == (550, 550, 1000)
    assert resource_ids(store) == Counter(titles)


def test_a_failed_chunk_leaves_the_checkpoint_where_it_was(store):
    seeds = SeedList.of([f"T{i}" for i in range(300)])

    def broken(chunk: list[str]) -> list[NewItem]:
        items = items_of(chunk)
        if chunk[0] == "T200":
            items[-1].status = "bogus"  # the insert fails: the transaction rolls back, checkpoint included
        return items

    intake = SeedIntake(seeds, "mediawiki", "wiki", broken, chunk_size=100)
    with pytest.raises(Exception, match="(?i)check|constraint"):
        intake.run(store)
    assert sum(resource_ids(store).values()) == 200
    state = SeedIntake(seeds, "mediawiki", "wiki", items_of, chunk_size=100).run(store)
    assert state.resumed and state.read_now == 100 and resource_ids(store) == Counter(f"T{i}" for i in range(300))


def test_a_different_list_is_a_new_intake(store):
    SeedIntake(SeedList.of(["A", "B", "C"]), "mediawiki", "wiki", items_of).run(store)
    state = SeedIntake(SeedList.of(["C", "D"]), "mediawiki", "wiki", items_of).run(store)
    assert not state.skipped and (state.read_now, state.inserted_now) == (2, 1)  # C was known
    # the same list for another source is another intake too
    other = SeedIntake(SeedList.of(["A", "B", "C"]), "mediawiki", "other", items_of)
    assert not other.begin(store).skipped
    assert resource_ids(store) == Counter("ABCD")


# -- end to end on the real MediaWiki ------------------------------------------------------------
def checkpoints(ws: Workspace) -> list[dict]:
    import json

    if ws.database is not None:  # PostgreSQL: none while the table does not exist yet
        return [json.loads(row["value"]) for row in ws.rows("state", "SELECT value FROM frontier_checkpoints")]
    if not ws.state_db.exists():
        return []
    conn = sqlite3.connect(ws.state_db)
    try:
        return [json.loads(v) for (v,) in conn.execute("SELECT value FROM frontier_checkpoints")]
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()


@pytest.mark.mediawiki
def test_a_seeds_file_crawl_enqueues_each_seed_as_its_start_request_and_a_rerun_skips_the_intake(
    mediawiki, tmp_path, crawl_database
):
    """On SQLite and on PostgreSQL (the frontier and the records in a throw-away database)."""
    articles = sorted(p.title for p in mediawiki.model.articles())[:40]
    ws = Workspace(tmp_path, database=crawl_database)
    ws.write_config(mediawiki.api_url)
    path = seeds_file(tmp_path / "seeds.txt", articles + [articles[0], "Not_a__page"])
    args = ("source=testwiki", f"seeds=@{path}", "max_depth=0")
    first = ws.crawl("mediawiki", *args, settings={"HOLOCRON_SEED_CHUNK_SIZE": "7"})
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Seed intake: seeds file" in first.stderr and "done: 42 seeds read in this run" in first.stderr
    items = ws.work_items()
    want = set(articles) | {"Not a page"}  # normalised as the start requests were
    assert Counter(i["resource_id"] for i in items) == Counter(want)
    assert {(i["depth"], i["status"], i["discovered_from"]) for i in items} == {(0, "completed", None)}
    assert {r["resource_id"] for r in ws.records()} >= set(articles)

    # what a start request would have become: compare with a seed given inline (no intake shortcut)
    inline = Workspace(tmp_path / "inline")
    inline.root.mkdir()
    inline.write_config(mediawiki.api_url)
    done = inline.crawl("mediawiki", "source=testwiki", f"seeds={articles[1]}", "max_depth=0")
    assert done.returncode == 0, done.stderr[-3000:]
    (one,) = inline.work_items()
    (same,) = [i for i in items if i["resource_id"] == articles[1]]
    for column in ("dedupe_key", "request_uri", "request_method", "request_headers", "metadata", "priority", "depth"):
        assert one[column] == same[column], column

    again = ws.crawl("mediawiki", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "was taken in by an earlier run (42 seeds); skipped" in again.stderr
    assert "'intake/skipped': 1" in again.stderr and "'intake/seeds'" not in again.stderr
    assert len(ws.work_items()) == len(items)


KILL_SEEDS = 4000


def start(ws: Workspace, args: tuple[str, ...], settings: dict[str, str], log, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    env.pop("HOLOCRON_CONFIG", None)
    return subprocess.Popen(
        ws.command("mediawiki", *args, settings=settings), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log
    )


@pytest.mark.mediawiki
@pytest.mark.slow
def test_kill_9_during_the_intake_then_rerun_enqueues_every_seed_once(mediawiki, tmp_path, crawl_database):
    """On SQLite and on PostgreSQL (the frontier and the records in a throw-away database)."""
    articles = sorted(p.title for p in mediawiki.model.articles())
    titles = articles + [f"Absent seed {i:05}" for i in range(KILL_SEEDS - len(articles))]
    ws = Workspace(tmp_path, database=crawl_database)
    ws.write_config(mediawiki.api_url)
    path = seeds_file(tmp_path / "seeds.txt", titles)
    args = ("source=testwiki", f"seeds=@{path}", "max_depth=0")
    settings = {"HOLOCRON_SEED_CHUNK_SIZE": "100", "HOLOCRON_FRONTIER_FLUSH_INTERVAL": "0.2"}
    # Killed runs: each store call takes 30 ms longer, so the intake (40 chunks) is under way for seconds.
    slow = {**settings, "SCHEDULER": "tests.support.slow_frontier.SlowStoreScheduler"}
    reached = []
    for run, at_least in enumerate((5, 20)):
        log_path = tmp_path / f"run{run}.log"
        with log_path.open("w") as log:
            proc = start(ws, args, slow, log, {"SLOW_STORE_SECONDS": "0.03"})
            deadline = time.monotonic() + 120
            while True:
                cps = checkpoints(ws)
                if cps and cps[0]["seeds"] >= at_least * 100 and not cps[0]["done"]:
                    break
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the intake did not get under way"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        (cp,) = checkpoints(ws)
        assert not cp["done"]
        reached.append(cp["seeds"])
        # the checkpoint never runs ahead of the work items: every seed it counts is in
        taken = {i["resource_id"] for i in ws.work_items()}
        assert set(titles[: cp["seeds"]]) <= taken
    assert "resuming seeds file" in (tmp_path / "run1.log").read_text()
    assert reached[1] > reached[0]

    done = ws.crawl("mediawiki", *args, settings=settings, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Seed intake: resuming seeds file" in done.stderr
    (cp,) = checkpoints(ws)
    assert cp["done"] and cp["seeds"] == KILL_SEEDS
    items = ws.work_items()
    counts = Counter(i["resource_id"] for i in items)
    assert set(counts) == set(titles) and max(counts.values()) == 1
    assert Counter(i["status"] for i in items) == Counter({"completed": KILL_SEEDS})
    assert {r["requested_id"] for r in ws.records()} >= set(titles)  # the crawl completed: every seed fetched

    again = ws.crawl("mediawiki", *args, settings=settings)
    assert again.returncode == 0 and "skipped" in again.stderr
    assert len(ws.work_items()) == KILL_SEEDS and not [i for i in ws.work_items() if i["status"] == PENDING]


@pytest.fixture
def edge_site(tmp_path):
    from tests.support.static_site import free_port, serve_directory, write_edge_site

    port = free_port()
    write_edge_site(tmp_path / "site", port)
    with serve_directory(tmp_path / "site", port) as (base, log):
        yield base, log


def test_the_http_spider_takes_a_seeds_file_in_once_and_checks_every_url_before_the_start(edge_site, tmp_path):
    from tests.test_spiders_http import http_config

    base, _ = edge_site
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    http_config(ws, "  - {name: site, type: http, delay: 0}\n")
    pages = ["index.html", "a.html", "b.html?x=1&y=2", "notes.txt", "deep/d1.html"]
    path = seeds_file(tmp_path / "urls.txt", [f"{base}/{p}" for p in pages] + [f"{base}/b.html?y=2&x=1#same"])
    first = ws.crawl("http", "source=site", f"seeds=@{path}", "max_depth=0", settings={"HOLOCRON_SEED_CHUNK_SIZE": "2"})
    assert first.returncode == 0, first.stderr[-3000:]
    want = {f"{base}/{p}" for p in pages}  # canonical URLs: the last seed is b.html again
    assert Counter(i["resource_id"] for i in ws.work_items()) == Counter(want)
    assert {i["depth"] for i in ws.work_items()} == {0}
    assert {r["resource_id"] for r in ws.records()} == want
    again = ws.crawl("http", "source=site", f"seeds=@{path}", "max_depth=0")
    assert again.returncode == 0 and "was taken in by an earlier run (6 seeds); skipped" in again.stderr
    assert len(ws.work_items()) == len(want)

    bad = seeds_file(tmp_path / "bad.txt", [f"{base}/index.html", "ftp://example.org/x", f"{base}/a.html"])
    fresh = Workspace(tmp_path / "fresh")
    fresh.root.mkdir()
    http_config(fresh, "  - {name: site, type: http, delay: 0}\n")
    refused = fresh.crawl("http", "source=site", f"seeds=@{bad}")
    assert refused.returncode == 2 and "expected an http(s) URL, got 'ftp://example.org/x'" in refused.stderr
    assert not fresh.state_db.exists() and not fresh.lake.exists()
