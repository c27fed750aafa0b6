"""Deploying to a real Scrapyd: build and upload the egg with ``scrapyd-deploy``, schedule crawls
with ``schedule.json`` against the local MediaWiki, and check what the jobs stored.

Scrapyd runs in its own temp dir (its ``scrapyd.conf``, eggs, logs and dbs there) with an
environment in which ``holocron_scrapy`` is importable only from the uploaded egg, so the jobs
prove that the egg carries the SQL migrations and the default config and that the code reads
them with ``importlib.resources``. Scrapyd lists a job that failed as "finished";
:func:`wait_for_job` tells the two apart from the job's exit status and logs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.crawl import REPO, Workspace

pytestmark = [pytest.mark.mediawiki, pytest.mark.slow]

PROJECT = "holocron_scrapy"
TARGET = "pytest"
JOB_TIMEOUT = 60.0
# Keep the crawls fast; everything else comes from the config (or the packaged default).
FAST_SETTINGS = {
    "AUTOTHROTTLE_ENABLED": "0",
    "DOWNLOAD_DELAY": "0",
    "TELNETCONSOLE_ENABLED": "0",
    "HOLOCRON_RETRY_BACKOFF_BASE": "0.05",
    "HOLOCRON_RETRY_BACKOFF_MAX": "0.2",
}
_LOG_ERROR = re.compile(r"^.*\] (?:ERROR|CRITICAL): .*$|^Traceback \(most recent call last\):$", re.MULTILINE)
_RUN_SUMMARY = re.compile(r"Run (\S+) (completed|partial|failed): (.*)")


# -- the Scrapyd server ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _console_script(name: str, module: str) -> list[str]:
    """The CLI installed next to this interpreter, else ``python -m module``."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.is_file() else [sys.executable, "-m", module]


