"""holocron_scrapy: polite, resumable ingestion of web content into a JSON lake and SQL."""

__version__ = "0.1.0"
