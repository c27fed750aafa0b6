"""Round-trip a Scrapy Request through the ``work_items`` row and its JSON metadata.

URL, method, headers and body go to their own columns; everything else
(callback and errback names, meta, cb_kwargs, priority, flags, ...) goes to the
``metadata`` JSON, tagged with a format version.

The dict is Scrapy's ``Request.to_dict`` format (read back with ``request_from_dict``), made by
:func:`request_dict`: ``to_dict`` finds a callback's name with ``inspect.getmembers`` over the
whole spider (every attribute and property, twice a request: 0.45 ms, measured as three quarters
of the seed intake's time per seed and a large part of the frontier's per-link cost). A bound
method of the spider names itself; the name is checked against the spider's class once per
function, and anything else still goes through ``to_dict``'s own lookup.

The request's :class:`~holocron_scrapy.frontier.contract.Work` is stored as
:meth:`~holocron_scrapy.frontier.contract.Work.stored` (its resource, depth, origin and batch; no
claim) and read back as a ``Work``. Requests stored by earlier versions (a plain dict under
``holocron`` and the ``holocron_batch*`` keys beside it) are read into a ``Work`` too.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from scrapy import Request, Spider
from scrapy.http.request import _find_method
from scrapy.utils.request import request_from_dict

from holocron_scrapy.frontier.contract import LEGACY_META, WORK_META, Work

FORMAT_VERSION = 1
#: Meta keys that belong to one process's handling of a request and are not stored.
TRANSIENT_META = frozenset({"download_latency", "download_slot", "_autothrottle_dont_adjust_delay", "proxy"})
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


#: (spider class, function) -> the name under which the class holds that function.
_METHOD_NAMES: dict[tuple[type, Any], str] = {}


def _method_name(spider: Spider | None, func: Any) -> Any:
    """The spider method name of callback or errback *func* (a name or None stays as it is)."""
    if not callable(func):
        return func
    function = getattr(func, "__func__", None)
    if spider is not None and function is not None and getattr(func, "__self__", None) is spider:
        key = (type(spider), function)
        name = _METHOD_NAMES.get(key)
        if name is None:
            name = function.__name__
            if getattr(getattr(spider, name, None), "__func__", None) is not function:
                name = _find_method(spider, func)  # held under another name: Scrapy's own search
            _METHOD_NAMES[key] = name
        return name
    return _find_method(spider, func)  # raises ValueError: not a method of the spider


def request_dict(request: Request, spider: Spider | None = None) -> dict[str, Any]:
    """``request.to_dict(spider=spider)``, without searching the spider for each callback's name."""
    data: dict[str, Any] = {
        "url": request.url,
        "callback": _method_name(spider, request.callback),
        "errback": _method_name(spider, request.errback),
        "headers": dict(request.headers),
    }
    for attr in request.attributes:
        data.setdefault(attr, getattr(request, attr))
    if type(request) is not Request:
        data["_class"] = f"{type(request).__module__}.{type(request).__name__}"
    return data


def request_to_row(request: Request, spider: Spider | None = None) -> dict[str, Any]:
    """Split *request* into ``request_uri``, ``request_method``, ``request_headers``,
    ``request_body`` and ``metadata`` column values."""
    data = request_dict(request, spider)
    meta = {k: v for k, v in data.get("meta", {}).items() if k not in TRANSIENT_META}
    work = meta.get(WORK_META)
    if isinstance(work, Work):
        meta[WORK_META] = work.stored()
    data["meta"] = meta
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
    meta = data.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get(WORK_META), dict):
        data["meta"] = meta = dict(meta)
        legacy = {key: meta.pop(key) for key in LEGACY_META if key in meta}
        meta[WORK_META] = Work.from_stored(meta[WORK_META], legacy)
    return request_from_dict(data, spider=spider)
