"""Plain-website helpers for the ``http`` spider: URLs, content types, source auth."""
