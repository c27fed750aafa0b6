"""Build, cache and serve a real local MediaWiki (Debian's ``mediawiki`` 1.39 + php) for tests.

No pytest dependency.  Typical use::

    model = wikigen.build_model()
    install = build_wiki(workdir, model.write_dump(workdir / "dump.xml"))
    with serve(install) as wiki:
        print(wiki.api_url)
        edit_page(install, "Some page", "new text")

Building (install.php, importDump.php, refreshLinks.php, ...) takes 15-20 s on
a 2-core machine (up to a minute on slow ones), so finished installs are cached
under ``$HOLOCRON_TEST_CACHE`` (default ``/tmp/holocron-test-cache``) keyed by
the dump, the generator and this module's settings; each ``build_wiki`` call
gets its own copy of the sqlite files (~4 MB).  ``$HOLOCRON_PHP`` and
``$HOLOCRON_MW_ROOT`` override the php binary and ``/usr/share/mediawiki``.

The install directory is relocatable: its ``LocalSettings.php`` finds the
database via ``__DIR__`` and reads ``$wgServer`` from ``HOLOCRON_MW_SERVER``.
Nothing under ``/etc`` or ``/usr`` is touched; every php process gets
``MW_CONFIG_FILE=<install>/LocalSettings.php``.

Harness additions to the stock wiki: no rate limits, ``$wgJobRunRate = 0``,
exception details shown, and an ``ApiMaxLagInfo`` hook that reports a lag of
``max(0, <install>/fake-lag)`` seconds.  Stock single-database MediaWiki
reports a lag of -1 (so ``maxlag=-1`` would *not* error there); with the hook it
behaves like an in-sync replicated wiki (``maxlag=-1`` -> maxlag error, HTTP
200, ``Retry-After: 5``) and tests can simulate lag with
:meth:`RunningWiki.set_lag`.

CLI: ``python -m tests.support.mediawiki_server --serve [--port N]`` builds (or
reuses the cache) and serves the test wiki in the foreground;
``--record-fixtures DIR`` re-records ``tests/fixtures/mediawiki``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # pragma: no cover - allow `python tests/support/mediawiki_server.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import wikigen

MW_ROOT = Path(os.environ.get("HOLOCRON_MW_ROOT", "/usr/share/mediawiki"))
BUILD_VERSION = "1"  # bump when the build steps or settings below change
DB_NAME = "holocron"
ADMIN_USER = "Admin"
ADMIN_PASSWORD = "Holocron-Test-Admin-2024"
DEFAULT_CACHE_DIR = Path("/tmp/holocron-test-cache")
SERVER_ENV = "HOLOCRON_MW_SERVER"
BUILD_INFO = "build-info.json"
FAKE_LAG_FILE = "fake-lag"
MAIN_PAGE = "Main Page"

HARNESS_SETTINGS = r"""
# ---- Holocron test harness (tests/support/mediawiki_server.py) ----
$wgCanonicalServer = $wgServer;
$wgEnableAPI = true;
$wgShowExceptionDetails = true;
$wgJobRunRate = 0;
$wgRateLimits = [];
$wgGroupPermissions['*']['noratelimit'] = true;
$wgEnableEmail = false;
$wgEnableUserEmail = false;
$wgPingback = false;
$wgUseInstantCommons = false;
$wgEnableUploads = false;
$wgUseFileCache = false;
$wgMiserMode = false;
$wgCacheDirectory = __DIR__ . '/cache';
$wgLocalisationCacheConf['store'] = 'array';
# No object cache shared with the web server: edits made by CLI scripts
# (edit.php) must be visible to the server at once.
$wgMainCacheType = CACHE_NONE;
$wgParserCacheType = CACHE_NONE;
$wgMessageCacheType = CACHE_NONE;
$wgSessionCacheType = CACHE_DB;
# A single sqlite database has no replica, so MediaWiki reports lag -1. Report
# 0 (an in-sync replicated wiki) or the seconds written in <install>/fake-lag.
$wgHooks['ApiMaxLagInfo'][] = static function ( array &$lagInfo ) {
	$fake = __DIR__ . '/fake-lag';
	$lag = is_readable( $fake ) ? (float)trim( (string)file_get_contents( $fake ) ) : 0.0;
	if ( $lagInfo['lag'] < $lag ) {
		$lagInfo['lag'] = $lag == (int)$lag ? (int)$lag : $lag;
	}
};
"""


class MediaWikiError(RuntimeError):
    """A MediaWiki build/serve/edit step failed (message includes the php output tail)."""


def php_binary() -> str | None:
    """Path of the php executable (``$HOLOCRON_PHP`` or ``php`` on PATH), or None."""
    return shutil.which(os.environ.get("HOLOCRON_PHP", "php"))


def unavailable_reason() -> str | None:
    """Why the real-MediaWiki tests cannot run here (php or MediaWiki missing), else None."""
    if php_binary() is None:
        return "php is not installed (apt-get install php-cli php-sqlite3 php-intl php-mbstring php-xml)"
    if not (MW_ROOT / "maintenance" / "install.php").is_file():
        return f"MediaWiki is not installed ({MW_ROOT}/maintenance/install.php missing; apt-get install mediawiki)"
    return None


def mediawiki_version() -> str:
    """``MW_VERSION`` of the installed MediaWiki."""
    defines = (MW_ROOT / "includes" / "Defines.php").read_text(encoding="utf-8")
    match = re.search(r"define\(\s*'MW_VERSION',\s*'([^']+)'", defines)
    return match.group(1) if match else "unknown"


@dataclass
class WikiInstall:
    """A ready-to-serve wiki directory: ``LocalSettings.php``, ``db/``, ``cache/``."""

    root: Path
    key: str
    build_info: dict = field(default_factory=dict)
    api_url: str | None = None  # set while served by serve()

    @property
    def config_file(self) -> Path:
        return self.root / "LocalSettings.php"

    @property
    def db_dir(self) -> Path:
        return self.root / "db"

    def env(self, server: str | None = None) -> dict[str, str]:
        """Environment for php processes using this install."""
        env = dict(os.environ)
        env["MW_CONFIG_FILE"] = str(self.config_file)
        env[SERVER_ENV] = server or _server_of(self.api_url) or "http://127.0.0.1"
        return env

    def run_maintenance(self, script: str, *args: str, stdin: str | None = None, timeout: float = 900) -> str:
        """Run ``maintenance/<script>.php`` and return its output; MediaWikiError on failure."""
        return _run_php(self.env(), script, *args, stdin=stdin, timeout=timeout)


def _server_of(api_url: str | None) -> str | None:
    if not api_url:
        return None
    parts = urllib.parse.urlsplit(api_url)
    return f"{parts.scheme}://{parts.netloc}"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run_php(env: dict[str, str], script: str, *args: str, stdin: str | None = None, timeout: float = 900) -> str:
    php = php_binary()
    if php is None:
        raise MediaWikiError("php is not installed")
    path = script if script.endswith(".php") and "/" in script else str(MW_ROOT / "maintenance" / f"{script}.php")
    cmd = [php, path, *args]
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            input=stdin.encode("utf-8") if stdin is not None else b"",
            capture_output=True,
            env=env,
            cwd=str(MW_ROOT),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        raise MediaWikiError(
            f"{script} timed out after {timeout:.0f}s: {' '.join(cmd)}\n--- output tail ---\n"
            f"{_tail(out.decode('utf-8', 'replace'))}"
        ) from None
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if proc.returncode != 0 or "PHP Fatal error" in out:
        raise MediaWikiError(
            f"{script} failed with exit code {proc.returncode}: {' '.join(cmd)}\n"
            f"MW_CONFIG_FILE={env.get('MW_CONFIG_FILE')}\n--- output tail ---\n{_tail(out)}"
        )
    return out


# --------------------------------------------------------------------------- building


def cache_key(dump_path: Path) -> str:
    """Hash of everything a finished install depends on."""
    digest = hashlib.sha256()
    for part in (
        wikigen.WIKIGEN_VERSION,
        BUILD_VERSION,
        HARNESS_SETTINGS,
        mediawiki_version(),
    ):
        digest.update(part.encode("utf-8") + b"\0")
    with open(dump_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_wiki(
    workdir: Path,
    dump_path: Path,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    log: Callable[[str], None] | None = None,
) -> WikiInstall:
    """Install MediaWiki with ``dump_path`` imported; return a private copy under ``workdir``.

    The finished install is cached (see module docstring); a cache hit only
    copies files.  Raises MediaWikiError (with the php output tail) on failure.
    """
    reason = unavailable_reason()
    if reason:
        raise MediaWikiError(reason)
    workdir, dump_path = Path(workdir), Path(dump_path)
    key = cache_key(dump_path)
    target = workdir / "mediawiki"
    if target.exists():
        shutil.rmtree(target)
    workdir.mkdir(parents=True, exist_ok=True)
    if not use_cache:
        _build_into(target, dump_path, key, log)
        return WikiInstall(target, key, json.loads((target / BUILD_INFO).read_text()))
    root = Path(cache_dir or os.environ.get("HOLOCRON_TEST_CACHE") or DEFAULT_CACHE_DIR)
    root.mkdir(parents=True, exist_ok=True)
    entry = root / f"mediawiki-{key}"
    with _locked(root / f"mediawiki-{key}.lock"):
        if not (entry / BUILD_INFO).is_file():
            if entry.exists():
                shutil.rmtree(entry)
            staging = Path(tempfile.mkdtemp(prefix=f"building-{key}-", dir=root))
            try:
                _build_into(staging, dump_path, key, log)
                staging.rename(entry)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        elif log:
            log(f"reusing cached MediaWiki install {entry}")
        os.utime(entry)  # last use, for pruning
        shutil.copytree(entry, target, symlinks=True)
    _prune_cache(root, keep=entry)
    return WikiInstall(target, key, json.loads((target / BUILD_INFO).read_text()))


def _prune_cache(root: Path, keep: Path, max_age_days: float = 7) -> None:
    """Drop cached installs unused for ``max_age_days`` and builds abandoned for a day."""
    now = time.time()
    for entry in root.iterdir():
        if entry == keep or not entry.is_dir():
            continue
        age = now - entry.stat().st_mtime
        if entry.name.startswith("building-") and age > 86400:
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith("mediawiki-") and age > max_age_days * 86400:
            with open(root / f"{entry.name}.lock", "w") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                shutil.rmtree(entry, ignore_errors=True)


def _build_into(root: Path, dump_path: Path, key: str, log: Callable[[str], None] | None) -> None:
    say = log or (lambda _msg: None)
    started = time.monotonic()
    timings: dict[str, float] = {}
    root.mkdir(parents=True, exist_ok=True)
    (root / "db").mkdir()
    (root / "cache").mkdir()
    titles = _dump_titles(dump_path)
    install = WikiInstall(root, key)
    env = install.env("http://127.0.0.1")

    def step(name: str, script: str, *args: str, stdin: str | None = None) -> str:
        say(f"[mediawiki build] {name} ...")
        t0 = time.monotonic()
        out = _run_php(env, script, *args, stdin=stdin)
        timings[name] = round(time.monotonic() - t0, 2)
        return out

    step(
        "install",
        "install",
        "--dbtype",
        "sqlite",
        "--dbpath",
        str(root / "db"),
        "--dbname",
        DB_NAME,
        "--confpath",
        str(root),
        "--server",
        "http://127.0.0.1",
        "--scriptpath",
        "",
        "--lang",
        "en",
        "--pass",
        ADMIN_PASSWORD,
        wikigen.SITENAME,
        ADMIN_USER,
    )
    _rewrite_local_settings(root / "LocalSettings.php")
    step("localisation cache", "rebuildLocalisationCache", "--lang", "en", "--force")
    # The wiki is exactly the dump: drop the installer's Main Page (it would also win
    # over an imported Main Page, whose revision is older).
    step("delete installer main page", "deleteBatch", "--r", "Replaced by the test dump", stdin=MAIN_PAGE + "\n")
    imported = step("import", "importDump", "--no-updates", str(dump_path))
    step("refresh links", "refreshLinks")
    step("site stats", "initSiteStats", "--update")
    step("run jobs", "runJobs")
    stats = step("check", "showSiteStats")
    expected = len(titles)
    match = re.search(r"Total pages\s*:\s*(\d+)", stats)
    if not match or int(match.group(1)) != expected:
        raise MediaWikiError(
            f"import check failed: the dump has {expected} pages, showSiteStats says:\n{_tail(stats)}\n"
            f"--- importDump.php output tail ---\n{_tail(imported)}"
        )
    info = {
        "key": key,
        "mediawiki": mediawiki_version(),
        "wikigen": wikigen.WIKIGEN_VERSION,
        "build_version": BUILD_VERSION,
        "pages": expected,
        "seconds": round(time.monotonic() - started, 2),
        "timings": timings,
    }
    (root / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    say(f"[mediawiki build] done in {info['seconds']}s")


def _rewrite_local_settings(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    replacements = {
        r"^\$wgServer = .*;$": f"$wgServer = getenv( '{SERVER_ENV}' ) ?: 'http://127.0.0.1';",
        r"^\$wgSQLiteDataDir = .*;$": "$wgSQLiteDataDir = __DIR__ . '/db';",
    }
    for pattern, replacement in replacements.items():
        text, count = re.subn(pattern, lambda _m, r=replacement: r, text, flags=re.MULTILINE)
        if count != 1:
            raise MediaWikiError(f"cannot rewrite {pattern!r} in {path} (found {count} times)")
    path.write_text(text + HARNESS_SETTINGS, encoding="utf-8")


def _dump_titles(dump_path: Path) -> list[str]:
    """Titles of the pages in an XML dump; MediaWikiError if it is not well-formed."""
    titles: list[str] = []
    try:
        for _event, elem in ET.iterparse(dump_path):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "title":
                titles.append(elem.text or "")
            elif tag == "page":
                elem.clear()
    except (ET.ParseError, OSError) as exc:
        raise MediaWikiError(f"cannot read the XML dump {dump_path}: {exc}") from exc
    return titles


# --------------------------------------------------------------------------- API client


@dataclass
class ApiResponse:
    """Raw HTTP answer of the API."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body.decode("utf-8"))


