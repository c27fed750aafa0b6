"""A loopback site that counts the requests in flight and timestamps every arrival: a host's view of
how polite the crawlers are (tests/test_downloader.py, tests/test_frontier_politeness.py)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


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


@contextmanager
def counting_site(pages: int, latency: float = 0.02, host: str = "127.0.0.1") -> Iterator[CountingSite]:
    server = CountingSite(pages, latency, host)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