def _isolated_env() -> dict[str, str]:
    """os.environ without anything that would let a job import holocron_scrapy from the checkout
    or pick a config other than the one a test passes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOLOCRON_", "SCRAPY_", "SCRAPYD_"))}
    paths = [p for p in env.pop("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class JobOutcome:
    job: str
    status: str  # "finished" (exit 0, no error logged, a run summary) or "failed"
    problems: list[str]
    log: str  # the job's log file (Scrapy's LOG_FILE)
    stderr: list[str]  # what the job wrote to stderr (Scrapyd logs it as Launcher,<pid>/stderr)
    summary: tuple[str, ...] | None  # (run_id, status, counts) of the "Run ... <status>:" line


@dataclass
class Scrapyd:
    root: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen | None = None
    scheduled: dict[str, str] = field(default_factory=dict)  # job id -> spider

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # no trailing slash (see scrapy.cfg)

    @property
    def eggs_dir(self) -> Path:
        return self.root / "eggs"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def daemon_log(self) -> Path:
        return self.root / "scrapyd.log"

    def write_conf(self) -> None:
        (self.root / "scrapyd.conf").write_text(
            "[scrapyd]\n"
            "bind_address = 127.0.0.1\n"
            f"http_port = {self.port}\n"
            f"eggs_dir = {self.eggs_dir}\n"
            f"logs_dir = {self.logs_dir}\n"
            "items_dir =\n"
            f"dbs_dir = {self.root / 'dbs'}\n"
            "jobs_to_keep = 10\n"
            "max_proc = 2\n"
            "poll_interval = 1\n",
            encoding="utf-8",
        )

    def start(self, timeout: float = 30.0) -> None:
        self.write_conf()
        with self.daemon_log.open("wb") as out:
            # scrapyd reads ./scrapyd.conf; its own session, so that stop() reaches the jobs too.
            self.process = subprocess.Popen(
                _console_script("scrapyd", "scrapyd"),
                cwd=self.root,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"scrapyd exited with {self.process.returncode}:\n{self.daemon_text()[-3000:]}")
            try:
                if self.get("daemonstatus.json")["status"] == "ok":
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"scrapyd did not answer within {timeout}s:\n{self.daemon_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the process group of scrapyd and its jobs
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # jobs that outlived scrapyd
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def daemon_text(self) -> str:
        return self.daemon_log.read_text("utf-8", errors="replace") if self.daemon_log.exists() else ""

    # -- the JSON API --------------------------------------------------------------------
    def get(self, endpoint: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/{endpoint}{query}", timeout=10) as response:
            return json.loads(response.read())

    def post(self, endpoint: str, fields: list[tuple[str, str]]) -> dict:
        data = urllib.parse.urlencode(fields).encode()
        with urllib.request.urlopen(f"{self.url}/{endpoint}", data=data, timeout=10) as response:
            return json.loads(response.read())

    def schedule(self, spider: str, settings: dict[str, str], **args: str) -> str:
        """``schedule.json``: like ``curl -d project=... -d spider=... -d setting=K=V -d arg=value``."""
        fields = [("project", PROJECT), ("spider", spider)]
        fields += [("setting", f"{k}={v}") for k, v in {**FAST_SETTINGS, **settings}.items()]
        fields += list(args.items())
        answer = self.post("schedule.json", fields)
        assert answer["status"] == "ok", answer
        self.scheduled[answer["jobid"]] = spider
        return answer["jobid"]

    def wait_for_job(self, job: str, timeout: float = JOB_TIMEOUT) -> JobOutcome:
        """Poll ``listjobs.json`` until *job* is finished, then decide whether it succeeded.

        Scrapyd lists failed jobs as "finished" too, so the outcome is "failed" when the process
        exited non-zero ("Process died" in Scrapyd's log), when its log has an ERROR or a
        traceback, or when it logged no run summary (or a failed one)."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.get("listjobs.json", project=PROJECT)
            if any(j["id"] == job for j in jobs["finished"]):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} not finished after {timeout}s: {jobs}")
            time.sleep(0.3)
        daemon = self.daemon_text()
        log_file = self.logs_dir / PROJECT / self.scheduled[job] / f"{job}.log"
        log = log_file.read_text("utf-8", errors="replace") if log_file.exists() else ""
        started = re.search(rf"Process started: .*job='{job}' pid=(\d+)", daemon)
        stderr = []
        if started:
            tag = f"[Launcher,{started.group(1)}/stderr] "
            stderr = [line.split(tag, 1)[1] for line in daemon.splitlines() if tag in line]
        problems = []
        died = re.search(rf"Process died: exitstatus=(\S+) .*job='{job}'", daemon)
        if died:
            problems.append(f"exit status {died.group(1)}")
        elif not re.search(rf"Process finished: .*job='{job}'", daemon):
            problems.append("Scrapyd logged no end of the process")
        problems += [m.group(0).strip() for m in _LOG_ERROR.finditer(log)]
        match = _RUN_SUMMARY.search(log)
        summary = match.groups() if match else None
        if summary is None:
            problems.append("no run summary in the job log")
        elif summary[1] == "failed":
            problems.append(f"run {summary[0]} failed: {summary[2]}")
        status = "failed" if problems else "finished"
        return JobOutcome(job, status, problems, log, stderr, summary)