def api_request(api_url: str, params: dict[str, str], timeout: float = 60) -> ApiResponse:
    """GET ``api_url`` with ``params`` (urllib); HTTP errors are returned, not raised."""
    url = f"{api_url}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"User-Agent": "holocron-test-harness/1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return ApiResponse(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as exc:
        return ApiResponse(exc.code, dict(exc.headers.items()), exc.read())


def api_get(api_url: str, params: dict[str, str], timeout: float = 60) -> dict:
    """GET the API and return its JSON; MediaWikiError on HTTP or API errors."""
    resp = api_request(api_url, {"format": "json", "formatversion": "2", **params}, timeout)
    if resp.status != 200:
        raise MediaWikiError(f"API HTTP {resp.status} for {params}: {resp.body[:2000]!r}")
    data = resp.json()
    if "error" in data:
        raise MediaWikiError(f"API error for {params}: {data['error']}")
    return data


# --------------------------------------------------------------------------- serving


@dataclass
class RunningWiki:
    """A running ``php -S`` server for one install."""

    install: WikiInstall
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api.php"

    def api(self, **params: str) -> dict:
        """Shortcut for :func:`api_get` against this server."""
        return api_get(self.api_url, params)

    def set_lag(self, seconds: float | None) -> None:
        """Make the API report ``seconds`` of replication lag (None: back to 0)."""
        set_lag(self.install, seconds)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(encoding="utf-8", errors="replace"), lines)
        except OSError:
            return ""


