"""holocron_scrapy.addons: the Frontier add-on brings the frontier and nothing else, keeps a project's own
values; Holocron is the whole product; and a wheel installed into a fresh venv gives a third-party Scrapy
project a frontier that survives kill -9 with nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from holocron_scrapy import __version__, defaults
from holocron_scrapy.addons import FRONTIER_DEFAULTS, Frontier, Holocron, apply_addons, frontier_settings
from holocron_scrapy.errors import ConfigError
from tests.support.counting_site import counting_site
from tests.support.crawl import REPO

ACK = "holocron_scrapy.frontier.acks.FrontierAckMiddleware"
HAND_OFF = "holocron_scrapy.frontier.acks.FrontierHandOffMiddleware"
PROGRESS = "holocron_scrapy.extensions.progress.FrontierProgress"
SCHEDULER = "holocron_scrapy.frontier.scheduler.FrontierScheduler"
DUPEFILTER = "holocron_scrapy.frontier.dupefilter.FrontierDupeFilter"


def changed(before: Settings, after: Settings) -> set[str]:
    old, new = before.copy_to_dict(), after.copy_to_dict()
    return {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}


# -- the add-ons' settings ---------------------------------------------------------------------------
def test_the_frontier_add_on_sets_the_frontier_and_its_defaults_only():
    empty = Settings()
    settings = empty.copy()
    Frontier().update_settings(settings)
    assert changed(empty, settings) == {
        "SCHEDULER", "DUPEFILTER_CLASS", "SPIDER_MIDDLEWARES", "EXTENSIONS", *FRONTIER_DEFAULTS
    }
    assert settings.getdict("EXTENSIONS") == {PROGRESS: 540}
    assert settings.get("SCHEDULER") == SCHEDULER and settings.get("DUPEFILTER_CLASS") == DUPEFILTER
    assert settings.getdict("SPIDER_MIDDLEWARES") == {ACK: 10, HAND_OFF: 990}
    assert settings.get("HOLOCRON_STATE_URL") == defaults.STATE_URL
    assert settings.getint("HOLOCRON_FRONTIER_CLAIM_SIZE") == defaults.FRONTIER_CLAIM_SIZE
    assert settings.getfloat("HOLOCRON_FRONTIER_LEASE_SECONDS") == defaults.FRONTIER_LEASE_SECONDS
    assert settings.getint("HOLOCRON_DUPEFILTER_CACHE_SIZE") == defaults.DUPEFILTER_CACHE_SIZE
    component_dicts = {"SPIDER_MIDDLEWARES", "EXTENSIONS"}
    assert {settings.getpriority(name) for name in changed(empty, settings) - component_dicts} == {15}  # addon
    assert not {name for name in FRONTIER_DEFAULTS if name.startswith(("HOLOCRON_LAKE", "HOLOCRON_RECORDS"))}


def test_the_frontier_add_on_keeps_the_projects_own_values_and_components():
    from holocron_scrapy.frontier.acks import FrontierAckMiddleware

    project = {
        "HOLOCRON_STATE_URL": "postgresql+psycopg://crawler@db/frontier",
        "HOLOCRON_FRONTIER_CLAIM_SIZE": 7,
        "DOWNLOAD_DELAY": 0.3,
        "SPIDER_MIDDLEWARES": {"myproject.middlewares.Mine": 543, HAND_OFF: 800},  # their own order for one
        "ITEM_PIPELINES": {"myproject.pipelines.Store": 300},
        "EXTENSIONS": {"myproject.extensions.Watch": 100},
    }
    settings = Settings(project, priority="project")
    Frontier().update_settings(settings)
    assert settings.get("HOLOCRON_STATE_URL") == project["HOLOCRON_STATE_URL"]
    assert settings.getint("HOLOCRON_FRONTIER_CLAIM_SIZE") == 7 and settings.getfloat("DOWNLOAD_DELAY") == 0.3
    assert settings.getdict("SPIDER_MIDDLEWARES") == {"myproject.middlewares.Mine": 543, HAND_OFF: 800, ACK: 10}
    assert settings.getdict("ITEM_PIPELINES") == {"myproject.pipelines.Store": 300}
    assert settings.getdict("EXTENSIONS") == {"myproject.extensions.Watch": 100, PROGRESS: 540}
    assert settings.get("DOWNLOADER") == "scrapy.core.downloader.Downloader"  # politeness is Holocron's
    # A component disabled with None, or named by its class, stays as the project has it.
    settings = Settings({"SPIDER_MIDDLEWARES": {FrontierAckMiddleware: None}}, priority="project")
    Frontier().update_settings(settings)
    assert settings.getdict("SPIDER_MIDDLEWARES") == {FrontierAckMiddleware: None, HAND_OFF: 990}
    # The command line still wins; applying the add-on twice changes nothing.
    settings = Settings({"ADDONS": {"holocron_scrapy.addons.Frontier": 300}}, priority="project")
    settings.set("SCHEDULER", "tests.support.slow_frontier.SlowStoreScheduler", priority="cmdline")
    once = apply_addons(settings)
    twice = once.copy()
    Frontier().update_settings(twice)
    assert once.get("SCHEDULER") == "tests.support.slow_frontier.SlowStoreScheduler"
    assert not changed(once, twice)


def test_a_crawler_applies_the_frontier_add_on():
    crawler = get_crawler(settings_dict={"ADDONS": {"holocron_scrapy.addons.Frontier": 300}})
    s = crawler.settings
    assert s.get("SCHEDULER") == SCHEDULER and s.getdict("SPIDER_MIDDLEWARES") == {ACK: 10, HAND_OFF: 990}
    assert s.get("HOLOCRON_FRONTIER_ORDER") == defaults.FRONTIER_ORDER
    assert frontier_settings({"HOLOCRON_FRONTIER_ORDER": "dfs"}).get("HOLOCRON_FRONTIER_ORDER") == "dfs"


def test_the_frontier_scheduler_without_its_add_on_says_what_to_set(tmp_path):
    from holocron_scrapy.frontier.scheduler import FrontierScheduler

    crawler = get_crawler(settings_dict={"SCHEDULER": SCHEDULER, "DUPEFILTER_CLASS": DUPEFILTER})
    with pytest.raises(ConfigError, match=r"^SCHEDULER: .*ADDONS = \{'holocron_scrapy.addons.Frontier': 300\}"):
        FrontierScheduler.from_crawler(crawler)


#: What holocron_scrapy's settings.py set before the add-on existed: the Holocron add-on sets all of it.
PRODUCT = {
    "USER_AGENT": f"holocron_scrapy/{__version__} (contact not configured)",
    "SCHEDULER": SCHEDULER,
    "DUPEFILTER_CLASS": DUPEFILTER,
    "DOWNLOADER": "holocron_scrapy.downloader.PoliteDownloader",
    "REMOTE_CONTROL_ENABLED": False,
    "TELNETCONSOLE_ENABLED": False,
    "ROBOTSTXT_OBEY": True,
    "AUTOTHROTTLE_ENABLED": True,
    "AUTOTHROTTLE_START_DELAY": defaults.AUTOTHROTTLE_START_DELAY,
    "AUTOTHROTTLE_MAX_DELAY": defaults.AUTOTHROTTLE_MAX_DELAY,
    "AUTOTHROTTLE_TARGET_CONCURRENCY": defaults.AUTOTHROTTLE_TARGET_CONCURRENCY,
    "CONCURRENT_REQUESTS_PER_DOMAIN": defaults.CONCURRENCY_PER_HOST,
    "DOWNLOAD_DELAY": defaults.DOWNLOAD_DELAY,
    "RETRY_TIMES": defaults.RETRY_TIMES,
    "RETRY_HTTP_CODES": [408, 429, 500, 502, 503, 504],
    "COMPRESSION_ENABLED": True,
    "DELTAFETCH_ENABLED": False,
    "LOG_LEVEL": "INFO",
    "DEFAULT_DROPITEM_LOG_LEVEL": "DEBUG",
    "FEED_EXPORT_ENCODING": "utf-8",
    "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
}
PRODUCT_COMPONENTS = {
    "SPIDER_MIDDLEWARES": {ACK: 10, HAND_OFF: 990, "holocron_scrapy.middlewares.deltafetch.AsyncDeltaFetch": 100},
    "DOWNLOADER_MIDDLEWARES": {
        "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
        "holocron_scrapy.middlewares.retry.PoliteRetryMiddleware": 550,
        "holocron_scrapy.mediawiki.auth.BotLoginMiddleware": 560,
        "holocron_scrapy.web.auth.SourceAuthMiddleware": 580,
        "holocron_scrapy.middlewares.conditional.ConditionalRequestMiddleware": 585,
    },
    "ITEM_PIPELINES": {
        "holocron_scrapy.pipelines.changes.ChangeFilterPipeline": 200,
        "holocron_scrapy.pipelines.lake.JsonLakePipeline": 300,
        "holocron_scrapy.pipelines.records.IngestRecordsPipeline": 400,
    },
    "EXTENSIONS": {
        "holocron_scrapy.extensions.runs.RunSummary": 500,
        "holocron_scrapy.extensions.shutdown.GracefulShutdown": 510,
        "holocron_scrapy.extensions.collector.FreezeStartupObjects": 520,
        "holocron_scrapy.extensions.metrics.FleetMetrics": 530,
        "holocron_scrapy.extensions.progress.FrontierProgress": 540,
    },
}


def test_the_project_is_its_add_on():
    from holocron_scrapy import settings as module

    project = Settings()
    project.setmodule(module, priority="project")
    settings = apply_addons(project)
    for name, value in PRODUCT.items():
        assert settings[name] == value, name
    assert settings.getdict("DEFAULT_REQUEST_HEADERS") == {
        "Accept": "application/json, text/html;q=0.9, */*;q=0.8",
        "Accept-Encoding": "gzip, deflate",
    }
    for name, components in PRODUCT_COMPONENTS.items():
        assert settings.getdict(name) == components, name
    for name, value in FRONTIER_DEFAULTS.items():  # Holocron includes Frontier
        assert settings[name] == value, name
    assert settings.getfloat("HOLOCRON_RETRY_BACKOFF_MAX") == defaults.RETRY_BACKOFF_MAX
    # settings.py enables the add-on and sets nothing the add-on sets.
    own = {name for name in vars(module) if name.isupper()}
    assert own == {"BOT_NAME", "SPIDER_MODULES", "NEWSPIDER_MODULE", "COMMANDS_MODULE", "ADDONS", "LOG_LEVEL"}
    bare = Settings()
    Holocron().update_settings(bare)
    assert not own & changed(Settings(), bare)


# -- a wheel, a fresh venv, a third-party project ----------------------------------------------------------
PAGES = 300

THIRD_PARTY_SETTINGS = """\
BOT_NAME = "thirdparty"
SPIDER_MODULES = ["thirdparty.spiders"]
ADDONS = {{"holocron_scrapy.addons.Frontier": 300}}
HOLOCRON_STATE_URL = "sqlite:///{state}"
ITEM_PIPELINES = {{"thirdparty.pipelines.JsonLines": 300}}
CONCURRENT_REQUESTS = 2
DOWNLOAD_DELAY = 0.02
RANDOMIZE_DOWNLOAD_DELAY = False
HOLOCRON_FRONTIER_CLAIM_SIZE = 8
HOLOCRON_FRONTIER_PROGRESS_INTERVAL = 0
LOG_LEVEL = "INFO"
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
"""
THIRD_PARTY_SPIDER = """\
import scrapy


