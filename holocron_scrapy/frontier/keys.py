"""Resource identity and the dedupe key built from it. Pure.

A request names the resource it fetches in its :class:`~holocron_scrapy.frontier.contract.Work`;
:class:`~holocron_scrapy.frontier.dupefilter.RequestKeys` (replaceable with
``HOLOCRON_FRONTIER_KEYS_CLASS``) turns a request into its :class:`Resource`, and the resource's
:attr:`Resource.dedupe_key` is what the ``work_items`` unique index holds.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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
