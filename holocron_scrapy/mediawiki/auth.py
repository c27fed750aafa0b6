"""MediaWiki bot login (BotPassword) for the API's high limits.

Config (``auth`` of a ``mediawiki`` source; checked by :mod:`holocron_scrapy.config`)::

    auth: {type: botpassword, username: "Name@app", password_env: WIKI_BOT_PASSWORD}

Why: an account with ``apihighlimits`` (bots, through a BotPassword with the ``highvolume``
grant) may ask for 500 titles and get 5,000 links or categories per request, up to 10x fewer
requests than the anonymous 50 and 500.

The pure part (no I/O; tested on recorded answers) builds the requests and reads the answers:
``action=query&meta=tokens&type=login``, then ``action=login`` (POST: ``lgname``, ``lgpassword``,
``lgtoken``; ``login.result`` must be ``Success``), then ``meta=userinfo&uiprop=rights``, and
decides the batch size the account may use (:func:`batch_limit`).

:class:`BotSession` sends them through the crawler's engine (``engine.download_async``: through
the downloader middlewares, never the scheduler, so nothing of the login reaches the frontier),
so nothing blocks the reactor. The session cookie lives only in the session's own
:class:`SessionCookies` (Scrapy's cookie jar is bypassed with ``dont_merge_cookies``):
:class:`BotLoginMiddleware` sends it to the source's API only (same scheme, host and port as
``api_url``), takes the ``Set-Cookie`` of its answers, and, when an answer says
the session is gone (``assertuserfailed``/``assertnameduserfailed``; every content request carries
``assert=user``), logs in again once and sends the request again. The password and the session
cookie values are registered with :mod:`holocron_scrapy.secrets` (masked in every log line); the
MediaWiki items carry no request headers, so no cookie reaches the lake, the records or the
frontier.

Settings read: none (the spider's ``mw_session``). Stats written: ``mediawiki/login/ok``,
``mediawiki/login/failed``, ``mediawiki/login/relogins`` (logins after a lost session),
``mediawiki/login/high_limits`` (1 when the account has ``apihighlimits``, else 0).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.http import FormRequest, Response
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred

from holocron_scrapy import defaults
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.mediawiki.calls import API_META, LOGIN, ApiCall, api_call, api_meta
from holocron_scrapy.secrets import register as register_secret

logger = logging.getLogger(__name__)

AUTH_TYPE = "botpassword"
#: API error codes that say the request was not made as the logged-in user (session lost).
ASSERT_FAILURES = ("assertuserfailed", "assertnameduserfailed")
HIGH_LIMITS_RIGHT = "apihighlimits"
#: Meta keys: a login request (not itself re-logged), a request already sent again after a re-login.
#: The close reasons of a crawl stopped by its login (``fatal_*``: the run is failed, exit status 1).
LOGIN_CLOSE_REASON = "fatal_login"
BATCH_SIZE_CLOSE_REASON = "fatal_batch_size"


class LoginError(Exception):
    """The login did not succeed; the message never holds the password."""


# -- config -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BotPasswordAuth:
    """A validated ``auth`` block of a mediawiki source (the name of the variable, not the secret)."""

    username: str
    password_env: str


def parse_auth_config(value: Any, key: str = "auth") -> BotPasswordAuth:
    """Validate an ``auth`` mapping of a mediawiki source; ConfigError names ``key.<field>``."""
    if not isinstance(value, Mapping):
        example = f"{{type: {AUTH_TYPE}, username: Name@app, password_env: VAR}}"
        raise ConfigError(f"expected a mapping such as {example}", key=key)
    allowed = {"type", "username", "password_env"}
    unknown = sorted(set(map(str, value)) - allowed)
    if unknown:
        raise ConfigError(f"unknown key (allowed: {', '.join(sorted(allowed))})", key=f"{key}.{unknown[0]}")
    if value.get("type") != AUTH_TYPE:
        raise ConfigError(f"mediawiki sources take type {AUTH_TYPE}, got {value.get('type')!r}", key=f"{key}.type")
    username = value.get("username")
    if not isinstance(username, str) or "@" not in username.strip("@ ") or not username.strip():
        raise ConfigError(
            f"expected the BotPassword login name 'Name@app' (Special:BotPasswords), got {username!r}",
            key=f"{key}.username",
        )
    env = value.get("password_env")
    if not isinstance(env, str) or not env.strip():
        raise ConfigError("needs password_env naming an environment variable", key=f"{key}.password_env")
    return BotPasswordAuth(username.strip(), env.strip())


@dataclass(frozen=True)
class BotCredentials:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"BotCredentials(username={self.username!r}, password='***')"


def credentials(auth: BotPasswordAuth, environ: Mapping[str, str] = os.environ) -> BotCredentials:
    """Read the password from the environment (registered as a secret at once)."""
    password = environ.get(auth.password_env)
    if not password:
        raise ConfigError(f"environment variable {auth.password_env} is not set", key="auth.password_env")
    register_secret(password)
    return BotCredentials(auth.username, password)


def batch_limit(high_limits: bool) -> int:
    """The most titles per request the account may ask for."""
    return defaults.MEDIAWIKI_MAX_BOT_BATCH_SIZE if high_limits else defaults.MEDIAWIKI_MAX_BATCH_SIZE


def effective_batch_size(configured: int | None, high_limits: bool, username: str) -> int:
    """The batch size to use once the account's rights are known.

    *configured* is the ``batch_size`` the user set (None: not set): kept when the account
    allows it, else ConfigError saying why. Unset: the account's bound."""
    limit = batch_limit(high_limits)
    if configured is None:
        return limit
    if configured > limit:
        raise ConfigError(
            f"batch_size {configured} needs a bot account with {HIGH_LIMITS_RIGHT}; {username} lacks it"
            f" (give its BotPassword the 'highvolume' grant, or use at most {limit})",
            key="batch_size",
        )
    return configured


