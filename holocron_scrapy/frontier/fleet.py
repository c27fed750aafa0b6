"""The fleet view of a shared frontier: what ``scrapy frontier stats`` / ``watch`` show (issue 12, part 4).

Pure: :func:`build_view` turns what the store read (:meth:`WorkItemStore.host_counts`,
:meth:`~WorkItemStore.workers`, :meth:`~WorkItemStore.active_blocks`) into the view, a plain dict
that ``stats --json`` prints as is; :func:`render_table` and :func:`render_watch` format it. No I/O,
no clock: *now* is an argument, so the tests feed recorded rows and compare exact output.

Where the rates come from: the frontier records no request log, but every fetched item ends its
attempt with one write that stamps ``updated_at`` (completed, failed, or put back into a retry
backoff) and counts the attempt. So "requests per minute over the last 5 minutes" is the number
of attempts finished in the window (``attempt > 0``, not in progress, ``updated_at`` within it),
grouped by the request URI's host, divided by the window's minutes. That is one row per request
the workers made and acknowledged, whichever worker made it, and it needs no extra write on the
hot path. It counts a request when its ack is flushed (``HOLOCRON_FRONTIER_FLUSH_INTERVAL``, 0.5 s)
rather than when it was sent, and misses what a later ``recrawl`` or ``retry-failed`` reset
(``attempt`` back to 0), redirects followed within one attempt and requests that are not work items
(robots.txt, MediaWiki logins and listings). Counts and rates come from one grouped scan of
``work_items`` (the host cut in SQL, see ``_UriHost`` in :mod:`holocron_scrapy.frontier.store`).

The view's shape (``stats --json``; keys are only ever added):

* ``generated_at`` (ISO UTC), ``window_seconds``;
* ``sources``: ``{name: {pending, in_progress, completed, failed, requests_per_minute,
  eta_seconds (null without a recent rate), hosts: {host: {the four counts, requests_per_minute}}}}``;
* ``workers``: ``[{owner, host, pid, items, live_leases, last_seen, seen_seconds_ago}]``, one per
  lease owner (``host:pid:token``); ``last_seen`` is its latest claim or lease renewal (a renewal
  sets the expiry to renewal time + lease length, so it is the latest expiry minus *lease_seconds*);
* ``blocks``: ``[{key, blocked_until, reason, remaining_seconds}]`` (empty: no blocks).

Settings read: none (the command passes the lease length). Stats written: none.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

STATUSES = ("pending", "in_progress", "completed", "failed")
WINDOW_SECONDS = 300.0
BAR_WIDTH = 30


def build_view(
    host_counts: list[tuple[str, str, str, int, int]],
    workers: list[dict[str, Any]],
    blocks: list[dict[str, Any]],
    *,
    now: datetime,
    window_seconds: float = WINDOW_SECONDS,
    lease_seconds: float,
    source: str | None = None,
) -> dict[str, Any]:
    """The view (shape in the module docstring); with *source*, only that source's counts."""
    minutes = window_seconds / 60.0
    sources: dict[str, dict[str, Any]] = {}
    recent: dict[str, dict[str, int]] = {}
    for name, host, status, items, finished in host_counts:
        if source is not None and name != source:
            continue
        entry = sources.setdefault(name, {**dict.fromkeys(STATUSES, 0), "hosts": {}})
        per_host = entry["hosts"].setdefault(host, dict.fromkeys(STATUSES, 0))
        entry[status] = entry.get(status, 0) + items
        per_host[status] = per_host.get(status, 0) + items
        recent.setdefault(name, {}).setdefault(host, 0)
        recent[name][host] += finished
    for name, entry in sources.items():
        for host, per_host in entry["hosts"].items():
            per_host["requests_per_minute"] = round(recent[name][host] / minutes, 2)
        rate = sum(recent[name].values()) / minutes
        entry["requests_per_minute"] = round(rate, 2)
        left = entry["pending"] + entry["in_progress"]
        entry["eta_seconds"] = round(left / rate * 60.0, 1) if rate > 0 else (0.0 if left == 0 else None)
        entry["hosts"] = dict(sorted(entry["hosts"].items()))
    return {
        "generated_at": now.isoformat(),
        "window_seconds": window_seconds,
        "sources": dict(sorted(sources.items())),
        "workers": [_worker(w, now, lease_seconds) for w in workers],
        "blocks": [
            {
                "key": b["key"],
                "blocked_until": b["blocked_until"].isoformat(),
                "reason": b.get("reason"),
                "remaining_seconds": round(max((b["blocked_until"] - now).total_seconds(), 0.0), 1),
            }
            for b in blocks
        ],
    }


