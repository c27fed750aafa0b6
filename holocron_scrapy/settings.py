"""Scrapy settings of holocron_scrapy: the project enables its own add-on, :class:`holocron_scrapy.addons.Holocron`.

The add-on sets the frontier, the pipelines, the extensions and the politeness defaults at ``addon``
priority, so anything set here, by a spider or with ``-s`` wins over it. Per-source values (User-Agent
contact, concurrency, delay, storage and state URLs) come from the YAML config and are applied by the
spiders at ``spider`` priority. Defaults live in :mod:`holocron_scrapy.defaults`.
"""

BOT_NAME = "holocron_scrapy"
SPIDER_MODULES = ["holocron_scrapy.spiders"]
NEWSPIDER_MODULE = "holocron_scrapy.spiders"
COMMANDS_MODULE = "holocron_scrapy.commands"

ADDONS = {"holocron_scrapy.addons.Holocron": 0}

LOG_LEVEL = "INFO"