class Pages(scrapy.Spider):
    name = "pages"

    async def start(self):
        yield scrapy.Request(self.base + "/")

    def parse(self, response):
        if response.url.endswith("/"):
            yield from response.follow_all(css="a", callback=self.parse)
        else:
            yield {"url": response.url, "text": response.css("body::text").get()}
"""
THIRD_PARTY_PIPELINE = '''\
import json
import os


class JsonLines:
    """Their own storage: one line per item, written at once (line buffered)."""

    def open_spider(self):
        self.file = open(os.environ["ITEMS_FILE"], "a", buffering=1, encoding="utf-8")

    def close_spider(self):
        self.file.close()

    def process_item(self, item):
        self.file.write(json.dumps(dict(item)) + "\\n")
        return item
'''


def build_wheel(out: Path) -> Path:
    """``pip wheel`` of a copy of the checkout's packaged files (the build writes build/ and *.egg-info next
    to them: not into the checkout, where Scrapyd's egg build may run at the same time). The copy keeps
    ``holocron_scrapy/sql`` a symlink to ``sql/``, as in the checkout."""
    source = out.parent / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("holocron_scrapy", "sql"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    assert (source / "holocron_scrapy" / "sql").is_symlink()
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("holocron_scrapy-*.whl")
    return wheel


def write_project(root: Path, state: Path) -> None:
    package = root / "thirdparty"
    (package / "spiders").mkdir(parents=True)
    (root / "scrapy.cfg").write_text("[settings]\ndefault = thirdparty.settings\n", encoding="utf-8")
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "settings.py").write_text(THIRD_PARTY_SETTINGS.format(state=state), encoding="utf-8")
    (package / "pipelines.py").write_text(THIRD_PARTY_PIPELINE, encoding="utf-8")
    (package / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    (package / "spiders" / "pages.py").write_text(THIRD_PARTY_SPIDER, encoding="utf-8")


def venv_env(items: Path) -> dict[str, str]:
    """No path into this checkout, no setting of ours from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLOCRON_", "SCRAPY_", "PYTHON"))}
    env["ITEMS_FILE"] = str(items)
    return env


