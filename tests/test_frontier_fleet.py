"""The fleet view (holocron_scrapy.frontier.fleet), pure: recorded store rows in, exact view and text out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from holocron_scrapy.frontier.fleet import bar, build_view, duration, live_workers, render_table, render_watch

NOW = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)

# What SqlWorkItemStore.host_counts / workers / active_blocks returned for a small fleet, as JSON.
RECORDED = json.loads(
    """
{
  "host_counts": [
    ["site", "a.test:8080", "completed", 2, 2],
    ["site", "a.test:8080", "in_progress", 1, 0],
    ["site", "a.test:8080", "pending", 3, 1],
    ["site", "b.test", "completed", 2, 1],
    ["site", "b.test", "pending", 2, 0],
    ["wiki", "wiki.test", "completed", 5, 4],
    ["wiki", "wiki.test", "failed", 1, 1],
    ["wiki", "wiki.test", "in_progress", 2, 0],
    ["wiki", "wiki.test", "pending", 2, 0]
  ],
  "workers": [
    {"owner": "hostA:111:aaaa", "items": 2, "live": 2, "last_claim": "2026-12-05T11:59:30+00:00",
     "lease_expires_at": "2026-12-05T12:09:50+00:00"},
    {"owner": "hostB:222:bbbb", "items": 1, "live": 0, "last_claim": "2026-12-05T11:48:00+00:00",
     "lease_expires_at": "2026-12-05T11:59:00+00:00"},
    {"owner": "legacy-owner", "items": 1, "live": 1, "last_claim": null, "lease_expires_at": null}
  ],
  "blocks": [{"key": "wiki.test", "blocked_until": "2026-12-05T12:02:05+00:00", "reason": "Retry-After: 125"}]
}
"""
)


def view(**kw):
    workers = [
        {k: (datetime.fromisoformat(v) if k in ("last_claim", "lease_expires_at") and v else v) for k, v in w.items()}
        for w in RECORDED["workers"]
    ]
    blocks = [{**b, "blocked_until": datetime.fromisoformat(b["blocked_until"])} for b in RECORDED["blocks"]]
    rows = [tuple(r) for r in RECORDED["host_counts"]]
    return build_view(rows, workers, blocks, now=NOW, lease_seconds=600, **kw)


def test_the_view_sums_hosts_into_sources_with_rates_and_etas():
    v = view()
    assert v["generated_at"] == "2026-12-05T12:00:00+00:00" and v["window_seconds"] == 300
    assert v["sources"] == {
        "site": {
            "pending": 5,
            "in_progress": 1,
            "completed": 4,
            "failed": 0,
            "hosts": {
                "a.test:8080": {
                    "pending": 3,
                    "in_progress": 1,
                    "completed": 2,
                    "failed": 0,
                    "requests_per_minute": 0.6,
                },
                "b.test": {"pending": 2, "in_progress": 0, "completed": 2, "failed": 0, "requests_per_minute": 0.2},
            },
            "requests_per_minute": 0.8,
            "eta_seconds": 450.0,  # 6 left at 0.8 a minute
        },
        "wiki": {
            "pending": 2,
            "in_progress": 2,
            "completed": 5,
            "failed": 1,
            "hosts": {
                "wiki.test": {"pending": 2, "in_progress": 2, "completed": 5, "failed": 1, "requests_per_minute": 1.0}
            },
            "requests_per_minute": 1.0,
            "eta_seconds": 240.0,
        },
    }
    assert list(view(source="wiki")["sources"]) == ["wiki"]


def test_workers_last_seen_is_the_latest_claim_or_renewal():
    v = view()
    assert v["workers"] == [
        # renewed at 12:09:50 - 600 s = 11:59:50, after its last claim (11:59:30)
        {
            "owner": "hostA:111:aaaa",
            "host": "hostA",
            "pid": 111,
            "items": 2,
            "live_leases": 2,
            "last_seen": "2026-12-05T11:59:50+00:00",
            "seen_seconds_ago": 10.0,
        },
        # its lease expired: last renewed 11:49:00, claimed 11:48:00
        {
            "owner": "hostB:222:bbbb",
            "host": "hostB",
            "pid": 222,
            "items": 1,
            "live_leases": 0,
            "last_seen": "2026-12-05T11:49:00+00:00",
            "seen_seconds_ago": 660.0,
        },
        {
            "owner": "legacy-owner",
            "host": None,
            "pid": None,
            "items": 1,
            "live_leases": 1,
            "last_seen": None,
            "seen_seconds_ago": None,
        },
    ]
    assert [w["owner"] for w in live_workers(v)] == ["hostA:111:aaaa", "legacy-owner"]
    assert v["blocks"] == [
        {
            "key": "wiki.test",
            "blocked_until": "2026-12-05T12:02:05+00:00",
            "reason": "Retry-After: 125",
            "remaining_seconds": 125.0,
        }
    ]
    json.dumps(v)  # the --json output: plain JSON types only


def test_eta_without_a_recent_rate_is_unknown_and_nothing_left_is_zero():
    rows = [("idle", "x.test", "pending", 3, 0), ("done", "y.test", "completed", 3, 0)]
    v = build_view(rows, [], [], now=NOW, lease_seconds=600)
    assert v["sources"]["idle"]["eta_seconds"] is None and v["sources"]["done"]["eta_seconds"] == 0.0
    assert v["workers"] == [] and v["blocks"] == []


def test_table_lines():
    lines = render_table(view())
    header = ["source", "/", "host", "pending", "in_progress", "completed", "failed", "req/min", "eta"]
    assert lines[0].split() == header
    assert lines[1].split() == ["site", "5", "1", "4", "0", "0.8", "7m30s"]
    assert lines[2].split() == ["a.test:8080", "3", "1", "2", "0", "0.6"]
    assert lines[4].split() == ["wiki", "2", "2", "5", "1", "1.0", "4m00s"]
    text = "\n".join(lines)
    assert "workers: 2 live, 1 with expired leases only" in text
    assert "hostA:111:aaaa" in text and "host hostA pid 111  2 leased (live), last seen 10s ago" in text
    assert "blocks:\n  wiki.test: 2m05s left (Retry-After: 125)" in text
    no_blocks = build_view([("s", "h", "pending", 1, 0)], [], [], now=NOW, lease_seconds=600)
    assert render_table(no_blocks)[-1] == "blocks: no blocks"


def test_watch_frame_has_a_bar_per_source():
    frame = render_watch(view(), width=10)
    assert "site                     [####......]  40.0%  4/10  0.8 req/min  eta 7m30s" in frame
    assert "wiki                     [######....]  60.0%  6/10  1.0 req/min  eta 4m00s" in frame
    assert "\x1b" not in frame  # the command clears the screen, not the frame


def test_bar_and_duration():
    assert bar(0, 0, 4) == "[####] 100.0%"
    assert bar(1, 3, 6) == "[##....]  33.3%"
    assert [duration(s) for s in (None, 0, 59.6, 61, 3725)] == ["-", "0s", "1m00s", "1m01s", "1h02m"]
