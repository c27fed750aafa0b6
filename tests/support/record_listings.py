"""Record the answers of the lab MediaWiki to the listing requests of
:mod:`holocron_scrapy.mediawiki.listings` and :mod:`holocron_scrapy.mediawiki.changes`.

``python -m tests.support.record_listings [--out tests/fixtures/mediawiki/listings]`` builds a
private copy of the test wiki (tests/support/mediawiki_server.py, cached build), serves it, and:

1. creates a small category tree (:data:`CATEGORY_TREE`, with a loop) before the checkpoint;
2. takes the checkpoint (the server's ``curtimestamp``), then makes the changes of
   :func:`run_scenario` (titles in the constants below, outcome in :data:`EXPECTED`) with the
   maintenance scripts (``edit.php``, ``deleteBatch.php``, ``moveBatch.php``, ``undelete.php``),
   takes the run start, and makes one more edit after it;
3. records the answers of recentchanges (whole window, and with ``rclimit=4`` for a
   continuation chain), the oldest kept change, ``$wgRCMaxAge`` (paraminfo), a ``maxlag`` error,
   allpages of namespaces 0 and 14 (``aplimit=max``: namespace 0 needs two requests), a prefix
   listing and the category tree (``limit=2``, for continuations), and an invalid category.

Every file is the decoded JSON body; ``manifest.json`` lists each file with its query and the
scenario's timestamps. No pytest dependency: :func:`run_scenario` is also what the live test of
tests/test_mediawiki_changes.py runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # pragma: no cover - allow `python tests/support/record_listings.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from holocron_scrapy.mediawiki import changes, listings
from tests.support import mediawiki_server as ms
from tests.support import wikigen

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mediawiki" / "listings"
NAMESPACES = (0, 14)  # crawled namespaces of the recordings

#: Category pages (text) created before the checkpoint: root > branch > leaf > root (a loop),
#: root > side; ``Listing page N`` are members (page 8 in two categories; a talk page too).
CATEGORY_TREE: dict[str, str] = {
    "Category:Listing root": "Root of the listing test tree.\n[[Category:Listing leaf]]\n",
    "Category:Listing branch": "A branch.\n[[Category:Listing root]]\n",
    "Category:Listing side": "A side branch.\n[[Category:Listing root]]\n",
    "Category:Listing leaf": "A leaf (it holds the root: a loop).\n[[Category:Listing branch]]\n",
    "Listing page 1": "One.\n[[Category:Listing root]]\n",
    "Listing page 2": "Two.\n[[Category:Listing root]]\n",
    "Listing page 3": "Three.\n[[Category:Listing root]]\n",
    "Listing page 4": "Four.\n[[Category:Listing branch]]\n",
    "Listing page 5": "Five.\n[[Category:Listing branch]]\n",
    "Listing page 6": "Six.\n[[Category:Listing leaf]]\n",
    "Listing page 7": "Seven.\n[[Category:Listing side]]\n",
    "Listing page 8": "Eight, in two categories.\n[[Category:Listing root]]\n[[Category:Listing branch]]\n",
    "Talk:Listing page 1": "A talk page in the root category.\n[[Category:Listing root]]\n",
}
CATEGORY_ROOT = "Category:Listing root"
#: Members by depth below the root, in the crawled namespaces (0 and 14).
CATEGORY_MEMBERS_BY_DEPTH: dict[int, frozenset[str]] = {
    0: frozenset({"Listing page 1", "Listing page 2", "Listing page 3", "Listing page 8"})
    | frozenset({"Category:Listing branch", "Category:Listing side"}),
    1: frozenset({"Listing page 4", "Listing page 5", "Listing page 8", "Listing page 7", "Category:Listing leaf"}),
    2: frozenset({"Listing page 6", "Category:Listing root"}),
}
PREFIX = "Listing page"

# Articles of the generated wiki the scenario changes (tier-1 articles, see tests/fixtures/mediawiki).
EDITED = (
    "Sarvessha",
    "Ionsar Runner",
    "Quayav Brikorost",
    "T1-C5",
    "Siege of Xanrhenfen",
    "Emfencor Syndicate",
    "Nordol IV",
)
CREATED = ("Listing new page A", "Listing new page B")
DELETED = "Ulphebis-class cruiser"
MOVED = ("Roktumir Rhenvesban", "Roktumir Rhenvesban (moved)")
EDITED_THEN_DELETED = "G1-G5"
DELETED_THEN_RESTORED = "Siege of Quaphe"
MOVED_THEN_EDITED = ("Zelosttha Collective", "Zelosttha Collective (renamed)")
MOVED_TWICE = ("Ulri", "Ulri (first)", "Ulri (second)")
MOVED_NO_REDIRECT = ("Lunkor Runner", "Lunkor Runner (no redirect)")
MOVED_AND_BACK = ("Bisgelcor Ulvekvek", "Bisgelcor Ulvekvek (away)")
CREATED_THEN_DELETED = "Listing ephemeral page"
CREATED_THEN_MOVED = ("Listing drifting page", "Listing drifted page")
TALK_EDITED = "Talk:Sarvessha"  # outside the crawled namespaces: not listed
AFTER_WINDOW = "C3-C3 unit"  # edited after the run start: outside the window

#: What :func:`holocron_scrapy.mediawiki.changes.classify` must make of the window (as sets).
EXPECTED = {
    "refetch": {
        *EDITED,
        DELETED_THEN_RESTORED,
        MOVED[1],
        MOVED_THEN_EDITED[1],
        MOVED_TWICE[2],
        MOVED_NO_REDIRECT[1],
        MOVED_AND_BACK[0],
    },
    "created": {*CREATED, CREATED_THEN_MOVED[1]},
    "deleted": {DELETED, EDITED_THEN_DELETED, CREATED_THEN_DELETED},
    "moved": {
        MOVED[0]: MOVED[1],
        MOVED_THEN_EDITED[0]: MOVED_THEN_EDITED[1],
        MOVED_TWICE[0]: MOVED_TWICE[2],
        MOVED_NO_REDIRECT[0]: MOVED_NO_REDIRECT[1],
    },
}


def expected_articles(model: wikigen.WikiModel) -> set[str]:
    """The non-redirect pages of namespace 0 after the scenario (what allpages must list)."""
    titles = {page.title for page in model.articles()}
    titles |= {t for t in CATEGORY_TREE if wikigen.namespace_of(t) == 0}
    titles |= {*CREATED, CREATED_THEN_MOVED[1]}
    titles -= {DELETED, EDITED_THEN_DELETED}
    for old, new in EXPECTED["moved"].items():
        titles.discard(old)
        titles.add(new)
    return titles


class Scenario:
    """Makes the changes on a served wiki with the maintenance scripts; ``log`` says what was done."""

    def __init__(self, install: ms.WikiInstall, api_url: str) -> None:
        self.install = install
        self.api_url = api_url
        self.log: list[str] = []

    def edit(self, title: str, text: str) -> None:
        out = self.install.run_maintenance("edit", "--summary", "listing scenario", title, stdin=text)
        if "done" not in out:
            raise ms.MediaWikiError(f"edit.php did not save {title!r}: {out[-500:]}")
        self.log.append(f"edit {title}")

    def delete(self, title: str) -> None:
        self.install.run_maintenance("deleteBatch", "--r", "listing scenario", stdin=title + "\n")
        self.log.append(f"delete {title}")

    def restore(self, title: str) -> None:
        self.install.run_maintenance("undelete", "--reason", "listing scenario", title)
        self.log.append(f"restore {title}")

    def move(self, old: str, new: str, *, redirect: bool = True) -> None:
        args = ["--r", "listing scenario"] + ([] if redirect else ["--noredirects"])
        self.install.run_maintenance("moveBatch", *args, stdin=f"{old}|{new}\n")
        self.log.append(f"move {old} -> {new}" + ("" if redirect else " (no redirect)"))

    def server_time(self) -> str:
        data = ms.api_get(self.api_url, {"action": "query", "curtimestamp": "1"})
        return str(data["curtimestamp"])


def _next_second(scenario: Scenario) -> str:
    """Wait until the server's clock has passed a second boundary; return the new time."""
    first = scenario.server_time()
    while True:
        time.sleep(0.3)
        now = scenario.server_time()
        if now != first:
            return now


