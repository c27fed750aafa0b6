"""holocron_scrapy.web: canonical URLs and the domain check, content types, source auth."""

from __future__ import annotations

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse, Response, TextResponse
from scrapy.utils.test import get_crawler

from holocron_scrapy.errors import ConfigError
from holocron_scrapy.web.auth import SourceAuthMiddleware, parse_auth
from holocron_scrapy.web.content import build_payload, resource_type_for
from holocron_scrapy.web.urls import canonical_url, host_allowed, host_of, url_resource_id, validate_seed_url


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("HTTP://Example.ORG:80/a/../b?z=1&a=2#frag", "http://example.org/b?a=2&z=1"),
        ("https://example.org:443/x", "https://example.org/x"),
        ("http://127.0.0.1:8000/x#y", "http://127.0.0.1:8000/x"),
        ("http://example.org/caf%C3%A9?q=%7e", "http://example.org/caf%C3%A9?q=~"),
    ],
)
def test_canonical_url(url, canonical):
    assert canonical_url(url) == canonical


def test_domain_check_ignores_ports_and_accepts_subdomains():
    assert host_allowed("http://127.0.0.1:8000/x", ["127.0.0.1"])
    assert host_allowed("http://docs.example.org/x", [host_of("example.org:8080")])
    assert not host_allowed("http://example.org.evil.test/", ["example.org"])
    assert not host_allowed("http://localhost:8000/", ["127.0.0.1"])


def test_long_urls_are_hashed_but_distinct():
    a, b = "http://e.org/" + "x" * 600 + "a", "http://e.org/" + "x" * 600 + "b"
    assert len(url_resource_id(a)) <= 400 and url_resource_id(a) != url_resource_id(b)
    assert url_resource_id("http://e.org/short") == "http://e.org/short"


@pytest.mark.parametrize("bad", ["ftp://x/", "example.org", "http://", ""])
def test_bad_seed_urls(bad):
    with pytest.raises(ConfigError, match="expected an http"):
        validate_seed_url(bad)


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("text/html; charset=utf-8", "raw_html"),
        ("application/xhtml+xml", "raw_html"),
        ("application/json", "json"),
        ("application/ld+json", "json"),
        ("text/xml", "xml"),
        ("application/atom+xml", "xml"),
        ("text/plain", "text"),
        ("text/css", "text"),
        ("image/png", "binary"),
        ("application/octet-stream", "binary"),
        (None, "binary"),
    ],
)
def test_content_type_mapping(content_type, kind):
    assert resource_type_for(content_type) == kind


def test_payloads():
    html = HtmlResponse("http://e/", body=b"<p>caf\xc3\xa9</p>", encoding="utf-8")
    assert build_payload(html, "raw_html", store_binary=False, max_body_bytes=100) == ("<p>café</p>", None)
    bad_json = TextResponse("http://e/", body=b"{nope", encoding="utf-8")
    payload, note = build_payload(bad_json, "json", store_binary=False, max_body_bytes=100)
    assert payload == "{nope" and "invalid JSON" in note
    blob = Response("http://e/", body=b"\x00\x01")
    assert build_payload(blob, "binary", store_binary=True, max_body_bytes=100)[0] == {"base64": "AAE=", "bytes": 2}
    assert build_payload(blob, "binary", store_binary=False, max_body_bytes=100)[0]["omitted"] is True
    assert build_payload(html, "raw_html", store_binary=False, max_body_bytes=3)[1] == "body too large"


def test_auth_config_reads_secrets_from_the_environment():
    env = {"PW": "hunter2", "TOK": "abc", "KEY": "k"}
    basic = parse_auth({"type": "basic", "username": "bot", "password_env": "PW"}, "api.example.org", env)
    assert (
        basic.header == "Authorization" and basic.value == "Basic Ym90Omh1bnRlcjI=" and basic.host == "api.example.org"
    )
    assert "hunter2" not in repr(basic) and "Ym90" not in repr(basic)
    assert parse_auth({"type": "bearer", "token_env": "TOK", "host": "x.org:8443"}, "y", env).host == "x.org"
    assert parse_auth({"type": "header", "header": "X-Key", "value_env": "KEY"}, "h", env).header == "X-Key"
    assert parse_auth(None, "h", env) is None
    with pytest.raises(ConfigError, match="auth.token_env: environment variable NOPE is not set"):
        parse_auth({"type": "bearer", "token_env": "NOPE"}, "h", env)
    with pytest.raises(ConfigError, match="auth.type"):
        parse_auth({"type": "oauth"}, "h", env)


def test_auth_middleware_adds_the_header_only_for_its_host():
    crawler = get_crawler()
    crawler.spider = type(
        "S", (), {"source_auth": parse_auth({"type": "bearer", "token_env": "T"}, "a.org", {"T": "x"})}
    )()
    mw = SourceAuthMiddleware.from_crawler(crawler)
    mine, other = Request("https://a.org/p"), Request("https://b.org/p", headers={"Authorization": "Bearer x"})
    mw.process_request(mine)
    mw.process_request(other)
    assert mine.headers["Authorization"] == b"Bearer x" and "Authorization" not in other.headers


def test_dedupe_keys_are_bounded():
    from holocron_scrapy.frontier.keys import MAX_KEY_LENGTH, make_dedupe_key

    key = make_dedupe_key("http_scrape", "site", "url", "http://e.org/" + "y" * 2000)
    assert len(key) == MAX_KEY_LENGTH and key.startswith("http_scrape:site:url:http://e.org/yyy")
