"""MediaWiki listings as seeds: generator specs, ``list=allpages`` / ``list=categorymembers``
requests and answers, API limits and request bounds (pure functions, no I/O).

Three generators turn a whole wiki, a prefix or a category tree into titles to fetch
(``-a generator=...``, parsed by :func:`parse_generator`):

* ``allpages``: ``list=allpages`` in each crawled namespace (one listing per namespace);
* ``prefix:Star Wars``: the same with ``apprefix=`` (in each crawled namespace);
* ``categorymembers:Category:Foo``: ``list=categorymembers`` of the category, its subcategories
  followed down to ``max_depth`` (the root is depth 0; each category is listed once, so loops
  in the category graph end).

Only real pages are listed (``apfilterredir=nonredirects``): a redirect would fetch its
target a second time. A listing is walked one request at a time, following the API's
``continue`` object; :class:`ListingWalk` holds the whole position (listings still to walk,
the current continuation, the categories already queued) as JSON, so the frontier can
checkpoint it and a killed run resumes the listing where it stopped.

Answers: :func:`parse_listing` gives the titles, the subcategories to walk next and the next
continuation. A JSON ``error`` raises :class:`~holocron_scrapy.mediawiki.errors.ApiError` (its
``retryable`` from :mod:`holocron_scrapy.failures`: ``maxlag`` and co. are retried by the
caller); a body that is not the JSON answer expected raises
:class:`~holocron_scrapy.mediawiki.parse.MalformedResponse`, which is always transient
(:func:`holocron_scrapy.failures.malformed`), never a verdict on the listing.

Limits: without ``apihighlimits`` a listing returns up to 500 entries per request and a
content request takes 50 titles; with it (bot accounts), 5,000 and 500.
:func:`generator_request_bound` and :func:`sync_request_bound` give the request counts the
issue measures crawls against.

Reads no settings (callers pass namespaces, depth, maxlag and whether the account has
``apihighlimits``) and writes no stats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from holocron_scrapy import defaults
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.mediawiki.api import normalize_title
from holocron_scrapy.mediawiki.errors import api_error
from holocron_scrapy.mediawiki.parse import MalformedResponse

#: Entries per listing request (``aplimit``/``cmlimit``/``rclimit=max``) without / with apihighlimits.
LISTING_LIMIT = 500
HIGH_LISTING_LIMIT = 5000
#: Titles per content request without / with apihighlimits.
TITLE_BATCH_LIMIT = defaults.MEDIAWIKI_MAX_BATCH_SIZE
HIGH_TITLE_BATCH_LIMIT = 500

CATEGORY_NAMESPACE = 14
FILE_NAMESPACE = 6
ALLPAGES = "allpages"
CATEGORYMEMBERS = "categorymembers"
PREFIX = "prefix"
GENERATOR_KINDS = (ALLPAGES, CATEGORYMEMBERS, PREFIX)


# -- limits and bounds ----------------------------------------------------------------------------


def listing_limit(high_limits: bool = False) -> int:
    """Entries one listing request returns at most (what ``...limit=max`` means)."""
    return HIGH_LISTING_LIMIT if high_limits else LISTING_LIMIT


def title_batch_limit(high_limits: bool = False) -> int:
    """Titles one content request may name."""
    return HIGH_TITLE_BATCH_LIMIT if high_limits else TITLE_BATCH_LIMIT


def listing_requests(entries: int, high_limits: bool = False) -> int:
    """Requests to list *entries* entries: ``⌈entries/limit⌉``, and at least one (an empty listing
    still takes the request that says it is empty)."""
    if entries < 0:
        raise ValueError(f"entries must be >= 0, got {entries}")
    return max(1, math.ceil(entries / listing_limit(high_limits)))


def batch_requests(titles: int, high_limits: bool = False) -> int:
    """Content requests for *titles* titles in full batches: ``⌈titles/batch⌉`` (0 for none)."""
    if titles < 0:
        raise ValueError(f"titles must be >= 0, got {titles}")
    return math.ceil(titles / title_batch_limit(high_limits))


def sync_request_bound(changes: int, changed_titles: int, high_limits: bool = False) -> int:
    """Requests of an incremental sync: ``⌈changes/500⌉ + ⌈changed titles/50⌉`` (5,000 and 500
    with apihighlimits); the recent-changes listing takes at least one request."""
    return listing_requests(changes, high_limits) + batch_requests(changed_titles, high_limits)


def generator_request_bound(pages_per_listing: Iterable[int], high_limits: bool = False) -> int:
    """Requests of a generator crawl without link discovery: each listing (one per namespace or
    category) listed, plus every page fetched in full batches: ``Σ⌈Pᵢ/500⌉ + ⌈ΣPᵢ/50⌉``."""
    counts = list(pages_per_listing)
    return sum(listing_requests(n, high_limits) for n in counts) + batch_requests(sum(counts), high_limits)


# -- generator specs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """One listing to walk: every page of one namespace (optionally with a title prefix), or the
    members of one category. JSON round trip with :meth:`to_dict` / :meth:`from_dict`."""

    module: str  # "allpages" or "categorymembers"
    namespaces: tuple[int, ...]  # allpages: one namespace; categorymembers: the crawled namespaces
    prefix: str | None = None
    category: str | None = None
    depth: int = 0  # of the category below the generator's root category
    max_depth: int = 0

    @property
    def key(self) -> str:
        """Identity of the listing (the position within it aside): a category is listed once,
        whatever the depth it was reached at."""
        if self.module == CATEGORYMEMBERS:
            return f"{CATEGORYMEMBERS}:{self.category}"
        ns = "|".join(str(n) for n in self.namespaces)
        return f"{ALLPAGES}:{ns}" + (f":{self.prefix}" if self.prefix is not None else "")

    @property
    def follows_subcategories(self) -> bool:
        return self.module == CATEGORYMEMBERS and self.depth < self.max_depth

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "namespaces": list(self.namespaces),
            "prefix": self.prefix,
            "category": self.category,
            "depth": self.depth,
            "max_depth": self.max_depth,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Listing:
        return cls(
            module=str(data["module"]),
            namespaces=tuple(int(n) for n in data["namespaces"]),
            prefix=data.get("prefix"),
            category=data.get("category"),
            depth=int(data.get("depth", 0)),
            max_depth=int(data.get("max_depth", 0)),
        )


@dataclass(frozen=True)
class GeneratorSpec:
    """A parsed ``-a generator=`` value."""

    kind: str  # "allpages", "prefix" or "categorymembers"
    namespaces: tuple[int, ...]
    prefix: str | None = None
    category: str | None = None
    max_depth: int = 0

    def listings(self) -> list[Listing]:
        """The listings the generator starts with (subcategories are found while walking)."""
        if self.kind == CATEGORYMEMBERS:
            assert self.category is not None
            return [Listing(CATEGORYMEMBERS, self.namespaces, category=self.category, max_depth=self.max_depth)]
        return [Listing(ALLPAGES, (ns,), prefix=self.prefix) for ns in self.namespaces]

    def describe(self) -> str:
        if self.kind == CATEGORYMEMBERS:
            return f"{CATEGORYMEMBERS}:{self.category} (subcategories to depth {self.max_depth})"
        where = "namespace" + ("s " if len(self.namespaces) > 1 else " ") + "|".join(map(str, self.namespaces))
        return f"{PREFIX}:{self.prefix} in {where}" if self.kind == PREFIX else f"{ALLPAGES} in {where}"


def parse_generator(
    value: str,
    *,
    namespaces: Iterable[int] = defaults.MEDIAWIKI_NAMESPACES,
    max_depth: int = defaults.MEDIAWIKI_MAX_DEPTH,
    category_prefixes: Iterable[str] = ("Category",),
    key: str = "generator",
) -> GeneratorSpec:
    """Parse ``allpages``, ``prefix:<title prefix>`` or ``categorymembers:Category:<name>``.

    *namespaces* are the crawled ones; *category_prefixes* the names of namespace 14 on the wiki
    (its local name and aliases, from siteinfo; ``Category`` always works on an English wiki).
    Raises :class:`ConfigError` naming *key* and the problem in one line.
    """
    spaces = tuple(sorted(set(namespaces)))
    if not spaces or any(not isinstance(n, int) or n < 0 for n in spaces):
        raise ConfigError(f"crawled namespaces must be numbers >= 0, got {list(namespaces)!r}", key=key)
    if max_depth < 0:
        raise ConfigError(f"max_depth must be >= 0 for a generator, got {max_depth}", key=key)
    text = str(value).strip()
    kind, sep, arg = text.partition(":")
    kind = kind.strip().lower()
    arg = normalize_title(arg)
    expected = "expected allpages, prefix:<title prefix> or categorymembers:Category:<name>"
    if kind == ALLPAGES:
        if sep:
            raise ConfigError(f"allpages takes no argument (use prefix:<title prefix>), got {text!r}", key=key)
        return GeneratorSpec(ALLPAGES, spaces)
    if kind == PREFIX:
        if not arg:
            raise ConfigError(f"prefix needs a title prefix, e.g. prefix:Star Wars (got {text!r})", key=key)
        return GeneratorSpec(PREFIX, spaces, prefix=arg)
    if kind == CATEGORYMEMBERS:
        if not arg:
            raise ConfigError(
                f"categorymembers needs a category, e.g. categorymembers:Category:Foo (got {text!r})", key=key
            )
        category = _category_title(arg, category_prefixes)
        if category is None:
            hint = "" if ":" in arg else f" (did you mean Category:{arg}?)"
            raise ConfigError(f"categorymembers needs a category title, got {arg!r}{hint}", key=key)
        return GeneratorSpec(CATEGORYMEMBERS, spaces, category=category, max_depth=max_depth)
    raise ConfigError(f"{expected}, got {text!r}", key=key)


def _category_title(title: str, category_prefixes: Iterable[str]) -> str | None:
    """``Category:<Name>`` for a title in namespace 14 (any of its names, any case), else None."""
    namespace, sep, name = title.partition(":")
    names = {normalize_title(p).lower() for p in category_prefixes} | {"category"}
    if not sep or normalize_title(namespace).lower() not in names:
        return None
    name = normalize_title(name)
    if not name:
        return None
    return f"Category:{name[0].upper()}{name[1:]}"


# -- requests -------------------------------------------------------------------------------------


def listing_params(
    listing: Listing,
    *,
    continuation: dict[str, str] | None = None,
    limit: int | str = "max",
    maxlag: int | None = defaults.MEDIAWIKI_MAXLAG,
) -> dict[str, str]:
    """Parameters of one request of *listing*; *continuation* is the last ``continue``, sent back whole."""
    params = {"action": "query", "format": "json", "formatversion": "2", "list": listing.module}
    if listing.module == ALLPAGES:
        params.update(
            {
                "apnamespace": "|".join(str(n) for n in listing.namespaces),
                "aplimit": str(limit),
                "apfilterredir": "nonredirects",
            }
        )
        if listing.prefix is not None:
            params["apprefix"] = listing.prefix
    elif listing.module == CATEGORYMEMBERS:
        wanted = set(listing.namespaces)
        if listing.follows_subcategories:
            wanted.add(CATEGORY_NAMESPACE)
        types = ["page"]
        if CATEGORY_NAMESPACE in wanted:
            types.append("subcat")
        if FILE_NAMESPACE in wanted:
            types.append("file")
        params.update(
            {
                "cmtitle": str(listing.category),
                "cmprop": "title|type",
                "cmtype": "|".join(types),
                "cmnamespace": "|".join(str(n) for n in sorted(wanted)),
                "cmlimit": str(limit),
            }
        )
    else:
        raise ValueError(f"unknown listing module {listing.module!r}")
    if maxlag is not None:
        params["maxlag"] = str(maxlag)
    if continuation:
        params.update({str(k): str(v) for k, v in continuation.items()})
    return params


# -- answers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListingPage:
    """One answer of a listing: titles to fetch, subcategories to walk, the next ``continue``."""

    titles: tuple[str, ...]
    subcategories: tuple[Listing, ...]
    continuation: dict[str, str] | None  # None: the listing is complete
    limit: int | None = None  # what ``max`` meant for this client (the answer's ``limits``)


def decode_body(body: bytes | str | Any) -> dict[str, Any]:
    """The JSON object of an API answer; raw bytes are decoded here.

    Raises :class:`ApiError` for a JSON ``error`` and :class:`MalformedResponse` (transient)
    for anything that is not a JSON object.
    """
    if isinstance(body, bytes | bytearray | str):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            head = (body[:60].decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body[:60]).strip()
            raise MalformedResponse(f"not JSON ({exc}); body starts {head!r}") from None
    error = api_error(body)
    if error is not None:
        raise error
    if not isinstance(body, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}")
    return body


def continuation_of(body: dict[str, Any]) -> dict[str, str] | None:
    """The answer's ``continue`` object as strings (JSON-serialisable, sent back whole), or None."""
    cont = body.get("continue")
    if cont is None:
        return None
    if not isinstance(cont, dict) or not cont:
        raise MalformedResponse(f"'continue' is not a non-empty object: {cont!r:.200}")
    return {str(k): str(v) for k, v in cont.items()}


