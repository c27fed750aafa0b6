"""Pytest fixtures for the real local MediaWiki test wiki.

Enable with ``pytest_plugins = ["tests.support.mediawiki_fixture"]`` in
``tests/conftest.py``.

* ``mediawiki`` (session): one wiki served for the whole session.  Treat it as
  read-only: its content is what ``mediawiki.model`` says.  Tests that edit
  pages should use ``fresh_mediawiki`` (or restore what they changed).
* ``fresh_mediawiki`` (function): a private copy of the same wiki on its own
  server (~1 s: the build is cached), for tests that edit.
* ``bot_mediawiki`` (module): a private copy with two bots: ``bot_mediawiki.bot`` (grants
  ``basic,highvolume``: ``apihighlimits``) and ``bot_mediawiki.slow_bot`` (``basic`` only).

Both skip only when php or MediaWiki is not installed; any other problem is an
error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import mediawiki_server as ms
from tests.support import wikigen


@dataclass
class MediaWiki:
    """A served test wiki and its ground truth."""

    api_url: str
    model: wikigen.WikiModel
    install: ms.WikiInstall
    server: ms.RunningWiki

    def edit_page(self, title: str, text: str, summary: str = "") -> ms.EditResult:
        """Save ``text`` to ``title`` via ``maintenance/edit.php``; checks the API sees the new revision."""
        return ms.edit_page(self.install, title, text, summary, api_url=self.api_url)

    def set_lag(self, seconds: float | None) -> None:
        """Make the API report ``seconds`` of database lag (None: none) for ``maxlag`` tests."""
        self.server.set_lag(seconds)

    def api(self, **params: str) -> dict:
        """GET the API (``format=json&formatversion=2`` added) and return its JSON."""
        return self.server.api(**params)

    def create_bot(self, name: str, **kwargs: Any) -> ms.BotLogin:
        """A bot account with a BotPassword (grants ``basic,highvolume`` unless told): see
        :func:`tests.support.mediawiki_server.create_bot`. Changes the wiki: use a private copy."""
        return ms.create_bot(self.install, name, **kwargs)

    def session_ids(self) -> list[str]:
        """The values of every session cookie the wiki has handed out and still holds."""
        return ms.session_ids(self.install)

    def end_sessions(self) -> int:
        """Drop every session (as if they had expired); returns how many."""
        return ms.end_sessions(self.install)


def _skip_if_unavailable() -> None:
    reason = ms.unavailable_reason()
    if reason:
        pytest.skip(f"real MediaWiki tests need php and Debian's mediawiki package: {reason}")


@pytest.fixture(scope="session")
def mediawiki_dump(tmp_path_factory: pytest.TempPathFactory) -> tuple[wikigen.WikiModel, Path]:
    """The generated model and its XML dump file (built once per session)."""
    model = wikigen.build_model()
    path = model.write_dump(tmp_path_factory.mktemp("mediawiki-dump") / "holocron-dump.xml")
    return model, path


def _served(workdir: Path, model: wikigen.WikiModel, dump: Path) -> Iterator[MediaWiki]:
    install = ms.build_wiki(workdir, dump)
    with ms.serve(install) as server:
        yield MediaWiki(api_url=server.api_url, model=model, install=install, server=server)


@pytest.fixture(scope="session")
def mediawiki(
    tmp_path_factory: pytest.TempPathFactory, mediawiki_dump: tuple[wikigen.WikiModel, Path]
) -> Iterator[MediaWiki]:
    """The session-wide served test wiki (``api_url``, ``model``, ``install``, ``edit_page``)."""
    _skip_if_unavailable()
    model, dump = mediawiki_dump
    yield from _served(tmp_path_factory.mktemp("mediawiki"), model, dump)


@pytest.fixture
def fresh_mediawiki(
    tmp_path_factory: pytest.TempPathFactory, mediawiki_dump: tuple[wikigen.WikiModel, Path]
) -> Iterator[MediaWiki]:
    """A private copy of the test wiki on its own server, for tests that edit."""
    _skip_if_unavailable()
    model, dump = mediawiki_dump
    yield from _served(tmp_path_factory.mktemp("mediawiki-fresh"), model, dump)


@dataclass
class BotWiki(MediaWiki):
    """A private wiki with bot accounts (see ``bot_mediawiki``)."""

    bot: ms.BotLogin | None = None
    slow_bot: ms.BotLogin | None = None


@pytest.fixture(scope="module")
def bot_mediawiki(
    tmp_path_factory: pytest.TempPathFactory, mediawiki_dump: tuple[wikigen.WikiModel, Path]
) -> Iterator[BotWiki]:
    """A private copy of the test wiki (for one test module) with a bot that has ``apihighlimits``
    (``.bot``) and one without (``.slow_bot``, BotPassword grant ``basic`` only)."""
    _skip_if_unavailable()
    model, dump = mediawiki_dump
    install = ms.build_wiki(tmp_path_factory.mktemp("mediawiki-bots"), dump)
    bot = ms.create_bot(install, "HolocronBot", grants=("basic", "highvolume"))
    slow = ms.create_bot(install, "HolocronSlowBot", grants=("basic",))
    with ms.serve(install) as server:
        yield BotWiki(api_url=server.api_url, model=model, install=install, server=server, bot=bot, slow_bot=slow)
