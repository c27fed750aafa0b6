"""Shared fixtures. The local MediaWiki fixture lives in tests/support/mediawiki_fixture.py."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.mediawiki_fixture"]


@pytest.fixture
def sqlite_url(tmp_path):
    """A fresh SQLite store URL in a temp dir."""
    return f"sqlite:///{tmp_path / 'state.sqlite3'}"