def run_scenario(install: ms.WikiInstall, api_url: str) -> dict[str, Any]:
    """Create the category tree, take the checkpoint, make the changes, take the run start.

    Returns ``{"checkpoint", "run_start", "log"}``; timestamps are the server's, and no change
    shares a second with either of them.
    """
    scenario = Scenario(install, api_url)
    for title, text in CATEGORY_TREE.items():
        scenario.edit(title, text)
    _next_second(scenario)
    checkpoint = _next_second(scenario)
    _next_second(scenario)

    for i, title in enumerate(EDITED):
        scenario.edit(title, f"'''{title}''' was edited by the listing scenario ({i}).\n")
    scenario.edit(EDITED[0], f"'''{EDITED[0]}''' was edited twice by the listing scenario.\n")
    for title in CREATED:
        scenario.edit(title, f"'''{title}''' is new. See [[{EDITED[0]}]].\n")
    scenario.delete(DELETED)
    scenario.move(*MOVED)
    scenario.edit(EDITED_THEN_DELETED, f"'''{EDITED_THEN_DELETED}''' is about to go.\n")
    scenario.delete(EDITED_THEN_DELETED)
    scenario.delete(DELETED_THEN_RESTORED)
    scenario.restore(DELETED_THEN_RESTORED)
    scenario.move(*MOVED_THEN_EDITED)
    scenario.edit(MOVED_THEN_EDITED[1], f"'''{MOVED_THEN_EDITED[1]}''' was edited after its move.\n")
    scenario.move(MOVED_TWICE[0], MOVED_TWICE[1])
    scenario.move(MOVED_TWICE[1], MOVED_TWICE[2])
    scenario.move(*MOVED_NO_REDIRECT, redirect=False)
    scenario.move(MOVED_AND_BACK[0], MOVED_AND_BACK[1])
    scenario.move(MOVED_AND_BACK[1], MOVED_AND_BACK[0])
    scenario.edit(CREATED_THEN_DELETED, "Here for a moment.\n")
    scenario.delete(CREATED_THEN_DELETED)
    scenario.edit(CREATED_THEN_MOVED[0], "Created, then moved.\n")
    scenario.move(*CREATED_THEN_MOVED)
    scenario.edit(TALK_EDITED, "A talk page edit (namespace 1).\n")

    _next_second(scenario)
    run_start = _next_second(scenario)
    _next_second(scenario)
    scenario.edit(AFTER_WINDOW, f"'''{AFTER_WINDOW}''' was edited after the run started.\n")
    return {"checkpoint": checkpoint, "run_start": run_start, "log": scenario.log}


