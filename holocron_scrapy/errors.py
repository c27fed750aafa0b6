"""Exceptions shared by the whole project."""

from __future__ import annotations


class HolocronError(Exception):
    """Base class of every error raised on purpose by holocron_scrapy."""


class ConfigError(HolocronError):
    """Invalid configuration: names the file or setting, the key and the problem."""

    def __init__(self, problem: str, *, key: str | None = None, source: str | None = None):
        self.problem = problem
        self.key = key
        self.source = source
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {problem}" if where else problem)


class StoreError(HolocronError):
    """A state or record store cannot be opened or used (wrong file, foreign schema, ...)."""
