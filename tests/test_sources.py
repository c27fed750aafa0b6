"""holocron_scrapy.sources: source types as registered models, used for the YAML and for ``-a``.

A third source type, ``jsonapi``, is defined here (its model and its spider) and registered by this
module; a real ``scrapy crawl jsonapi`` (the spider loader imports this module) crawls a loopback
JSON API through the project's frontier, lake and records pipelines. Neither ``config.py`` nor the
base spider names it, or any key of a source type.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import model_validator
from scrapy import Request
from scrapy.http import Response

from holocron_scrapy import config as config_module
from holocron_scrapy.config import Config, parse_config
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.contract import work_meta, work_of
from holocron_scrapy.frontier.intake import SeedList
from holocron_scrapy.frontier.keys import Resource
from holocron_scrapy.items import IngestItem
from holocron_scrapy.sources import (
    Integer,
    SourceModel,
    Text,
    at_least,
    register_source_type,
    source_type,
    source_types,
    unregister_source_type,
)
from holocron_scrapy.spiders import base as base_spider_module
from holocron_scrapy.spiders.base import HolocronSpider
from holocron_scrapy.spiders.http import HttpSpider
from holocron_scrapy.spiders.http_source import HttpSource
from holocron_scrapy.spiders.mediawiki import MediaWikiSpider
from holocron_scrapy.spiders.mediawiki_source import MediaWikiSource
from tests.support.crawl import Workspace

# -- the third source type: model, spider, registration ---------------------------------------------


class JsonApiSource(SourceModel):
    """A paged JSON API: ``GET <seed>`` answers ``{"items": [...], "next": "<url or null>"}``."""

    arguments: ClassVar[tuple[str, ...]] = ("page_size", "max_pages")

    page_size: Annotated[Integer, at_least(1)] = 2
    max_pages: Annotated[Integer, at_least(1)] = 10
    item_key: Text = "items"

    @model_validator(mode="after")
    def _pages_hold_the_items(self) -> Self:
        if self.page_size > 10 * self.max_pages:
            raise ConfigError(
                f"must be at most 10 x max_pages ({10 * self.max_pages}), got {self.page_size}", key="page_size"
            )
        return self


class JsonApiSpider(HolocronSpider):
    name = "jsonapi"
    source_type = "jsonapi"
    options: JsonApiSource

    @classmethod
    def configure(cls, config: Config, source: Any, kwargs: dict[str, Any]) -> tuple[JsonApiSource, dict[str, Any]]:
        return source.with_arguments(kwargs, path=config.path), {"ROBOTSTXT_OBEY": False}

    @classmethod
    def target_urls(cls, options: JsonApiSource) -> list[str]:
        return list(options.seeds)

    async def start(self) -> AsyncIterator[Request]:
        async for request in self.seed_requests(SeedList.of(self.options.seeds)):
            yield request

    def seed_request(self, seed: str) -> Request:
        return self.page_request(f"{seed}?size={self.options.page_size}&page=1", 0)

    def page_request(self, url: str, page: int) -> Request:
        meta = work_meta(Resource("jsonapi", self.options.name, "page", url), depth=page)
        return Request(url, callback=self.parse_page, meta=meta)

    def parse_page(self, response: Response) -> Iterator[Any]:
        body = json.loads(response.text)
        work = work_of(response)
        yield IngestItem(
            source_system="jsonapi",
            source_name=self.options.name,
            resource_type="page",
            resource_id=work.resource.resource_id,
            request_uri=response.url,
            payload=body[self.options.item_key],
            status_code=response.status,
            run_id=self.run_id,
            depth=work.depth,
            work_item_ids=list(work.ids),
        )
        if body.get("next") and work.depth + 1 < self.options.max_pages:
            yield self.page_request(response.urljoin(body["next"]), work.depth + 1)


register_source_type("jsonapi", JsonApiSource, JsonApiSpider)


# -- a loopback JSON API ----------------------------------------------------------------------------
ITEMS = [{"id": n, "name": f"item {n}"} for n in range(1, 8)]


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path != "/things":
            self.send_error(404)
            return
        size, page = int(query["size"][0]), int(query["page"][0])
        chunk = ITEMS[(page - 1) * size : page * size]
        more = page * size < len(ITEMS)
        body = json.dumps({"items": chunk, "next": f"/things?size={size}&page={page + 1}" if more else None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def json_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/things"
    finally:
        server.shutdown()
        server.server_close()


def jsonapi_config(ws: Workspace, source: str) -> None:
    ws.config.write_text(
        "contact: tests@example.org\n"
        f"storage:\n  lake_dir: {ws.lake}\n  records_url: {ws.records_url}\n"
        f"state:\n  url: {ws.state_url}\n"
        "sources:\n"
        "  - {name: wiki, type: mediawiki, api_url: 'http://127.0.0.1:9/api.php'}\n" + source,
        encoding="utf-8",
    )


SPIDER_MODULES = {"SPIDER_MODULES": "holocron_scrapy.spiders,tests.test_sources"}


# -- the third type, end to end ---------------------------------------------------------------------
def test_a_third_source_type_crawls_end_to_end_through_the_product_pipelines(json_api, tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    jsonapi_config(ws, f"  - {{name: api, type: jsonapi, seeds: ['{json_api}'], delay: 0, page_size: 3}}\n")
    proc = ws.crawl("jsonapi", "source=api", settings=SPIDER_MODULES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = ws.records()
    assert [r["source_system"] for r in records] == ["jsonapi"] * 3
    assert {r["source_name"] for r in records} == {"api"} and {r["outcome"] for r in records} == {"ok"}
    stored = sorted((item for doc in ws.lake_documents() for item in doc["payload"]), key=lambda i: i["id"])
    assert stored == ITEMS  # every item, in 3 pages of 3, 3 and 1
    items = ws.work_items()
    assert len(items) == 3 and {i["status"] for i in items} == {"completed"}

    # -a arguments go through the same model: strings coerced, then checked
    again = Workspace(tmp_path / "again")
    again.root.mkdir()
    jsonapi_config(again, f"  - {{name: api, type: jsonapi, seeds: ['{json_api}'], delay: 0}}\n")
    proc = again.crawl("jsonapi", "source=api", "page_size=4", "max_pages=1", settings=SPIDER_MODULES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [len(r["payload"]) for r in again.lake_documents()] == [4]


def test_the_third_type_needs_no_edit_of_the_config_loader_or_the_base_spider():
    for module in (config_module, base_spider_module):
        text = Path(module.__file__ or "").read_text("utf-8")
        assert "jsonapi" not in text
        # no key of any source type is known there (only the common ones, in holocron_scrapy.sources)
        for kind in source_types().values():
            for key in kind.model.own_keys():
                assert f'"{key}"' not in text, (module.__name__, key)
    assert source_type("jsonapi").model is JsonApiSource and source_type("jsonapi").spider is JsonApiSpider
    assert JsonApiSpider.accepted_arguments() == (
        "source",
        "seeds",
        "recrawl_after",
        "full_refresh",
        "page_size",
        "max_pages",
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("page_size: 0", "c.yaml: sources[1].page_size: must be at least 1, got 0"),
        ("page_size: many", "c.yaml: sources[1].page_size: expected an integer, got 'many'"),
        ("pagesize: 3", "c.yaml: sources[1].pagesize: unknown key (allowed: concurrency, contact, delay, item_key,"),
        ("page_size: 200, max_pages: 2", "c.yaml: sources[1].page_size: must be at most 10 x max_pages (20), got 200"),
        ("api_url: 'http://x/api.php'", "c.yaml: sources[1].api_url: api_url is for mediawiki sources only"),
        ("item_key: ''", "c.yaml: sources[1].item_key: expected a non-empty string"),
    ],
)  # fmt: skip
def test_errors_of_its_model_name_the_file_and_the_key(entry, message):
    text = f"sources:\n  - {{name: h, type: http}}\n  - {{name: api, type: jsonapi, {entry}}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"page_size": "x"}, "page_size: expected an integer, got 'x'"),
        ({"max_pages": "0"}, "max_pages: must be at least 1, got 0"),
        # the argument is fine; the file's value no longer is with it: the file's key is named
        ({"max_pages": "1"}, "c.yaml: sources[api].page_size: must be at most 10 x max_pages (10), got 15"),
    ],
)
def test_argument_errors_name_the_argument_or_the_file_key(args, message):
    config = parse_config("sources:\n  - {name: api, type: jsonapi, seeds: ['http://e/'], page_size: 15}\n", "c.yaml")
    with pytest.raises(ConfigError) as info:
        JsonApiSpider.configure(config, config.source("api"), {"source": "api", **args})
    assert str(info.value) == message


def test_a_bad_value_stops_scrapy_crawl_with_one_line(json_api, tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    jsonapi_config(ws, f"  - {{name: api, type: jsonapi, seeds: ['{json_api}'], page_size: -1}}\n")
    proc = ws.crawl("jsonapi", "source=api", settings=SPIDER_MODULES)
    assert proc.returncode == 2
    assert f"holocron_scrapy: error: {ws.config}: sources[1].page_size: must be at least 1, got -1" in proc.stderr
    jsonapi_config(ws, f"  - {{name: api, type: jsonapi, seeds: ['{json_api}']}}\n")
    proc = ws.crawl("jsonapi", "source=api", "page_size=x", settings=SPIDER_MODULES)
    assert proc.returncode == 2 and "holocron_scrapy: error: page_size: expected an integer, got 'x'" in proc.stderr
    proc = ws.crawl("jsonapi", "source=wiki", settings=SPIDER_MODULES)
    assert proc.returncode == 2 and "source 'wiki' has type 'mediawiki'; the 'jsonapi' spider crawls" in proc.stderr


# -- the registry -----------------------------------------------------------------------------------
def test_the_registry():
    assert {"http", "mediawiki", "jsonapi"} <= set(source_types())
    assert source_type("http").model is HttpSource and source_type("mediawiki").model is MediaWikiSource
    assert HttpSpider.source_model() is HttpSource and MediaWikiSpider.source_model() is MediaWikiSource
    with pytest.raises(ConfigError, match=r"^type: expected one of .*http.*jsonapi.*mediawiki, got 'ftp'$"):
        source_type("ftp")
    with pytest.raises(TypeError, match="must subclass SourceModel"):
        register_source_type("bad", dict)  # type: ignore[arg-type]

    class Tiny(SourceModel):
        size: Integer = 1

    register_source_type("tiny", Tiny)
    try:
        config = parse_config("sources:\n  - {name: t, type: tiny, size: '3'}\n")
        assert isinstance(config.source("t"), Tiny) and config.source("t").options == {"size": 3}
    finally:
        unregister_source_type("tiny")
    with pytest.raises(ConfigError, match=r"sources\[0\].type: expected one of"):
        parse_config("sources:\n  - {name: t, type: tiny}\n")


# -- one-line errors of the built-in models ---------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: h, type: http, max_depth: deep}", "sources[0].max_depth: expected an integer, got 'deep'"),
        ("{name: h, type: http, store_binary: maybe}", "sources[0].store_binary: expected true or false, got 'maybe'"),
        ("{name: h, type: http, generator: allpages}",
         "sources[0].generator: generators list MediaWiki pages: only mediawiki sources have one"),
        ("{name: h, type: http, concurrency: 0}", "sources[0].concurrency: must be between 1 and 64, got 0"),
        ("{name: h, type: http, seeds: 'http://e/'}", "sources[0].seeds: expected a list of strings"),
        ("{name: w, type: mediawiki, api_url: 'http://x/', store_binary: true}",
         "sources[0].store_binary: store_binary is for http sources only"),
        ("{name: w, type: mediawiki, api_url: 'http://x/', discovery: {depth: 1}}",
         "sources[0].discovery.depth: unknown key (allowed: categories, links, max_depth, namespaces)"),
        ("{name: w, type: mediawiki, api_url: 'http://x/', discovery: {namespaces: []}}",
         "sources[0].discovery.namespaces: expected a non-empty list of namespace numbers"),
        ("{name: w, type: mediawiki, api_url: 'http://x/', maxlag: -5}",
         "sources[0].maxlag: must be at least 0, got -5"),
    ],
)  # fmt: skip
def test_built_in_models_give_one_line_errors(entry, message):
    with pytest.raises(ConfigError) as info:
        parse_config(f"sources:\n  - {entry}\n", "c.yaml")
    assert str(info.value).startswith(f"c.yaml: {message}"), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("mediawiki", {"max_depth": "x"}, "max_depth: expected an integer, got 'x'"),
        ("mediawiki", {"namespaces": "0|a"}, "namespaces: expected an integer, got 'a'"),
        ("mediawiki", {"discover": "all"}, "discover: expected one of links, categories, both, none, got 'all'"),
        ("mediawiki", {"batch_size": "60"}, "batch_size: must be between 1 and 50, got 60"),
        ("mediawiki", {"api_url": "ftp://x"}, "api_url: expected an http(s) URL of api.php, got 'ftp://x'"),
        ("http", {"store_binary": "maybe"}, "store_binary: expected true or false, got 'maybe'"),
        ("http", {"max_depth": "-2"}, "max_depth: must be at least 0, got -2"),
        ("http", {"follow": "(x"}, "follow: not a valid regular expression '(x'"),
        ("http", {"sitemap": "ftp://e/s.xml"}, "sitemap: expected an http(s) URL"),
    ],
)
def test_argument_values_are_coerced_and_checked_by_the_model(kind, args, message):
    entry = "api_url: 'http://x/api.php', seeds: [A]" if kind == "mediawiki" else "seeds: ['http://e/']"
    config = parse_config(f"sources:\n  - {{name: s, type: {kind}, {entry}}}\n", "c.yaml")
    with pytest.raises(ConfigError) as info:
        config.source("s").with_arguments(args, path=config.path)
    assert str(info.value).startswith(message), str(info.value)


def test_argument_strings_become_typed_values():
    config = parse_config("sources:\n  - {name: s, type: mediawiki, api_url: 'http://x/api.php'}\n")
    source = config.source("s").with_arguments({"max_depth": "3", "namespaces": "14|0", "discover": "both"})
    assert isinstance(source, MediaWikiSource)
    assert source.discovery.max_depth == 3 and source.discovery.namespaces == (0, 14)
    assert source.discovery.links and source.discovery.categories
    http = parse_config("sources:\n  - {name: h, type: http}\n").source("h")
    merged = http.with_arguments({"store_binary": "yes", "max_pages": "7", "allowed_domains": "a.org|b.org"})
    assert isinstance(merged, HttpSource)
    assert merged.store_binary is True and merged.max_pages == 7 and merged.allowed_domains == ("a.org", "b.org")
