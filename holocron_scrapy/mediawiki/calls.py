"""What one MediaWiki API request carries for the spider and the downloader middlewares: an :class:`ApiCall`.

``request.meta["holocron_mediawiki"]`` (:data:`API_META`) holds it; its presence marks the request as
an API call, whose HTTP 200 answers the retry middleware reads (maxlag and most errors come as HTTP
200 with a JSON ``error``). What it holds:

* ``purpose``: a content or info query (the default), the start-up probe, a bot login, or a
  generator's listing; the middlewares treat the probe and the login apart;
* for a content batch: the claimed titles (``titles``, each with its work item ids and attempt),
  the merged answer of the continuations so far (``acc``) and the first URL (the record's
  ``request_uri``);
* ``session``: the bot login whose cookie the request carries, set by
  :class:`~holocron_scrapy.mediawiki.auth.BotLoginMiddleware`, and ``relogin``: sent again after a
  new login (not a second time);
* ``decoded``: the answer's JSON, decoded once by the retry middleware and taken by the callback
  (:func:`take_decoded`).

The frontier's own state (work item ids, attempt, batch) is the request's
:class:`~holocron_scrapy.frontier.contract.Work`, under the frontier's key.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.http import Response

#: The meta key of the :class:`ApiCall`.
API_META = "holocron_mediawiki"
QUERY, PROBE, LOGIN, LISTING = "query", "probe", "login", "listing"


@dataclass(slots=True)
class ApiCall:
    purpose: str = QUERY
    titles: list[dict[str, Any]] | None = None
    acc: dict[str, Any] | None = None
    first_url: str | None = None
    session: int | None = None
    relogin: bool = False
    decoded: Any = None

    def but(self, **changes: Any) -> ApiCall:
        """A copy with *changes* (a request's copy must not share what the middlewares set)."""
        return dataclasses.replace(self, **changes)


def api_meta(purpose: str = QUERY, **fields: Any) -> dict[str, Any]:
    """``meta`` for a new API request: ``Request(url, meta=api_meta(PROBE))``."""
    return {API_META: ApiCall(purpose, **fields)}


def api_call(message: Request | Response) -> ApiCall | None:
    """The :class:`ApiCall` of a request (or of a response's request); None for other requests."""
    try:
        call = message.meta.get(API_META)
    except AttributeError:  # a Response without a request
        return None
    return call if isinstance(call, ApiCall) else None


def take_decoded(response: Response) -> Any:
    """The answer's JSON object as the retry middleware decoded it (once), or None; it is released."""
    call = api_call(response)
    if call is None:
        return None
    decoded, call.decoded = call.decoded, None
    return decoded
