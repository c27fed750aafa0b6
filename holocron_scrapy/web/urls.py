"""URL canonicalisation and the one domain check of the ``http`` spider (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from w3lib.url import canonicalize_url

from holocron_scrapy.errors import ConfigError

_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str) -> str:
    """Scrapy's canonical form (fragment dropped, query sorted, case and escapes normalised)
    without the scheme's default port."""
    canonical = canonicalize_url(url, keep_fragments=False)
    parts = urlsplit(canonical)
    if parts.port is not None and _DEFAULT_PORTS.get(parts.scheme) == parts.port:
        host = parts.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}" if userinfo else host
        canonical = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return canonical


def host_of(url_or_domain: str) -> str:
    """The lower-case host name of a URL or of a ``host[:port]`` domain entry, without port."""
    text = url_or_domain.strip()
    if "://" not in text:
        text = "http://" + text
    return (urlsplit(text).hostname or "").lower().rstrip(".")


def host_allowed(url: str, allowed: Iterable[str]) -> bool:
    """True if *url*'s host is one of *allowed* (host names, ports ignored) or a subdomain of one."""
    host = host_of(url)
    return any(host == domain or host.endswith("." + domain) for domain in allowed)


def validate_seed_url(url: str, *, key: str = "seeds") -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"expected an http(s) URL, got {url!r}", key=key)
    return url.strip()


#: Longest resource id kept whole (SQL Server indexes resource_id as NVARCHAR(450)).
MAX_RESOURCE_ID = 400


def url_resource_id(url: str) -> str:
    """The resource id of a URL: its canonical form, hashed when very long (the real URL
    stays in ``request_uri``)."""
    canonical = canonical_url(url)
    if len(canonical) <= MAX_RESOURCE_ID:
        return canonical
    import hashlib

    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    suffix = f"...#sha256:{digest}"
    return canonical[: MAX_RESOURCE_ID - len(suffix)] + suffix
