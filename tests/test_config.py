"""holocron_scrapy.config: loading, defaults and errors that name file, key and problem."""

from __future__ import annotations

import pytest

from holocron_scrapy.config import load_config, parse_config, parse_duration
from holocron_scrapy.errors import ConfigError


def test_example_config_documents_every_key_and_loads():
    config = load_config("config/holocron.example.yaml")
    wiki = config.source("wikipedia")
    assert wiki.type == "mediawiki" and wiki.batch_size == 50 and wiki.recrawl_after == 72000  # 20h: daily runs
    assert wiki.discovery.namespaces == (0,) and wiki.discovery.max_depth == 1
    assert config.source("example_site").options["max_pages"] == 1000
    assert config.frontier["order"] == "bfs"


def test_packaged_fallback_is_used_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOLOCRON_CONFIG", raising=False)
    config = load_config()
    assert config.path.startswith("<packaged")
    assert "wikipedia" in config.sources


def test_env_var_selects_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("sources:\n  - {name: w, type: mediawiki, api_url: 'http://x/api.php'}\n")
    monkeypatch.setenv("HOLOCRON_CONFIG", str(path))
    assert list(load_config().sources) == ["w"]


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("sources: [\n", None, "malformed YAML"),
        ("storage: {lake_dir: 3}\n", "storage.lake_dir", "non-empty string"),
        ("storage: {lakedir: x}\n", "storage.lakedir", "unknown key"),
        ("sources:\n  - {name: w, type: ftp}\n", "sources[0].type", "expected one of"),
        ("sources:\n  - {name: w, type: mediawiki}\n", "sources[0].api_url", "non-empty string"),
        ("sources:\n  - {name: w, type: mediawiki, api_url: 'ftp://x'}\n", "sources[0].api_url", "http(s) URL"),
        (
            "sources:\n  - {name: w, type: mediawiki, api_url: 'http://x', batch_size: 51}\n",
            "sources[0].batch_size",
            "between 1 and 50",
        ),
        (
            "sources:\n  - {name: w, type: mediawiki, api_url: 'http://x', discovery: {max_depth: -1}}\n",
            "sources[0].discovery.max_depth",
            "must be at least 0, got -1",
        ),
        ("storage: {records_url: 'bogus://x'}\n", "storage.records_url", "unknown store URL scheme 'bogus'"),
        ("state: {url: 'data/state.sqlite3'}\n", "state.url", "not a URL"),
        ("storage: {deltafetch_dir: ''}\n", "storage.deltafetch_dir", "non-empty string"),
        ("sources:\n  - {name: w, type: http}\n  - {name: w, type: http}\n", "sources[1].name", "duplicate"),
        ("frontier: {order: random}\n", "frontier.order", "bfs or dfs"),
        ("sources:\n  - {name: w, type: http, recrawl_after: soon}\n", "sources[0].recrawl_after", "duration"),
    ],
)
def test_errors_name_file_key_and_problem(text, key, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml")
    if key:
        assert key in message
    assert problem in message


def test_unknown_source_lists_the_configured_ones():
    config = parse_config("sources:\n  - {name: a, type: http}\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"unknown source 'b' \(configured: a\)"):
        config.source("b")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("6h", 21600), ("1d", 86400), ("2w", 1209600)]
)
def test_durations(text, seconds):
    assert parse_duration(text, key="k") == seconds