# -- requests and answers (pure) ------------------------------------------------------------------
def _base() -> dict[str, str]:
    return {"format": "json", "formatversion": "2"}


def login_token_params() -> dict[str, str]:
    return {"action": "query", "meta": "tokens", "type": "login", **_base()}


def login_form(creds: BotCredentials, token: str) -> dict[str, str]:
    """The POST body of ``action=login`` (never in a URL: URLs are logged)."""
    return {"action": "login", "lgname": creds.username, "lgpassword": creds.password, "lgtoken": token, **_base()}


def userinfo_params() -> dict[str, str]:
    return {"action": "query", "meta": "userinfo", "uiprop": "rights", "assert": "user", **_base()}


def _object(body: Any, what: str) -> dict[str, Any]:
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise LoginError(f"{what}: the answer is not JSON") from None
    if not isinstance(body, dict):
        raise LoginError(f"{what}: the answer is not a JSON object")
    error = body.get("error")
    if isinstance(error, dict):
        raise LoginError(f"{what}: API error {error.get('code')}: {error.get('info', '')}")
    return body


def parse_login_token(body: Any) -> str:
    data = _object(body, "login token")
    token = ((data.get("query") or {}).get("tokens") or {}).get("logintoken")
    if not isinstance(token, str) or not token:
        raise LoginError("login token: the answer has no query.tokens.logintoken")
    return token


def parse_login_result(body: Any, creds: BotCredentials) -> str:
    """The logged-in user name; LoginError with MediaWiki's reason (password masked) otherwise."""
    data = _object(body, "action=login")
    login = data.get("login")
    if not isinstance(login, dict):
        raise LoginError("action=login: the answer has no 'login' object")
    if login.get("result") == "Success":
        return str(login.get("lgusername") or creds.username.partition("@")[0])
    reason = str(login.get("reason") or "")
    if isinstance(login.get("reason"), dict):  # errorformat=... gives an object
        reason = str(login["reason"].get("text") or login["reason"].get("code") or "")
    reason = reason.replace(creds.password, "***") if creds.password else reason
    raise LoginError(f"login as {creds.username} failed: {login.get('result')}{': ' + reason if reason else ''}")


