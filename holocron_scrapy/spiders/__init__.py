"""Spiders: ``wikipedia``/``mediawiki`` (MediaWiki Action API) and ``http`` (any website)."""