def item_urls(items: Path) -> list[str]:
    if not items.exists():
        return []
    return [json.loads(line)["url"] for line in items.read_text("utf-8").splitlines() if line.strip()]


@pytest.mark.slow
def test_a_third_party_project_with_the_installed_wheel_survives_kill_9(tmp_path):
    started = time.monotonic()
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # A fresh venv: the wheel's dependencies are resolved by pip (from its cache or the registry).
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    installed = time.monotonic() - started

    project, state = tmp_path / "project", tmp_path / "state.sqlite3"
    write_project(project, state)
    where = subprocess.run(
        [str(python), "-c", "import holocron_scrapy; print(holocron_scrapy.__file__)"],
        cwd=project,
        env=venv_env(tmp_path / "unused"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the wheel, not this checkout

    with counting_site(PAGES, latency=0.01) as site:
        crawl = [str(python), "-m", "scrapy", "crawl", "pages", "-a", f"base={site.base}"]
        first = tmp_path / "items-1.jsonl"
        with (tmp_path / "run-1.log").open("w") as log:
            proc = subprocess.Popen(crawl, cwd=project, env=venv_env(first), stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while len(item_urls(first)) < 60 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        killed_with = set(item_urls(first))
        assert 60 <= len(killed_with) < PAGES, (len(killed_with), (tmp_path / "run-1.log").read_text()[-3000:])

        second = tmp_path / "items-2.jsonl"
        with (tmp_path / "run-2.log").open("w") as log:
            rerun = subprocess.run(crawl, cwd=project, env=venv_env(second), stdout=log, stderr=subprocess.STDOUT)
        log_text = (tmp_path / "run-2.log").read_text()
        assert rerun.returncode == 0, log_text[-3000:]
        served = {path for _, path in site.arrivals}

    pages = {f"{site.base}/p/{n}" for n in range(PAGES)}
    resumed_with = set(item_urls(second))
    assert killed_with | resumed_with == pages  # no page lost across the kill
    assert len(resumed_with) < PAGES  # resumed, not started over
    assert {f"/p/{n}" for n in range(PAGES)} <= served  # every page was fetched at least once
    assert "Frontier open:" in log_text
    with sqlite3.connect(state) as db:
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM work_items GROUP BY status").fetchall())
    assert statuses == {"completed": PAGES + 1}  # the root page and every page, each completed once
    print(
        f"wheel built and installed into a fresh venv in {installed:.1f} s; items before the kill"
        f" {len(killed_with)}, after the rerun {len(resumed_with)} (of {PAGES})"
    )
