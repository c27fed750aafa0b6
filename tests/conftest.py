"""Shared fixtures. The local MediaWiki fixture lives in tests/support/mediawiki_fixture.py.

``vcr_settings`` and ``response`` override the fixtures of the scrapy-mock plugin (see
tests/support/cassettes.py): replay-only unless ``HOLOCRON_RECORD`` asks to record, and responses
keep status, headers, URL and their Scrapy class. ``cassette`` fetches Scrapy requests (with
their meta) through the test's cassette.

``scrapy_environment`` (autouse) restores Scrapy's environment variables after each test:
``get_project_settings()`` sets ``SCRAPY_SETTINGS_MODULE``, after which Scrapy takes any relative
data path as inside a project and looks for a scrapy.cfg above the test's working directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import vcr
from scrapy import Request
from scrapy.http import Response

from tests.support import cassettes

pytest_plugins = [
    "tests.support.mediawiki_fixture",
    "tests.support.sqlserver",
    "tests.support.postgres",
    "tests.support.frontier_items",
]


@pytest.fixture(autouse=True)
def scrapy_environment() -> Iterator[None]:
    before = {key: value for key, value in os.environ.items() if key.startswith("SCRAPY_")}
    yield
    for key in [key for key in os.environ if key.startswith("SCRAPY_")]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)


@pytest.fixture
def sqlite_url(tmp_path):
    """A fresh SQLite store URL in a temp dir."""
    return f"sqlite:///{tmp_path / 'state.sqlite3'}"


@pytest.fixture(scope="session")
def vcr_settings() -> vcr.VCR:
    """The session's VCR: cassettes in tests/fixtures/cassettes, replay only unless HOLOCRON_RECORD is set."""
    return cassettes.make_vcr()


@pytest.fixture
def cassette(request: pytest.FixtureRequest, vcr_settings: vcr.VCR) -> Iterator[cassettes.CassettePlayer]:
    """The test's cassette (``<module>.<test>.yaml``); ``cassette.fetch(scrapy_request)`` gives a response."""
    with cassettes.use_cassette(
        vcr_settings, cassettes.cassette_name(request.node), cassettes.live_api_from(request)
    ) as player:
        yield player


@pytest.fixture
def response(cassette: cassettes.CassettePlayer, url: str | Request) -> Response:
    """scrapy-mock's ``response`` (parametrize ``url``: a URL or a Scrapy request), but faithful."""
    return cassette.fetch(url)
