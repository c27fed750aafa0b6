"""The MediaWiki spider end to end: real ``scrapy crawl`` against the real local MediaWiki."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.support.crawl import Workspace
from tests.support.wikigen import namespace_of

pytestmark = pytest.mark.mediawiki


def stored_keys(records: list[dict]) -> Counter:
    return Counter(r["resource_id"] for r in records)


def check_against_oracle(
    ws: Workspace,
    model,
    seeds: list[str],
    max_depth: int,
    namespaces: tuple[int, ...] = (0,),
    links: bool = True,
    categories: bool = False,
) -> dict:
    expected = model.reachable(seeds, max_depth, namespaces, follow_links=links, follow_categories=categories)
    records = ws.records()
    counts = stored_keys(records)
    assert set(counts) == set(expected), (
        f"missing: {sorted(set(expected) - set(counts))[:10]} extra: {sorted(set(counts) - set(expected))[:10]}"
    )
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1][:10]
    by_key = {r["resource_id"]: r for r in records}
    for key, truth in expected.items():
        assert by_key[key]["outcome"] == truth["outcome"], key
        if truth["outcome"] == "ok":
            payload = json.loads(by_key[key]["payload"])
            got = sorted(link["title"] for link in payload.get("links", []))
            want = sorted(t for t in model.pages[key].links if namespace_of(t) in namespaces)
            assert got == want, f"links of {key}: {len(got)} stored, {len(want)} expected"
            assert sorted(c["title"] for c in payload.get("categories", [])) == sorted(model.pages[key].categories)
    docs = ws.lake_documents()
    assert sorted(d["metadata"]["resource_id"] for d in docs) == sorted(counts)
    return expected


def test_crawl_stores_exactly_the_reachable_pages(mediawiki, tmp_path, crawl_database):
    """On SQLite files and with the frontier and the records on the live PostgreSQL."""
    ws = Workspace(tmp_path, database=crawl_database)
    ws.write_config(mediawiki.api_url)
    seeds = ["Hub Alpha", "Ωmega Station", "Loop Alpha", "Self Reference", "No Such Page Anywhere", "Foo<Bar"]
    seeds += [d[0] for d in mediawiki.model.double_redirects[:2]]
    proc = ws.crawl("mediawiki", "source=testwiki", "seeds=" + "|".join(seeds), "max_depth=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = check_against_oracle(ws, mediawiki.model, seeds, 2)
    assert len(expected) > 500
    outcomes = Counter(r["outcome"] for r in ws.records())
    assert outcomes["redirect_loop"] == 2 and outcomes["invalid"] == 1 and outcomes["missing"] >= 1
    (run,) = ws.runs()
    # pages_stored counts pages fetched with outcome ok (missing/invalid/redirect_loop titles are counted apart)
    assert run["status"] == "completed" and run["pages_stored"] == outcomes["ok"]
    # Every work item was settled, and the resolved redirect targets are known.
    items = ws.work_items()
    assert {i["status"] for i in items} == {"completed"}
    assert "Run " in proc.stderr and " completed: " in proc.stderr
    if ws.database:  # both stores were on the server: no SQLite file was made
        assert not ws.records_db.exists() and not ws.state_db.exists()


@pytest.mark.parametrize(
    ("discover", "namespaces", "links", "categories"),
    [
        ("none", "0", False, False),
        ("categories", "0", False, True),
        ("both", "0|1|4|14", True, True),
    ],
)
def test_discovery_modes_and_namespaces(mediawiki, tmp_path, discover, namespaces, links, categories):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    seeds = ["Ωmega Station", "Hub Beta 1"]
    proc = ws.crawl(
        "mediawiki", "source=testwiki", "seeds=" + "|".join(seeds), "max_depth=1",
        f"discover={discover}", f"namespaces={namespaces}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    spaces = tuple(int(n) for n in namespaces.split("|"))
    expected = check_against_oracle(ws, mediawiki.model, seeds, 1, spaces, links, categories)
    depth1 = {key for key, truth in expected.items() if truth["depth"] == 1}
    if discover == "none":
        assert not depth1
    else:
        assert depth1 and (not categories or any(k.startswith("Category:") for k in depth1))


def test_rerun_fetches_and_stores_nothing_new(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)
    args = ("source=testwiki", "seeds=Ωmega Station", "max_depth=1")
    assert ws.crawl("mediawiki", *args).returncode == 0
    first = len(ws.records())
    again = ws.crawl("mediawiki", *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(ws.records()) == first
    stats = json.loads(ws.runs()[-1]["summary"])
    assert stats["downloader/request_count"] == 1 and stats["mediawiki/probe/ok"] == 1  # the API probe only


def test_wikipedia_spider_uses_its_source_and_batches(mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(
        mediawiki.api_url,
        extra_source=(f"  - name: wikipedia\n    type: mediawiki\n    api_url: {mediawiki.api_url}\n    delay: 0\n"),
    )
    titles = sorted(t for t, p in mediawiki.model.pages.items() if p.ns == 0 and p.redirect is None)[:120]
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# titles\n" + "\n".join(titles) + "\n\n", encoding="utf-8")
    proc = ws.crawl("wikipedia", f"seeds=@{seeds}", "max_depth=0", "batch_size=50")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(stored_keys(ws.records())) == titles
    assert ws.runs()[0]["requests"] == 1 + 3  # the API probe, then 120 titles in batches of 50
    assert {r["source_name"] for r in ws.records()} == {"wikipedia"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("source=testwiki", "seeds="), "no seeds given"),
        (("source=testwiki", "seeds=@/nonexistent/seeds.txt"), "does not exist"),
        (("source=testwiki", "seeds=A", "max_depth=-1"), "max_depth: must be at least 0, got -1"),
        (("source=testwiki", "seeds=A", "batch_size=51"), "batch_size: must be between 1 and 50, got 51"),
        (("source=nosuchwiki", "seeds=A"), "unknown source 'nosuchwiki'"),
        (("source=testwiki", "seeds=A", "discover=everything"), "discover: expected one of"),
    ],
)
def test_bad_input_fails_before_any_request(tmp_path, args, message):
    ws = Workspace(tmp_path)
    ws.write_config("http://127.0.0.1:9/api.php")
    proc = ws.crawl("mediawiki", *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not ws.lake.exists() and not ws.records_db.exists() and not ws.state_db.exists()


def test_malformed_yaml_fails_naming_the_file(tmp_path):
    ws = Workspace(tmp_path)
    ws.config.write_text("sources: [\n  - name: x\n", encoding="utf-8")
    proc = ws.crawl("mediawiki", "source=x", "seeds=A")
    assert proc.returncode != 0
    assert f"{ws.config}: malformed YAML" in proc.stderr
    assert not ws.lake.exists()


def test_wikimedia_without_contact_refuses_to_start(tmp_path):
    ws = Workspace(tmp_path)
    ws.config.write_text(
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
        "sources:\n  - {name: wikipedia, type: mediawiki, api_url: 'https://en.wikipedia.org/w/api.php'}\n",
        encoding="utf-8",
    )
    proc = ws.crawl("wikipedia", "seeds=Star Wars")
    assert proc.returncode != 0
    assert "Wikimedia sites require a contact" in proc.stderr
    assert not ws.lake.exists()


# -- bot login (issue 11, part 4) ----------------------------------------------------------------
BOT_ENV = "HOLOCRON_TEST_BOT_PASSWORD"
BOT_SEEDS = "seeds=Hub Alpha|Ωmega Station"


def bot_workspace(tmp_path, wiki, username: str, *, extra: str = "") -> Workspace:
    ws = Workspace(tmp_path)
    ws.write_config(
        wiki.api_url,
        extra_source=(
            f"  - name: botwiki\n    type: mediawiki\n    api_url: {wiki.api_url}\n    delay: 0\n    concurrency: 3\n"
            f"    auth: {{type: botpassword, username: '{username}', password_env: {BOT_ENV}}}\n{extra}"
        ),
    )
    return ws


def high_limit_bound(ws: Workspace) -> tuple[int, dict]:
    """``max(Σ levels ⌈pages at level/500⌉, ⌈links/5000⌉, ⌈categories/5000⌉)`` of what was stored."""
    levels = Counter(i["depth"] for i in ws.work_items() if i["status"] == "completed" and i["attempt"] > 0)
    links = categories = 0
    for record in ws.records():
        if record["outcome"] == "ok":
            page = json.loads(record["payload"])
            links += len(page.get("links", []))
            categories += len(page.get("categories", []))
    bound = max(sum(-(-n // 500) for n in levels.values()), -(-links // 5000), -(-categories // 5000))
    return bound, {"levels": dict(levels), "links": links, "categories": categories}


def secret_leaks(ws: Workspace, output: str, secret_values: list[str]) -> list[str]:
    """Where any of *secret_values* appears: the crawl's output, lake files, records, work items."""
    places = {"output": output}
    for path in ws.lake.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_text("utf-8", errors="replace")
    places["records"] = json.dumps(ws.records(), default=str) + json.dumps(ws.runs(), default=str)
    places["work_items"] = json.dumps(ws.work_items(), default=str)
    for db in (ws.records_db, ws.state_db):
        for path in db.parent.glob(db.name + "*"):  # the files themselves, -wal included
            places[str(path)] = path.read_bytes().decode("latin-1")
    return [f"{value[:4]}… in {where}" for value in secret_values for where, text in places.items() if value in text]