@pytest.fixture(scope="module")
def scrapyd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrapyd]:
    root = tmp_path_factory.mktemp("scrapyd")
    server = Scrapyd(root=root, port=_free_port(), env=_isolated_env())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployed(scrapyd: Scrapyd, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Deploy with the real ``scrapyd-deploy <target>`` from a copy of the project (the build
    writes build/ and *.egg-info next to setup.py); returns the egg Scrapyd stored."""
    project = tmp_path_factory.mktemp("project")
    for name in ("scrapy.cfg", "setup.py", "pyproject.toml", "README.md", "sql"):  # pyproject: the metadata
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, project / name)
    # symlinks=True keeps holocron_scrapy/sql -> ../sql a symlink, as in the checkout.
    shutil.copytree(
        REPO / PROJECT, project / PROJECT, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    assert (project / PROJECT / "sql").is_symlink()
    cfg = project / "scrapy.cfg"
    cfg.write_text(
        cfg.read_text("utf-8") + f"\n[deploy:{TARGET}]\nurl = {scrapyd.url}\nproject = {PROJECT}\n", encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRAPY_", "HOLOCRON_"))}
    proc = subprocess.run(
        [*_console_script("scrapyd-deploy", "scrapyd_client.deploy"), TARGET, "--version", "r1"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok", proc.stdout
    assert f'Deploying to project "{PROJECT}" in {scrapyd.url}/addversion.json' in proc.stderr
    (egg,) = (scrapyd.eggs_dir / PROJECT).glob("*.egg")
    return egg


def _repo_data_files() -> dict[str, bytes]:
    """What the egg must carry besides modules: every migration and the packaged config."""
    wanted = {}
    for folder, pattern in (("sql", "*.sql"), ("sql/sqlite", "*.sql"), (f"{PROJECT}/resources", "*.yaml")):
        for path in sorted((REPO / folder).glob(pattern)):
            name = f"{PROJECT}/{path.relative_to(REPO)}" if folder.startswith("sql") else str(path.relative_to(REPO))
            wanted[name] = path.read_bytes()
    return wanted


def _records(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM ingest_records")]
    finally:
        conn.close()


def _runs(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM ingest_runs")]
    finally:
        conn.close()


def _check_stored(records: list[dict], lake: Path, expected: dict[str, dict]) -> None:
    """Exactly the oracle's pages, one record and one file in the source's *lake* folder each,
    with the oracle's outcomes."""
    counts = Counter(r["resource_id"] for r in records)
    assert set(counts) == set(expected), (
        f"missing: {sorted(set(expected) - set(counts))[:10]} extra: {sorted(set(counts) - set(expected))[:10]}"
    )
    assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1]
    assert {r["resource_id"]: r["outcome"] for r in records} == {k: v["outcome"] for k, v in expected.items()}
    docs = [json.loads(p.read_text("utf-8")) for p in sorted(lake.rglob("*.json"))]
    assert sorted(d["metadata"]["resource_id"] for d in docs) == sorted(expected)


# -- tests -----------------------------------------------------------------------------------
def test_egg_carries_the_migrations_and_the_default_config(scrapyd: Scrapyd, deployed: Path):
    # The egg Scrapyd stored, exactly as uploaded by scrapyd-deploy.
    with zipfile.ZipFile(deployed) as egg:
        names = set(egg.namelist())
        for name, content in _repo_data_files().items():
            assert name in names, f"{name} is not in the egg: {sorted(n for n in names if not n.endswith('.py'))}"
            assert egg.read(name) == content, name
        assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
        entry_points = egg.read("EGG-INFO/entry_points.txt").decode()
    assert re.search(r"^\[scrapy\]\s*\nsettings = holocron_scrapy\.settings$", entry_points, re.MULTILINE)
    assert {f"{PROJECT}/sql/sqlite/0001_create_schema.sql", f"{PROJECT}/resources/holocron.default.yaml"} <= names
    spiders = scrapyd.get("listspiders.json", project=PROJECT)
    assert set(spiders["spiders"]) >= {"mediawiki", "wikipedia", "http"}, spiders
    assert scrapyd.get("listversions.json", project=PROJECT)["versions"] == ["r1"]
    # The jobs' environment cannot import holocron_scrapy from anywhere but the egg.
    probe = subprocess.run(
        [sys.executable, "-c", "import holocron_scrapy"], cwd=scrapyd.root, env=scrapyd.env, capture_output=True
    )
    assert probe.returncode != 0, "holocron_scrapy is importable outside the egg: the test would prove nothing"


