"""The options of one MediaWiki crawl: the source's model (:mod:`.mediawiki_source`) with the ``-a`` arguments merged.

:func:`mediawiki_options` validates the merge (one-line errors naming the argument or
``sources[name].key`` of the file), resolves the bot login's credentials and the generator, and
decides between seeds and a generator (:func:`seeding`).

Settings read: none. Stats written: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.intake import SeedList
from holocron_scrapy.mediawiki.auth import BotCredentials, credentials
from holocron_scrapy.mediawiki.listings import GeneratorSpec, parse_generator
from holocron_scrapy.mediawiki.sync import recrawl_mode
from holocron_scrapy.spiders.base import parse_seeds
from holocron_scrapy.spiders.mediawiki_source import MediaWikiSource


@dataclass(frozen=True)
class MediaWikiOptions:
    source_name: str
    api_url: str
    seeds: SeedList | None  # normalised per title by the seed intake (MediaWikiSpider.seed_request)
    max_depth: int
    follow_links: bool
    follow_categories: bool
    namespaces: tuple[int, ...]
    batch_size: int
    maxlag: int
    #: The bot login (None: anonymous) and whether batch_size was set (else the account's bound).
    login: BotCredentials | None = None
    batch_size_set: bool = True
    #: ``changes``: a sync from recent changes (holocron_scrapy.mediawiki.sync); None: a crawl.
    recrawl: str | None = None
    #: A generator seeds the crawl instead of seeds (mediawiki/generate.py); then no link is followed.
    generator: GeneratorSpec | None = None


def mediawiki_options(source: MediaWikiSource, kwargs: dict[str, Any], *, path: str | None = None) -> MediaWikiOptions:
    """Merge the ``-a`` arguments into the source (validated by its model, :mod:`.mediawiki_source`);
    a bad value of the file *path* is named ``sources[name].key``."""
    seeds, _ = seeding(source, kwargs)
    merged = source.with_arguments(kwargs, path=path)
    links, categories = merged.discovery.links, merged.discovery.categories
    login = credentials(merged.auth) if merged.auth is not None else None
    generator = None
    if merged.generator is not None:
        # A generator crawl stores exactly the listed pages: max_depth is the depth of subcategories.
        generator = parse_generator(
            merged.generator, namespaces=merged.discovery.namespaces, max_depth=merged.discovery.max_depth
        )
        if "discover" in kwargs and (links or categories):
            raise ConfigError(
                "a generator crawl follows no links (it stores the listed pages; max_depth is the depth of"
                f" subcategories): drop -a discover={kwargs['discover']}",
                key="discover",
            )
        links = categories = False
    return MediaWikiOptions(
        recrawl=recrawl_mode(source, kwargs),
        source_name=source.name,
        api_url=merged.api_url,
        seeds=seeds,
        max_depth=0 if generator is not None else merged.discovery.max_depth,
        follow_links=links,
        follow_categories=categories,
        namespaces=merged.discovery.namespaces,
        batch_size=merged.batch_size,
        maxlag=merged.maxlag,
        login=login,
        batch_size_set=merged.batch_size_set,
        generator=generator,
    )


def seeding(source: MediaWikiSource, kwargs: dict[str, Any]) -> tuple[SeedList | None, str | None]:
    """The crawl's seeds or its generator (exactly one): ``-a seeds`` / ``-a generator`` replace the
    source's ``seeds`` and ``generator`` keys (the config refuses a source with both)."""
    if "seeds" in kwargs and "generator" in kwargs:
        raise ConfigError(
            "give seeds or a generator, not both (a generator crawl stores the listed pages and follows no links)",
            key="generator",
        )
    if "generator" in kwargs:
        return None, str(kwargs["generator"])
    if "seeds" in kwargs:
        return parse_seeds(kwargs["seeds"]), None
    if source.generator is not None:
        return None, source.generator
    if source.seeds:
        return SeedList.of(source.seeds), None
    raise ConfigError(
        f"no seeds: pass -a seeds='A|B', -a seeds=@file or -a generator=allpages, or set seeds or generator on"
        f" source {source.name!r}",
        key="seeds",
    )
