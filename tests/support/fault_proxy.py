"""A fault-injecting HTTP reverse proxy on 127.0.0.1, for crawls that must survive bad networks.

``FaultProxy(upstream, rate=0.25, seed=1)`` forwards every GET to *upstream* (the real MediaWiki,
a static site) and, with probability *rate* (a seeded RNG: the same seed gives the same sequence
of decisions), answers with one of the faults of *kinds* instead:

* ``truncated``: the upstream body cut short, sent with a matching Content-Length (HTTP 200);
* ``cut``: the headers announce the whole body, the connection closes half-way (data loss);
* ``html_error``: an HTML "bad gateway" page with HTTP 200, as proxies and CDNs send;
* ``status_429`` / ``status_503``: that status with a small ``Retry-After``;
* ``reset``: the connection is reset (RST) before any answer;
* ``slow``: the right answer, after ``slow_seconds``;
* ``maxlag``: MediaWiki's maxlag error (JSON, HTTP 200, ``MediaWiki-API-Error: maxlag``).

``first``: decisions forced on the first requests, in order (``["status_503"]``: the first request
gets a 503 whatever the RNG says). ``reject_titles``: a MediaWiki ``titles=`` request naming any of
them gets a permanent API error (``badvalue``), as if the API refused that title.

``counts`` says what was injected (by kind, plus ``forwarded`` and ``rejected``). Use as a
context manager; ``url`` is the proxy's base URL (same paths as upstream).
"""

from __future__ import annotations

import http.client
import http.server
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

ALL_KINDS = ("truncated", "cut", "html_error", "status_429", "status_503", "reset", "slow", "maxlag")
#: Faults a generic website client can detect (a page cut short with a matching Content-Length,
#: or an HTML error page with HTTP 200, looks like content to anyone but an API client).
HTTP_KINDS = ("cut", "status_429", "status_503", "reset", "slow")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
}
HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>The upstream server is unavailable. Please try again.</p></body></html>"
)


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.25,
        seed: int = 1,
        kinds: Iterable[str] = ALL_KINDS,
        retry_after: int = 0,
        slow_seconds: float = 0.3,
        reject_titles: Iterable[str] = (),
        first: Iterable[str] = (),
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.rate = rate
        self.kinds = tuple(kinds)
        self.first = list(first)
        unknown = (set(self.kinds) | set(self.first)) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {ALL_KINDS}")
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.reject_titles = frozenset(reject_titles)
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []  # (path, what happened)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- decisions ---------------------------------------------------------------------------------
    def decide(self, path: str) -> str:
        """``forward``, ``rejected`` or a fault kind, for one request."""
        titles = _titles(path)
        with self._lock:
            if self.first:
                what = self.first.pop(0)
            elif titles & self.reject_titles:
                what = "rejected"
            elif self.kinds and self._rng.random() < self.rate:
                what = self._rng.choice(self.kinds)
            else:
                what = "forwarded"
            self.counts[what] += 1
            self.log.append((path, what))
            return what

    def cut_point(self, size: int) -> int:
        with self._lock:
            return self._rng.randint(0, max(0, size - 1))

    @property
    def injected(self) -> int:
        """How many answers were faults (slow ones included)."""
        return sum(n for kind, n in self.counts.items() if kind in ALL_KINDS)


def _titles(path: str) -> frozenset[str]:
    query = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
    value = query.get("titles")
    return frozenset(value.split("|")) if value else frozenset()


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.0"
    _reset = False

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        proxy = self.owner
        what = proxy.decide(self.path)
        if what == "reset":
            self._send_reset()
            return
        if what == "status_429" or what == "status_503":
            self._answer(int(what[-3:]), b"busy, try again", "text/plain", {"Retry-After": str(proxy.retry_after)})
            return
        if what == "html_error":
            self._answer(200, HTML_ERROR_PAGE, "text/html; charset=utf-8")
            return
        if what == "maxlag":
            body = json.dumps(
                {
                    "error": {
                        "code": "maxlag",
                        "info": "Waiting for 127.0.0.1: 7 seconds lagged.",
                        "host": "127.0.0.1",
                        "lag": 7,
                        "type": "db",
                    }
                }
            ).encode()
            headers = {"Retry-After": str(proxy.retry_after), "MediaWiki-API-Error": "maxlag", "X-Database-Lag": "7"}
            self._answer(200, body, "application/json; charset=utf-8", headers)
            return
        if what == "rejected":
            body = json.dumps(
                {
                    "error": {
                        "code": "badvalue",
                        "info": 'Unrecognized value for parameter "titles": one of the titles is refused.',
                    }
                }
            ).encode()
            self._answer(200, body, "application/json; charset=utf-8", {"MediaWiki-API-Error": "badvalue"})
            return
        if what == "slow":
            time.sleep(proxy.slow_seconds)
        try:
            status, headers, body = self._fetch()
        except OSError as exc:
            self._answer(502, f"upstream failed: {exc}".encode(), "text/plain")
            return
        if what == "truncated" and body:
            body = body[: proxy.cut_point(len(body))]
        if what == "cut" and len(body) > 1:
            self._send_cut(status, headers, body, proxy.cut_point(len(body)))
            return
        self._relay(status, headers, body)

    # -- upstream ----------------------------------------------------------------------------------
    def _fetch(self) -> tuple[int, list[tuple[str, str]], bytes]:
        proxy = self.owner
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host", "accept-encoding"}
            }
            conn.request("GET", self.path, headers=headers)
            resp = conn.getresponse()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP], resp.read()
        finally:
            conn.close()

    # -- answers -----------------------------------------------------------------------------------
    def _answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._relay(status, [("Content-Type", content_type), *(headers or {}).items()], body)

    def _relay(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_cut(self, status: int, headers: list[tuple[str, str]], body: bytes, at: int) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: max(1, at)])
        self.wfile.flush()
        self._send_reset()

    def _send_reset(self) -> None:
        """Close with RST (SO_LINGER 0) instead of FIN."""
        self._reset = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def finish(self) -> None:
        if self._reset:
            return
        try:
            super().finish()
        except OSError:
            pass