def test_scheduled_crawl_stores_exactly_the_reachable_pages(scrapyd: Scrapyd, deployed: Path, mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(mediawiki.api_url)  # absolute lake, records and state paths
    seeds = ["Ωmega Station", "No Such Page Anywhere", "Foo<Bar", mediawiki.model.double_redirects[0][0]]
    job = scrapyd.schedule(
        "mediawiki",
        {"HOLOCRON_CONFIG": str(ws.config)},
        source="testwiki",
        seeds="|".join(seeds),
        max_depth="1",
    )
    outcome = scrapyd.wait_for_job(job)
    assert outcome.status == "finished", (outcome.problems, outcome.stderr, outcome.log[-3000:])
    assert outcome.summary and outcome.summary[1] == "completed", outcome.summary
    assert not _LOG_ERROR.search(outcome.log)
    expected = mediawiki.model.reachable(seeds, 1)
    _check_stored(ws.records(), ws.lake / "mediawiki" / "testwiki", expected)
    (run,) = ws.runs()
    assert (run["run_id"], run["status"]) == (outcome.summary[0], "completed")
    assert run["pages_stored"] + run["pages_missing"] == len(expected)  # pages, and titles that gave none
    assert {i["status"] for i in ws.work_items()} == {"completed"}
    assert (ws.lake / "_runs" / f"{run['run_id']}.json").is_file()
    # Nothing landed in Scrapyd's working directory.
    assert not (scrapyd.root / "data").exists()


def test_failed_job_is_detected_although_scrapyd_lists_it_as_finished(scrapyd: Scrapyd, deployed: Path, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config("http://127.0.0.1:9/api.php")
    job = scrapyd.schedule(
        "mediawiki", {"HOLOCRON_CONFIG": str(ws.config)}, source="testwiki", seeds="A", max_depth="-1"
    )
    outcome = scrapyd.wait_for_job(job)
    assert job in {j["id"] for j in scrapyd.get("listjobs.json", project=PROJECT)["finished"]}
    assert outcome.status == "failed"
    assert "exit status 2" in outcome.problems, outcome.problems  # bad input before the start
    assert "no run summary in the job log" in outcome.problems
    assert any("max_depth: must be at least 0, got -1" in line for line in outcome.stderr), outcome.stderr
    assert not ws.lake.exists() and not ws.records_db.exists() and not ws.state_db.exists()


def test_packaged_config_and_migrations_work_from_the_egg(scrapyd: Scrapyd, deployed: Path, mediawiki, tmp_path):
    """No HOLOCRON_CONFIG: the job reads holocron.default.yaml and the SQLite migrations from the
    egg (importlib.resources); storage comes from absolute -s settings."""
    lake, records, state = tmp_path / "lake", tmp_path / "records.sqlite3", tmp_path / "state.sqlite3"
    seeds = ["Ωmega Station"]
    job = scrapyd.schedule(
        "wikipedia",
        {
            "HOLOCRON_RECORDS_URL": f"sqlite:///{records}",  # sqlite:////abs/path
            "HOLOCRON_LAKE_DIR": str(lake),
            "HOLOCRON_STATE_URL": f"sqlite:///{state}",
            "HOLOCRON_CONTACT": "tests@example.org",
        },
        source="wikipedia",  # the packaged config's source, pointed at the local wiki
        api_url=mediawiki.api_url,
        seeds="|".join(seeds),
        max_depth="1",
    )
    outcome = scrapyd.wait_for_job(job)
    assert outcome.status == "finished", (outcome.problems, outcome.stderr, outcome.log[-3000:])
    assert outcome.summary and outcome.summary[1] == "completed", outcome.summary
    stored = _records(records)
    _check_stored(stored, lake / "mediawiki" / "wikipedia", mediawiki.model.reachable(seeds, 1))
    assert {r["source_name"] for r in stored} == {"wikipedia"}
    assert [r["status"] for r in _runs(records)] == ["completed"]
    conn = sqlite3.connect(records)
    try:
        applied = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        conn.close()
    assert applied == sorted(p.name.split("_", 1)[0] for p in (REPO / "sql" / "sqlite").glob("*.sql"))
    assert state.exists()
    # The packaged config's relative data/ paths were not used.
    assert not (scrapyd.root / "data").exists()
