"""holocron_scrapy.settings: politeness is on by default, as a spider built from the project
settings and a config with no politeness keys sees it."""

from __future__ import annotations

import pytest
from scrapy.crawler import Crawler
from scrapy.settings import Settings

from holocron_scrapy import __version__
from holocron_scrapy.spiders.http import HttpSpider
from holocron_scrapy.spiders.mediawiki import WikipediaSpider


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
