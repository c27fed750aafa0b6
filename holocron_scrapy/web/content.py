"""Classify a response by content type and turn its body into a JSON-storable payload."""

from __future__ import annotations

import base64
import json
from typing import Any

from scrapy.http import Response, TextResponse

RAW_HTML, JSON, XML, TEXT, BINARY = "raw_html", "json", "xml", "text", "binary"


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def resource_type_for(content_type: str | None, response: Response | None = None) -> str:
    """``raw_html``, ``json``, ``xml``, ``text`` or ``binary`` for a Content-Type."""
    media = media_type(content_type)
    if media in ("text/html", "application/xhtml+xml"):
        return RAW_HTML
    if media == "application/json" or media.endswith("+json"):
        return JSON
    if media in ("application/xml", "text/xml") or media.endswith("+xml"):
        return XML
    if media.startswith("text/") or media in ("application/javascript", "application/x-javascript"):
        return TEXT
    if not media and isinstance(response, TextResponse):
        return TEXT
    return BINARY


def build_payload(
    response: Response, resource_type: str, *, store_binary: bool, max_body_bytes: int
) -> tuple[Any, str | None]:
    """The payload to store, and a note when the body was left out or not what it claimed."""
    size = len(response.body)
    if size > max_body_bytes:
        return {"omitted": True, "reason": "body larger than max_body_bytes", "bytes": size}, "body too large"
    if resource_type == BINARY or not isinstance(response, TextResponse):
        if not store_binary:
            return {"omitted": True, "reason": "binary body (store_binary is off)", "bytes": size}, None
        return {"base64": base64.b64encode(response.body).decode("ascii"), "bytes": size}, None
    text = response.text
    if resource_type == JSON:
        try:
            return json.loads(text), None
        except ValueError as exc:
            return text, f"invalid JSON stored as text: {exc}"
    return text, None
