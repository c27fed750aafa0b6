"""Parse and merge ``action=query`` responses (pure functions on decoded JSON).

A batch of titles may need several requests (``continue``); :func:`merge_query` folds each
part into an accumulator so that every page ends up as one object, exactly as the API
returned it but with its ``links``/``categories``/``revisions`` lists complete.
:func:`resolve` then maps each requested title to the page that answers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from holocron_scrapy.failures import Verdict, classify_status, decode_api_body
from holocron_scrapy.items import INVALID, MISSING, OK, REDIRECT_LOOP, SPECIAL
from holocron_scrapy.mediawiki.errors import ApiError, api_error

_LIST_PROPS = ("revisions", "links", "categories", "templates", "images", "langlinks", "iwlinks")


class MalformedResponse(ValueError):
    """The body is not an ``action=query`` answer we understand."""


@dataclass
class Accumulator:
    """Everything learned so far about one batch (JSON-friendly, kept in request meta)."""

    pages: dict[str, dict[str, Any]] = field(default_factory=dict)  # by title
    normalized: dict[str, str] = field(default_factory=dict)
    redirects: dict[str, dict[str, Any]] = field(default_factory=dict)  # from-title -> redirect entry
    interwiki: dict[str, dict[str, Any]] = field(default_factory=dict)
    parts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "normalized": self.normalized,
            "redirects": self.redirects,
            "interwiki": self.interwiki,
            "parts": self.parts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Accumulator:
        return cls(**data) if data else cls()


@dataclass(frozen=True)
class Resolution:
    """How one requested title was answered."""

    requested: str
    title: str  # the title the answer is keyed by (resolved, or normalised when absent)
    outcome: str
    page: dict[str, Any] | None
    chain: tuple[str, ...] = ()  # normalisation and redirect steps, requested first


def merge_query(acc: Accumulator, body: Any) -> dict[str, Any] | None:
    """Fold one response into *acc*; return its ``continue`` object (None when complete).

    Raises :class:`ApiError` for an API error and :class:`MalformedResponse` for anything else
    that is not a query answer.
    """
    error = api_error(body)
    if error is not None:
        raise error
    if not isinstance(body, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}")
    query = body.get("query")
    if query is None and "continue" not in body and "batchcomplete" not in body:
        raise MalformedResponse("response has neither 'query' nor 'continue' nor 'batchcomplete'")
    query = {} if query is None else query
    if not isinstance(query, dict):
        raise MalformedResponse("'query' is not an object")
    try:
        for entry in query.get("normalized", []):
            acc.normalized[entry["from"]] = entry["to"]
        for entry in query.get("redirects", []):
            acc.redirects[entry["from"]] = entry
        for entry in query.get("interwiki", []):
            acc.interwiki[entry["title"]] = entry
        pages = query.get("pages", [])
        if isinstance(pages, dict):  # formatversion=1 shape, tolerated
            pages = list(pages.values())
        if not isinstance(pages, list):
            raise MalformedResponse("'pages' is not a list")
    except (TypeError, KeyError) as exc:
        raise MalformedResponse(f"unexpected 'query' structure: {exc!r}") from exc
    for page in pages:
        if not isinstance(page, dict) or "title" not in page:
            raise MalformedResponse(f"page entry without a title: {page!r:.200}")
        _merge_page(acc.pages, page)
    acc.parts += 1
    cont = body.get("continue")
    if cont is not None and not isinstance(cont, dict):
        raise MalformedResponse("'continue' is not an object")
    return cont or None


def _merge_page(pages: dict[str, dict[str, Any]], page: dict[str, Any]) -> None:
    current = pages.get(page["title"])
    if current is None:
        pages[page["title"]] = page
        return
    for key, value in page.items():
        if key in _LIST_PROPS and isinstance(value, list):
            seen = current.setdefault(key, [])
            if key == "revisions":  # a continuation may repeat the revision
                seen.extend(v for v in value if v not in seen)
            else:
                seen.extend(value)
        elif key not in current:
            current[key] = value


def resolve(acc: Accumulator, requested: str) -> Resolution:
    """Follow normalisation and redirects from *requested* to the page that answers it."""
    chain = [requested]
    title = acc.normalized.get(requested, requested)
    if title != requested:
        chain.append(title)
    seen = {title}
    while title in acc.redirects:
        title = acc.redirects[title]["to"]
        chain.append(title)
        if title in seen:  # MediaWiki answers a loop with its redirects and no page
            start = chain[1] if len(chain) > 1 and chain[1] == acc.normalized.get(requested) else chain[0]
            loop = {"title": start, "redirect_loop": [acc.redirects[t] for t in chain[:-1] if t in acc.redirects]}
            return Resolution(requested, start, REDIRECT_LOOP, loop, tuple(chain))
        seen.add(title)
    if title in acc.interwiki:
        return Resolution(requested, title, INVALID, {"title": title, **acc.interwiki[title]}, tuple(chain))
    page = acc.pages.get(title)
    if page is None:
        return Resolution(
            requested, title, MISSING, {"title": title, "missing": True, "absent_from_response": True}, tuple(chain)
        )
    if page.get("invalid"):
        return Resolution(requested, title, INVALID, page, tuple(chain))
    if page.get("special"):
        return Resolution(requested, title, SPECIAL, page, tuple(chain))
    if page.get("missing"):
        return Resolution(requested, title, MISSING, page, tuple(chain))
    return Resolution(requested, title, OK, page, tuple(chain))


def page_links(page: dict[str, Any], namespaces: tuple[int, ...] | None = None) -> list[str]:
    """Titles linked from *page* (optionally only in *namespaces*), in API order."""
    return [link["title"] for link in page.get("links", []) if namespaces is None or link.get("ns") in namespaces]


def page_categories(page: dict[str, Any]) -> list[str]:
    return [cat["title"] for cat in page.get("categories", [])]


__all__ = [
    "Accumulator",
    "ApiError",
    "MalformedResponse",
    "Resolution",
    "merge_query",
    "resolve",
    "page_links",
    "page_categories",
    "OK",
    "MISSING",
    "INVALID",
    "REDIRECT_LOOP",
]


@dataclass(frozen=True)
class ProbeResult:
    """What the ``meta=siteinfo`` probe learned: ``ok`` (a MediaWiki API answered), ``fatal``
    (the URL is not a MediaWiki API: stop the crawl), and one line saying why."""

    ok: bool
    fatal: bool
    message: str


def check_probe(status: int, content_type: str | None, body: bytes) -> ProbeResult:
    """Judge the (final, after retries) answer to ``action=query&meta=siteinfo``.

    A retryable API error (``maxlag`` ...) proves a MediaWiki API is there: not fatal."""
    what = f"HTTP {status}" + (f", {content_type}" if content_type else "")
    verdict: Verdict | None = classify_status(status)
    if verdict is not None or status != 200:
        return ProbeResult(False, True, f"{what}: not the answer of a MediaWiki API")
    decoded, verdict = decode_api_body(body)
    if decoded is None:
        detail = verdict.detail if verdict is not None else "empty"
        return ProbeResult(False, True, f"{what}: the body is not MediaWiki API JSON ({detail})")
    if verdict is not None:
        code = verdict.kind.removeprefix("api_")
        text = f"{what}: MediaWiki API error {code}: {verdict.detail}"
        return ProbeResult(False, not verdict.transient, text)
    general = (decoded.get("query") or {}).get("general") if isinstance(decoded.get("query"), dict) else None
    if not isinstance(general, dict) or not general.get("generator"):
        return ProbeResult(False, True, f"{what}: JSON without query.general.generator: not a MediaWiki API")
    name = general.get("sitename") or "?"
    return ProbeResult(True, False, f"{name} ({general.get('generator')})")
