"""Scrapy extensions: the run summary."""
