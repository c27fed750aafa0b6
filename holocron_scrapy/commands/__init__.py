"""Scrapy commands of holocron_scrapy (enabled by ``COMMANDS_MODULE = "holocron_scrapy.commands"``)."""
