"""Deterministic generator of a MediaWiki test wiki plus its ground-truth model.

``build_model()`` returns a :class:`WikiModel`: every page of the "Holocron Test
Wiki" (title, namespace, wikitext, redirect target, and the links, categories
and templates MediaWiki reports for it once ``refreshLinks.php`` has run).
``WikiModel.write_dump()`` writes it as a MediaWiki XML export (schema 0.11)
for ``maintenance/importDump.php``.  Pure stdlib; the same output on every
Python version (own PRNG, no ``random``).

Shape of the wiki (see ``WikiModel`` attributes):

* ~560 articles in namespace 0 arranged in tiers: ``Hub Alpha`` links every
  tier-1 article, each tier-t article links its tier-(t+1) "children" plus
  same-tier and lower-tier articles.  A depth-2 crawl from ``Hub Alpha`` thus
  reaches tiers 1-2 (and a few shortcuts) but not tiers 3-4; the
  ``Deep Archive N`` chain hangs below tier 4 (depth >= 5); the ``orphans``
  island (and ``Hub Gamma``) is linked from nothing reachable.
* hubs with 600, 900 and 1300 distinct links (``pllimit=max`` is 500).
* redirects: plain, with fragment, to a missing page, cross-namespace
  (to ``Category:Planets``), double and triple redirects, a loop
  (``Loop Alpha`` <-> ``Loop Beta``) and a self-redirect (``Self Reference``).
* Unicode / punctuation titles (``SPECIAL_TITLES``), links written with
  underscores, lowercase first letters, extra spaces, ``Project:`` alias.
* categories (existing and missing category pages; ``Category:Holocron
  entries`` has > 500 members), a template adding a category and a link,
  Talk/Help/Template/Project pages, red links.

MediaWiki 1.39 behaviours verified against the real API and encoded here:

* ``redirects=1`` follows redirect chains to the end: A->B->C answers with
  ``redirects: [A->B, B->C]`` and the page C (triple redirects likewise).
* A redirect loop (X->Y->X) answers with ``redirects: [X->Y, Y->X]`` and *no*
  entry at all in ``pages``; a self-redirect S answers ``redirects: [S->S]``
  and no page.  The oracle reports these as outcome ``"redirect_loop"`` keyed
  by the normalised *requested* title (there is no resolved page to key by).
* A redirect to a missing page answers with the redirect and the target as a
  ``missing`` page: keyed by the target title, outcome ``"missing"``.
* Invalid titles (``INVALID_TITLES``) come back as ``{"title": <as sent>,
  "invalid": true, "invalidreason": ...}``: outcome ``"invalid"`` keyed by the
  title as sent.  ``Special:`` titles come back with ``special: true``
  (outcome ``"special"``).  ``Foo#Bar`` is normalised to ``Foo``; a bare
  ``#Bar`` is normalised to ``""`` and silently dropped (not modelled).
* ``redirects=0`` still resolves redirects (a boolean parameter is true when
  present); more than 50 ``titles`` is an error (``toomanyvalues``).
* Link tables: a plain self-link ``[[Own title]]`` is *not* recorded, but
  ``[[Own title#Section]]`` is; ``[[Special:...]]``, interwiki links
  (``[[wikipedia:...]]``) and ``[[#Section]]`` are not recorded; a redirect
  page links to its target (a self-redirect links to itself); ``[[Project:X]]``
  is recorded as ``Holocron Test Wiki:X``; links from transcluded templates
  count for the transcluding page.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

WIKIGEN_VERSION = "1"
SITENAME = "Holocron Test Wiki"
DEFAULT_SEED = 20240504

NAMESPACES: dict[int, str] = {
    -2: "Media",
    -1: "Special",
    0: "",
    1: "Talk",
    2: "User",
    3: "User talk",
    4: SITENAME,
    5: f"{SITENAME} talk",
    6: "File",
    7: "File talk",
    8: "MediaWiki",
    9: "MediaWiki talk",
    10: "Template",
    11: "Template talk",
    12: "Help",
    13: "Help talk",
    14: "Category",
    15: "Category talk",
}
_NS_LOOKUP: dict[str, int] = {name.lower(): ns for ns, name in NAMESPACES.items() if name}
_NS_LOOKUP.update({"project": 4, "project talk": 5, "image": 6, "image talk": 7})
# Only the interwiki prefixes this generator writes (the installer's table has more).
INTERWIKI_PREFIXES = frozenset({"wikipedia"})
_ILLEGAL_CHARS = frozenset("<>[]{}|")
_DUMP_ROOT = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.11/ '
    'http://www.mediawiki.org/xml/export-0.11.xsd" version="0.11" xml:lang="en">'
)

HUB_SIZES: dict[str, int] = {"Hub Alpha": 600, "Hub Beta": 900, "Hub Gamma": 1300}
MAIN_PAGE = "Main Page"
CRAWL_SEED = "Ωmega Station"
SPECIAL_TITLES: tuple[str, ...] = (
    "Ωmega Station",
    "東京 Base",
    "Han's Blaster",
    "AT-AT/Walker",
    "Mos Eisley Cantina",
    "Café Ørsted",
    "AT-AT",
    "Smugglers & Rebels",
    "Who Shot First?",
    "Holo+Net Relay",
    "Ölvar Reach",
    "Battle Log: Hoth Sector",
    "Republic Archives",
)
INVALID_TITLES: tuple[str, ...] = ("Foo<Bar", "[[x]]", "Bad{Title}", "Talk:")
BIG_CATEGORY = "Category:Holocron entries"
MISSING_CATEGORY = "Category:Unsorted drafts"
TYPE_CATEGORIES: dict[str, str] = {
    "planet": "Category:Planets",
    "starship": "Category:Starships",
    "character": "Category:Characters",
    "droid": "Category:Droids",
    "battle": "Category:Battles",
    "organization": "Category:Organizations",
}


# --------------------------------------------------------------------------- titles


def split_title(raw: str) -> tuple[int, str] | None:
    """Normalise ``raw`` like MediaWiki's title parser: ``(ns, text)`` or None if invalid.

    Handles what this wiki uses: underscores/whitespace runs, a leading colon,
    ``#fragment``, case-insensitive namespace names and aliases, first-letter
    capitalisation and the illegal characters ``<>[]{}|``.  Interwiki
    prefixes are not handled (see :func:`is_interwiki`).
    """
    text = re.sub(r"[\s_]+", " ", raw).strip()
    if text.startswith(":"):
        text = text[1:].strip()
    if "#" in text:
        text = text.split("#", 1)[0].rstrip()
    if not text or any(ch in _ILLEGAL_CHARS for ch in text):
        return None
    ns = 0
    if ":" in text:
        prefix, rest = text.split(":", 1)
        found = _NS_LOOKUP.get(prefix.strip().lower())
        if found is not None:
            ns, text = found, rest.strip()
    if not text:
        return None
    return ns, text[0].upper() + text[1:]


def normalize_title(raw: str) -> str | None:
    """The canonical (API-reported) form of ``raw``, or None if it is invalid."""
    parts = split_title(raw)
    if parts is None:
        return None
    ns, text = parts
    return f"{NAMESPACES[ns]}:{text}" if ns else text


def namespace_of(title: str) -> int:
    """Namespace number of a (valid) title."""
    parts = split_title(title)
    if parts is None:
        raise ValueError(f"invalid title: {title!r}")
    return parts[0]


def is_interwiki(raw: str) -> bool:
    """True if ``raw`` starts with one of :data:`INTERWIKI_PREFIXES`."""
    prefix = raw.strip().lstrip(":").split(":", 1)[0].strip().lower()
    return ":" in raw and prefix in INTERWIKI_PREFIXES


_LINK_RE = re.compile(r"\[\[([^\[\]|]*)(?:\|[^\[\]]*)?\]\]")
_TRANSCLUDE_RE = re.compile(r"\{\{([^{}|]+)(?:\|[^{}]*)?\}\}")


def extract_links(title: str, text: str) -> tuple[set[str], set[str]]:
    """Tiny wikitext link scanner (``[[..]]`` only): ``(links, categories)`` of ``text``.

    Applies the link-table rules of the module docstring except templates.
    Used to cross-check the generator, not by the model itself.
    """
    links: set[str] = set()
    categories: set[str] = set()
    stripped = re.sub(r"<includeonly>.*?</includeonly>", "", text, flags=re.DOTALL)
    stripped = re.sub(r"</?noinclude>", "", stripped)
    is_redirect = stripped.lstrip().upper().startswith("#REDIRECT")
    for index, match in enumerate(_LINK_RE.finditer(stripped)):
        target = match.group(1)
        if target.strip().startswith("#") or is_interwiki(target):
            continue
        parts = split_title(target)
        if parts is None:
            continue
        ns, _ = parts
        norm = normalize_title(target)
        assert norm is not None
        if ns == 14 and not target.strip().startswith(":") and not (is_redirect and index == 0):
            categories.add(norm)
            continue
        if ns < 0:
            continue
        if norm == title and "#" not in target and not (is_redirect and index == 0):
            continue
        links.add(norm)
    return links, categories


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Page:
    """One page as MediaWiki stores and reports it."""

    title: str
    ns: int
    text: str
    redirect: str | None = None
    redirect_fragment: str | None = None
    links: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    templates: frozenset[str] = frozenset()
    kind: str = "article"
    tier: int | None = None


@dataclass(frozen=True)
class Resolution:
    """What requesting one title with ``redirects=1`` yields."""

    outcome: str  # ok | missing | redirect_loop | invalid | special
    key: str
    chain: tuple[str, ...]  # normalised titles visited (requested first)


@dataclass
class WikiModel:
    """Ground truth of the generated wiki."""

    pages: dict[str, Page]
    hubs: dict[str, int]
    tiers: dict[str, int]
    deep_chain: tuple[str, ...]
    orphans: tuple[str, ...]
    double_redirects: tuple[tuple[str, ...], ...]
    redirect_loops: tuple[tuple[str, ...], ...]
    self_redirects: tuple[str, ...]
    seed: int
    invalid_titles: tuple[str, ...] = INVALID_TITLES
    special_titles: tuple[str, ...] = SPECIAL_TITLES
    _members: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    # -- lookups -----------------------------------------------------------
    def page(self, title: str) -> Page | None:
        """The page called ``title`` (any spelling), or None."""
        norm = normalize_title(title)
        return self.pages.get(norm) if norm else None

    def articles(self) -> list[Page]:
        """Non-redirect pages in namespace 0."""
        return [p for p in self.pages.values() if p.ns == 0 and p.redirect is None]

    def in_namespace(self, ns: int) -> list[Page]:
        """All pages (redirects included) in namespace ``ns``."""
        return [p for p in self.pages.values() if p.ns == ns]

    @property
    def redirects(self) -> dict[str, str]:
        """Redirect title -> target title."""
        return {t: p.redirect for t, p in self.pages.items() if p.redirect is not None}

    @property
    def missing_titles(self) -> frozenset[str]:
        """Link and redirect targets that have no page (red links)."""
        targets = {t for p in self.pages.values() for t in p.links}
        return frozenset(t for t in targets if t not in self.pages)

    def category_members(self, category: str) -> frozenset[str]:
        """Titles of pages tagged with ``category`` (``Category:`` prefix optional)."""
        cat = normalize_title(category if ":" in category else f"Category:{category}")
        if not self._members:
            members: dict[str, set[str]] = {}
            for page in self.pages.values():
                for c in page.categories:
                    members.setdefault(c, set()).add(page.title)
            self._members.update({c: frozenset(m) for c, m in members.items()})
        return self._members.get(cat or "", frozenset())

    def namespace_of(self, title: str) -> int:
        """Namespace number of ``title``."""
        return namespace_of(title)

    # -- the oracle --------------------------------------------------------
    def resolve(self, title: str) -> Resolution:
        """Resolve ``title`` as ``action=query&titles=...&redirects=1`` does."""
        norm = normalize_title(title)
        if norm is None:
            return Resolution("invalid", title, ())
        if namespace_of(norm) < 0:
            return Resolution("special", norm, (norm,))
        chain = [norm]
        current = norm
        while current in self.pages and self.pages[current].redirect is not None:
            current = self.pages[current].redirect or ""
            if current in chain:
                return Resolution("redirect_loop", norm, tuple(chain))
            chain.append(current)
        outcome = "ok" if current in self.pages else "missing"
        return Resolution(outcome, current, tuple(chain))

    def reachable(
        self,
        seeds: Iterable[str],
        max_depth: int,
        namespaces: Sequence[int] = (0,),
        follow_links: bool = True,
        follow_categories: bool = False,
    ) -> dict[str, dict]:
        """Ground truth of a breadth-first crawl: ``key -> {depth, outcome, requested}``.

        Seeds are requested at depth 0 (in the given order; later depths in
        sorted order).  Each normalised title is requested once; each result key
        (see :meth:`resolve`) is stored once, at the first depth reaching it.
        An ``ok`` page at depth < max_depth contributes its links whose
        namespace is in ``namespaces`` and (if ``follow_categories``) all its
        categories, at depth + 1.  ``requested`` is the title as sent: the seed
        string as given, or the link title as MediaWiki reports it.
        """
        result: dict[str, dict] = {}
        requested: set[str] = set()
        frontier = list(seeds)
        depth = 0
        while frontier and depth <= max_depth:
            next_level: set[str] = set()
            for title in frontier:
                name = normalize_title(title) or title
                if name in requested:
                    continue
                requested.add(name)
                res = self.resolve(title)
                if res.key in result:
                    continue
                result[res.key] = {"depth": depth, "outcome": res.outcome, "requested": title}
                if res.outcome != "ok" or depth >= max_depth:
                    continue
                page = self.pages[res.key]
                if follow_links:
                    next_level.update(t for t in page.links if namespace_of(t) in namespaces)
                if follow_categories:
                    next_level.update(page.categories)
            frontier = sorted(next_level - requested)
            depth += 1
        return result

    # -- dump ----------------------------------------------------------------
    def dump_xml(self) -> str:
        """The MediaWiki XML export (schema 0.11) of every page."""
        out = [
            _DUMP_ROOT,
            "  <siteinfo>",
            f"    <sitename>{escape(SITENAME)}</sitename>",
            "    <dbname>holocron</dbname>",
            "    <base>http://127.0.0.1/index.php/Main_Page</base>",
            f"    <generator>holocron-wikigen/{WIKIGEN_VERSION}</generator>",
            "    <case>first-letter</case>",
            "    <namespaces>",
        ]
        for ns, name in NAMESPACES.items():
            if name:
                out.append(f'      <namespace key="{ns}" case="first-letter">{escape(name)}</namespace>')
            else:
                out.append(f'      <namespace key="{ns}" case="first-letter" />')
        out += ["    </namespaces>", "  </siteinfo>"]
        for number, page in enumerate(self.pages.values(), start=1):
            data = page.text.encode("utf-8")
            sha1 = _sha1_base36(data)
            minutes, seconds = divmod(number, 60)
            hours, minutes = divmod(minutes, 60)
            stamp = f"2024-05-04T{10 + hours:02d}:{minutes:02d}:{seconds:02d}Z"
            out += [
                "  <page>",
                f"    <title>{escape(page.title)}</title>",
                f"    <ns>{page.ns}</ns>",
                f"    <id>{number}</id>",
            ]
            if page.redirect is not None:
                out.append(f"    <redirect title={quoteattr(page.redirect)} />")
            out += [
                "    <revision>",
                f"      <id>{number}</id>",
                f"      <timestamp>{stamp}</timestamp>",
                "      <contributor>",
                "        <username>Holocron Archivist</username>",
                "        <id>0</id>",
                "      </contributor>",
                "      <comment>Generated by holocron wikigen</comment>",
                "      <model>wikitext</model>",
                "      <format>text/x-wiki</format>",
                f'      <text bytes="{len(data)}" sha1="{sha1}" xml:space="preserve">{escape(page.text)}</text>',
                f"      <sha1>{sha1}</sha1>",
                "    </revision>",
                "  </page>",
            ]
        out.append("</mediawiki>")
        return "\n".join(out) + "\n"

    def write_dump(self, path: Path) -> Path:
        """Write :meth:`dump_xml` to ``path`` (UTF-8) and return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.dump_xml(), encoding="utf-8")
        return path