def query_list(body: dict[str, Any], module: str, *, required: str | None = "title") -> list[dict[str, Any]]:
    """``query.<module>`` of an answer: a list of objects, each with a string *required* (if given)."""
    query = body.get("query")
    if query is None and "continue" not in body and "batchcomplete" not in body:
        raise MalformedResponse("response has neither 'query' nor 'continue' nor 'batchcomplete'")
    if query is None:
        return []
    if not isinstance(query, dict):
        raise MalformedResponse("'query' is not an object")
    entries = query.get(module, [])
    if not isinstance(entries, list):
        raise MalformedResponse(f"'query.{module}' is not a list")
    for entry in entries:
        if not isinstance(entry, dict) or (required is not None and not isinstance(entry.get(required), str)):
            raise MalformedResponse(f"{module} entry without a {required or 'body'}: {entry!r:.200}")
    return entries


def parse_listing(listing: Listing, body: bytes | str | Any) -> ListingPage:
    """Parse one answer to :func:`listing_params` (raw bytes or decoded JSON).

    Titles are those in the crawled namespaces, in API order; subcategories (namespace 14)
    become listings one level deeper while the depth allows. Raises :class:`ApiError` or
    :class:`MalformedResponse` (see the module docstring).
    """
    data = decode_body(body)
    entries = query_list(data, listing.module)
    wanted = set(listing.namespaces)
    titles: list[str] = []
    subcategories: list[Listing] = []
    for entry in entries:
        ns = entry.get("ns")
        if not isinstance(ns, int):
            raise MalformedResponse(f"{listing.module} entry without a namespace: {entry!r:.200}")
        if ns in wanted:
            titles.append(entry["title"])
        if ns == CATEGORY_NAMESPACE and listing.follows_subcategories:
            subcategories.append(
                Listing(
                    CATEGORYMEMBERS,
                    listing.namespaces,
                    category=entry["title"],
                    depth=listing.depth + 1,
                    max_depth=listing.max_depth,
                )
            )
    limits = data.get("limits")
    limit = limits.get(listing.module) if isinstance(limits, dict) else None
    return ListingPage(
        tuple(titles), tuple(subcategories), continuation_of(data), limit if isinstance(limit, int) else None
    )


