"""Faithful vcrpy cassettes for Scrapy responses (replaces scrapy-mock's fixtures).

scrapy-mock 0.1.0 replays only the body (always as an ``HtmlResponse``) and silently records
nothing when ``CI`` is set. Here a replayed response keeps its status, headers, final URL (after
redirects, with Scrapy's ``redirect_urls`` meta) and the class Scrapy would pick
(``JsonResponse`` for the MediaWiki API), and carries the Scrapy request it answers, so
``response.meta`` is that request's meta.

Modes (``HOLOCRON_RECORD``, read once per session; ``CI`` plays no part):

* unset / ``0``: replay only (vcrpy ``record_mode="none"``). A missing cassette raises
  :class:`MissingCassetteError`; a request the cassette does not hold raises vcrpy's
  ``CannotOverwriteExistingCassetteException``. Nothing reaches the network.
* ``1`` / ``once``: record missing cassettes; ``new_episodes`` / ``all``: vcrpy's modes.

Recording talks to the real local test wiki: ``HOLOCRON_RECORD_API_URL`` (e.g. from
``python -m tests.support.mediawiki_server --serve --port 8765``), else the session's
``mediawiki`` fixture. Tests always use :data:`PLACEHOLDER_API`; recorded URLs, headers and
bodies have the wiki's ``host:port`` replaced by it, so cassettes do not depend on the port::

    HOLOCRON_RECORD=1 python -m pytest tests/test_spiders_mediawiki_cassettes.py

Cassettes live in ``tests/fixtures/cassettes/<test module>.<test name>.yaml``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import vcr
from scrapy import Request
from scrapy.http import Headers, Response
from scrapy.responsetypes import responsetypes

CASSETTE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "cassettes"
PLACEHOLDER_HOST = "wiki.test"
PLACEHOLDER_ORIGIN = f"http://{PLACEHOLDER_HOST}"
PLACEHOLDER_API = f"{PLACEHOLDER_ORIGIN}/api.php"
RECORD_ENV = "HOLOCRON_RECORD"
RECORD_API_ENV = "HOLOCRON_RECORD_API_URL"
USER_AGENT = "holocron_scrapy-tests (cassette recording; tests@example.org)"

_MODES = {
    "": "none",
    "0": "none",
    "no": "none",
    "false": "none",
    "none": "none",
    "1": "once",
    "yes": "once",
    "true": "once",
    "once": "once",
    "new_episodes": "new_episodes",
    "all": "all",
}
# A local wiki's address, with or without the scheme (php -S even echoes "Host: 127.0.0.1:PORT").
_LOCAL = re.compile(r"(https?://)?(?:127\.0\.0\.1|localhost|\[::1\]):\d+")
# Headers that describe the transfer, not the answer: the body we keep is decoded and complete.
_TRANSFER_HEADERS = {"content-encoding", "transfer-encoding"}
_MAX_NAME = 150  # characters of a cassette name, without ".yaml"


class MissingCassetteError(FileNotFoundError):
    """Replay was asked for a cassette that was never recorded."""


def record_mode(env: Mapping[str, str] | None = None) -> str:
    """The vcrpy record mode requested by ``HOLOCRON_RECORD`` (default: replay only)."""
    value = (os.environ if env is None else env).get(RECORD_ENV, "").strip().lower()
    if value not in _MODES:
        raise ValueError(f"{RECORD_ENV}={value!r}: expected one of {', '.join(sorted(k for k in _MODES if k))}")
    return _MODES[value]


def _origins() -> list[str]:
    """Explicit live origins to hide besides the loopback pattern."""
    live = os.environ.get(RECORD_API_ENV)
    if not live:
        return []
    parts = urlsplit(live)
    return [f"{parts.scheme}://{parts.netloc}"]


def scrub_text(text: str) -> str:
    """*text* with the recording wiki's address replaced by the placeholder."""
    for origin in _origins():
        text = text.replace(origin, PLACEHOLDER_ORIGIN)
    return _LOCAL.sub(lambda m: PLACEHOLDER_ORIGIN if m.group(1) else PLACEHOLDER_HOST, text)


