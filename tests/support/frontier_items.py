"""Work items for frontier store tests: one MediaWiki title each, and a store on every backend."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from holocron_scrapy.frontier.store import NewItem, WorkItemStore, open_work_item_store


def title_items(titles: Iterable[str]) -> list[NewItem]:
    """The pending work item of each MediaWiki title of source ``wiki``."""
    return [
        NewItem(
            dedupe_key=f"mediawiki:wiki:page:{title}",
            source_system="mediawiki",
            source_name="wiki",
            resource_type="page",
            resource_id=title,
            request_uri=f"http://w/api.php?titles={title}",
        )
        for title in titles
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_work_item_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[WorkItemStore]:
    """A frontier store on SQLite, then on the live PostgreSQL (a throw-away database)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 's.db'}"
    store = open_work_item_store(url)
    yield store
    store.close()