def _worker(row: dict[str, Any], now: datetime, lease_seconds: float) -> dict[str, Any]:
    owner = str(row["owner"])
    parts = owner.rsplit(":", 2)
    host, pid = (parts[0], int(parts[1])) if len(parts) == 3 and parts[1].isdigit() else (None, None)
    seen = [t for t in (row.get("last_claim"), _renewed(row.get("lease_expires_at"), lease_seconds)) if t is not None]
    last = max(seen) if seen else None
    return {
        "owner": owner,
        "host": host,
        "pid": pid,
        "items": row["items"],
        "live_leases": row["live"],
        "last_seen": last.isoformat() if last else None,
        "seen_seconds_ago": round(max((now - last).total_seconds(), 0.0), 1) if last else None,
    }


def _renewed(expires: datetime | None, lease_seconds: float) -> datetime | None:
    return None if expires is None else expires - timedelta(seconds=lease_seconds)


def live_workers(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The workers holding at least one unexpired lease."""
    return [w for w in view["workers"] if w["live_leases"] > 0]


def duration(seconds: float | None) -> str:
    """``1h02m``, ``4m05s``, ``12s``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[#########.........]  45.0%``: *done* of *total* (completed and failed of all items)."""
    share = done / total if total else 1.0
    filled = int(round(share * width))
    return f"[{'#' * filled}{'.' * (width - filled)}] {share * 100:5.1f}%"


def render_table(view: dict[str, Any]) -> list[str]:
    """The view as text lines: per source, then per host, the counts and rate; workers; blocks."""
    lines = [f"{'source / host':<36}" + "".join(f"{s:>12}" for s in STATUSES) + f"{'req/min':>10}{'eta':>9}"]
    for name, entry in view["sources"].items():
        counts = "".join(f"{entry[s]:>12}" for s in STATUSES)
        lines.append(f"{name:<36}{counts}{entry['requests_per_minute']:>10.1f}{duration(entry['eta_seconds']):>9}")
        for host, per_host in entry["hosts"].items():
            counts = "".join(f"{per_host[s]:>12}" for s in STATUSES)
            lines.append(f"  {host:<34}{counts}{per_host['requests_per_minute']:>10.1f}")
    window = int(view["window_seconds"] // 60)
    lines.append(f"(req/min: attempts finished in the last {window} min; eta: pending and in progress at that rate)")
    workers = view["workers"]
    live = len(live_workers(view))
    lines.append(
        f"workers: {live} live" + (f", {len(workers) - live} with expired leases only" if live < len(workers) else "")
    )
    for w in workers:
        state = "live" if w["live_leases"] else "expired"
        lines.append(
            f"  {w['owner']:<40} host {w['host'] or '?'} pid {w['pid'] or '?'}  {w['items']} leased ({state}),"
            f" last seen {duration(w['seen_seconds_ago'])} ago"
        )
    if view["blocks"]:
        lines.append("blocks:")
        for b in view["blocks"]:
            reason = f" ({b['reason']})" if b["reason"] else ""
            lines.append(f"  {b['key']}: {duration(b['remaining_seconds'])} left{reason}")
    else:
        lines.append("blocks: no blocks")
    return lines


CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen (plain ANSI)


def render_watch(view: dict[str, Any], width: int = BAR_WIDTH) -> str:
    """One frame of ``frontier watch``: a progress bar per source above the table (no screen control)."""
    lines = [f"holocron frontier  {view['generated_at']}", ""]
    for name, entry in view["sources"].items():
        total = sum(entry[s] for s in STATUSES)
        done = entry["completed"] + entry["failed"]
        lines.append(
            f"{name:<24} {bar(done, total, width)}  {done}/{total}"
            f"  {entry['requests_per_minute']:.1f} req/min  eta {duration(entry['eta_seconds'])}"
        )
    lines.append("")
    lines.extend(render_table(view))
    return "\n".join(lines) + "\n"
