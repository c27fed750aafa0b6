"""holocron_scrapy.extensions.progress: the frontier's progress line, read off the reactor."""

from __future__ import annotations

import pytest
from scrapy.exceptions import NotConfigured
from scrapy.utils.test import get_crawler

from holocron_scrapy.extensions.progress import FrontierProgress, progress_line
from holocron_scrapy.frontier.contract import ids_of
from holocron_scrapy.frontier.store import Scope
from tests.test_frontier_scheduler import PageSpider, make, page


def test_the_line_counts_the_crawls_source_and_its_rate_since_the_first_line():
    counts = {
        "w": {"pending": 10, "in_progress": 2, "completed": 30, "failed": 1},
        "other": {"pending": 500, "in_progress": 0, "completed": 0, "failed": 0},
    }
    line, done = progress_line(counts, Scope("mediawiki", "w"), base=(0.0, 20), now=120.0)
    assert done == 30
    assert line == "Frontier progress: done=30 pending=10 in_progress=2 failed=1 | 5.0 pages/min | ETA 2.4 min"
    line, _ = progress_line(counts, None, base=(0.0, 30), now=60.0)  # a foreign spider: every source
    assert "pending=510" in line and "0.0 pages/min | ETA unknown" in line


def test_a_line_from_the_stores_counts(tmp_path, caplog):
    crawler, s = make(tmp_path, HOLOCRON_FRONTIER_PROGRESS_INTERVAL=60)
    progress = FrontierProgress.from_crawler(crawler)
    for title in "ABC":
        s.enqueue_request(page(title))
    first = s.next_request()
    progress.tick()  # the first line sets the base of the rate
    s.ack(list(ids_of(first)))
    s.flush()
    with caplog.at_level("INFO"):
        progress.tick()
    (line,) = [r.getMessage() for r in caplog.records if "Frontier progress" in r.getMessage()]
    assert "done=1 pending=0 in_progress=2 failed=0" in line and "pages/min" in line and "ETA" in line
    s.close("finished")


def test_off_with_an_interval_of_zero():
    with pytest.raises(NotConfigured):
        FrontierProgress.from_crawler(get_crawler(PageSpider, {"HOLOCRON_FRONTIER_PROGRESS_INTERVAL": 0}))
