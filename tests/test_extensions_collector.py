"""holocron_scrapy.extensions.collector: the startup objects frozen once the engine started."""

from __future__ import annotations

import gc

import pytest
from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.project import get_project_settings
from scrapy.utils.test import get_crawler

from holocron_scrapy.addons import apply_addons
from holocron_scrapy.extensions.collector import FreezeStartupObjects

PRODUCT = {"ADDONS": {"holocron_scrapy.addons.Holocron": 0}}  # the defaults as a crawl has them


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # later tests see a normal collector


def test_on_by_default_in_the_project_settings():
    settings = apply_addons(get_project_settings())
    assert settings.getdict("EXTENSIONS").get("holocron_scrapy.extensions.collector.FreezeStartupObjects")
    crawler = get_crawler(settings_dict=PRODUCT)
    assert isinstance(FreezeStartupObjects.from_crawler(crawler), FreezeStartupObjects)


def test_freezes_what_exists_when_the_engine_starts(unfrozen):
    crawler = get_crawler(settings_dict=PRODUCT)
    extension = FreezeStartupObjects.from_crawler(crawler)  # held: signals keep only weak references
    assert gc.get_freeze_count() == 0
    before: list[str] = []  # made before the engine starts (a tracked container): frozen with the rest
    crawler.signals.send_catch_log(signals.engine_started)
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # the modules, classes and settings loaded so far
    assert crawler.stats.get_value("gc/frozen") >= frozen  # frozen objects freed since leave the count
    assert all(obj is not before for obj in gc.get_objects())  # the collector no longer walks it
    after: list[str] = []
    assert any(obj is after for obj in gc.get_objects())  # what the crawl makes is collected as before
    assert extension is not None


def test_off_with_the_setting():
    crawler = get_crawler(settings_dict={"HOLOCRON_GC_FREEZE": False})
    with pytest.raises(NotConfigured):
        FreezeStartupObjects.from_crawler(crawler)
