"""Incremental re-crawls and run reports: only what changed is fetched in full and stored again."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.support.crawl import Workspace
from tests.support.static_site import free_port, read_log, serve_directory, write_edge_site

SEEDS = "seeds=Ωmega Station"


def summary_of(ws: Workspace, run_index: int = -1) -> dict:
    run = ws.runs()[run_index]
    return {**run, "stats": json.loads(run["summary"])}


@pytest.mark.mediawiki
def test_mediawiki_recrawl_refetches_only_changed_pages(fresh_mediawiki, tmp_path):
    ws = Workspace(tmp_path)
    ws.write_config(fresh_mediawiki.api_url)
    first = ws.crawl("mediawiki", "source=testwiki", SEEDS, "max_depth=1")
    assert first.returncode == 0, first.stderr[-2000:]
    stored = {r["resource_id"]: r for r in ws.records() if r["outcome"] == "ok"}
    fetched_items = sum(1 for i in ws.work_items() if i["attempt"] > 0)  # redirect targets are only "known"
    changed = sorted(stored)[:2]
    for title in changed:
        fresh_mediawiki.edit_page(title, f"Edited for the re-crawl test: [[{title}]] now says more.")
    again = ws.crawl("mediawiki", "source=testwiki", SEEDS, "max_depth=1", "recrawl_after=0s")
    assert again.returncode == 0, again.stderr[-2000:]
    new = [r for r in ws.records() if r["run_id"] != stored[changed[0]]["run_id"]]
    assert sorted(r["resource_id"] for r in new) == changed
    run = summary_of(ws)
    assert run["status"] == "completed" and run["pages_stored"] == 2
    assert run["stats"]["recrawl/unchanged"] >= len(stored) - 2
    # content fetched only for the edited pages: titles reached through a redirect or a
    # normalisation are checked against the stored revision of the page they lead to
    assert any(r["requested_id"] != r["resource_id"] for r in stored.values())
    assert run["stats"]["mediawiki/pages/ok"] == len(changed)
    assert run["stats"]["recrawl/changed"] == len(changed)
    assert run["stats"]["recrawl/requeued"] == fetched_items
    # one prop=info per batch, then content only for the two changed pages
    assert run["requests"] < summary_of(ws, 0)["requests"] + 3
    report = ws.run_reports()[-1]
    assert report["run_id"] == run["run_id"] and report["pages_stored"] == 2
    full = ws.crawl("mediawiki", "source=testwiki", SEEDS, "max_depth=1", "full_refresh=1")
    assert full.returncode == 0
    refreshed = summary_of(ws)
    assert refreshed["pages_stored"] == 0  # everything fetched again, nothing changed: append-only
    assert refreshed["stats"]["recrawl/requeued"] >= len(stored)
    assert refreshed["stats"]["mediawiki/pages/ok"] == len(stored)  # no prop=info shortcut: all content
    assert "recrawl/changed" not in refreshed["stats"]


def test_http_recrawl_uses_conditional_requests(tmp_path):
    port = free_port()
    root = tmp_path / "site"
    write_edge_site(root, port)
    with serve_directory(root, port) as (base, log):
        ws = Workspace(tmp_path / "ws")
        ws.root.mkdir()
        ws.config.write_text(
            f"storage:\n  lake_dir: {ws.lake}\n  records_url: sqlite:///{ws.records_db}\n"
            f"state:\n  url: sqlite:///{ws.state_db}\n"
            "sources:\n  - {name: site, type: http, delay: 0, recrawl_after: 0s}\n",
            encoding="utf-8",
        )
        # missing.html answers 404: a page failed for good, so the first run is partial (exit status 3);
        # later runs do not try the failed page again
        assert ws.crawl("http", "source=site", f"seeds={base}/index.html", "max_depth=1").returncode == 3
        first = len(ws.records())
        (root / "b.html").write_text("<html><body>B, changed</body></html>")
        seen = len(read_log(log))
        again = ws.crawl("http", "source=site", f"seeds={base}/index.html", "max_depth=1")
        assert again.returncode == 0, again.stderr[-2000:]
        full = ws.crawl("http", "source=site", f"seeds={base}/index.html", "max_depth=1", "full_refresh=1")
        assert full.returncode == 0, full.stderr[-2000:]
    refreshed = summary_of(ws)
    assert "downloader/response_status_count/304" not in refreshed["stats"]  # no conditional requests
    assert refreshed["pages_stored"] == 0 and refreshed["stats"]["recrawl/unchanged"] >= 5
    new = ws.records()[first:]
    assert [r["resource_id"] for r in new] == [f"{base}/b.html?x=1&y=2"]
    run = summary_of(ws, -2)
    assert run["stats"]["recrawl/unchanged"] >= 5
    assert run["stats"]["downloader/response_status_count/304"] >= 5
    assert len(read_log(log)) > seen


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self):  # noqa: N802
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.mediawiki
def test_webhook_receives_the_report_and_a_dead_one_does_not_fail_the_crawl(mediawiki, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.bodies = []
    try:
        ws = Workspace(tmp_path / "a")
        ws.root.mkdir()
        ws.write_config(mediawiki.api_url)
        hook = f"http://127.0.0.1:{server.server_port}/hook"
        proc = ws.crawl(
            "mediawiki", "source=testwiki", SEEDS, "max_depth=0", settings={"HOLOCRON_NOTIFY_WEBHOOK": hook}
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        (body,) = _Receiver.bodies
        report = json.loads(body)
        assert report["status"] == "completed" and report["pages_stored"] == 1 and report == ws.run_reports()[0]
    finally:
        server.shutdown()
    ws = Workspace(tmp_path / "b")
    ws.root.mkdir()
    ws.write_config(mediawiki.api_url)
    dead = f"http://127.0.0.1:{free_port()}/hook"
    proc = ws.crawl("mediawiki", "source=testwiki", SEEDS, "max_depth=0", settings={"HOLOCRON_NOTIFY_WEBHOOK": dead})
    assert proc.returncode == 0
    assert "Run report webhook failed" in proc.stderr and ws.runs()[0]["status"] == "completed"


def test_a_run_that_cannot_start_notifies_the_webhook(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.bodies = []
    try:
        ws = Workspace(tmp_path)
        ws.write_config("http://127.0.0.1:9/api.php")
        hook = f"http://127.0.0.1:{server.server_port}/hook"
        proc = ws.crawl(
            "mediawiki", "source=testwiki", SEEDS, "max_depth=-1",
            settings={"HOLOCRON_NOTIFY_WEBHOOK": hook, "HOLOCRON_RUN_ID": "run_bad"},
        )  # fmt: skip
    finally:
        server.shutdown()
    assert proc.returncode == 2 and "max_depth" in proc.stderr and "Traceback" not in proc.stderr
    (body,) = _Receiver.bodies
    report = json.loads(body)
    assert report["status"] == "failed" and report["finish_reason"] == "start_error"
    assert report["run_id"] == "run_bad" and report["spider"] == "mediawiki" and "max_depth" in report["error"]
    assert not ws.lake.exists() and not ws.records_db.exists()  # nothing written
