"""``scrapy frontier stats|watch|retry-failed|recrawl|release-leases``: inspect and steer the frontier.

The state URL is ``--url``, else the crawl's rule (:mod:`holocron_scrapy.db.targets`): of the
``HOLOCRON_STATE_URL`` setting, ``state.url`` of the config chosen by ``HOLOCRON_CONFIG`` and
``JOBDIR``/frontier.sqlite3 the one set at the highest priority, else the default.

* ``--source NAME`` must name a known source (one of the config, or one with work items):
  otherwise one error line lists the known ones and the exit status is 1.
* ``stats`` shows the fleet view of :mod:`holocron_scrapy.frontier.fleet`: per source and per host
  the pending, in progress, completed and failed counts, requests per minute over the last 5
  minutes and an ETA; the workers holding leases (owner, host, pid, last seen) and active host
  blocks. ``--json`` prints the same data (its shape is documented in that module), plus
  ``oldest_lease`` and ``failure_reasons``.
* ``watch`` redraws that view every ``--interval`` seconds (default 5) with a progress bar per
  source, in plain ANSI; Ctrl-C ends it (exit status 0). A read that fails (the database restarts)
  shows one line in place of the frame and the next redraw tries again. ``--once`` prints one
  frame, without clearing the screen, and exits (status 1 with one line when the read fails).
* ``release-leases`` gives back only leases whose owner is gone: a worker on this host whose
  process no longer runs, or a worker elsewhere whose lease expired. ``--force`` releases
  every lease (only when no worker is running). It says how many it skipped.

Settings read: ``HOLOCRON_STATE_URL``, ``HOLOCRON_STATE_SQLSERVER``, ``HOLOCRON_CONFIG``, ``JOBDIR``,
``HOLOCRON_FRONTIER_LEASE_SECONDS`` (to tell a worker's last lease renewal from its lease expiry).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from holocron_scrapy import defaults
from holocron_scrapy.config import load_config, parse_duration
from holocron_scrapy.db.engine import db_error_text
from holocron_scrapy.db.targets import STATE, resolve_store_target
from holocron_scrapy.errors import ConfigError, HolocronError, StoreError
from holocron_scrapy.frontier.fleet import CLEAR, WINDOW_SECONDS, build_view, render_table, render_watch
from holocron_scrapy.frontier.store import WorkItemStore, local_owner_alive, open_work_item_store, utcnow

ACTIONS = ("stats", "watch", "retry-failed", "recrawl", "release-leases")


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings = {"LOG_LEVEL": "WARNING"}

    def syntax(self) -> str:
        return (
            "stats [--json] [--source NAME] | watch [--interval S] [--once] [--source NAME]"
            " | retry-failed [--source NAME] | recrawl --source NAME [--older-than 30d] | release-leases [--force]"
        )

    def short_desc(self) -> str:
        return "Show or steer the SQL frontier (work_items)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        group = parser.add_argument_group(title="Frontier options")
        group.add_argument("--url", metavar="URL", help="state URL (default: HOLOCRON_STATE_URL, then the config)")
        group.add_argument("--json", action="store_true", help="stats: print JSON")
        group.add_argument(
            "--interval", metavar="SECONDS", type=float, default=5.0, help="watch: seconds between redraws (default 5)"
        )
        group.add_argument("--once", action="store_true", help="watch: print one frame and exit")
        group.add_argument("--source", metavar="NAME", help="limit to one source (of the config or of the frontier)")
        group.add_argument(
            "--older-than",
            metavar="AGE",
            help="recrawl: only items completed more than AGE ago, e.g. 30d or 12h"
            " (default: no limit, every completed item of the source is re-queued)",
        )
        group.add_argument(
            "--force",
            action="store_true",
            help="release-leases: also release the leases of workers that may still be running",
        )

    def state_url(self, opts: argparse.Namespace) -> tuple[str, dict[str, Any]]:
        target = resolve_store_target(STATE, self.settings, url=opts.url)
        return target.url, target.sqlserver_config

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1 or args[0] not in ACTIONS:
            raise UsageError(f"expected one of: {', '.join(ACTIONS)}")
        try:
            url, sqlserver = self.state_url(opts)
            store = open_work_item_store(url, sqlserver_config=sqlserver)
        except HolocronError as exc:
            self.fail(exc)
            return
        try:
            if opts.source and args[0] != "release-leases":
                self.check_source(store, opts.source)
            self.exitcode = getattr(self, "do_" + args[0].replace("-", "_"))(store, opts)
        except HolocronError as exc:  # a bad option value, or the store failing mid-way
            self.fail(exc)
        finally:
            store.close()

    def check_source(self, store: WorkItemStore, name: str) -> None:
        """Raise ConfigError naming *name* and the known sources unless it is one of them."""
        known = set(store.counts())
        assert self.settings is not None
        try:
            known |= set(load_config(self.settings.get("HOLOCRON_CONFIG")).sources)
        except HolocronError:
            pass  # no usable config: the frontier's sources are all we know
        if name not in known:
            raise ConfigError(f"unknown source {name!r} (known: {', '.join(sorted(known)) or 'none'})", key="--source")

    def fail(self, exc: HolocronError) -> None:
        print(f"frontier: {exc}", file=sys.stderr)
        self.exitcode = 1

    def fleet_view(self, store: WorkItemStore, source: str | None) -> dict[str, Any]:
        """The fleet view of :mod:`holocron_scrapy.frontier.fleet`, read now."""
        now = utcnow()
        since = now - timedelta(seconds=WINDOW_SECONDS)
        assert self.settings is not None
        lease = self.settings.getfloat("HOLOCRON_FRONTIER_LEASE_SECONDS", defaults.FRONTIER_LEASE_SECONDS)
        return build_view(
            store.host_counts(since),
            store.workers(),
            store.active_blocks(),
            now=now,
            lease_seconds=lease,
            source=source,
        )

    def do_stats(self, store: WorkItemStore, opts: argparse.Namespace) -> int:
        view = self.fleet_view(store, opts.source)
        lease = store.oldest_lease()
        failures = store.failure_reasons()
        if opts.json:
            report = {**view, "oldest_lease": lease, "failure_reasons": failures}
            print(json.dumps(report, indent=2, default=str))
            return 0
        print("\n".join(render_table(view)))
        print(
            "oldest lease: "
            + (
                f"{lease['dedupe_key']} by {lease['lease_owner']} until {lease['lease_expires_at']}"
                if lease
                else "none"
            )
        )
        for message, count in failures:
            print(f"failed x{count}: {message}")
        return 0

    def do_watch(self, store: WorkItemStore, opts: argparse.Namespace) -> int:
        if opts.interval <= 0:
            raise ConfigError(f"must be a positive number of seconds, not {opts.interval}", key="--interval")
        try:
            while True:
                try:
                    frame = render_watch(self.fleet_view(store, opts.source))
                except sa.exc.SQLAlchemyError as exc:  # e.g. the server restarts: say so, and try again
                    if opts.once:
                        raise StoreError(f"cannot read the frontier: {db_error_text(exc)}") from None
                    frame = f"cannot read the frontier: {db_error_text(exc)} (trying again in {opts.interval:g} s)\n"
                if opts.once:
                    sys.stdout.write(frame)
                    return 0
                sys.stdout.write(CLEAR + frame)
                sys.stdout.flush()
                time.sleep(opts.interval)
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            return 0

    def do_retry_failed(self, store: WorkItemStore, opts: argparse.Namespace) -> int:
        print(f"{store.retry_failed(opts.source)} failed items back to pending")
        return 0

    def do_recrawl(self, store: WorkItemStore, opts: argparse.Namespace) -> int:
        if not opts.source:
            raise UsageError("recrawl needs --source NAME")
        older = parse_duration(opts.older_than, key="--older-than") if opts.older_than else None
        print(f"{store.recrawl(opts.source, older)} completed items of {opts.source} back to pending")
        return 0

    def do_release_leases(self, store: WorkItemStore, opts: argparse.Namespace) -> int:
        if opts.force:
            print(f"{store.release_leases()} leased items back to pending")
            return 0
        released = skipped = 0
        for owner, items, live in store.lease_summary():
            alive = local_owner_alive(owner)
            if alive is None:  # another host: only its expired leases are known to be lost
                released += store.release_leases(owner, expired_only=True)
                skipped += live
            elif alive:
                skipped += items
            else:
                released += store.release_leases(owner)
        line = f"{released} leased items back to pending"
        if skipped:
            line += f"; skipped {skipped} held by workers that may still be running (--force releases them too)"
        print(line)
        return 0
