"""Round-trip a Scrapy Request through the ``work_items`` row and its JSON metadata.

URL, method, headers and body go to their own columns; everything else
(callback and errback names, meta, cb_kwargs, priority, flags, ...) goes to the
``metadata`` JSON, tagged with a format version.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from scrapy import Request, Spider
from scrapy.utils.request import request_from_dict

FORMAT_VERSION = 1
#: Meta keys that belong to one process's handling of a request and are not stored.
TRANSIENT_META = frozenset(
    {"holocron_ids", "download_latency", "download_slot", "_autothrottle_dont_adjust_delay", "proxy"}
)
_BYTES = "$bytes"


class SerializationError(ValueError):
    """A request cannot be stored (e.g. its meta holds an object JSON cannot represent)."""


def _encode(value: Any, path: str) -> Any:
    if isinstance(value, bytes):
        return {_BYTES: base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(f"{path}: dict keys must be strings, got {key!r}")
            out[key] = _encode(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise SerializationError(f"{path}: {type(value).__name__} cannot be stored in the frontier")


def _decode_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _BYTES in obj:
        return base64.b64decode(obj[_BYTES])
    return obj


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text, object_hook=_decode_hook)


def dumps(value: Any, path: str = "value") -> str:
    return json.dumps(_encode(value, path), ensure_ascii=False, separators=(",", ":"))


def request_to_row(request: Request, spider: Spider | None = None) -> dict[str, Any]:
    """Split *request* into ``request_uri``, ``request_method``, ``request_headers``,
    ``request_body`` and ``metadata`` column values."""
    data = request.to_dict(spider=spider)
    data["meta"] = {k: v for k, v in data.get("meta", {}).items() if k not in TRANSIENT_META}
    url = data.pop("url")
    method = data.pop("method")
    headers = {
        (k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in (data.pop("headers", {}) or {}).items()
    }
    body = data.pop("body", b"") or b""
    return {
        "request_uri": url,
        "request_method": method,
        "request_headers": dumps(headers, "headers") if headers else None,
        "request_body": base64.b64encode(body).decode("ascii") if body else None,
        "metadata": dumps({"v": FORMAT_VERSION, "request": data}, "request"),
    }


def request_from_row(row: dict[str, Any], spider: Spider | None = None) -> Request:
    """Rebuild the Request stored by :func:`request_to_row`."""
    metadata = loads(row["metadata"]) or {}
    version = metadata.get("v")
    if version != FORMAT_VERSION:
        raise SerializationError(f"work item {row.get('work_item_id')}: unknown metadata format version {version!r}")
    data = dict(metadata["request"])
    data["url"] = row["request_uri"]
    data["method"] = row["request_method"]
    data["headers"] = loads(row.get("request_headers")) or {}
    body = row.get("request_body")
    data["body"] = base64.b64decode(body) if body else b""
    return request_from_dict(data, spider=spider)
