"""The SQL frontier: a Scrapy scheduler and dupe filter on the ``work_items`` table."""
