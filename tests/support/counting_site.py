"""A loopback site that counts the requests in flight and timestamps every arrival: a host's view of
how polite the crawlers are (tests/test_downloader.py, tests/test_frontier_politeness.py).

:class:`CountingRelay` does the same in front of another server (the MediaWiki lab): it relays every
request and can have the real MediaWiki answer one chosen request with its ``maxlag`` error.
"""

from __future__ import annotations

import http.client
import http.server
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit


class CountingSite(http.server.ThreadingHTTPServer):
    """``/`` links to ``/p/0`` .. ``/p/<pages-1>``; every arrival is timestamped (``time.monotonic``), the
    requests in flight counted (``peak``). ``script[path]`` is a list of ``(status, headers)`` answers
    given to the first requests of *path* (e.g. a 429 with ``Retry-After``); ``sleep[path]`` seconds
    are spent on the first request of *path*; every answer takes ``latency`` seconds."""

    daemon_threads = True

    def __init__(self, pages: int, latency: float = 0.02, host: str = "127.0.0.1") -> None:
        super().__init__(("127.0.0.1", 0), CountingHandler)
        self.pages, self.latency, self.host = pages, latency, host
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.arrivals: list[tuple[float, str]] = []
        self.script: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.sleep: dict[str, float] = {}

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.server_address[1]}"

    def times(self, *, pages_only: bool = False) -> list[float]:
        with self.lock:
            return [t for t, path in self.arrivals if not pages_only or path.startswith("/p/")]


class CountingHandler(http.server.BaseHTTPRequestHandler):
    server: CountingSite

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        site = self.server
        with site.lock:
            site.arrivals.append((time.monotonic(), self.path))
            site.in_flight += 1
            site.peak = max(site.peak, site.in_flight)
            scripted = site.script.get(self.path)
            answer = scripted.pop(0) if scripted else None
            pause = site.sleep.pop(self.path, 0.0)
        try:
            time.sleep(site.latency + pause)
            if answer is not None:
                status, headers = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/":
                body = "".join(f'<a href="/p/{n}">{n}</a>' for n in range(site.pages)).encode()
            elif self.path.startswith("/p/"):
                body = f"<html><body>page {self.path}</body></html>".encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with site.lock:
                site.in_flight -= 1


S = TypeVar("S", bound=http.server.HTTPServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """*server* answering in a daemon thread until the block ends."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def counting_site(pages: int, latency: float = 0.02, host: str = "127.0.0.1") -> Iterator[CountingSite]:
    with serving(CountingSite(pages, latency, host)) as server:
        yield server


@dataclass
class Relayed:
    """One answer the relay passed on: when its request arrived and when the answer had been sent."""

    arrived: float
    answered: float
    path: str
    status: int
    headers: dict[str, str]
    body: bytes


class CountingRelay(http.server.ThreadingHTTPServer):
    """Relays every request to *target* (same path and body), timestamping arrivals ``(time, path,
    User-Agent)`` and counting the requests in flight, as :class:`CountingSite` does for its own pages.

    ``lag_when``: a test's choice of ONE MediaWiki API request (called with its path, under ``lock``,
    ``arrivals`` already holding it): that request is forwarded with ``maxlag=-1`` instead of its own
    ``maxlag``, so the real MediaWiki answers with its genuine ``maxlag`` error (HTTP 200,
    ``Retry-After``: the lab reports a lag of 0, see tests/support/mediawiki_server.py). The answer is
    kept in ``lagged``."""

    daemon_threads = True
    _MAXLAG = re.compile(r"(?<=[?&])maxlag=[^&]*")

    def __init__(self, target: str, lag_when: Callable[[str], bool] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), RelayHandler)
        parsed = urlsplit(target)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.arrivals: list[tuple[float, str, str]] = []
        self.lag_when = lag_when
        self.lagged: Relayed | None = None

    def url(self, path: str) -> str:
        """*path* of the target, through the relay."""
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def times(self) -> list[float]:
        with self.lock:
            return [t for t, _, _ in self.arrivals]

    def arrive(self, path: str, agent: str) -> tuple[float, str, bool]:
        """Count one arrival: its time, the path to forward and whether it is the lagged one."""
        with self.lock:
            now = time.monotonic()
            self.arrivals.append((now, path, agent))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            lag = self.lag_when is not None and bool(self._MAXLAG.search(path)) and self.lag_when(path)
            if lag:
                self.lag_when = None
                path = self._MAXLAG.sub("maxlag=-1", path)
            return now, path, lag


class RelayHandler(http.server.BaseHTTPRequestHandler):
    server: CountingRelay

    def log_message(self, *args: object) -> None:
        pass

    def _relay(self) -> None:
        relay = self.server
        arrived, path, lag = relay.arrive(self.path, self.headers.get("User-Agent", ""))
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            conn = http.client.HTTPConnection(*relay.target, timeout=60)
            try:
                conn.request(self.command, path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            finally:
                conn.close()
            if lag:
                answered = time.monotonic()
                with relay.lock:
                    relay.lagged = Relayed(arrived, answered, path, answer.status, dict(answer.getheaders()), data)
        finally:
            with relay.lock:
                relay.in_flight -= 1

    do_GET = do_POST = _relay  # noqa: N815 (http.server's naming)


@contextmanager
def counting_relay(target: str, lag_when: Callable[[str], bool] | None = None) -> Iterator[CountingRelay]:
    with serving(CountingRelay(target, lag_when)) as server:
        yield server
