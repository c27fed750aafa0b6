"""Run real ``scrapy crawl`` commands in subprocesses and read what they stored.

A :class:`Workspace` keeps the frontier (``state.url``) and the records (``storage.records_url``)
in SQLite files of its directory; given ``database`` (a PostgreSQL URL, see the ``crawl_database``
fixture of tests/support/postgres.py) both are in that PostgreSQL database, given
``records_database`` only the records. The lake is always a directory. Its readers (``records``,
``work_items`` ...) query whichever store holds the table.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]


def crawl_env() -> dict[str, str]:
    """The environment of a crawl subprocess: this repository importable, the config from ``-s`` only."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HOLOCRON_CONFIG", None)
    return env


@dataclass
class Workspace:
    """A config file plus lake/records/state locations in one temp dir; *database* (a PostgreSQL
    URL) holds both the records and the frontier instead, *records_database* the records only."""

    root: Path
    database: str | None = None  # a postgresql URL holding both stores; None: SQLite files in root
    records_database: str | None = None  # a postgresql URL holding the records only

    def __post_init__(self) -> None:
        self.records_database = self.records_database or self.database

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def records_db(self) -> Path:
        return self.root / "records.sqlite3"

    @property
    def state_db(self) -> Path:
        return self.root / "state.sqlite3"

    @property
    def records_url(self) -> str:
        return self.records_database or f"sqlite:///{self.records_db}"

    @property
    def state_url(self) -> str:
        return self.database or f"sqlite:///{self.state_db}"

    @property
    def config(self) -> Path:
        return self.root / "holocron.yaml"

    def write_config(self, api_url: str, *, extra_source: str = "", frontier: str = "", state: bool = True) -> Path:
        self.config.write_text(
            "contact: tests@example.org\n"
            f"storage:\n  lake_dir: {self.lake}\n  records_url: {self.records_url}\n"
            + (f"state:\n  url: {self.state_url}\n" if state else "")
            + (f"frontier:\n{frontier}" if frontier else "")
            + "sources:\n"
            f"  - name: testwiki\n    type: mediawiki\n    api_url: {api_url}\n    delay: 0\n    concurrency: 3\n"
            + extra_source,
            encoding="utf-8",
        )
        return self.config

    def command(self, spider: str, *args: str, settings: dict[str, str] | None = None) -> list[str]:
        cmd = [sys.executable, "-m", "scrapy", "crawl", spider, "-s", f"HOLOCRON_CONFIG={self.config}"]
        base = {
            "AUTOTHROTTLE_ENABLED": "0",
            "LOG_LEVEL": "INFO",
            "TELNETCONSOLE_ENABLED": "0",
            "HOLOCRON_RETRY_BACKOFF_BASE": "0.05",
            "HOLOCRON_RETRY_BACKOFF_MAX": "0.2",
        }
        for key, value in {**base, **(settings or {})}.items():
            cmd += ["-s", f"{key}={value}"]
        for arg in args:
            cmd += ["-a", arg]
        return cmd

    def crawl(
        self, spider: str, *args: str, settings: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(spider, *args, settings=settings),
            cwd=REPO,
            env=crawl_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, spider: str, *args: str, settings: dict[str, str] | None = None) -> subprocess.Popen:
        """The crawl of :meth:`crawl`, started in the background: its stderr piped, its stdout dropped."""
        return subprocess.Popen(
            self.command(spider, *args, settings=settings),
            cwd=REPO,
            env=crawl_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def rows(self, store: str, sql: str) -> list[dict[str, Any]]:
        """The rows of *sql* on the ``records`` or ``state`` store (a SQLite file, or PostgreSQL);
        none while the file or table does not exist yet."""
        url = self.records_url if store == "records" else self.state_url
        if not url.startswith("sqlite:///"):
            conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(conninfo, row_factory=dict_row, connect_timeout=10) as conn:
                try:
                    return list(conn.execute(sql))  # type: ignore[call-overload]
                except psycopg.errors.UndefinedTable:
                    return []
        db = Path(url[len("sqlite:///") :])
        if not db.exists():
            return []
        conn = sqlite3.connect(db)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql)]
        finally:
            conn.close()

    def records(self) -> list[dict[str, Any]]:
        return self.rows("records", "SELECT * FROM ingest_records ORDER BY fetched_at_utc")

    def record_count(self) -> int:
        """How many records are stored so far (0 while the store is being created, or busy)."""
        try:
            return self.rows("records", "SELECT COUNT(*) AS n FROM ingest_records")[0]["n"]
        except (sqlite3.OperationalError, IndexError):
            return 0

    def runs(self) -> list[dict[str, Any]]:
        return self.rows("records", "SELECT * FROM ingest_runs ORDER BY started_at")

    def work_items(self) -> list[dict[str, Any]]:
        return self.rows("state", "SELECT * FROM work_items")

    def lake_documents(self) -> list[dict]:
        """Every lake file of a fetched resource (run reports in ``_runs/`` left out)."""
        return [
            json.loads(p.read_text("utf-8"))
            for p in sorted(self.lake.rglob("*.json"))
            if p.relative_to(self.lake).parts[0] != "_runs"
        ]

    def run_reports(self) -> list[dict]:
        return [json.loads(p.read_text("utf-8")) for p in sorted((self.lake / "_runs").glob("*.json"))]
