"""Scrapy's own crawl-level tests, run as shipped and with the SQL frontier as Scrapy's default scheduler.

Scrapy's sdist ships its test suite. This module fetches the sdist of the installed Scrapy version
(``pip download``, cached in ``~/.cache/holocron/scrapy-<version>``, or under
``HOLOCRON_SCRAPY_SUITE_CACHE``), unpacks its ``tests/``, ``conftest.py`` and ``pyproject.toml``, and
runs :data:`MODULES` twice, each in a subprocess: as shipped, then with
``tests/scrapy_suite/holocron_frontier_plugin.py``, which makes only the frontier Scrapy's default
(scheduler, dupe filter, the two ack middlewares, a fresh SQLite state per crawler). It asserts:

* every test that passes with Scrapy's scheduler passes with the frontier, except :data:`EXCEPTIONS`
  (tests of Scrapy's scheduler internals, or of behaviour the frontier changes on purpose; each
  with its reason);
* the frontier run takes at most twice as long as the baseline, and no test takes
  :data:`MAX_EXTRA_SECONDS` longer (a crawl through the frontier starts and closes about as fast);
* the crawls went through the frontier (the plugin reports how many state databases it opened).

Left out (see :data:`LEFT_OUT`): modules whose crawls run in subprocesses the plugin does not reach,
and unit tests of Scrapy components that no scheduler touches. The test dependency beyond
``requirements.txt``'s runtime ones is ``attrs`` (``tests/utils/engine.py``), pinned there.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import scrapy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "tests" / "scrapy_suite"

#: Scrapy's crawl-level test modules (about 320 tests; 35 s as shipped on the 2-core CI machine).
MODULES = [
    "tests/test_crawl.py",
    "tests/test_crawler.py",
    "tests/test_crawler_runners.py",
    "tests/test_engine.py",
    "tests/test_engine_close_spider.py",
    "tests/test_engine_download.py",
    "tests/test_engine_loop.py",
    "tests/test_engine_stop_download_bytes.py",
    "tests/test_engine_stop_download_headers.py",
    "tests/test_closespider.py",
    "tests/test_logstats.py",
    "tests/test_pipeline_crawl.py",
    "tests/test_request_attribute_binding.py",
    "tests/test_request_cb_kwargs.py",
    "tests/test_request_left.py",
    "tests/test_scheduler.py",
    "tests/test_scheduler_base.py",
    "tests/test_signals.py",
    "tests/test_spider_crawl.py",
    "tests/test_spider_start.py",
    "tests/test_spidermiddleware_depth.py",
    "tests/test_spidermiddleware_output_chain.py",
    "tests/test_spidermiddleware_process_start.py",
    "tests/test_spidermiddleware_start.py",
]

#: Modules of Scrapy's suite not run here, and why.
LEFT_OUT = {
    "test_crawler_subprocess, test_command_*, test_cmdline*": (
        "their crawls run in subprocesses started by the tests, which the plugin does not reach (they would"
        " test Scrapy's scheduler twice), and they take minutes"
    ),
    "test_dupefilters": (
        "unit tests of Scrapy's RFPDupeFilter (its file, its log lines, its deprecations), built through a"
        " scheduler; the frontier's dupe filter is another class on purpose"
    ),
    "test_feedexport*, test_pipeline_files/images/media": (
        "exporters and media storage: crawls of one or two pages each, over 400 tests and minutes of run"
        " time for nothing the scheduler does differently"
    ),
    "test_downloadermiddleware_*, test_spidermiddleware_* (other than those above), test_http_*, test_utils_*": (
        "unit tests of components that no scheduler touches"
    ),
}

#: ``<junit classname>::<name>`` -> why it fails with the frontier, on purpose.
EXCEPTIONS = {
    "tests.test_engine_close_spider::test_exception_scheduler": (
        "deletes the attribute `dqs` (the disk queue) of Scrapy's Scheduler to make its close fail: a Scrapy"
        " internal the frontier does not have"
    ),
    "tests.test_engine_loop.TestRequestSendOrder::test_lifo_start": (
        "configures the queue classes of Scrapy's scheduler (SCHEDULER_START_MEMORY_QUEUE = LIFO); the frontier's"
        " queue is the work_items table, ordered by priority, then depth (HOLOCRON_FRONTIER_ORDER), then first in"
        " first out"
    ),
    "tests.test_engine_loop.TestRequestSendOrder::test_shared_queues": (
        "configures the queue classes of Scrapy's scheduler (SCHEDULER_START_MEMORY_QUEUE = None: one LIFO queue"
        " for start and other requests); see test_lifo_start"
    ),
    "tests.test_engine_loop.TestRequestSendOrder::test_lazy": (
        "the lazy start pattern waits for scheduler_empty, which the engine sends whenever next_request returns"
        " None; the frontier hands out a request only after it has been written and claimed (one round trip to"
        " the worker thread), so start request 4 is pulled before the callback's request 3 is found; and the"
        " frontier's default order is breadth-first, which sends 4 (depth 0) before 3 (depth 1)"
    ),
    "tests.test_scheduler.TestIntegrationWithDownloaderAwareInMemory"
    "::test_integration_downloader_aware_priority_queue": (
        "configures Scrapy's scheduler internals (SCHEDULER_PRIORITY_QUEUE) and DUPEFILTER_CLASS ="
        " BaseDupeFilter, which the frontier refuses with a ConfigError: its dedupe key is the frontier's"
    ),
    "tests.test_scheduler::test_unserializable_requests": (
        "asserts the stats of Scrapy's scheduler queues (scheduler/unserializable, scheduler/enqueued/memory) and"
        " its log text; the frontier keeps such requests in memory too and counts them as frontier/unserializable"
        " (tests/test_frontier_scheduler.py)"
    ),
}

#: The frontier run may take this many times as long as the baseline.
MAX_SLOWDOWN = 2.0
#: ... and no test this many seconds longer than with Scrapy's scheduler.
MAX_EXTRA_SECONDS = 2.0


def _cache_dir() -> Path:
    root = os.environ.get("HOLOCRON_SCRAPY_SUITE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "holocron"
    return base / f"scrapy-{scrapy.__version__}"


def _suite() -> Path:
    """The unpacked test suite of the installed Scrapy version (downloaded once)."""
    cache = _cache_dir()
    suite = cache / "suite"
    if (suite / ".complete").exists():
        return suite
    download = cache / "sdist"
    sdist = download / f"scrapy-{scrapy.__version__}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
                f"scrapy=={scrapy.__version__}", "--no-binary", ":all:", "--no-deps", "-d", str(download),
            ],
            check=True,
        )  # fmt: skip
    shutil.rmtree(suite, ignore_errors=True)  # left half-unpacked by a run that was stopped
    staging = cache / f"suite.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    prefix = f"scrapy-{scrapy.__version__}/"
    with tarfile.open(sdist) as tar:
        wanted = [
            m
            for m in tar.getmembers()
            if m.name in (prefix + "conftest.py", prefix + "pyproject.toml") or m.name.startswith(prefix + "tests/")
        ]
        tar.extractall(staging, members=wanted, filter="data")
    (staging / prefix / ".complete").touch()
    try:
        (staging / prefix).rename(suite)
    except OSError:  # another process unpacked it first
        if not (suite / ".complete").exists():
            raise
    shutil.rmtree(staging, ignore_errors=True)
    return suite


def _outcomes(junit: Path) -> dict[str, tuple[str, float]]:
    """``classname::name`` -> (passed | failed | skipped, seconds)."""
    found = {}
    for case in ET.parse(junit).iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        found[f"{case.get('classname')}::{case.get('name')}"] = (outcome, float(case.get("time") or 0))
    return found


def _run(suite: Path, out: Path, name: str, *, frontier: bool) -> tuple[dict[str, tuple[str, float]], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SCRAPY_"))}
    env.pop("PYTHONPATH", None)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    if frontier:
        env["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_DIR), str(REPO)])
        env["HOLOCRON_SCRAPY_SUITE_REPORT"] = str(out / "frontier-report.json")
        args += ["-p", "holocron_frontier_plugin"]
    junit = out / f"{name}.xml"
    started = time.monotonic()
    done = subprocess.run(
        [*args, f"--junitxml={junit}", *MODULES], cwd=suite, env=env, capture_output=True, text=True, timeout=900
    )
    elapsed = time.monotonic() - started
    assert done.returncode in (0, 1) and junit.exists(), (
        f"{name}: pytest exited {done.returncode}\n{done.stdout[-4000:]}"
    )
    return _outcomes(junit), elapsed


def test_scrapy_crawl_tests_pass_with_the_frontier_as_the_scheduler(tmp_path):
    suite = _suite()
    baseline, baseline_seconds = _run(suite, tmp_path, "baseline", frontier=False)
    frontier, frontier_seconds = _run(suite, tmp_path, "frontier", frontier=True)

    passed = {test for test, (outcome, _) in baseline.items() if outcome == "passed"}
    assert len(passed) > 250, f"only {len(passed)} tests passed as shipped"
    unknown = set(EXCEPTIONS) - set(baseline)
    assert not unknown, f"exceptions that name no test of Scrapy {scrapy.__version__}: {sorted(unknown)}"
    broken = sorted(t for t in passed - set(EXCEPTIONS) if frontier.get(t, ("missing", 0))[0] != "passed")
    assert not broken, f"{len(broken)} tests pass with Scrapy's scheduler, not with the frontier: {broken}"

    both = passed & set(frontier)
    extra = max((frontier[t][1] - baseline[t][1] for t in both), default=0.0)
    print(
        f"Scrapy {scrapy.__version__}: {len(passed)} of {len(baseline)} pass as shipped in {baseline_seconds:.1f} s;"
        f" with the frontier {sum(o == 'passed' for o, _ in frontier.values())} pass in {frontier_seconds:.1f} s"
        f" ({len(EXCEPTIONS)} exceptions); the most a test took longer: {extra:.2f} s"
    )
    report = json.loads((tmp_path / "frontier-report.json").read_text(encoding="utf-8"))
    assert report["frontier_states"] > 150, report  # the crawls went through the frontier

    assert frontier_seconds <= MAX_SLOWDOWN * baseline_seconds, (
        f"the frontier run took {frontier_seconds:.1f} s against {baseline_seconds:.1f} s"
    )
    slower = {
        t: round(frontier[t][1] - baseline[t][1], 2)
        for t in both
        if frontier[t][1] - baseline[t][1] > MAX_EXTRA_SECONDS
    }
    assert not slower, f"tests that took seconds longer with the frontier: {slower}"
