"""holocron_scrapy.mediawiki.auth, the pure part, on answers recorded from the local MediaWiki 1.39
(tests/fixtures/mediawiki_auth, see its README), and the ``auth`` key of a mediawiki source."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from holocron_scrapy import secrets
from holocron_scrapy.config import parse_config
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.mediawiki import api
from holocron_scrapy.mediawiki.auth import (
    BotCredentials,
    BotPasswordAuth,
    LoginError,
    SessionCookies,
    assert_failure,
    credentials,
    effective_batch_size,
    login_form,
    login_token_params,
    parse_login_result,
    parse_login_token,
    parse_rights,
    same_endpoint,
    userinfo_params,
)

FIXTURES = Path(__file__).parent / "fixtures" / "mediawiki_auth"
PASSWORD = "0123456789abcdefghijklmnopqrstuv"
CREDS = BotCredentials("HolocronBot@holocron", PASSWORD)


def raw(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def body(name: str) -> Any:
    return json.loads(raw(name))


def test_login_requests():
    assert login_token_params() == {
        "action": "query", "meta": "tokens", "type": "login", "format": "json", "formatversion": "2",
    }  # fmt: skip
    form = login_form(CREDS, "abc+\\")
    assert form["action"] == "login" and form["lgname"] == "HolocronBot@holocron"
    assert form["lgpassword"] == PASSWORD and form["lgtoken"] == "abc+\\"
    assert userinfo_params()["uiprop"] == "rights" and userinfo_params()["assert"] == "user"
    assert PASSWORD not in repr(CREDS)


def test_login_token_and_results():
    token = parse_login_token(raw("login_token"))
    assert token.endswith("+\\") and len(token) > 10
    assert parse_login_result(body("login_success"), CREDS) == "HolocronBot"
    with pytest.raises(LoginError) as failed:
        parse_login_result(body("login_wrong_password"), CREDS)
    assert "login as HolocronBot@holocron failed: Failed: Incorrect username or password" in str(failed.value)
    assert PASSWORD not in str(failed.value)
    with pytest.raises(LoginError, match="assertuserfailed"):
        parse_login_token(raw("assertuserfailed"))
    with pytest.raises(LoginError, match="not JSON"):
        parse_login_token(b"<html>")


def test_rights_decide_the_batch_size():
    bot = parse_rights(body("userinfo_highlimits"))
    slow = parse_rights(body("userinfo_no_highlimits"))
    assert bot.name == "HolocronBot" and bot.high_limits
    assert slow.name == "HolocronSlowBot" and not slow.high_limits
    assert effective_batch_size(None, True, "B@a") == 500
    assert effective_batch_size(None, False, "B@a") == 50
    assert effective_batch_size(200, True, "B@a") == 200 and effective_batch_size(20, False, "B@a") == 20
    with pytest.raises(ConfigError) as refused:
        effective_batch_size(200, False, "HolocronSlowBot@holocron")
    assert str(refused.value).startswith(
        "batch_size: batch_size 200 needs a bot account with apihighlimits; HolocronSlowBot@holocron lacks it"
    )
    with pytest.raises(LoginError, match="anonymous"):
        parse_rights({"query": {"userinfo": {"id": 0, "name": "127.0.0.1", "anon": True, "rights": ["read"]}}})


def test_assert_failure_is_recognised():
    assert assert_failure(raw("assertuserfailed"))
    assert not assert_failure(raw("login_success")) and not assert_failure(raw("userinfo_highlimits"))
    assert not assert_failure(b'{"error": {"code": "maxlag", "info": "assert nothing"}}')
    params = api.query_params(["A"], assert_user=True)
    assert params["assert"] == "user" and "assert" not in api.query_params(["A"])
    assert api.info_params(["A"], assert_user=True)["assert"] == "user"


def test_session_cookies_from_the_recorded_login():
    headers = json.loads((FIXTURES / "login_success.headers.json").read_text())["headers"]
    jar = SessionCookies()
    new = jar.update([headers["Set-Cookie"].encode("latin-1")])
    name, value = headers["Set-Cookie"].split(";")[0].split("=")
    assert new == [value] and jar.header() == f"{name}={value}"
    assert jar.update([f"{name}={value}; path=/"]) == []  # known already
    jar.update([b"other=1; path=/; HttpOnly"])
    assert jar.header() == f"{name}={value}; other=1"
    jar.update([f"{name}=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0; path=/"])
    jar.update(["other=2; expires=Thu, 01 Jan 2026 00:00:01 GMT"], now=datetime(2026, 12, 5, tzinfo=timezone.utc))
    assert jar.header() is None


def test_same_endpoint():
    assert same_endpoint("http://127.0.0.1:8080/api.php?action=query", "http://127.0.0.1:8080/api.php")
    assert not same_endpoint("http://127.0.0.1:8081/api.php", "http://127.0.0.1:8080/api.php")
    assert not same_endpoint("https://wiki.example/w/api.php", "http://wiki.example/w/api.php")
    assert not same_endpoint("http://other.example/w/api.php", "http://wiki.example/w/api.php")


def test_credentials_come_from_the_environment_and_are_masked():
    auth = BotPasswordAuth("HolocronBot@holocron", "HOLOCRON_TEST_BOT_PASSWORD")
    with pytest.raises(ConfigError, match="auth.password_env: environment variable HOLOCRON_TEST_BOT_PASSWORD"):
        credentials(auth, {})
    try:
        creds = credentials(auth, {"HOLOCRON_TEST_BOT_PASSWORD": PASSWORD})
        assert creds.password == PASSWORD
        assert secrets.mask_text(f"lgpassword={PASSWORD}") == "lgpassword=***"
    finally:
        secrets.forget_all()


SOURCE = "sources:\n  - name: w\n    type: {type}\n    api_url: http://x/api.php\n"


@pytest.mark.parametrize(
    ("extra", "kind", "message"),
    [
        ("    auth: {type: basic, username: a, password_env: V}\n", "mediawiki",
         "c.yaml: sources[0].auth.type: mediawiki sources take type botpassword, got 'basic'"),
        ("    auth: {type: botpassword, username: Bot, password_env: V}\n", "mediawiki",
         "c.yaml: sources[0].auth.username: expected the BotPassword login name 'Name@app'"),
        ("    auth: {type: botpassword, username: Bot@app}\n", "mediawiki",
         "c.yaml: sources[0].auth.password_env: needs password_env naming an environment variable"),
        ("    auth: {type: botpassword, username: Bot@app, password_env: V, password: x}\n", "mediawiki",
         "c.yaml: sources[0].auth.password: unknown key (allowed: password_env, type, username)"),
        ("    auth: botpassword\n", "mediawiki", "c.yaml: sources[0].auth: expected a mapping"),
        ("    batch_size: 200\n", "mediawiki",
         "c.yaml: sources[0].batch_size: must be between 1 and 50, got 200: batch_size 200 needs a bot account"
         " with apihighlimits; add auth: {type: botpassword"),
        ("    batch_size: 501\n    auth: {type: botpassword, username: Bot@app, password_env: V}\n", "mediawiki",
         "c.yaml: sources[0].batch_size: must be between 1 and 500, got 501"),
        ("    auth: {type: botpassword, username: Bot@app, password_env: V}\n", "http",
         "c.yaml: sources[0].auth.type: botpassword is for mediawiki sources"),
    ],
)  # fmt: skip
def test_bad_auth_blocks_name_file_key_and_problem(extra, kind, message):
    with pytest.raises(ConfigError) as bad:
        parse_config(SOURCE.format(type=kind) + extra, "c.yaml")
    assert str(bad.value).startswith(message), str(bad.value)
    assert "\n" not in str(bad.value)


def test_a_bot_source():
    config = parse_config(
        SOURCE.format(type="mediawiki") + "    auth: {type: botpassword, username: Bot@app, password_env: V}\n"
    )
    source = config.sources["w"]
    assert source.auth == BotPasswordAuth("Bot@app", "V") and not source.batch_size_set
    assert "auth" not in source.options
    config = parse_config(
        SOURCE.format(type="mediawiki")
        + "    batch_size: 200\n    auth: {type: botpassword, username: Bot@app, password_env: V}\n"
    )
    assert config.sources["w"].batch_size == 200 and config.sources["w"].batch_size_set