# -- walking a generator --------------------------------------------------------------------------


@dataclass
class ListingWalk:
    """Where a generator's listings stand: the listings still to walk (breadth first, so each
    category is reached at its smallest depth), the continuation within the first, and the
    categories already queued. All of it is JSON (:meth:`to_dict`): checkpoint it after each
    answer has been handed on, and a resumed run asks for exactly the next request.
    """

    pending: list[Listing] = field(default_factory=list)
    continuation: dict[str, str] | None = None  # within pending[0]
    queued: set[str] = field(default_factory=set)  # Listing.key of every listing ever queued
    requests: int = 0  # answers fed so far
    titles: int = 0  # titles listed so far

    @classmethod
    def start(cls, spec: GeneratorSpec) -> ListingWalk:
        walk = cls()
        for listing in spec.listings():
            walk._queue(listing)
        return walk

    def _queue(self, listing: Listing) -> bool:
        if listing.key in self.queued:
            return False
        self.queued.add(listing.key)
        self.pending.append(listing)
        return True

    @property
    def done(self) -> bool:
        return not self.pending

    @property
    def current(self) -> Listing | None:
        return self.pending[0] if self.pending else None

    def next_params(
        self, *, limit: int | str = "max", maxlag: int | None = defaults.MEDIAWIKI_MAXLAG
    ) -> dict[str, str]:
        """Parameters of the next request; ValueError when the walk is done."""
        if not self.pending:
            raise ValueError("the listing walk is complete")
        return listing_params(self.pending[0], continuation=self.continuation, limit=limit, maxlag=maxlag)

    def feed(self, body: bytes | str | Any) -> ListingPage:
        """Parse the answer to :meth:`next_params` and move on (nothing moves when it raises)."""
        listing = self.current
        if listing is None:
            raise ValueError("the listing walk is complete")
        page = parse_listing(listing, body)
        for sub in page.subcategories:
            self._queue(sub)
        self.requests += 1
        self.titles += len(page.titles)
        if page.continuation is None:
            self.pending.pop(0)
            self.continuation = None
        else:
            self.continuation = page.continuation
        return page

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": [listing.to_dict() for listing in self.pending],
            "continuation": self.continuation,
            "queued": sorted(self.queued),
            "requests": self.requests,
            "titles": self.titles,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ListingWalk:
        return cls(
            pending=[Listing.from_dict(d) for d in data.get("pending", [])],
            continuation=dict(data["continuation"]) if data.get("continuation") else None,
            queued=set(data.get("queued", [])),
            requests=int(data.get("requests", 0)),
            titles=int(data.get("titles", 0)),
        )


__all__ = [
    "ALLPAGES",
    "CATEGORYMEMBERS",
    "PREFIX",
    "GeneratorSpec",
    "Listing",
    "ListingPage",
    "ListingWalk",
    "batch_requests",
    "continuation_of",
    "decode_body",
    "generator_request_bound",
    "listing_limit",
    "listing_params",
    "listing_requests",
    "parse_generator",
    "parse_listing",
    "query_list",
    "sync_request_bound",
    "title_batch_limit",
]
