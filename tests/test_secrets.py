"""holocron_scrapy.secrets: values are masked, never parts of words; every log record is masked;
and a real crawl with every kind of secret leaves none in logs, reports, lake or databases."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from holocron_scrapy import secrets
from holocron_scrapy.db.sqlserver import SqlServerSettings
from holocron_scrapy.web.auth import parse_auth
from tests.support.crawl import Workspace


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.uninstall()
    secrets.forget_all()


def test_values_are_masked_not_substrings_of_words():
    secrets.register("x")
    assert secrets.mask_text("relation does not exist") == "relation does not exist"
    assert secrets.mask_text("PWD=x;UID=sa") == "PWD=***;UID=sa"
    assert secrets.mask_text("x") == "***"


def test_sqlserver_redact_keeps_words_intact():
    settings = SqlServerSettings.resolve({}, environ={"INGEST_SQLSERVER_PASSWORD": "x"})
    assert settings.redact("Invalid object name: table does not exist") == "Invalid object name: table does not exist"
    assert settings.redact("login failed, PWD=x") == "login failed, PWD=***"
    assert "x" in secrets.registered()  # resolving the settings registers the password for the logs


def test_longer_secrets_and_encoded_forms_are_masked():
    secrets.register("p@ss word", "p@ss")
    assert secrets.mask_text("got 'p@ss word'") == "got '***'"
    assert secrets.mask_text("url ?pw=p%40ss%20word&x=1") == "url ?pw=***&x=1"
    encoded = base64.b64encode(b"p@ss").decode()
    assert secrets.mask_text(f"blob {encoded}") == "blob ***"


def test_urls_lose_userinfo_and_query_values():
    url = "https://bot:hunter2@hooks.example.org/notify/run?token=abc123&channel=ops"
    assert secrets.mask_url(url) == "https://***@hooks.example.org/notify/run?token=***&channel=***"
    assert set(secrets.url_secrets(url)) == {"bot", "hunter2", "abc123", "ops"}


def test_source_auth_secrets_are_registered_when_read():
    parse_auth({"type": "basic", "username": "bot", "password_env": "PW"}, "example.org", {"PW": "s3cret-pw"})
    token = base64.b64encode(b"bot:s3cret-pw").decode()
    assert secrets.mask_text(f"Authorization: Basic {token}") == "Authorization: Basic ***"
    assert secrets.mask_text("password s3cret-pw") == "password ***"


def test_every_log_record_is_masked(caplog):
    secrets.install()
    secrets.register("t0p-secret")
    logger = logging.getLogger("holocron_scrapy.test_secrets")
    with caplog.at_level(logging.INFO, logger="holocron_scrapy.test_secrets"):
        logger.info("token %s in %s", "t0p-secret", "the message")
        try:
            raise RuntimeError("failed with t0p-secret")
        except RuntimeError:
            logger.exception("boom")
    text = caplog.text
    assert "t0p-secret" not in text and "token *** in the message" in text and "failed with ***" in text


def test_secret_filter_masks_records_of_its_handler():
    secrets.register("hunter22")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "pw=%s", ("hunter22",), None)
    assert secrets.SecretFilter().filter(record) and record.getMessage() == "pw=***"


# -- the secret scan: a real crawl ----------------------------------------------------------
BASIC_PASSWORD = "basic-Pa55-qz7"
BEARER_TOKEN = "bearer-T0ken-kq9"
SQL_PASSWORD = "sql-Pa55-wv3"
HOOK_PASSWORD = "hook-Pa55-jx4"
HOOK_TOKEN = "hook-T0ken-mn2"
SECRETS = (BASIC_PASSWORD, BEARER_TOKEN, SQL_PASSWORD, HOOK_PASSWORD, HOOK_TOKEN)
PAGES = {
    "/index.html": b'<html><body><a href="a.html">a</a> <a href="flaky.html">flaky</a> <a href="gone.html">x</a>'
    b' <a href="sub">sub</a></body></html>',
    "/a.html": b"<html><body>A</body></html>",
    "/flaky.html": b"<html><body>answers 503 once</body></html>",
    "/sub/": b"<html><body>after a redirect</body></html>",
    "/robots.txt": b"User-agent: *\nDisallow:\n",
}


class AuthSite(http.server.ThreadingHTTPServer):
    """A site that answers 401 without the expected Authorization header (robots.txt is public),
    503 once for /flaky.html, a redirect for /sub, and 404 for what it does not have; also the
    run-report webhook (POST /hook), which needs Basic auth too."""

    daemon_threads = True

    def __init__(self, expected: str, hook_expected: str):
        super().__init__(("127.0.0.1", 0), AuthHandler)
        self.expected = expected
        self.hook_expected = hook_expected
        self.flaky_done = False
        self.reports: list[bytes] = []
        self.unauthorized = 0


class AuthHandler(http.server.BaseHTTPRequestHandler):
    server: AuthSite

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "text/html", "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path != "/robots.txt" and self.headers.get("Authorization") != self.server.expected:
            self.server.unauthorized += 1
            return self._send(401, b"auth required", {"WWW-Authenticate": 'Basic realm="t"'})
        if self.path == "/flaky.html" and not self.server.flaky_done:
            self.server.flaky_done = True
            return self._send(503, b"try again", {"Retry-After": "0"})
        if self.path == "/sub":
            return self._send(301, b"", {"Location": "/sub/"})
        if self.path in PAGES:
            return self._send(200, PAGES[self.path])
        return self._send(404, b"not here")

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Authorization") != self.server.hook_expected:
            return self._send(401)
        self.server.reports.append(body)
        return self._send(204)


@pytest.fixture
def auth_site() -> Iterator[AuthSite]:
    hook = "Basic " + base64.b64encode(f"hookuser:{HOOK_PASSWORD}".encode()).decode()
    server = AuthSite("", hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def forms(secret: str) -> set[bytes]:
    """How a secret could be stored: as is, base64 alone, or inside a Basic/Bearer header value."""
    raw = secret.encode()
    found = {raw, base64.b64encode(raw)}
    found |= {base64.b64encode(f"{prefix}{secret}".encode()) for prefix in ("Bearer ", "user:", "bot:")}
    found.add(base64.b64encode(b"Basic " + base64.b64encode(b"bot:" + raw)))
    return found


@pytest.mark.parametrize("kind", ["basic", "bearer"])
def test_secret_scan_of_a_real_crawl(auth_site, tmp_path, monkeypatch, kind):
    base = f"http://127.0.0.1:{auth_site.server_port}"
    if kind == "basic":
        auth = "{type: basic, username: bot, password_env: SCAN_SITE_SECRET}"
        auth_site.expected = "Basic " + base64.b64encode(f"bot:{BASIC_PASSWORD}".encode()).decode()
        monkeypatch.setenv("SCAN_SITE_SECRET", BASIC_PASSWORD)
    else:
        auth = "{type: bearer, token_env: SCAN_SITE_SECRET}"
        auth_site.expected = f"Bearer {BEARER_TOKEN}"
        monkeypatch.setenv("SCAN_SITE_SECRET", BEARER_TOKEN)
    monkeypatch.setenv("INGEST_SQLSERVER_PASSWORD", SQL_PASSWORD)
    webhook = f"http://hookuser:{HOOK_PASSWORD}@127.0.0.1:{auth_site.server_port}/hook?token={HOOK_TOKEN}"
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    ws.config.write_text(
        "contact: tests@example.org\n"
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
        f"state:\n  url: sqlite:///{ws.state_db}\n"
        f"sources:\n  - {{name: site, type: http, delay: 0, auth: {auth}}}\n",
        encoding="utf-8",
    )
    proc = ws.crawl(
        "http",
        "source=site",
        f"seeds={base}/index.html",
        "max_depth=1",
        settings={"HOLOCRON_NOTIFY_WEBHOOK": webhook, "LOG_LEVEL": "DEBUG", "HOLOCRON_FRONTIER_RETRY_BACKOFF": "0"},
    )
    log = proc.stdout + proc.stderr
    # The crawl really used every secret: pages behind auth were stored, the webhook got its report.
    assert auth_site.unauthorized == 0, log[-3000:]
    stored = {r["resource_id"] for r in ws.records() if r["outcome"] == "ok"}
    assert {f"{base}/index.html", f"{base}/a.html", f"{base}/flaky.html"} <= stored, log[-3000:]
    assert len(auth_site.reports) == 1 and json.loads(auth_site.reports[0])["status"] == "partial"  # gone.html: 404
    assert proc.returncode == 3, log[-3000:]
    assert "Run report sent to the webhook http://***@127.0.0.1" in log and "token=***" in log
    # ...and left none of them anywhere.
    places: dict[str, bytes] = {"log": log.encode(), "webhook report": auth_site.reports[0]}
    for path in (ws.records_db, ws.state_db, *Path(ws.lake).rglob("*")):
        if path.is_file():
            places[str(path)] = path.read_bytes()
    for wal in ws.root.glob("*.sqlite3-wal"):
        places[str(wal)] = wal.read_bytes()
    assert any("_runs" in p for p in places) and any("/http_scrape/" in p for p in places)
    for secret in (BASIC_PASSWORD if kind == "basic" else BEARER_TOKEN, SQL_PASSWORD, HOOK_PASSWORD, HOOK_TOKEN):
        for where, data in places.items():
            leaked = [f for f in forms(secret) if f in data]
            assert not leaked, f"{secret} found in {where} as {leaked}"


def test_odbc_passwords_in_store_urls_are_registered():
    from scrapy.settings import Settings

    url = "sqlserver://?odbc_connect=" + "Driver%3D%7BODBC%7D%3BServer%3Ddb%3BUID%3Dsa%3BPWD%3D%7Bs3cr%3Bet%7D"
    secrets.register_settings(Settings({"HOLOCRON_RECORDS_URL": url}))
    assert secrets.mask_text("login with s3cr;et failed") == "login with *** failed"


def test_an_uncaught_traceback_is_masked_too():
    import subprocess
    import sys

    code = (
        "from holocron_scrapy import secrets; secrets.install(); secrets.register('zz-top-9');"
        " raise RuntimeError('boom zz-top-9')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == 1 and "RuntimeError: boom ***" in proc.stderr and "zz-top-9" not in proc.stderr