def test_bot_crawl_uses_the_high_limits(bot_mediawiki, tmp_path, monkeypatch):
    """A bot with apihighlimits: every page stored with complete links, in at most 1.5x the
    high-limit bound plus the login round trips; no password or session cookie stored or logged."""
    monkeypatch.setenv(BOT_ENV, bot_mediawiki.bot.password)
    ws = bot_workspace(tmp_path, bot_mediawiki, bot_mediawiki.bot.username)
    proc = ws.crawl("mediawiki", "source=botwiki", BOT_SEEDS, "max_depth=4", settings={"LOG_LEVEL": "DEBUG"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_against_oracle(ws, bot_mediawiki.model, ["Hub Alpha", "Ωmega Station"], 4)
    assert "Logged in as HolocronBot: 500 titles per request" in proc.stderr
    (run,) = ws.runs()
    stats = json.loads(run["summary"])
    assert stats["mediawiki/login/ok"] == 1 and stats["mediawiki/login/high_limits"] == 1
    bound, figures = high_limit_bound(ws)
    login_round_trips = 3  # login token, action=login, meta=userinfo
    content = run["requests"] - 1 - login_round_trips  # the API probe, the login
    print(f"bot crawl: {run['requests']} requests, {content} for content, bound {bound} ({figures})")
    assert content <= 1.5 * bound, (content, bound, figures)
    assert stats["downloader/request_method_count/POST"] == 1  # the password travels only in action=login's body
    sessions = bot_mediawiki.session_ids()
    assert sessions
    assert not secret_leaks(ws, proc.stdout + proc.stderr, [bot_mediawiki.bot.password, *sessions])


def test_bot_wrong_password_stops_before_any_content_request(bot_mediawiki, tmp_path, monkeypatch):
    wrong = "0" * 16 + "wrongpasswordabc"
    monkeypatch.setenv(BOT_ENV, wrong)
    ws = bot_workspace(tmp_path, bot_mediawiki, bot_mediawiki.bot.username)
    proc = ws.crawl("mediawiki", "source=botwiki", BOT_SEEDS, "max_depth=1", settings={"LOG_LEVEL": "DEBUG"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Bot login failed: login as HolocronBot@holocron failed: Failed: Incorrect username or password" in (
        proc.stderr
    )
    assert wrong not in proc.stdout + proc.stderr
    (run,) = ws.runs()
    stats = json.loads(run["summary"])
    assert run["status"] == "failed" and run["finish_reason"] == "fatal_login"
    assert run["requests"] == 3 and stats["mediawiki/login/failed"] == 1  # probe, login token, action=login
    assert not ws.records() and not ws.lake_documents()
    assert not [i for i in ws.work_items() if i["status"] != "pending"]
    assert not secret_leaks(ws, proc.stdout + proc.stderr, [wrong])


def test_bot_without_apihighlimits_stays_at_50(bot_mediawiki, tmp_path, monkeypatch):
    monkeypatch.setenv(BOT_ENV, bot_mediawiki.slow_bot.password)
    ws = bot_workspace(tmp_path, bot_mediawiki, bot_mediawiki.slow_bot.username)
    titles = sorted(t for t, p in bot_mediawiki.model.pages.items() if p.ns == 0 and p.redirect is None)[:120]
    proc = ws.crawl("mediawiki", "source=botwiki", "seeds=" + "|".join(titles), "max_depth=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("lacks apihighlimits") == 1
    assert "Account HolocronSlowBot@holocron lacks apihighlimits" in proc.stderr
    assert sorted(stored_keys(ws.records())) == titles
    assert ws.runs()[0]["requests"] == 1 + 3 + 3  # the API probe, the login, 120 titles in batches of 50


def test_bot_batch_size_above_what_the_account_may_use_stops(bot_mediawiki, tmp_path, monkeypatch):
    monkeypatch.setenv(BOT_ENV, bot_mediawiki.slow_bot.password)
    ws = bot_workspace(tmp_path, bot_mediawiki, bot_mediawiki.slow_bot.username, extra="    batch_size: 200\n")
    proc = ws.crawl("mediawiki", "source=botwiki", BOT_SEEDS, "max_depth=0")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (
        "batch_size: batch_size 200 needs a bot account with apihighlimits; HolocronSlowBot@holocron lacks it"
        in proc.stderr
    )
    (run,) = ws.runs()
    assert run["finish_reason"] == "fatal_batch_size" and not ws.records()


def test_bot_logs_in_again_when_the_session_ends(bot_mediawiki, tmp_path, monkeypatch):
    """The wiki forgets every session mid-crawl: the next answer is assertuserfailed, the spider
    logs in once more and sends the request again; nothing is lost or fails."""
    import threading
    import time

    monkeypatch.setenv(BOT_ENV, bot_mediawiki.bot.password)
    ws = bot_workspace(tmp_path, bot_mediawiki, bot_mediawiki.bot.username, extra="    batch_size: 5\n")
    ended: list[int] = []
    done = threading.Event()

    def end_sessions_midway() -> None:
        while not done.is_set():
            if ws.record_count() >= 20:
                ended.append(bot_mediawiki.end_sessions())
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=end_sessions_midway)
    watcher.start()
    try:
        proc = ws.crawl("mediawiki", "source=botwiki", BOT_SEEDS, "max_depth=1", settings={"LOG_LEVEL": "DEBUG"})
    finally:
        done.set()
        watcher.join()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ended and ended[0] >= 1
    check_against_oracle(ws, bot_mediawiki.model, ["Hub Alpha", "Ωmega Station"], 1)
    (run,) = ws.runs()
    stats = json.loads(run["summary"])
    assert (
        stats["mediawiki/login/relogins"] >= 1 and stats["mediawiki/login/ok"] == 1 + stats["mediawiki/login/relogins"]
    )
    assert run["pages_failed"] == 0
    assert not secret_leaks(ws, proc.stdout + proc.stderr, [bot_mediawiki.bot.password, *bot_mediawiki.session_ids()])
