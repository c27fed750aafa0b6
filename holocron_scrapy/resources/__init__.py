"""Files packaged with holocron_scrapy (read with importlib.resources)."""
