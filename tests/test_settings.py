"""holocron_scrapy.settings: politeness is on by default, as a spider built from the project
settings and a config with no politeness keys sees it; a crawl opens no control port."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from scrapy.crawler import Crawler
from scrapy.settings import Settings

from holocron_scrapy import __version__
from holocron_scrapy.addons import apply_addons
from holocron_scrapy.spiders.http import HttpSpider
from holocron_scrapy.spiders.mediawiki import WikipediaSpider
from tests.support.crawl import REPO
from tests.support.static_site import serve_directory


def project_crawler(spidercls, tmp_path):
    config = tmp_path / "holocron.yaml"
    config.write_text(
        "contact: ops@example.org\n"
        f"storage: {{lake_dir: {tmp_path / 'lake'}, records_url: 'sqlite:///{tmp_path / 'r.sqlite3'}'}}\n"
        "sources:\n  - {name: wikipedia, type: mediawiki, api_url: 'https://en.wikipedia.org/w/api.php'}\n"
        "  - {name: site, type: http}\n",
        encoding="utf-8",
    )
    settings = Settings()
    settings.setmodule("holocron_scrapy.settings", priority="project")
    settings = apply_addons(settings)  # what the crawler applies after the spider (scalars: same priorities)
    settings.set("HOLOCRON_CONFIG", str(config), priority="cmdline")
    return Crawler(spidercls, settings)  # settings still open, as when scrapy crawl builds the spider


@pytest.mark.parametrize(
    ("spidercls", "kwargs", "robots"),
    [
        (WikipediaSpider, {"seeds": "Star Wars"}, False),  # the API is for bots; robots.txt is for pages
        (HttpSpider, {"source": "site", "seeds": "https://example.org/"}, True),
    ],
)
def test_politeness_is_on_by_default(tmp_path, spidercls, kwargs, robots):
    crawler = project_crawler(spidercls, tmp_path)
    spidercls.from_crawler(crawler, **kwargs)
    s = crawler.settings
    assert s.getbool("AUTOTHROTTLE_ENABLED") and s.getbool("ROBOTSTXT_OBEY") is robots
    assert s.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == 3 and s.getfloat("DOWNLOAD_DELAY") == 1.0
    assert s.get("DOWNLOADER") == "holocron_scrapy.downloader.PoliteDownloader"  # the limit holds at delay 0
    assert "gzip" in s.getdict("DEFAULT_REQUEST_HEADERS")["Accept-Encoding"]
    assert s.get("USER_AGENT") == f"holocron_scrapy/{__version__} (ops@example.org)"


def test_command_line_settings_still_win(tmp_path):
    crawler = project_crawler(WikipediaSpider, tmp_path)
    crawler.settings.set("CONCURRENT_REQUESTS_PER_DOMAIN", 1, priority="cmdline")
    WikipediaSpider.from_crawler(crawler, seeds="Star Wars")
    assert crawler.settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == 1


def test_retry_codes_are_short_and_every_5xx_is_transient():
    import pprint

    from holocron_scrapy.failures import classify_status

    project = Settings()
    project.setmodule("holocron_scrapy.settings", priority="project")
    codes = apply_addons(project).getlist("RETRY_HTTP_CODES")
    assert 404 not in codes and "\n" not in pprint.pformat({"RETRY_HTTP_CODES": codes})
    assert all(classify_status(status, frozenset(codes)).transient for status in (408, 429, *range(500, 600)))


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("HOLOCRON_FRONTIER_ORDER", "bsf", "HOLOCRON_FRONTIER_ORDER: expected bfs or dfs, got 'bsf'"),
        ("HOLOCRON_FRONTIER_CLAIM_SIZE", "abc", "HOLOCRON_FRONTIER_CLAIM_SIZE: expected an integer, got 'abc'"),
        ("HOLOCRON_FRONTIER_MAX_ATTEMPTS", "0", "HOLOCRON_FRONTIER_MAX_ATTEMPTS: must be at least 1, got '0'"),
        ("HOLOCRON_FRONTIER_LEASE_SECONDS", "0", "HOLOCRON_FRONTIER_LEASE_SECONDS: must be more than 0"),
        ("HOLOCRON_FRONTIER_FILL_BATCHES", "maybe", "expected true or false"),
        ("HOLOCRON_STATE_URL", "ftp://x", "unknown store URL scheme 'ftp'"),
        ("HOLOCRON_RECORDS_URL", "records.sqlite3", "HOLOCRON_RECORDS_URL: not a URL"),
        ("HOLOCRON_RECRAWL_AFTER", "soon", "HOLOCRON_RECRAWL_AFTER"),
        ("HOLOCRON_RUN_ID", "../escape", "HOLOCRON_RUN_ID: expected letters"),
        (
            "HOLOCRON_NOTIFY_WEBHOOK",
            "hooks.example.org/x?token=t0k",
            "HOLOCRON_NOTIFY_WEBHOOK: expected an http(s) URL",
        ),
    ],
)
def test_settings_are_checked_with_one_clear_error(name, value, problem):
    from holocron_scrapy.errors import ConfigError
    from holocron_scrapy.settings_check import check_settings

    with pytest.raises(ConfigError) as info:
        check_settings(Settings({name: value}))
    assert problem in str(info.value) and "t0k" not in str(info.value)


def test_good_settings_pass_and_unknown_ones_are_warned_about(tmp_path, caplog):
    from holocron_scrapy.settings_check import check_settings

    good = {
        "HOLOCRON_FRONTIER_ORDER": "dfs",
        "HOLOCRON_FRONTIER_CLAIM_SIZE": "5",
        "HOLOCRON_FRONTIER_RETRY_BACKOFF": 0,
        "HOLOCRON_FRONTIER_FILL_BATCHES": "false",
        "HOLOCRON_LAKE_DIR": str(tmp_path / "new" / "lake"),
        "HOLOCRON_STATE_URL": f"sqlite:///{tmp_path}/s.sqlite3",
        "HOLOCRON_RECRAWL_AFTER": 3600,
        "HOLOCRON_SHUTDOWN_TIMEOUT": "30",
        "HOLOCRON_FRONTEIR_ORDER": "dfs",
        "HOLOCRON_COMPLETELY_DIFFERENT": "1",
    }
    with caplog.at_level("WARNING", logger="holocron_scrapy.settings_check"):
        check_settings(Settings(good))
    assert not (tmp_path / "new").exists()  # checked, not created
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Unknown setting HOLOCRON_COMPLETELY_DIFFERENT is ignored",
        "Unknown setting HOLOCRON_FRONTEIR_ORDER is ignored; did you mean HOLOCRON_FRONTIER_ORDER?",
    ]


def test_spider_arguments_are_checked(tmp_path):
    from holocron_scrapy.errors import ConfigError

    crawler = project_crawler(HttpSpider, tmp_path)
    with pytest.raises(
        ConfigError, match=r"-a max_dept: unknown argument of the 'http' spider \(did you mean max_depth"
    ):
        HttpSpider.from_crawler(crawler, source="site", seeds="https://example.org/", max_dept="0")
    crawler = project_crawler(WikipediaSpider, tmp_path)
    spider = WikipediaSpider.from_crawler(crawler, seeds="Star Wars", max_depth="0", _job="abc")  # Scrapyd's _job
    assert spider.options.max_depth == 0


def test_a_crawl_opens_no_remote_control_or_telnet_port(tmp_path):
    """``scrapy crawl`` with the project's settings only (no ``-s``): Scrapy's RemoteControl (an HTTP
    server that runs posted Python code, its token written to a job file in the user's profile) and
    telnet console extensions stay off, so the crawl opens no listening port."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><body><p>One page.</p></body></html>", encoding="utf-8")
    config = tmp_path / "holocron.yaml"
    config.write_text(
        "contact: tests@example.org\n"
        f"storage: {{lake_dir: {tmp_path / 'lake'}, records_url: 'sqlite:///{tmp_path / 'r.sqlite3'}'}}\n"
        f"state: {{url: 'sqlite:///{tmp_path / 's.sqlite3'}'}}\n"
        "sources:\n  - {name: site, type: http, delay: 0}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    with serve_directory(site) as (base, _log):
        cmd = [sys.executable, "-m", "scrapy", "crawl", "http", "-s", f"HOLOCRON_CONFIG={config}"]
        cmd += ["-a", "source=site", "-a", f"seeds={base}/index.html", "-a", "max_depth=0"]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scrapy.extensions.corestats.CoreStats" in proc.stderr  # the "Enabled extensions" list was logged
    assert "RemoteControl" not in proc.stderr and "Remote control" not in proc.stderr
    assert "TelnetConsole" not in proc.stderr and "Telnet console" not in proc.stderr