def set_lag(install: WikiInstall, seconds: float | None) -> None:
    """Fake database lag for ``maxlag`` handling (see module docstring)."""
    path = install.root / FAKE_LAG_FILE
    if seconds is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(f"{seconds}\n")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _start(install: WikiInstall, port: int, workers: int, timeout: float) -> RunningWiki:
    php = php_binary()
    if php is None:
        raise MediaWikiError("php is not installed")
    log_path = install.root / f"php-server-{port}.log"
    env = install.env(f"http://127.0.0.1:{port}")
    if workers > 1:
        env["PHP_CLI_SERVER_WORKERS"] = str(workers)
    cmd = [
        php,
        "-d",
        "display_errors=stderr",
        "-d",
        "memory_limit=512M",
        "-S",
        f"127.0.0.1:{port}",
        "-t",
        str(MW_ROOT),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=str(MW_ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wiki = RunningWiki(install, port, process, log_path)
    deadline = time.monotonic() + timeout
    probe = {"action": "query", "meta": "siteinfo", "format": "json"}
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MediaWikiError(
                f"php -S exited with code {process.returncode} on port {port}: {' '.join(cmd)}\n"
                f"--- server log tail ---\n{wiki.log_tail()}"
            )
        try:
            resp = api_request(wiki.api_url, probe, timeout=3)
            if resp.status == 200 and resp.json().get("query", {}).get("general", {}).get("sitename"):
                return wiki
            last_error = f"HTTP {resp.status}: {resp.body[:500]!r}"
        except (OSError, ValueError) as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    _stop(process)
    raise MediaWikiError(
        f"MediaWiki did not answer {wiki.api_url} within {timeout:.0f}s (last: {last_error})\n"
        f"--- server log tail ---\n{wiki.log_tail()}"
    )


@contextlib.contextmanager
def serve(
    install: WikiInstall, port: int | None = None, *, workers: int = 4, timeout: float = 60
) -> Iterator[RunningWiki]:
    """Serve ``install`` with ``php -S 127.0.0.1:PORT`` until the block exits."""
    attempts = 1 if port else 3
    wiki: RunningWiki | None = None
    for attempt in range(attempts):
        try:
            wiki = _start(install, port or _free_port(), workers, timeout)
            break
        except MediaWikiError:
            if attempt == attempts - 1:
                raise
    assert wiki is not None
    install.api_url = wiki.api_url
    try:
        yield wiki
    finally:
        install.api_url = None
        _stop(wiki.process)


# --------------------------------------------------------------------------- editing


@dataclass(frozen=True)
class EditResult:
    """Outcome of :func:`edit_page`: revision ids before and after (None: page absent / not served)."""

    title: str
    old_revid: int | None
    new_revid: int | None


def _page_state(api_url: str, title: str) -> tuple[int | None, str | None]:
    data = api_get(
        api_url,
        {"action": "query", "prop": "revisions", "rvprop": "ids|content", "rvslots": "main", "titles": title},
    )
    page = data["query"]["pages"][0]
    if page.get("missing") or page.get("invalid"):
        return None, None
    rev = page["revisions"][0]
    return rev["revid"], rev["slots"]["main"]["content"]


def edit_page(
    install: WikiInstall, title: str, text: str, summary: str = "", *, api_url: str | None = None
) -> EditResult:
    """Save ``text`` as the new content of ``title`` with ``maintenance/edit.php``.

    If the install is being served (or ``api_url`` is given) the API must then
    report a newer ``lastrevid`` and the new content (an edit that changes
    nothing keeps the old revision id).  Raises MediaWikiError otherwise.
    """
    api_url = api_url or install.api_url
    before = _page_state(api_url, title) if api_url else (None, None)
    args = ["--summary", summary] if summary else []
    out = install.run_maintenance("edit", *args, title, stdin=text)
    if "done" not in out:
        raise MediaWikiError(f"edit.php did not save {title!r}:\n{_tail(out)}")
    if not api_url:
        return EditResult(title, None, None)
    revid, content = _page_state(api_url, title)
    unchanged = before[1] is not None and before[1].rstrip() == text.rstrip()
    if revid is None or content is None or content.rstrip() != text.rstrip():
        raise MediaWikiError(f"after edit.php the API shows {title!r} as revid={revid} content={content!r:.200}")
    if not unchanged and before[0] is not None and revid <= before[0]:
        raise MediaWikiError(f"after edit.php the API still shows lastrevid {revid} for {title!r}")
    return EditResult(title, before[0], revid)


# --------------------------------------------------------------------------- bots

#: The characters MediaWiki accepts in a BotPassword (BotPassword::canonicalizeLoginData: [0-9a-w]{32}).
BOT_PASSWORD_CHARS = "0123456789abcdefghijklmnopqrstuvw"


@dataclass(frozen=True)
class BotLogin:
    """A bot account's BotPassword: log in with ``username`` (``Name@appid``) and ``password``."""

    username: str
    password: str = field(repr=False)
    grants: tuple[str, ...] = ()


def create_bot(
    install: WikiInstall,
    name: str,
    *,
    appid: str = "holocron",
    grants: tuple[str, ...] = ("basic", "highvolume"),
    password: str | None = None,
) -> BotLogin:
    """Create the account *name* in the ``bot`` group (``createAndPromote.php --bot``; kept if it
    exists) and a BotPassword *appid* with *grants* (``createBotPassword.php``); the password is
    32 random characters of [0-9a-w] unless given."""
    import secrets as _secrets

    password = password or "".join(_secrets.choice(BOT_PASSWORD_CHARS) for _ in range(32))
    account_password = "Holocron-" + "".join(_secrets.choice(BOT_PASSWORD_CHARS) for _ in range(20))
    install.run_maintenance("createAndPromote", "--bot", "--force", name, account_password)
    out = install.run_maintenance("createBotPassword", "--appid", appid, "--grants", ",".join(grants), name, password)
    if "Success" not in out:
        raise MediaWikiError(f"createBotPassword.php did not create {name}@{appid}:\n{_tail(out)}")
    return BotLogin(f"{name}@{appid}", password, tuple(grants))


def _session_stores(install: WikiInstall) -> list[Path]:
    """The SQLite files with an object cache table (``$wgSessionCacheType = CACHE_DB``: the sessions
    are in ``wikicache.sqlite``; the main database has an empty one too)."""
    import sqlite3

    stores = []
    for path in sorted(install.db_dir.glob("*.sqlite")):
        conn = sqlite3.connect(path)
        try:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='objectcache'").fetchone():
                stores.append(path)
        finally:
            conn.close()
    if not stores:
        raise MediaWikiError(f"no objectcache table under {install.db_dir}")
    return stores


def session_ids(install: WikiInstall) -> list[str]:
    """The ids of every session the wiki holds (the values of its session cookies)."""
    import sqlite3

    ids = []
    for path in _session_stores(install):
        conn = sqlite3.connect(path, timeout=30)
        try:
            rows = conn.execute("SELECT keyname FROM objectcache WHERE keyname LIKE ?", (f"{DB_NAME}:MWSession:%",))
            ids += [key.rsplit(":", 1)[1] for (key,) in rows]
        finally:
            conn.close()
    return ids


def end_sessions(install: WikiInstall) -> int:
    """Forget every session (as an expired session store would): the next request with an old
    session cookie is anonymous. Returns how many were dropped."""
    import sqlite3

    dropped = 0
    for path in _session_stores(install):
        conn = sqlite3.connect(path, timeout=30)
        try:
            with conn:
                cur = conn.execute("DELETE FROM objectcache WHERE keyname LIKE ?", (f"{DB_NAME}:MWSession:%",))
            dropped += cur.rowcount
        finally:
            conn.close()
    return dropped


def record_auth_fixtures(api_url: str, bot: BotLogin, slow_bot: BotLogin, out_dir: Path) -> list[Path]:
    """Record the answers of a bot login (``tests/fixtures/mediawiki_auth``): the login token, a
    successful and a failed ``action=login``, ``meta=userinfo&uiprop=rights`` with and without
    ``apihighlimits``, and ``assertuserfailed``. The headers of the successful login are kept
    (``login_success.headers.json``: its ``Set-Cookie``)."""
    import http.cookiejar

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = {"format": "json", "formatversion": "2"}

    def opener() -> urllib.request.OpenerDirector:
        return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def call(client: urllib.request.OpenerDirector, params: dict[str, str], post: bool = False) -> ApiResponse:
        data = urllib.parse.urlencode({**params, **base}).encode()
        request = urllib.request.Request(
            api_url if post else f"{api_url}?{data.decode()}",
            data=data if post else None,
            headers={"User-Agent": "holocron-test-harness/1"},
        )
        with client.open(request, timeout=60) as resp:
            return ApiResponse(resp.status, dict(resp.headers.items()), resp.read())

    def login(client: urllib.request.OpenerDirector, who: BotLogin, password: str) -> tuple[ApiResponse, ApiResponse]:
        token = call(client, {"action": "query", "meta": "tokens", "type": "login"})
        lgtoken = token.json()["query"]["tokens"]["logintoken"]
        form = {"action": "login", "lgname": who.username, "lgpassword": password, "lgtoken": lgtoken}
        return token, call(client, form, post=True)

    rights = {"action": "query", "meta": "userinfo", "uiprop": "rights", "assert": "user"}
    answers: dict[str, ApiResponse] = {}
    client = opener()
    answers["login_token"], answers["login_success"] = login(client, bot, bot.password)
    answers["userinfo_highlimits"] = call(client, rights)
    client = opener()
    login(client, slow_bot, slow_bot.password)
    answers["userinfo_no_highlimits"] = call(client, rights)
    _, answers["login_wrong_password"] = login(opener(), bot, "0" * 32)
    answers["assertuserfailed"] = call(
        opener(), {"action": "query", "prop": "info", "titles": "Main Page", "assert": "user"}
    )
    written = []
    for name, resp in answers.items():
        path = out_dir / f"{name}.json"
        _write_recording(path, resp.json())
        written.append(path)
    hpath = out_dir / "login_success.headers.json"
    _write_recording(hpath, {"status": answers["login_success"].status, "headers": answers["login_success"].headers})
    return [*written, hpath]


# --------------------------------------------------------------------------- fixtures

QUERY_PARAMS: dict[str, str] = {
    "action": "query",
    "format": "json",
    "formatversion": "2",
    "prop": "revisions|links|categories",
    "rvprop": "content|ids|timestamp",
    "rvslots": "main",
    "pllimit": "max",
    "cllimit": "max",
    "redirects": "1",
    "maxlag": "5",
}


def fixture_requests(model: wikigen.WikiModel) -> list[tuple[str, dict[str, str]]]:
    """``(fixture name, params)`` of every recorded request (continuations excluded)."""
    tier1 = [t for t, tier in model.tiers.items() if tier == 1 and t not in model.special_titles]
    ordinary = [t for t in tier1 if len(model.pages[t].links) <= 20][:5]
    info_titles = tier1[:49] + ["Never Written Page"]

    def q(titles: list[str], **extra: str) -> dict[str, str]:
        return {**QUERY_PARAMS, "titles": "|".join(titles), **extra}

    return [
        ("batch_ok", q(ordinary)),
        ("continuation", q(["Hub Alpha", "Hub Beta", "Han's Blaster"])),
        (
            "redirects_normalized",
            q(
                [
                    "Omega Station",
                    "Old Republic Archives",
                    "han's Blaster",
                    "Mos_Eisley_Cantina",
                    "東京 Base",
                    "Planets list",
                ]
            ),
        ),
        ("missing_invalid", q(["Never Written Page", "Foo<Bar", "Lost Redirect", ordinary[0]])),
        ("redirect_loop", q(["Loop Alpha", "Self Reference"])),
        ("maxlag_error", q([ordinary[0]], maxlag="-1")),
        ("bad_param_error", {"action": "nonexistentaction", "format": "json", "formatversion": "2"}),
        (
            "prop_info",
            {
                "action": "query",
                "format": "json",
                "formatversion": "2",
                "prop": "info",
                "redirects": "1",
                "maxlag": "5",
                "titles": "|".join(info_titles),
            },
        ),
    ]


VOLATILE_HEADERS = frozenset({"Date", "X-Request-Id", "Host"})


def normalise_recording(value: object) -> object:
    """A recorded response (or headers record) without what changes between runs.

    Drops ``touched`` (set when links are refreshed) and volatile headers, and
    replaces the server's port by ``PORT``.
    """
    if isinstance(value, dict):
        return {k: normalise_recording(v) for k, v in value.items() if k != "touched" and k not in VOLATILE_HEADERS}
    if isinstance(value, list):
        return [normalise_recording(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"http://127\.0\.0\.1:\d+", "http://127.0.0.1:PORT", value)
    return value


def _write_recording(path: Path, data: object) -> None:
    """Write ``data`` as pretty JSON unless ``path`` already holds an equivalent recording."""
    if path.exists():
        with contextlib.suppress(ValueError):
            if normalise_recording(json.loads(path.read_text(encoding="utf-8"))) == normalise_recording(data):
                return
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def fetch_fixture_responses(api_url: str, model: wikigen.WikiModel) -> list[tuple[str, dict[str, str], ApiResponse]]:
    """Issue :func:`fixture_requests` (following continuation): ``(file stem, params, response)``."""
    out: list[tuple[str, dict[str, str], ApiResponse]] = []
    for name, params in fixture_requests(model):
        if name != "continuation":
            out.append((name, params, api_request(api_url, params)))
            continue
        extra: dict[str, str] = {}
        for part in range(1, 20):
            full = {**params, **extra}
            resp = api_request(api_url, full)
            out.append((f"continuation_{part}", full, resp))
            data = resp.json()
            if "continue" not in data:
                break
            extra = {k: str(v) for k, v in data["continue"].items()}
        else:
            raise MediaWikiError("continuation did not finish in 20 requests")
    return out


FIXTURE_DESCRIPTIONS: dict[str, str] = {
    "batch_ok": "Five ordinary articles; complete in one response (`batchcomplete: true`).",
    "continuation": (
        "Two hubs (600 and 900 links) and an ordinary article. `continuation_N.json` is part N; each"
        " request sends back every key of the previous `continue`. Revisions and categories come in"
        " part 1 only; later parts still list every page of the batch (without `revisions`), and only"
        " the last part has `batchcomplete: true`."
    ),
    "redirects_normalized": (
        "A redirect (`Omega Station`), a double redirect (`Old Republic Archives` -> `Republic Archives"
        " (old)` -> `Republic Archives`), a lowercase first letter (`han's Blaster`), underscores"
        " (`Mos_Eisley_Cantina`), a Unicode title (`東京 Base`) and a redirect into another namespace"
        " (`Planets list` -> `Category:Planets`)."
    ),
    "missing_invalid": (
        "A missing title, an invalid title (`Foo<Bar`: `invalid: true` plus `invalidreason`, no `ns`),"
        " a redirect to a missing page and an ordinary article."
    ),
    "redirect_loop": (
        "The loop `Loop Alpha` <-> `Loop Beta` and the self-redirect `Self Reference`: only `redirects`"
        " entries, no `pages` at all."
    ),
    "maxlag_error": "`maxlag=-1`: the `maxlag` error, HTTP 200 (see the note on lag below).",
    "bad_param_error": "Unknown `action`: error `badvalue`, HTTP 200.",
    "prop_info": "`prop=info` for 49 articles and one missing title (`lastrevid`, `touched`, `length`).",
}


def record_fixtures(api_url: str, model: wikigen.WikiModel, out_dir: Path) -> list[Path]:
    """(Re)write ``out_dir/*.json`` and its README.md from the live wiki (equivalent files are kept)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("continuation_*.json"):
        old.unlink()
    written: list[Path] = []
    readme = [
        "# Recorded MediaWiki API responses",
        "",
        f"Real responses of the local test wiki (Debian MediaWiki {mediawiki_version()}, test wiki generated by",
        f"`tests/support/wikigen.py` v{wikigen.WIKIGEN_VERSION}), recorded with",
        "`python -m tests.support.mediawiki_server --record-fixtures tests/fixtures/mediawiki`;",
        "`tests/test_wikigen.py` checks that they still match the live wiki (except `touched` and the port).",
        "Each request is `GET http://127.0.0.1:PORT/api.php?<query>` with the query shown below;",
        "`*.headers.json` hold the HTTP status and the response headers.",
        "",
        "Notes:",
        "",
        "- Stock single-database MediaWiki reports replication lag -1, so `maxlag=-1` does *not* fail",
        "  there (the check is `lag > maxlag`; `maxlag=-2` would). The harness adds an `ApiMaxLagInfo`",
        "  hook reporting lag 0, like an in-sync replicated wiki, so `maxlag=-1` gives the `maxlag` error",
        "  with HTTP 200, `Retry-After: 5`, `X-Database-Lag: 0` and `MediaWiki-API-Error: maxlag`.",
        "- API errors come with HTTP 200 and a `MediaWiki-API-Error: <code>` header. More than 50 `titles`",
        "  is the error `toomanyvalues`; boolean parameters are true when present (`redirects=0` follows).",
        "- Continuation: `continue` holds `plcontinue` (`pageid|ns|dbkey` of the next link) and",
        "  `continue: '||revisions|categories'` (modules already complete); send every key back.",
        "",
    ]
    for name, params, resp in fetch_fixture_responses(api_url, model):
        path = out_dir / f"{name}.json"
        _write_recording(path, resp.json())
        written.append(path)
        readme += [f"## `{path.name}`", ""]
        base = name.split("_")[0] if name.startswith("continuation_") else name
        if name in FIXTURE_DESCRIPTIONS or name == "continuation_1":
            readme += [FIXTURE_DESCRIPTIONS[base], ""]
        status = f"HTTP {resp.status}"
        if name in ("maxlag_error", "bad_param_error"):
            hpath = out_dir / f"{name}.headers.json"
            _write_recording(hpath, {"status": resp.status, "headers": resp.headers})
            written.append(hpath)
            status += f"; status and headers in `{hpath.name}`"
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        readme += [status + ". Query:", "", "```", query, "```", ""]
    (out_dir / "README.md").write_text("\n".join(readme), encoding="utf-8")
    return written


# --------------------------------------------------------------------------- CLI


def _prepare(workdir: Path, cache_dir: Path | None, use_cache: bool) -> tuple[wikigen.WikiModel, WikiInstall]:
    model = wikigen.build_model()
    dump = model.write_dump(workdir / "dump.xml")
    install = build_wiki(
        workdir, dump, cache_dir=cache_dir, use_cache=use_cache, log=lambda msg: print(msg, file=sys.stderr, flush=True)
    )
    return model, install


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help="serve the test wiki in the foreground")
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--workers", type=int, default=4, help="PHP_CLI_SERVER_WORKERS (default 4)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to put the install copy")
    parser.add_argument("--cache-dir", type=Path, default=None, help="install cache (default $HOLOCRON_TEST_CACHE)")
    parser.add_argument("--no-cache", action="store_true", help="always build from scratch")
    parser.add_argument(
        "--record-fixtures", type=Path, default=None, metavar="DIR", help="record the API fixture files into DIR"
    )
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="holocron-mediawiki-")
        args.workdir = Path(tmp.name)
    try:
        model, install = _prepare(args.workdir, args.cache_dir, not args.no_cache)
        print(f"install: {install.root} (build info: {install.build_info})", file=sys.stderr)
        if not (args.serve or args.record_fixtures):
            return 0
        with serve(install, args.port, workers=args.workers) as wiki:
            if args.record_fixtures:
                for path in record_fixtures(wiki.api_url, model, args.record_fixtures):
                    print(f"wrote {path}", file=sys.stderr)
            if args.serve:
                print(wiki.api_url, flush=True)
                print(f"serving (log: {wiki.log_path}); Ctrl-C to stop", file=sys.stderr, flush=True)
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                with contextlib.suppress(KeyboardInterrupt):
                    while wiki.process.poll() is None:
                        time.sleep(0.5)
                if wiki.process.poll() is not None:
                    print(f"php -S exited:\n{wiki.log_tail()}", file=sys.stderr)
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
