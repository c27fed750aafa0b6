"""Run real ``scrapy crawl`` commands in subprocesses and read what they stored."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Workspace:
    """A config file plus lake/records/state locations in one temp dir."""

    root: Path

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
    def config(self) -> Path:
        return self.root / "holocron.yaml"

    def write_config(self, api_url: str, *, extra_source: str = "", frontier: str = "", state: bool = True) -> Path:
        self.config.write_text(
            "contact: tests@example.org\n"
            f"storage:\n  lake_dir: {self.lake}\n  records_url: sqlite:///{self.records_db}\n"
            + (f"state:\n  url: sqlite:///{self.state_db}\n" if state else "")
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
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("HOLOCRON_CONFIG", None)
        return subprocess.run(
            self.command(spider, *args, settings=settings),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @staticmethod
    def _rows(db: Path, sql: str) -> list[dict]:
        if not db.exists():
            return []
        conn = sqlite3.connect(db)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql)]
        finally:
            conn.close()

    def records(self) -> list[dict]:
        return self._rows(self.records_db, "SELECT * FROM ingest_records ORDER BY fetched_at_utc")

    def runs(self) -> list[dict]:
        return self._rows(self.records_db, "SELECT * FROM ingest_runs ORDER BY started_at")

    def work_items(self) -> list[dict]:
        return self._rows(self.state_db, "SELECT * FROM work_items")

    def lake_documents(self) -> list[dict]:
        """Every lake file of a fetched resource (run reports in ``_runs/`` left out)."""
        return [
            json.loads(p.read_text("utf-8"))
            for p in sorted(self.lake.rglob("*.json"))
            if p.relative_to(self.lake).parts[0] != "_runs"
        ]

    def run_reports(self) -> list[dict]:
        return [json.loads(p.read_text("utf-8")) for p in sorted((self.lake / "_runs").glob("*.json"))]