def _sha1_base36(data: bytes) -> str:
    number = int(hashlib.sha1(data).hexdigest(), 16)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rem = divmod(number, 36)
        out = digits[rem] + out
    return out.rjust(31, "0")


# --------------------------------------------------------------------------- PRNG


class _Rng:
    """splitmix64: tiny PRNG whose output never depends on the Python version."""

    _MASK = (1 << 64) - 1

    def __init__(self, seed: int) -> None:
        self.state = seed & self._MASK

    def next64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & self._MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self._MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self._MASK
        return z ^ (z >> 31)

    def randint(self, lo: int, hi: int) -> int:
        return lo + self.next64() % (hi - lo + 1)

    def chance(self, p: float) -> bool:
        return self.next64() < p * 2.0**64

    def choice(self, seq: Sequence):
        return seq[self.randint(0, len(seq) - 1)]

    def sample(self, seq: Sequence, k: int) -> list:
        pool = list(seq)
        k = min(k, len(pool))
        for i in range(k):
            j = self.randint(i, len(pool) - 1)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]


# --------------------------------------------------------------------------- generator

_SYLLABLES = (
    "kor",
    "ri",
    "ban",
    "ves",
    "sar",
    "tal",
    "mon",
    "dra",
    "zel",
    "qua",
    "ith",
    "nor",
    "vek",
    "sha",
    "lun",
    "tor",
    "em",
    "cor",
    "bis",
    "dan",
    "tu",
    "ka",
    "rhen",
    "yav",
    "ost",
    "mir",
    "phe",
    "jun",
    "dol",
    "ar",
    "xan",
    "gel",
    "bri",
    "sta",
    "ul",
    "fen",
    "rok",
    "tha",
    "ven",
    "ion",
)
_ROMAN = ("II", "III", "IV", "V", "VI", "VII")
_LABELS = ("the archive", "that world", "this entry", "the old records", "the survey", "a rumour")
_SENTENCES = (
    "Records connect it with {L}.",
    "Scholars often compare it to {L}.",
    "{L} is mentioned in the same archive.",
    "Later accounts place it near {L}.",
    "A datacard also references {L}.",
    "Some holocrons tie its history to {L}.",
)
_TYPE_WORDS = {
    "planet": "a planet",
    "starship": "a starship class",
    "character": "a figure",
    "droid": "a droid model",
    "battle": "a battle",
    "organization": "an organization",
}
TIER_SIZES = (130, 220, 130, 50)
DEEP_CHAIN_LENGTH = 8
ORPHAN_COUNT = 25
TALK_PAGE_COUNT = 40


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = _Rng(seed)
        self.seed = seed
        self.used: set[str] = set(SPECIAL_TITLES) | set(HUB_SIZES) | {MAIN_PAGE}
        self.pages: dict[str, Page] = {}
        self.kinds: dict[str, str] = {}

    # -- names ---------------------------------------------------------------
    def _word(self, syllables: int) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()

    def _name(self, kind: str) -> str:
        rng = self.rng
        while True:
            base = self._word(rng.randint(2, 3))
            if kind == "planet":
                name = rng.choice((base, base, f"{base} Prime", f"{base} Minor", f"{base} {rng.choice(_ROMAN)}"))
            elif kind == "starship":
                name = rng.choice((f"{base}-class cruiser", f"{base}-class frigate", f"{base} Runner"))
            elif kind == "character":
                name = f"{base} {self._word(rng.randint(2, 3))}"
            elif kind == "droid":
                letters = "BCGKRTX"
                name = (
                    f"{rng.choice(letters)}{rng.randint(1, 9)}-"
                    f"{rng.choice(letters)}{rng.randint(1, 9)}{rng.choice(('', ' unit'))}"
                )
            elif kind == "battle":
                name = rng.choice((f"Battle of {base}", f"Siege of {base}"))
            else:
                name = rng.choice((f"{base} Syndicate", f"{base} Collective", f"Order of {base}"))
            if name not in self.used and name.lower() not in {u.lower() for u in self.used}:
                self.used.add(name)
                return name

    # -- wikitext ------------------------------------------------------------
    def _surface(self, target: str) -> str:
        """A random but equivalent wikitext spelling of a link to ``target``."""
        ns, name = split_title(target) or (0, target)
        prefix = f"{NAMESPACES[ns]}:" if ns else ""
        if ns == 4 and self.rng.chance(0.5):
            prefix = "Project:"
        if ns == 14:
            prefix = ":" + prefix
        r = self.rng.next64() / 2.0**64
        label = self.rng.choice(_LABELS)
        if r < 0.60:
            return f"[[{prefix}{name}]]"
        if r < 0.72:
            return f"[[{prefix}{name}|{label}]]"
        if r < 0.80:
            return f"[[{(prefix + name).replace(' ', '_')}]]"
        if r < 0.88 and name[0].isascii() and name[0].isupper():
            return f"[[{prefix.lower() if ns != 14 else prefix}{name[0].lower()}{name[1:]}]]"
        if r < 0.94:
            return f"[[{prefix}{name}#History|{label}]]"
        if ns != 14:
            return f"[[  {prefix}{name.replace(' ', '  ')} ]]"
        return f"[[{prefix}{name}]]"

    def _category_surface(self, category: str) -> str:
        name = category.split(":", 1)[1]
        r = self.rng.next64() % 10
        if r == 0 and name[0].isascii():
            return f"[[category:{name[0].lower()}{name[1:]}]]"
        if r == 1:
            return f"[[Category:{name.replace(' ', '_')}]]"
        if r == 2:
            return f"[[Category:{name}|Sortkey]]"
        return f"[[Category:{name}]]"

    def _prose(self, links: Sequence[str]) -> str:
        sentences = [self.rng.choice(_SENTENCES).format(L=self._surface(t)) for t in links]
        paragraphs = [" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
        return "\n\n".join(paragraphs)

    def _add(self, page: Page) -> None:
        assert page.title not in self.pages, page.title
        assert normalize_title(page.title) == page.title, page.title
        # Saving through MediaWiki strips trailing whitespace; keep imported text alike.
        self.pages[page.title] = dataclasses.replace(page, text=page.text.rstrip())

    def _article(
        self,
        title: str,
        kind: str,
        links: Sequence[str],
        *,
        tier: int | None = None,
        extra_text: str = "",
        stub: bool = False,
        categories: Sequence[str] = (),
        page_kind: str = "article",
        extra_links: Iterable[str] = (),
    ) -> None:
        links = list(dict.fromkeys(links))
        cats = list(dict.fromkeys(categories))
        templates: set[str] = set()
        head = ""
        if stub:
            head += "{{Stub}}\n"
            templates.add("Template:Stub")
        if kind == "planet":
            head += f"{{{{Infobox|name={title}}}}}\n"
            templates.add("Template:Infobox")
        half = len(links) // 2
        body = (
            f"{head}'''{title}''' is {_TYPE_WORDS.get(kind, 'a subject')} catalogued in the Holocron.\n\n"
            f"== Overview ==\n{self._prose(links[:half])}\n\n"
            f"== History ==\n{self._prose(links[half:])}\n{extra_text}\n"
        )
        body += "\n".join(self._category_surface(c) for c in cats) + "\n"
        page_links = set(links)
        page_cats = set(cats)
        if stub:
            page_links.add("Help:Stub")
            page_cats.add("Category:Stubs")
        self._add(
            Page(
                title=title,
                ns=0,
                text=body,
                links=frozenset((page_links - {title}) | set(extra_links)),
                categories=frozenset(page_cats),
                templates=frozenset(templates),
                kind=page_kind,
                tier=tier,
            )
        )

    def _simple(self, title: str, text: str, kind: str, links: Iterable[str] = (), cats: Iterable[str] = ()) -> None:
        ns = namespace_of(title)
        self._add(Page(title, ns, text, links=frozenset(links), categories=frozenset(cats), kind=kind))

    def _redirect(self, title: str, target: str, fragment: str | None = None, category: bool = False) -> None:
        ns = namespace_of(title)
        link = f":{target}" if namespace_of(target) == 14 else target
        text = f"#REDIRECT [[{link}{'#' + fragment if fragment else ''}]]\n"
        cats: frozenset[str] = frozenset()
        if category:
            text += "\n[[Category:Redirects]]\n"
            cats = frozenset({"Category:Redirects"})
        self._add(
            Page(
                title,
                ns,
                text,
                redirect=target,
                redirect_fragment=fragment,
                links=frozenset({target}),
                categories=cats,
                kind="redirect",
            )
        )

    # -- the wiki ------------------------------------------------------------
    def build(self) -> WikiModel:
        rng = self.rng
        kinds = list(TYPE_CATEGORIES)
        # Tiered articles; special titles go into tiers 1 and 2.
        tiers: list[list[str]] = []
        specials_t1 = list(SPECIAL_TITLES[:5])
        specials_t2 = list(SPECIAL_TITLES[5:])
        for index, size in enumerate(TIER_SIZES):
            fixed = specials_t1 if index == 0 else specials_t2 if index == 1 else []
            names = fixed + [self._name(kinds[(index * 7 + i) % len(kinds)]) for i in range(size - len(fixed))]
            tiers.append(names)
        for title in (t for tier in tiers for t in tier):
            self.kinds[title] = self.kinds.get(title) or rng.choice(kinds)
        deep = [f"Deep Archive {i}" for i in range(1, DEEP_CHAIN_LENGTH + 1)]
        orphans = [self._name(kinds[i % len(kinds)]) for i in range(ORPHAN_COUNT)]
        for title in deep + orphans:
            self.kinds[title] = rng.choice(kinds)
        tier_of = {t: i + 1 for i, tier in enumerate(tiers) for t in tier}

        # Generated redirects ("The X", "X (entry)") to tier 1-3 articles.
        patterns = ("The {t}", "{t} (entry)", "{t} archive record")
        gen_redirects: list[tuple[str, str]] = []
        for i, target in enumerate(rng.sample(tiers[0] + tiers[1] + tiers[2], 30)):
            gen_redirects.append((patterns[i % 3].format(t=target), target))
        special_redirects = [
            ("Omega Station", "Ωmega Station"),
            ("Tokyo Base", "東京 Base"),
            ("Cafe Orsted", "Café Ørsted"),
            ("AT-AT Walker", "AT-AT/Walker"),
            ("Mos eisley cantina", "Mos Eisley Cantina"),
        ]
        double = [
            ("Old Republic Archives", "Republic Archives (old)"),
            ("Republic Archives (old)", "Republic Archives"),
        ]
        triple_start = ("Ancient Archives", "Old Republic Archives")
        loop = [("Loop Alpha", "Loop Beta"), ("Loop Beta", "Loop Alpha")]
        self_redirect = "Self Reference"
        odd_redirects = [
            "Old Republic Archives",
            "Ancient Archives",
            "Loop Alpha",
            self_redirect,
            "Lost Redirect",
            "Planets list",
            "Han's Blaster history",
        ]

        talk_pages = [f"Talk:{t}" for t in tiers[0][:TALK_PAGE_COUNT]]
        red_pool = [f"Rumoured {self._name(rng.choice(kinds))}" for _ in range(60)]

        # Children: every tier t+1 article gets one parent in tier t.
        children: dict[str, list[str]] = {}
        for t in range(len(tiers) - 1):
            for child in tiers[t + 1]:
                children.setdefault(rng.choice(tiers[t]), []).append(child)

        def tier_links(title: str, tier: int) -> list[str]:
            same = tiers[tier - 1]
            links = list(children.get(title, []))
            links += rng.sample([s for s in same if s != title], rng.randint(3, 8))
            if tier > 1:
                links += rng.sample(tiers[tier - 2], rng.randint(1, 3))
            elif rng.chance(0.3):
                links.append("Hub Alpha")
            if rng.chance(0.25):
                links.append(rng.choice(red_pool))
            if rng.chance(0.15):
                links.append(f"Talk:{rng.choice(tiers[0])}")
            if rng.chance(0.15):
                options = [r for r, tgt in gen_redirects if tier_of[tgt] <= tier]
                if options:
                    links.append(rng.choice(options))
            if rng.chance(0.05):
                links.append(rng.choice(list(TYPE_CATEGORIES.values())))
            if rng.chance(0.05):
                links.append(rng.choice(("Help:Links", f"{SITENAME}:About", "Help:Nothing here")))
            return links[:40] if len(links) > 40 else links

        for tier_index, tier in enumerate(tiers, start=1):
            for title in tier:
                links = tier_links(title, tier_index)
                extra = ""
                if title == CRAWL_SEED:
                    links += odd_redirects + [
                        "Never Written Page",
                        "Cafe Orsted",
                        "Café Ørsted",
                        "Talk:Ωmega Station",
                        "Talk:Omega Station",
                        f"{SITENAME}:About",
                        "Han's Blaster",
                    ]
                    extra = (
                        "\nSee [[Special:Random]], [[wikipedia:Star Wars]], [[#Overview]], "
                        f"[[{title}]] and [[{title}#History|its history]].\n"
                    )
                self_links: list[str] = [title] if extra else []  # [[self#History]] is recorded
                if title == "Han's Blaster":
                    links += ["Mos eisley cantina", "Tokyo Base", "AT-AT Walker", "Who Shot First?"]
                    extra = f"\nA plain self-link is not recorded: [[{title}]].\n"
                if title == tiers[1][7]:
                    links.append("Hub Beta")
                if title == tiers[3][0]:
                    links.append(deep[0])
                cats = [BIG_CATEGORY, TYPE_CATEGORIES[self.kinds[title]]]
                if rng.chance(0.05):
                    cats.append(MISSING_CATEGORY)
                self._article(
                    title,
                    self.kinds[title],
                    links,
                    tier=tier_index,
                    extra_text=extra,
                    extra_links=self_links,
                    stub=rng.chance(0.12),
                    categories=cats,
                )
        for i, title in enumerate(deep):
            links = [deep[j] for j in (i - 1, i + 1) if 0 <= j < len(deep)] + rng.sample(tiers[3], 2)
            self._article(
                title,
                self.kinds[title],
                links,
                tier=5 + i,
                categories=[BIG_CATEGORY, TYPE_CATEGORIES[self.kinds[title]]],
            )
        for title in orphans:
            links = rng.sample([o for o in orphans if o != title], rng.randint(1, 3))
            links += rng.sample(tiers[rng.randint(0, 3)], rng.randint(2, 8))
            self._article(
                title,
                self.kinds[title],
                links,
                page_kind="orphan",
                categories=[BIG_CATEGORY, TYPE_CATEGORIES[self.kinds[title]]],
            )

        # Hubs.
        all_tiers = [t for tier in tiers for t in tier]
        alpha = list(tiers[0]) + [r for r, tgt in gen_redirects if tier_of[tgt] <= 2]
        alpha += odd_redirects + [r for r, _ in special_redirects]
        alpha += [f"Talk:{t}" for t in tiers[0][:60]]
        alpha += [
            "Help:Contents",
            "Help:Links",
            f"{SITENAME}:About",
            "Template:Stub",
            "Category:Planets",
            "Category:Starships",
        ]
        beta = tiers[1] + tiers[2] + [f"Talk:{t}" for t in tiers[1][:50]]
        gamma = all_tiers + deep + orphans + ["Hub Alpha", "Hub Beta"]
        fills = {"Hub Alpha": "Unwritten Record", "Hub Beta": "Uncharted Sector", "Hub Gamma": "Forgotten Datacard"}
        for hub, links in (("Hub Alpha", alpha), ("Hub Beta", beta), ("Hub Gamma", gamma)):
            links = list(dict.fromkeys(links))
            i = 0
            while len(links) < HUB_SIZES[hub]:
                i += 1
                links.append(f"{fills[hub]} {i:04d}")
            items = "\n".join(f"* {self._surface(t)}" for t in links)
            text = f"'''{hub}''' lists {len(links)} entries of the Holocron.\n\n{items}\n\n[[Category:Hubs]]\n"
            self._add(Page(hub, 0, text, links=frozenset(links), categories=frozenset({"Category:Hubs"}), kind="hub"))

        # Redirects.
        for title, target in gen_redirects:
            self._redirect(title, target, category=rng.chance(0.3))
        for title, target in special_redirects + double + loop + [triple_start]:
            self._redirect(title, target, category=title in ("Omega Station", "Old Republic Archives"))
        self._redirect(self_redirect, self_redirect)
        self._redirect("Lost Redirect", "Never Written Page")
        self._redirect("Planets list", "Category:Planets")
        self._redirect("Han's Blaster history", "Han's Blaster", fragment="History")
        self._redirect("Talk:Omega Station", "Talk:Ωmega Station")

        # Other namespaces.
        for talk in dict.fromkeys(talk_pages + [f"Talk:{CRAWL_SEED}"]):
            subject = talk.split(":", 1)[1]
            self._simple(
                talk, f"Discussion of [[{subject}]]. See also [[Help:Links]].\n", "talk", links={subject, "Help:Links"}
            )
        self._simple(
            "Help:Contents",
            "Start with [[Help:Links]] or the [[Main Page]].\n",
            "help",
            links={"Help:Links", MAIN_PAGE},
        )
        self._simple(
            "Help:Links",
            "Links look like [[Help:Contents|this]]. Red links: [[Help:Nothing here]].\n",
            "help",
            links={"Help:Contents", "Help:Nothing here"},
        )
        self._simple(
            "Help:Stub",
            "A stub is a short entry. See [[Category:Stubs|stubs]].\n[[Category:Help]]\n",
            "help",
            links=set(),
            cats={"Category:Stubs", "Category:Help"},
        )
        self._simple(
            "Template:Stub",
            "''This entry is a [[Help:Stub|stub]].''<includeonly>[[Category:Stubs]]</includeonly>"
            "<noinclude>[[Category:Templates]]</noinclude>\n",
            "template",
            links={"Help:Stub"},
            cats={"Category:Templates"},
        )
        self._simple(
            "Template:Infobox",
            "<div class=\"infobox\">'''{{{name|}}}'''</div><noinclude>Infobox.</noinclude>\n",
            "template",
        )
        self._simple(
            f"{SITENAME}:About",
            "This wiki tests the crawler. See the [[Main Page]] and [[Project:Crawling policy]].\n",
            "project",
            links={MAIN_PAGE, f"{SITENAME}:Crawling policy"},
        )
        self._simple(
            f"{SITENAME}:Crawling policy", "Be gentle: honour [[Help:Links|maxlag]].\n", "project", links={"Help:Links"}
        )
        category_pages = {
            "Category:Holocron topics": ("Top of the category tree.", set()),
            BIG_CATEGORY: ("Every entry of the Holocron.", {"Category:Holocron topics"}),
            "Category:Hubs": ("Index pages.", {"Category:Holocron topics"}),
            "Category:Redirects": ("Alternative names.", set()),
            "Category:Stubs": ("Short entries.", {"Category:Holocron topics"}),
        }
        for cat in TYPE_CATEGORIES.values():
            category_pages[cat] = ("Entries of this kind.", {"Category:Holocron topics"})
        for cat, (blurb, parents) in category_pages.items():
            examples = [t for t in tiers[0] if TYPE_CATEGORIES[self.kinds[t]] == cat][:2]
            links = set(examples)
            text = blurb + "".join(f" See [[{e}]]." for e in examples) + "\n"
            text += "".join(f"[[{p}]]\n" for p in sorted(parents))
            self._simple(cat, text, "category", links=links, cats=parents)

        main_links = ["Hub Alpha", "Hub Beta", CRAWL_SEED, "Help:Contents", f"{SITENAME}:About"]
        main_text = (
            "Welcome to the '''Holocron Test Wiki'''.\n\n"
            + "\n".join(f"* {self._surface(t)}" for t in main_links)
            + "\n"
        )
        self._add(Page(MAIN_PAGE, 0, main_text, links=frozenset(main_links), kind="main"))

        tier_map = dict(tier_of)
        tier_map.update({t: 5 + i for i, t in enumerate(deep)})
        return WikiModel(
            pages=self.pages,
            hubs=dict(HUB_SIZES),
            tiers=tier_map,
            deep_chain=tuple(deep),
            orphans=tuple(orphans),
            double_redirects=(
                ("Old Republic Archives", "Republic Archives (old)", "Republic Archives"),
                ("Ancient Archives", "Old Republic Archives", "Republic Archives (old)", "Republic Archives"),
            ),
            redirect_loops=(("Loop Alpha", "Loop Beta"),),
            self_redirects=(self_redirect,),
            seed=self.seed,
        )


def build_model(seed: int = DEFAULT_SEED) -> WikiModel:
    """Generate the test wiki (same seed, same wiki)."""
    return _Builder(seed).build()


if __name__ == "__main__":  # pragma: no cover - manual inspection helper
    import sys

    model = build_model()
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("holocron-dump.xml")
    model.write_dump(target)
    print(f"{len(model.pages)} pages, {len(model.articles())} articles -> {target}")