def window_params(checkpoint: str, run_start: str, **extra: Any) -> dict[str, str]:
    """The recorded window: from the checkpoint (margin 0) to the run start, namespaces 0|14."""
    return changes.recentchanges_params(
        start=changes.parse_timestamp(checkpoint),
        end=changes.parse_timestamp(run_start),
        namespaces=NAMESPACES,
        **extra,
    )


def follow(api_url: str, params: dict[str, str], name: str, record: Callable[[str, dict[str, str], Any], None]) -> None:
    """Issue *params* and every continuation, recording ``<name>_<n>``."""
    extra: dict[str, str] = {}
    for part in range(1, 100):
        full = {**params, **extra}
        data = ms.api_request(api_url, full).json()
        record(f"{name}_{part}", full, data)
        cont = listings.continuation_of(data)
        if cont is None:
            return
        extra = cont
    raise ms.MediaWikiError(f"{name}: continuation did not finish in 100 requests")


def record_all(install: ms.WikiInstall, api_url: str, out: Path) -> list[Path]:
    """Run the scenario on the served *install* and write every recording under *out*."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    state = run_scenario(install, api_url)
    manifest: dict[str, Any] = {
        "mediawiki": ms.mediawiki_version(),
        "wikigen": wikigen.WIKIGEN_VERSION,
        "namespaces": list(NAMESPACES),
        **state,
        "files": {},
    }
    written: list[Path] = []

    def record(name: str, params: dict[str, str], data: Any) -> None:
        path = out / f"{name}.json"
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        manifest["files"][name] = params
        written.append(path)

    def once(name: str, params: dict[str, str]) -> None:
        record(name, params, ms.api_request(api_url, params).json())

    cp, rs = state["checkpoint"], state["run_start"]
    once("rc_window", window_params(cp, rs))
    follow(api_url, window_params(cp, rs, limit=4), "rc_window_limit4", record)
    once("rc_oldest", changes.oldest_change_params())
    once("rc_max_age", changes.rc_max_age_params())
    once("rc_maxlag_error", window_params(cp, rs, maxlag=-1))
    for spec_value, name in (("allpages", "allpages"), (f"prefix:{PREFIX}", "prefix")):
        spec = listings.parse_generator(spec_value, namespaces=NAMESPACES)
        limit: int | str = "max" if name == "allpages" else 3
        for listing in spec.listings():
            ns = listing.namespaces[0]
            follow(api_url, listings.listing_params(listing, limit=limit), f"{name}_ns{ns}", record)
    walk = listings.ListingWalk.start(
        listings.parse_generator(f"categorymembers:{CATEGORY_ROOT}", namespaces=NAMESPACES, max_depth=2)
    )
    part = 0
    while not walk.done:
        part += 1
        params = walk.next_params(limit=2)
        data = ms.api_request(api_url, params).json()
        record(f"categorymembers_{part}", params, data)
        walk.feed(data)
    bad = listings.Listing(listings.CATEGORYMEMBERS, NAMESPACES, category="Category:Foo<Bar")
    once("categorymembers_invalid_error", listings.listing_params(bad))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"where to write (default {FIXTURES})")
    args = parser.parse_args(argv)
    reason = ms.unavailable_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="holocron-listings-") as tmp:
        model = wikigen.build_model()
        dump = model.write_dump(Path(tmp) / "dump.xml")
        install = ms.build_wiki(Path(tmp), dump, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        with ms.serve(install) as wiki:
            for path in record_all(install, wiki.api_url, args.out):
                print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