@dataclass(frozen=True)
class Account:
    name: str
    rights: frozenset[str]

    @property
    def high_limits(self) -> bool:
        return HIGH_LIMITS_RIGHT in self.rights


def parse_rights(body: Any) -> Account:
    data = _object(body, "meta=userinfo")
    info = (data.get("query") or {}).get("userinfo")
    if not isinstance(info, dict) or not isinstance(info.get("rights"), list):
        raise LoginError("meta=userinfo: the answer has no query.userinfo.rights")
    if info.get("anon") or not info.get("id"):
        raise LoginError("meta=userinfo: the session is anonymous after login")
    return Account(str(info.get("name", "")), frozenset(map(str, info["rights"])))


def assert_failure(body: bytes) -> bool:
    """Whether a raw answer is the API's ``assertuserfailed``/``assertnameduserfailed`` (cheap)."""
    head = body[:2048]
    if b"assert" not in head or b'"error"' not in head:
        return False
    try:
        error = json.loads(body).get("error") or {}
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") in ASSERT_FAILURES


class SessionCookies:
    """The cookies of one source's session: set by its API's answers, sent back only to it.

    A jar of its own rather than Scrapy's: nothing else shares it, and Scrapy's would look up
    the Public Suffix List online for every cookie."""

    def __init__(self) -> None:
        self._cookies: dict[str, str] = {}

    def update(self, set_cookie_headers: Iterable[bytes | str], now: datetime | None = None) -> list[str]:
        """Take the ``Set-Cookie`` headers of an answer; returns the new values (to mask them)."""
        now = now or datetime.now(timezone.utc)
        new = []
        for header in set_cookie_headers:
            text = header.decode("latin-1") if isinstance(header, bytes) else header
            pair, _, attributes = text.partition(";")
            name, _, value = pair.partition("=")
            name, value = name.strip(), value.strip()
            if not name:
                continue
            if not value or value == "deleted" or _expired(attributes, now):
                self._cookies.pop(name, None)
                continue
            if self._cookies.get(name) != value:
                new.append(value)
            self._cookies[name] = value
        return new

    def header(self) -> str | None:
        """The ``Cookie`` header to send (None: no cookie)."""
        return "; ".join(f"{k}={v}" for k, v in self._cookies.items()) or None

    def values(self) -> list[str]:
        return list(self._cookies.values())

    def clear(self) -> None:
        self._cookies.clear()


def _expired(attributes: str, now: datetime) -> bool:
    for attribute in attributes.split(";"):
        key, _, value = attribute.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "max-age":
            try:
                if int(value) <= 0:
                    return True
            except ValueError:
                pass
        elif key == "expires":
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            if when <= now:
                return True
    return False


def same_endpoint(url: str, api_url: str) -> bool:
    """*url* goes to the scheme, host and port of *api_url* (where the session cookie may go)."""
    a, b = urlsplit(url), urlsplit(api_url)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


