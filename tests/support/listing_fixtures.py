"""The MediaWiki listing answers recorded by :mod:`tests.support.record_listings`, for the tests that read them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent.parent / "fixtures" / "mediawiki" / "listings"


def raw(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def body(name: str) -> Any:
    return json.loads(raw(name))


@cache
def manifest() -> dict[str, Any]:
    return json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))


def chain(name: str) -> list[str]:
    """The recorded parts ``<name>_1``, ``<name>_2``, ... in order."""
    stems = (p.stem for p in FIXTURES.glob(f"{name}_*.json"))
    parts = sorted((s for s in stems if s.rsplit("_", 1)[1].isdigit()), key=lambda s: int(s.rsplit("_", 1)[1]))
    assert parts, f"no recording {name}_N"
    return parts
