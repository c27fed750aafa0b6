"""MediaWiki API client pieces: pure request building (api) and response parsing (parse)."""
