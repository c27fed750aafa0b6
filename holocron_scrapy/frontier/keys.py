"""Resource identity of a request and the dedupe key built from it.

A request names the resource it fetches in ``request.meta["holocron"]`` (see
:func:`resource_meta`). Requests without it are keyed by Scrapy's request fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from scrapy import Request

META_KEY = "holocron"
#: Longest dedupe key stored as is; longer keys keep a prefix and a SHA-256 suffix.
MAX_KEY_LENGTH = 800


@dataclass(frozen=True)
class Resource:
    source_system: str
    source_name: str
    resource_type: str
    resource_id: str

    @property
    def dedupe_key(self) -> str:
        return make_dedupe_key(self.source_system, self.source_name, self.resource_type, self.resource_id)


def make_dedupe_key(source_system: str, source_name: str, resource_type: str, resource_id: str) -> str:
    """``source_system:source_name:resource_type:resource_id``, hashed when too long."""
    key = f"{source_system}:{source_name}:{resource_type}:{resource_id}"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    suffix = f"...#sha256:{digest}"
    return key[: MAX_KEY_LENGTH - len(suffix)] + suffix


def resource_meta(
    source_system: str,
    source_name: str,
    resource_type: str,
    resource_id: str,
    *,
    depth: int = 0,
    discovered_from: str | None = None,
) -> dict[str, Any]:
    """The ``meta["holocron"]`` value naming the resource a request fetches."""
    return {
        "source_system": source_system,
        "source_name": source_name,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "depth": depth,
        "discovered_from": discovered_from,
    }


def request_resource(request: Request, fingerprint: bytes | None = None) -> Resource:
    """The resource of *request*: from its meta, else ``http/request/fingerprint``."""
    info = request.meta.get(META_KEY)
    if info:
        return Resource(info["source_system"], info["source_name"], info["resource_type"], str(info["resource_id"]))
    if fingerprint is None:
        fingerprint = hashlib.sha1(f"{request.method} {request.url}".encode()).digest()
    return Resource("request", "scrapy", "fingerprint", fingerprint.hex())


def request_depth(request: Request) -> int:
    info = request.meta.get(META_KEY) or {}
    return int(info.get("depth", request.meta.get("depth", 0)) or 0)
