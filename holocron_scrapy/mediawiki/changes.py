"""Incremental sync from ``list=recentchanges``: the window to read, its requests, and the
classification of its changes into a change set (pure functions, no I/O).

A sync run reads the changes from its source's checkpoint to the run's start:

* :func:`plan_sync` decides between reading recent changes and falling back to the ``lastrevid``
  sweep: a first run (no checkpoint) and a stale checkpoint fall back, with a reason to log.
  The window starts a margin (default 5 minutes) before the checkpoint, to cover replication
  lag on the wiki's side; the overlap is harmless (classifying a change twice gives the same
  answer). It ends at the run's start (``rcend``), which becomes the next checkpoint once the
  run completes.
* *Stale*: MediaWiki keeps ``$wgRCMaxAge`` seconds of changes (90 days by default) and purges
  older ones. MediaWiki 1.39 does not publish the value in siteinfo; it does publish it in the
  raw help of ``list=usercontribs`` (``action=paraminfo&helpformat=raw``: the first parameter of
  ``apihelp-query+usercontribs-param-show``), see :func:`rc_max_age_params`. A window that starts
  at or after ``now - $wgRCMaxAge`` (the server's ``curtimestamp``) lost nothing. Without the
  value, the oldest change the wiki still keeps (:func:`oldest_change_params`: the first entry
  of ``rcdir=newer`` without ``rcstart``) decides: every purged change is older than every kept
  one, so a window starting at or after it lost nothing. Anything else is stale.
* :func:`recentchanges_params`: ``rcprop=title|ids|timestamp|loginfo``,
  ``rctype=edit|new|log``, the crawled namespaces, ``rclimit=max``, ``rcdir=newer``; the
  continuation (``rccontinue``) is JSON-serialisable so the frontier can checkpoint it.
* :func:`classify` folds the window's changes, in the wiki's order (timestamp, then ``rcid``),
  into a :class:`ChangeSet` (rules on the class).

Facts of MediaWiki 1.39 this relies on (seen on the lab wiki, tests/fixtures/mediawiki/listings):
deleting a page removes its own ``edit``/``new`` rows from recentchanges (only the log entry
stays), a restore does not bring them back, and a move does not rename the page's older rows
(they keep the old title).

Reads no settings (callers pass namespaces, margin, maxlag) and writes no stats.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from holocron_scrapy import defaults
from holocron_scrapy.mediawiki.listings import continuation_of, decode_body, query_list
from holocron_scrapy.mediawiki.parse import MalformedResponse

#: How far before the checkpoint a window starts (replication lag on the wiki's side).
DEFAULT_MARGIN = timedelta(minutes=5)
#: No ``redirect``: on the lab it is the page's state now, not at the change, so it tells nothing.
RC_PROPS = "title|ids|timestamp|loginfo"
RC_TYPES = "edit|new|log"
_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# Log entries, by (logtype, logaction), that change what fetching the title gives.
# ``delete/delete_redir`` (and ``delete_redir2``) is the redirect a move replaced: logged right after
# the move, at the title the moved page now holds, so it deletes nothing a crawl stored.
_DELETIONS: frozenset[tuple[str | None, str | None]] = frozenset({("delete", "delete")})
_MOVES: frozenset[tuple[str | None, str | None]] = frozenset({("move", "move"), ("move", "move_redir")})
_CONTENT_LOGS: frozenset[tuple[str | None, str | None]] = frozenset(
    {
        ("delete", "revision"),  # revision visibility changed
        ("import", "upload"),
        ("import", "interwiki"),
        ("merge", "merge"),
        ("contentmodel", "change"),
        ("contentmodel", "new"),
        ("pagelang", "pagelang"),
        ("delete", "restore"),
    }
)


# -- timestamps -----------------------------------------------------------------------------------


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with second precision, as the API writes and reads it."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass an aware (UTC) datetime")
    return moment.astimezone(timezone.utc).strftime(_TS_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """An API timestamp (``2026-12-05T14:16:07Z``) as an aware UTC datetime."""
    try:
        return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError) as exc:
        raise MalformedResponse(f"not an API timestamp: {text!r}") from exc


# -- the window -----------------------------------------------------------------------------------

SWEEP_FIRST_RUN = "first_run"
SWEEP_STALE = "stale_checkpoint"


@dataclass(frozen=True)
class SyncPlan:
    """What a sync run does: read ``[start, end]`` of recent changes, or sweep (``start`` None)."""

    mode: str  # "changes" or "sweep"
    start: datetime | None
    end: datetime
    reason: str  # "" for changes; SWEEP_FIRST_RUN or SWEEP_STALE
    message: str  # one line for the log and the run report


def window_start(checkpoint: datetime, margin: timedelta = DEFAULT_MARGIN) -> datetime:
    if margin < timedelta(0):
        raise ValueError(f"margin must be >= 0, got {margin}")
    return checkpoint - margin


def checkpoint_is_stale(
    start: datetime, *, now: datetime, rc_max_age: float | None = None, oldest_kept: datetime | None = None
) -> bool:
    """Whether changes of a window starting at *start* may have been purged (see the module
    docstring): fresh when ``start >= now - rc_max_age`` or ``start >= oldest_kept``; stale when
    neither is known to hold."""
    if rc_max_age is not None and start >= now - timedelta(seconds=rc_max_age):
        return False
    return not (oldest_kept is not None and start >= oldest_kept)


def plan_sync(
    checkpoint: datetime | None,
    run_start: datetime,
    *,
    rc_max_age: float | None = None,
    oldest_kept: datetime | None = None,
    margin: timedelta = DEFAULT_MARGIN,
) -> SyncPlan:
    """Read recent changes from ``checkpoint - margin`` to *run_start* (the server's time), or
    fall back to the sweep for a first run or a stale checkpoint."""
    if checkpoint is None:
        return SyncPlan(
            "sweep", None, run_start, SWEEP_FIRST_RUN, "no recent-changes checkpoint yet (first run): lastrevid sweep"
        )
    start = window_start(checkpoint, margin)
    if start > run_start:
        start = run_start
    if checkpoint_is_stale(start, now=run_start, rc_max_age=rc_max_age, oldest_kept=oldest_kept):
        kept = (
            f"the wiki keeps {rc_max_age / 86400:g} days of changes"
            if rc_max_age is not None
            else f"the oldest change it keeps is {format_timestamp(oldest_kept)}"
            if oldest_kept is not None
            else "the wiki keeps no changes"
        )
        return SyncPlan(
            "sweep",
            None,
            run_start,
            SWEEP_STALE,
            f"recent-changes checkpoint {format_timestamp(checkpoint)} is stale ({kept}): lastrevid sweep",
        )
    return SyncPlan(
        "changes",
        start,
        run_start,
        "",
        f"recent changes from {format_timestamp(start)} to {format_timestamp(run_start)}",
    )


# -- requests -------------------------------------------------------------------------------------


def recentchanges_params(
    *,
    start: datetime,
    end: datetime,
    namespaces: Iterable[int] = defaults.MEDIAWIKI_NAMESPACES,
    continuation: dict[str, str] | None = None,
    limit: int | str = "max",
    maxlag: int | None = defaults.MEDIAWIKI_MAXLAG,
) -> dict[str, str]:
    """Parameters of one request for the changes of ``[start, end]``, oldest first.

    ``rcnamespace`` filters log entries by the namespace of their title: a move is listed by the
    namespace it leaves, so a move into a crawled namespace from another one is not seen.
    """
    rcstart, rcend = format_timestamp(start), format_timestamp(end)
    if end < start:
        raise ValueError(f"the window ends ({rcend}) before it starts ({rcstart})")
    params = {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "list": "recentchanges",
        "rcprop": RC_PROPS,
        "rctype": RC_TYPES,
        "rcnamespace": "|".join(str(n) for n in sorted(set(namespaces))),
        "rclimit": str(limit),
        "rcdir": "newer",
        "rcstart": rcstart,
        "rcend": rcend,
    }
    if maxlag is not None:
        params["maxlag"] = str(maxlag)
    if continuation:
        params.update({str(k): str(v) for k, v in continuation.items()})
    return params


def oldest_change_params(*, maxlag: int | None = defaults.MEDIAWIKI_MAXLAG) -> dict[str, str]:
    """The oldest change the wiki still keeps (any namespace, any type), and the server's time."""
    params = {
        "action": "query",
        "format": "json",
        "formatversion": "2",
        "list": "recentchanges",
        "rcprop": "timestamp|ids",
        "rclimit": "1",
        "rcdir": "newer",
        "curtimestamp": "1",
    }
    if maxlag is not None:
        params["maxlag"] = str(maxlag)
    return params


def rc_max_age_params() -> dict[str, str]:
    """``$wgRCMaxAge`` as published by the raw help of ``list=usercontribs`` (see the module docstring)."""
    return {
        "action": "paraminfo",
        "format": "json",
        "formatversion": "2",
        "modules": "query+usercontribs",
        "helpformat": "raw",
    }


def parse_oldest_change(body: bytes | str | Any) -> tuple[datetime | None, datetime | None]:
    """``(oldest kept change, server time)`` from the answer to :func:`oldest_change_params`
    (None when the wiki keeps no change / the answer has no ``curtimestamp``)."""
    data = decode_body(body)
    entries = query_list(data, "recentchanges", required="timestamp")
    oldest = parse_timestamp(entries[0]["timestamp"]) if entries else None
    now = data.get("curtimestamp")
    return oldest, parse_timestamp(now) if isinstance(now, str) else None


def parse_rc_max_age(body: bytes | str | Any) -> int | None:
    """``$wgRCMaxAge`` in seconds from the answer to :func:`rc_max_age_params`, or None when this
    MediaWiki does not publish it there."""
    data = decode_body(body)
    try:
        modules = data["paraminfo"]["modules"]
        for module in modules:
            for param in module.get("parameters", []):
                if param.get("name") != "show":
                    continue
                for message in param.get("description") or []:
                    if isinstance(message, dict) and message.get("key") == "apihelp-query+usercontribs-param-show":
                        value = (message.get("params") or [None])[0]
                        return int(value) if isinstance(value, int | str) and str(value).isdigit() else None
    except (KeyError, TypeError, AttributeError):
        return None
    return None


# -- answers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One entry of ``list=recentchanges`` (what classification needs of it)."""

    rcid: int
    timestamp: str  # ISO 8601 UTC: sorts as it reads
    type: str  # "edit", "new" or "log"
    ns: int
    title: str
    pageid: int = 0
    revid: int = 0
    logtype: str | None = None
    logaction: str | None = None
    target: str | None = None  # a move's new title; the page a merge moved revisions into
    suppressed_redirect: bool = False  # a move that left no redirect behind

    @property
    def order(self) -> tuple[str, int]:
        """The wiki's order of changes (``rcdir=newer``): timestamp, then ``rcid``."""
        return (self.timestamp, self.rcid)

    @classmethod
    def from_api(cls, entry: dict[str, Any]) -> Change:
        try:
            params = entry.get("logparams") or {}
            target = (params.get("target_title") or params.get("dest_title")) if isinstance(params, dict) else None
            return cls(
                rcid=int(entry["rcid"]),
                timestamp=str(entry["timestamp"]),
                type=str(entry["type"]),
                ns=int(entry["ns"]),
                title=str(entry["title"]),
                pageid=int(entry.get("pageid") or 0),
                revid=int(entry.get("revid") or 0),
                logtype=entry.get("logtype"),
                logaction=entry.get("logaction"),
                target=str(target) if target else None,
                suppressed_redirect=bool(isinstance(params, dict) and params.get("suppressredirect")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponse(f"recentchanges entry {entry!r:.200}: {exc!r}") from exc


@dataclass(frozen=True)
class ChangesPage:
    changes: tuple[Change, ...]
    continuation: dict[str, str] | None


def parse_changes(body: bytes | str | Any) -> ChangesPage:
    """One answer to :func:`recentchanges_params`: its changes and the next ``continue`` (or None).

    Raises :class:`~holocron_scrapy.mediawiki.errors.ApiError` for a JSON error and
    :class:`MalformedResponse` (transient) for anything else than the answer expected.
    """
    data = decode_body(body)
    changes = tuple(Change.from_api(entry) for entry in query_list(data, "recentchanges"))
    return ChangesPage(changes, continuation_of(data))


# -- classification -------------------------------------------------------------------------------


@dataclass
class _Track:
    """One page followed through the window under its current title."""

    origin: str | None  # its title at the window's start (None: a redirect a move left behind)
    created: bool  # created within the window
    exists: bool = True
    changed: bool = False
    moved_from: str | None = None
    left_redirect: bool = True  # the first move out of ``origin`` left a redirect
    last: tuple[str, int] = ("", 0)  # (timestamp, rcid) of its last change


@dataclass(frozen=True)
class Move:
    old: str
    new: str
    redirect: bool  # the old title was left as a redirect (to the first new title)


@dataclass
class ChangeSet:
    """What a window of changes means for a crawl; every list ordered by last change.

    * ``refetch``: pages that existed before the window and still exist, changed (edited,
      restored, moved: under their final title, imported, merged, revision-deleted). A page
      deleted then restored is here; a page moved then edited is here under its new title.
    * ``created``: pages created within the window that still exist (under their final title).
    * ``deleted``: titles with no page at the end whose last change was a deletion (a page
      edited then deleted is here; one created then deleted too: a ``deleted`` record of a title
      never stored is the caller's to skip).
    * ``moved``: old title -> final title of the pages that existed before the window
      (A->B->C gives A->C; A->B->A gives nothing; A->B then B deleted gives A->B and B in
      ``deleted``). The old title itself is not refetched: its record follows the redirect rules
      (``moves`` say whether a redirect was left).
    * ``newest``: the newest timestamp seen; ``changes``: entries classified (duplicates dropped).
    """

    refetch: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)
    moves: list[Move] = field(default_factory=list)
    newest: str | None = None
    changes: int = 0

    @property
    def to_fetch(self) -> list[str]:
        """Every title whose page must be fetched in full (refetched and created)."""
        return self.refetch + self.created

    def to_dict(self) -> dict[str, Any]:
        return {
            "refetch": list(self.refetch),
            "created": list(self.created),
            "deleted": list(self.deleted),
            "moved": dict(self.moved),
            "moves": [{"old": m.old, "new": m.new, "redirect": m.redirect} for m in self.moves],
            "newest": self.newest,
            "changes": self.changes,
        }


def classify(changes: Iterable[Change]) -> ChangeSet:
    """Fold a window's changes (any order, duplicates allowed: sorted by timestamp then ``rcid``
    and deduplicated by ``rcid`` here) into a :class:`ChangeSet`."""
    unique = {change.rcid: change for change in changes}
    ordered = sorted(unique.values(), key=lambda c: c.order)
    tracks: dict[str, _Track] = {}

    def track(title: str) -> _Track:
        current = tracks.get(title)
        if current is None:  # first seen: the page was there before the window
            current = tracks[title] = _Track(origin=title, created=False)
        return current

    for change in ordered:
        action = (change.logtype, change.logaction)
        if change.type == "new":
            existing = tracks.get(change.title)
            if existing is None:
                tracks[change.title] = _Track(origin=change.title, created=True, changed=True, last=change.order)
                continue
            current = existing
            current.exists = current.changed = True
        elif change.type == "edit" or (change.type == "log" and action in _CONTENT_LOGS):
            current = track(change.title)
            current.exists = current.changed = True
            if change.type == "log" and change.target:  # a merge: its destination has more revisions
                destination = track(change.target)
                destination.exists = destination.changed = True
                destination.last = change.order
        elif change.type == "log" and action in _DELETIONS:
            current = track(change.title)
            current.exists = False
            current.changed = True
        elif change.type == "log" and action in _MOVES and change.target:
            moving = tracks.pop(change.title, None) or _Track(origin=change.title, created=False)
            if moving.moved_from is None and moving.origin is not None:
                moving.left_redirect = not change.suppressed_redirect
            moving.moved_from = moving.moved_from or change.title
            moving.exists = moving.changed = True
            moving.last = change.order
            tracks[change.target] = moving  # replaces what was there (a redirect moved over)
            if not change.suppressed_redirect:
                tracks[change.title] = _Track(origin=None, created=False, last=change.order)
            continue
        else:  # other log entries (protection, user rights, uploads, ...) change no content
            continue
        current.last = change.order

    result = ChangeSet(changes=len(ordered), newest=ordered[-1].timestamp if ordered else None)
    for title, current in sorted(tracks.items(), key=lambda item: item[1].last):
        moved = current.origin is not None and current.origin != title and not current.created
        if moved:
            assert current.origin is not None
            result.moved[current.origin] = title
            result.moves.append(Move(current.origin, title, current.left_redirect))
        if not current.exists:
            result.deleted.append(title)
        elif current.created:
            result.created.append(title)
        elif current.changed:
            result.refetch.append(title)
    return result


__all__ = [
    "DEFAULT_MARGIN",
    "Change",
    "ChangeSet",
    "ChangesPage",
    "Move",
    "SyncPlan",
    "checkpoint_is_stale",
    "classify",
    "format_timestamp",
    "oldest_change_params",
    "parse_changes",
    "parse_oldest_change",
    "parse_rc_max_age",
    "parse_timestamp",
    "plan_sync",
    "rc_max_age_params",
    "recentchanges_params",
    "window_start",
]