# -- through Scrapy -----------------------------------------------------------------------------
class BotSession:
    """One source's login: sends the three requests through the engine, remembers the account.

    :meth:`login` may be awaited by several callers at once (requests that found their session
    gone): they share one login."""

    def __init__(self, crawler: Crawler, creds: BotCredentials, *, source_name: str, api_url: str):
        self.crawler = crawler
        self.creds = creds
        self.source_name = source_name
        self.api_url = api_url
        self.cookies = SessionCookies()
        self.account: Account | None = None
        self.generation = 0  # logins completed
        self._running = False
        self._waiters: list[Deferred] = []  # callers waiting for the login in progress

    def _request(self, params: dict[str, str]) -> Request:
        from holocron_scrapy.mediawiki import api

        return Request(api.api_url(self.api_url, params), meta=self._meta(), dont_filter=True)

    def _meta(self) -> dict[str, Any]:
        return {**api_meta(LOGIN), "give_up_log_level": logging.INFO}

    async def _fetch(self, request: Request) -> Response:
        engine = self.crawler.engine
        assert engine is not None
        try:
            return await engine.download_async(request)
        except Exception as exc:  # noqa: BLE001 - any download failure is a failed login
            raise LoginError(f"{request.method} {self.api_url} failed: {type(exc).__name__}: {exc}") from None

    async def _login_once(self) -> Account:
        self.cookies.clear()  # a new session (its cookies arrive through BotLoginMiddleware)
        token = parse_login_token((await self._fetch(self._request(login_token_params()))).body)
        answer = await self._fetch(
            FormRequest(self.api_url, formdata=login_form(self.creds, token), meta=self._meta(), dont_filter=True)
        )
        parse_login_result(answer.body, self.creds)
        rights = await self._fetch(self._request(userinfo_params()))
        return parse_rights(rights.body)

    async def login(self) -> Account:
        """Log in (or wait for the login in progress); LoginError when it fails."""
        if self._running:
            waiter: Deferred = Deferred()
            self._waiters.append(waiter)
            result = await maybe_deferred_to_future(waiter)
            if isinstance(result, LoginError):
                raise result
            assert isinstance(result, Account)
            return result
        self._running = True
        stats = self.crawler.stats
        if self.generation:
            logger.info("The login session of %s ended; logging in again", self.creds.username)
            if stats is not None:
                stats.inc_value("mediawiki/login/relogins")
        try:
            account = await self._login_once()
        except LoginError as exc:
            if stats is not None:
                stats.inc_value("mediawiki/login/failed")
            self._settle(exc)
            raise
        self.account = account
        self.generation += 1
        if stats is not None:
            stats.inc_value("mediawiki/login/ok")
            stats.set_value("mediawiki/login/high_limits", int(account.high_limits))
        self._settle(account)
        return account

    def _settle(self, result: Account | LoginError) -> None:
        self._running = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(result)


class BotLoginMiddleware:
    """Downloader middleware: the session cookie on the source's API requests, a re-login when the
    session is gone. Does nothing for spiders without ``mw_session``."""

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BotLoginMiddleware:
        return cls(crawler)

    def _session(self) -> BotSession | None:
        return getattr(self.crawler.spider, "mw_session", None)

    def process_request(self, request: Request, spider: Any = None) -> None:
        session = self._session()
        if session is None:
            return None
        if not same_endpoint(request.url, session.api_url):
            return None  # Scrapy's own cookie handling; the session's cookies never go elsewhere
        call = api_call(request)
        if call is None:  # a request to the API of the source that is none of ours: it carries the cookie too
            call = ApiCall()
            request.meta[API_META] = call
        call.session = session.generation  # the login whose cookie it carries
        request.meta["dont_merge_cookies"] = True  # Scrapy's CookiesMiddleware leaves it to us
        cookie = session.cookies.header()
        if cookie is None:
            request.headers.pop(b"Cookie", None)
        else:
            request.headers[b"Cookie"] = cookie
        return None

    async def process_response(self, request: Request, response: Response, spider: Any = None) -> Request | Response:
        session = self._session()
        call = api_call(request)
        if session is None or call is None or call.session is None:
            return response
        new = session.cookies.update(response.headers.getlist(b"Set-Cookie"))
        register_secret(*new)  # the session cookie: masked in every log line
        if call.purpose == LOGIN or not assert_failure(response.body):
            return response
        if call.relogin:
            logger.warning("The session of %s was lost again right after a new login", session.creds.username)
            return response  # the spider records it as a retryable failure
        try:
            if session.generation == call.session:  # not logged in again since it was sent
                await session.login()
        except LoginError as exc:
            logger.error("Login again failed: %s; stopping", exc)
            engine = self.crawler.engine
            if engine is not None:
                deferred_from_coro(engine.close_spider_async(reason=LOGIN_CLOSE_REASON)).addErrback(
                    lambda failure: logger.error("Could not stop the crawl: %s", failure.getErrorMessage())
                )
            return response
        retry = request.replace(dont_filter=True)
        retry.meta[API_META] = call.but(relogin=True, decoded=None)
        return retry  # process_request puts the new session's cookie on it
