"""Local static websites for the ``http`` spider tests: a generated edge-case site and
Debian's python3.11-doc HTML tree, served on 127.0.0.1 by a header-recording server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PYTHON_DOCS = Path("/usr/share/doc/python3.11/html")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_edge_site(root: Path, port: int) -> dict[str, str]:
    """Write the edge-case site; return {relative path: what it exercises}."""
    base = f"http://127.0.0.1:{port}"
    files: dict[str, bytes] = {
        "index.html": (
            "<html><body><h1>Home</h1>"
            '<a href="a.html">A</a> <a href="a.html#section">A again</a> <a href="/b.html?y=2&x=1">B</a>'
            '<a href="b.html?x=1&y=2">B same</a> <a href="sub">sub (redirects to sub/)</a>'
            '<a href="private/secret.html">secret</a> <a href="http://other.invalid/x.html">offsite</a>'
            '<a href="data.json">json</a> <a href="feed.xml">xml</a> <a href="notes.txt">text</a>'
            '<a href="image.png">png</a> <a href="big.html">big</a> <a href="broken.html">broken</a>'
            '<a href="latin1.html">latin1</a> <a href="missing.html">missing</a>'
            f'<a href="http://localhost:{port}/elsewhere.html">same server, other host</a>'
            "</body></html>"
        ).encode(),
        "a.html": b'<html><body><a href="deep/d1.html">deeper</a><a href="index.html">home</a></body></html>',
        "deep/d1.html": b'<html><body><a href="d2.html">deeper still</a></body></html>',
        "deep/d2.html": b"<html><body>too deep for max_depth=2</body></html>",
        "b.html": b"<html><body>B</body></html>",
        "sub/index.html": b'<html><body><a href="../a.html">A</a></body></html>',
        "private/secret.html": b"<html><body>robots.txt says no</body></html>",
        "data.json": json.dumps({"name": "Ωmega", "links": ["not/followed.html"]}).encode(),
        "feed.xml": b'<?xml version="1.0"?><feed><a href="not-followed.html">x</a></feed>',
        "notes.txt": b"plain text <a href='not-followed.html'>",
        "image.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "big.html": b"<html><body>" + b"x" * 20000 + b"</body></html>",
        "broken.html": b"<html><body><div><a href='b.html'>unclosed <p><table><tr><td>cell",
        "latin1.html": '<html><head><meta charset="utf-8"></head><body>Caf\xe9 \xd8rsted</body></html>'.encode(
            "latin-1"
        ),
        "elsewhere.html": b"<html><body>other host name</body></html>",
        "orphan.html": b"<html><body>only in the sitemap</body></html>",
        "robots.txt": f"User-agent: *\nDisallow: /private/\nSitemap: {base}/sitemap.xml\n".encode(),
        "sitemap.xml": (
            '<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<url><loc>{base}/orphan.html</loc></url><url><loc>{base}/index.html</loc></url></urlset>"
        ).encode(),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {rel: "" for rel in files}


SERVER = r"""
import http.server, json, sys, time
log = open(sys.argv[3], "a", buffering=1)
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def send_head(self):
        log.write(json.dumps({"t": time.time(), "host": self.headers.get("Host"), "path": self.path,
                              "authorization": self.headers.get("Authorization"),
                              "user_agent": self.headers.get("User-Agent")}) + "\n")
        return super().send_head()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])),
    lambda *a, **k: Handler(*a, directory=sys.argv[2], **k)).serve_forever()
"""


@contextmanager
def serve_directory(root: Path, port: int | None = None, log: Path | None = None) -> Iterator[tuple[str, Path]]:
    """Serve *root* on 127.0.0.1; yield (base URL, request log path: one JSON line per request)."""
    port = port or free_port()
    log = log or root.parent / f"requests-{port}.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(root), str(log)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"static server on port {port} did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def read_log(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