def scrub_bytes(data: bytes) -> bytes:
    if not data:
        return data
    try:
        return scrub_text(data.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        return data


def scrub_headers(headers: Mapping[str, list[str]], body: bytes) -> dict[str, list[str]]:
    """Headers as kept in a cassette: placeholder address, no transfer encodings, true length."""
    out: dict[str, list[str]] = {}
    for name, values in headers.items():
        if name.lower() in _TRANSFER_HEADERS:
            continue
        if name.lower() == "content-length":
            out[name] = [str(len(body))]
            continue
        out[name] = [scrub_text(str(v)) for v in values]
    return out


def _scrub_request(request: Any) -> Any:
    request.uri = scrub_text(request.uri)
    for name in list(request.headers):
        if name.lower() == "host":
            request.headers[name] = PLACEHOLDER_HOST
    return request


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    body = response.get("body", {}).get("string", b"")
    if isinstance(body, str):
        body = body.encode("utf-8")
    body = scrub_bytes(body)
    response["body"]["string"] = body
    response["headers"] = scrub_headers(response.get("headers", {}), body)
    return response


def make_vcr(mode: str | None = None, directory: Path = CASSETTE_DIR) -> vcr.VCR:
    """The VCR of the test session (``mode`` defaults to :func:`record_mode`)."""
    return vcr.VCR(
        serializer="yaml",
        cassette_library_dir=str(directory),
        record_mode=mode or record_mode(),
        decode_compressed_response=True,
        before_record_request=_scrub_request,
        before_record_response=_scrub_response,
        match_on=("method", "scheme", "host", "port", "path", "query", "body"),
    )


def cassette_name(node: Any) -> str:
    """``<test module>.<[Class.]test name>.yaml``, file-system safe (parameters included)."""
    module = Path(str(node.path)).stem if getattr(node, "path", None) else "tests"
    parts = [module]
    if getattr(node, "cls", None) is not None:
        parts.append(node.cls.__name__)
    parts.append(node.name)
    name = ".".join(parts)
    name = re.sub(r"[^\w.\-]+", "-", re.sub(r"[\[\]]", "__", name).strip("_"))
    if len(name) > _MAX_NAME:  # long parameter ids: keep a readable prefix, stay unique
        name = f"{name[: _MAX_NAME - 13]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name + ".yaml"


def to_scrapy_response(request: Request, answer: requests.Response) -> Response:
    """The Scrapy response for *request*: status, headers, final URL and class preserved."""
    body = scrub_bytes(answer.content)
    raw = answer.raw.headers if answer.raw is not None else answer.headers
    names = list(dict.fromkeys(raw.keys()))
    header_lists = {n: list(raw.getlist(n)) if hasattr(raw, "getlist") else [raw[n]] for n in names}
    headers = Headers(scrub_headers(header_lists, body))
    url = scrub_text(answer.url)
    if answer.history:
        hops = [scrub_text(r.url) for r in answer.history]
        reasons = [r.status_code for r in answer.history]
        meta = {
            **request.meta,
            "redirect_times": len(hops),
            "redirect_urls": [*request.meta.get("redirect_urls", []), *hops],
            "redirect_reasons": [*request.meta.get("redirect_reasons", []), *reasons],
        }
        request = request.replace(url=url, meta=meta)
    cls = responsetypes.from_args(headers=headers, url=url, body=body)
    return cls(url=url, status=answer.status_code, headers=headers, body=body, request=request, protocol="HTTP/1.1")


class CassettePlayer:
    """Fetches Scrapy requests through one open cassette."""

    def __init__(self, cassette: Any, live_api: str | None = None):
        self.cassette = cassette
        parts = urlsplit(live_api) if live_api else None
        self.live_origin = f"{parts.scheme}://{parts.netloc}" if parts else None
        self.session = requests.Session()

    @property
    def recording(self) -> bool:
        return not self.cassette.write_protected

    def _target(self, url: str) -> str:
        if not self.recording or not url.startswith(PLACEHOLDER_ORIGIN + "/"):
            return url
        if self.live_origin is None:
            raise RuntimeError(f"recording needs a live wiki: set {RECORD_API_ENV}")
        return self.live_origin + url[len(PLACEHOLDER_ORIGIN) :]

    def fetch(self, request: Request | str) -> Response:
        """Replay (or record) *request*; returns the response Scrapy would hand its callback."""
        if isinstance(request, str):
            request = Request(request)
        headers = {k.decode("latin-1"): v[-1].decode("latin-1") for k, v in request.headers.items() if v}
        headers.setdefault("User-Agent", USER_AGENT)
        answer = self.session.request(
            request.method,
            self._target(request.url),
            headers=headers,
            data=request.body or None,
            allow_redirects=True,
            timeout=120,
        )
        return to_scrapy_response(request, answer)

    def close(self) -> None:
        self.session.close()


@contextlib.contextmanager
def use_cassette(recorder: vcr.VCR, name: str, live_api: Callable[[], str] | None = None) -> Iterator[CassettePlayer]:
    """Open cassette *name* of *recorder*'s library; fail loudly when replaying a missing one.

    ``live_api`` (the wiki to record from) is called only when something may be recorded, and
    before the cassette opens, so that starting the wiki is not recorded.
    """
    path = Path(recorder.cassette_library_dir) / name
    mode = recorder.record_mode
    if mode == "none" and not path.is_file():
        raise MissingCassetteError(
            f"cassette {path} does not exist; record it against the local test wiki with "
            f"{RECORD_ENV}=1 (optionally {RECORD_API_ENV}=http://127.0.0.1:PORT/api.php), see {__name__}"
        )
    may_record = mode in ("all", "new_episodes") or (mode == "once" and not path.is_file())
    live = live_api() if may_record and live_api is not None else None
    with recorder.use_cassette(name) as cassette:  # vcrpy writes new recordings when the block exits
        with contextlib.closing(CassettePlayer(cassette, live)) as player:
            yield player


def live_api_from(request: Any) -> Callable[[], str]:
    """The wiki to record from: ``$HOLOCRON_RECORD_API_URL``, else the session ``mediawiki`` fixture."""

    def live() -> str:
        return os.environ.get(RECORD_API_ENV) or request.getfixturevalue("mediawiki").api_url

    return live
