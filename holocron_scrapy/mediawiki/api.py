"""Build MediaWiki Action API requests (pure functions, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlencode

from holocron_scrapy import defaults

_SPACES = re.compile(r"[\s_]+")


def normalize_title(title: str) -> str:
    """Client-side tidy-up of a title: underscores and runs of blanks become one space.

    The API does the authoritative normalisation (first-letter case, namespace aliases)
    and reports it in ``query.normalized``.
    """
    return _SPACES.sub(" ", title).strip()


def query_params(
    titles: Iterable[str],
    *,
    namespaces: Iterable[int] = defaults.MEDIAWIKI_NAMESPACES,
    maxlag: int | None = defaults.MEDIAWIKI_MAXLAG,
    continuation: dict[str, str] | None = None,
    assert_user: bool = False,
) -> dict[str, str]:
    """Parameters of one ``action=query`` fetching content, links and categories of *titles*.

    ``continuation`` is the API's last ``continue`` object, sent back whole. ``assert_user``
    (a bot login): ``assert=user``, so an answer never comes silently from a lost session.
    """
    params = {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "prop": "revisions|links|categories",
        "rvprop": "content|ids|timestamp",
        "rvslots": "main",
        "pllimit": "max",
        "plnamespace": "|".join(str(n) for n in sorted(set(namespaces))),
        "cllimit": "max",
        "clprop": "sortkey|hidden",
        "redirects": "1",
        "titles": "|".join(titles),
    }
    if maxlag is not None:
        params["maxlag"] = str(maxlag)
    if assert_user:
        params["assert"] = "user"
    if continuation:
        params.update({str(k): str(v) for k, v in continuation.items()})
    return params


def info_params(
    titles: Iterable[str], *, maxlag: int | None = defaults.MEDIAWIKI_MAXLAG, assert_user: bool = False
) -> dict[str, str]:
    """Parameters of a cheap ``prop=info`` request (``lastrevid`` of a batch of titles)."""
    params = {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "prop": "info",
        "redirects": "1",
        "titles": "|".join(titles),
    }
    if maxlag is not None:
        params["maxlag"] = str(maxlag)
    if assert_user:
        params["assert"] = "user"
    return params


def siteinfo_params(*, maxlag: int | None = defaults.MEDIAWIKI_MAXLAG) -> dict[str, str]:
    """Parameters of the start-up probe: ``action=query&meta=siteinfo`` (general site info)."""
    params = {"action": "query", "meta": "siteinfo", "format": "json", "formatversion": "2"}
    if maxlag is not None:
        params["maxlag"] = str(maxlag)
    return params


def api_url(endpoint: str, params: dict[str, str]) -> str:
    """``endpoint?params`` with the parameters in a stable order (stable fingerprints)."""
    return f"{endpoint}?{urlencode(sorted(params.items()))}"


def title_url(endpoint: str, title: str) -> str:
    """The URL that names one title's work item (what a one-title fetch would request)."""
    return api_url(endpoint, {"action": "query", "titles": title})
