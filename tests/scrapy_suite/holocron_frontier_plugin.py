"""A pytest plugin that makes the SQL frontier Scrapy's default, for Scrapy's own test suite.

Loaded with ``-p holocron_frontier_plugin`` (this directory and the repository root on
``PYTHONPATH``) by :mod:`tests.test_scrapy_suite`, in a copy of Scrapy's sdist test suite. It patches
:mod:`scrapy.settings.default_settings` before any test builds a ``Settings``: its ``ADDONS`` gain

* :class:`holocron_scrapy.addons.Frontier` (priority 0), as any Scrapy project would enable it: the
  scheduler, the dupe filter, the ack and hand-off middlewares and the progress line, at ``addon``
  priority (a test's own settings win);
* :class:`FreshState` (priority 1, after it): each crawler gets its own new SQLite state file
  (``HOLOCRON_STATE_URL``) in a directory removed at the end of the session.

Nothing else changes: no holocron settings module, no config file. At the end of the session the
number of state databases the frontier opened (one per crawl that reached its scheduler) is written to
the file named by ``HOLOCRON_SCRAPY_SUITE_REPORT``, if set: proof that the crawls ran through it.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from scrapy.settings import default_settings

_STATE_DIR = Path(tempfile.mkdtemp(prefix="holocron-scrapy-suite-"))
_COUNTER = itertools.count()


class FreshState:
    """Add-on: a new SQLite state database for every crawler."""

    def update_settings(self, settings: Any) -> None:
        path = _STATE_DIR / f"state-{next(_COUNTER)}.sqlite3"
        settings.set("HOLOCRON_STATE_URL", f"sqlite:///{path}", priority="addon")


def _patch_defaults() -> None:
    default_settings.ADDONS = {
        **default_settings.ADDONS,
        "holocron_scrapy.addons.Frontier": 0,
        f"{__name__}.FreshState": 1,  # after Frontier, whose default state URL it replaces
    }


_patch_defaults()


def pytest_unconfigure(config: Any) -> None:
    report = os.environ.get("HOLOCRON_SCRAPY_SUITE_REPORT")
    if report:
        opened = len(list(_STATE_DIR.glob("state-*.sqlite3")))
        Path(report).write_text(json.dumps({"frontier_states": opened}), encoding="utf-8")
    shutil.rmtree(_STATE_DIR, ignore_errors=True)
