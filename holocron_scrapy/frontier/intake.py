"""The seed intake: one way for every holocron spider to put its seeds into the frontier, streamed,
exactly once, and checkpointed in the state database.

Why: ``-a seeds=@file`` used to read the whole file into memory and yield one start request per seed,
and a rerun of the same command enqueued every seed again (1 M titles: 2.95x the peak RSS of 10 k, and
a resumed run 9.2x slower; issue 11). Now:

* :class:`SeedList` is the ``seeds`` value (``"A|B"``, ``@path``, or a source's list). A file is read
  once up front in 1 MiB blocks, only to check it (it exists, is UTF-8, holds a seed) and to take its
  SHA-256 digest; it is never held whole. Blank lines and ``#`` comments are skipped; a missing or
  unreadable file is a :class:`~holocron_scrapy.errors.ConfigError` naming it.
* :class:`SeedIntake` reads the list in chunks of :data:`CHUNK_SIZE` seeds from a position (a byte
  offset in a file, an index in an inline list), turns each seed into exactly the work item its start
  request would have become (the spider's ``seed_request`` and the scheduler's ``new_item``), and
  inserts the chunk together with the checkpoint ``seeds/<digest>`` (position reached, seeds read,
  done flag) in one transaction
  (:meth:`~holocron_scrapy.frontier.store.WorkItemStore.save_checkpoint`). A kill leaves either both
  or neither, so a rerun resumes at the stored position and every seed is enqueued once; a rerun of a
  list already taken in (same digest, done) skips the intake at once. A different list has another
  digest: a new intake.
* :func:`run_in_frontier` runs the chunks one at a time in the frontier's worker thread
  (:mod:`holocron_scrapy.frontier.executor`), never on the reactor; after each chunk the scheduler is
  told (:meth:`~holocron_scrapy.frontier.scheduler.FrontierScheduler.stored_elsewhere`), so the crawl
  fetches while the intake goes on. While the state database is gone a chunk is tried again (the
  frontier's outage watch: one log line, ``HOLOCRON_DB_OUTAGE_LIMIT``); a chunk and its checkpoint
  commit together, so running one again is harmless.
* :func:`work_items` (a chunk of seeds to their work items) and :func:`in_worker` (run a store call in
  the frontier's worker thread, riding out an outage) are shared with the generator listings
  (:mod:`holocron_scrapy.mediawiki.generate`), so a listed title becomes exactly a seed's work item.

Settings read: ``HOLOCRON_SEED_CHUNK_SIZE`` (seeds per transaction, default 5,000).
Stats written: ``intake/seeds`` (seeds read in this run), ``intake/enqueued`` (new work items),
``intake/chunks``, ``intake/skipped`` (1: the list was taken in by an earlier run),
``intake/resumed`` (1: an interrupted intake went on); inserted and known seeds count in
``frontier/enqueued`` and ``frontier/filtered`` as before.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from holocron_scrapy import defaults
from holocron_scrapy.db.outage import ride_out
from holocron_scrapy.errors import ConfigError
from holocron_scrapy.frontier.store import CheckpointKey, NewItem, WorkItemStore

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.statscollectors import StatsCollector

    from holocron_scrapy.frontier.scheduler import FrontierScheduler

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Seeds per chunk: one transaction of inserts plus the checkpoint.
CHUNK_SIZE = defaults.SEED_CHUNK_SIZE
#: Checkpoint names of seed intakes: ``seeds/<sha256 of the list>``.
CHECKPOINT_PREFIX = "seeds/"
_BLOCK = 1 << 20


def seed_of(line: str) -> str:
    """The seed on *line*: stripped; "" for a blank line or a ``#`` comment."""
    text = line.strip()
    return "" if not text or text.startswith("#") else text


@dataclass(frozen=True)
class SeedList:
    """The seeds of a crawl: an inline list or a file (``path``), with the digest that names its intake.

    Iterating yields every seed in order (a file is streamed); :meth:`read_from` yields
    ``(seed, position after it)`` from a position."""

    digest: str
    first: str
    inline: tuple[str, ...] = ()
    path: Path | None = None
    key: str = field(default="seeds", compare=False)

    @classmethod
    def parse(cls, value: str, *, key: str = "seeds") -> SeedList:
        """``"A|B|C"`` or ``@path`` (one seed per line; blank lines and ``#`` comments skipped)."""
        value = value.strip()
        if value.startswith("@"):
            return cls.of_file(Path(value[1:]).expanduser(), key=key)
        return cls.of(value.split("|"), key=key)

    @classmethod
    def of(cls, seeds: Iterable[str], *, key: str = "seeds") -> SeedList:
        """An inline list (``-a seeds="A|B"``, a source's ``seeds``)."""
        kept = tuple(s for s in (seed_of(str(seed)) for seed in seeds) if s)
        if not kept:
            raise ConfigError("no seeds given (use -a seeds='A|B' or -a seeds=@file)", key=key)
        digest = hashlib.sha256(("inline\n" + "\n".join(kept)).encode("utf-8")).hexdigest()
        return cls(digest=digest, first=kept[0], inline=kept, key=key)

    @classmethod
    def of_file(cls, path: Path, *, key: str = "seeds") -> SeedList:
        """A seeds file: read once in blocks to check it and take its digest (never held whole)."""
        digest = hashlib.sha256(b"file\n")
        decoder = codecs.getincrementaldecoder("utf-8")()
        first: str | None = None
        partial = ""
        try:
            with path.open("rb") as handle:
                while block := handle.read(_BLOCK):
                    digest.update(block)
                    text = decoder.decode(block)
                    if first is None:
                        lines = (partial + text).split("\n")
                        partial = lines.pop()
                        first = next((s for s in map(seed_of, lines) if s), None)
                text = decoder.decode(b"", final=True)
        except FileNotFoundError:
            raise ConfigError(f"seeds file {str(path)!r} does not exist", key=key) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read seeds file {str(path)!r}: {exc}", key=key) from exc
        if first is None:
            first = seed_of(partial + text) or None
        if first is None:
            raise ConfigError(f"no seeds in seeds file {str(path)!r} (only blank lines and # comments)", key=key)
        return cls(digest=digest.hexdigest(), first=first, path=path.resolve(), key=key)

    def describe(self) -> str:
        return f"seeds file {str(self.path)!r}" if self.path is not None else f"{len(self.inline)} inline seeds"

    def read_from(self, position: int = 0) -> Iterator[tuple[str, int]]:
        """``(seed, position after it)`` from *position* (a byte offset in a file, an index inline)."""
        if self.path is None:
            for index in range(position, len(self.inline)):
                yield self.inline[index], index + 1
            return
        try:
            with self.path.open("rb") as handle:
                handle.seek(position)
                for raw in handle:
                    position += len(raw)
                    seed = seed_of(raw.decode("utf-8"))
                    if seed:
                        yield seed, position
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read seeds file {str(self.path)!r}: {exc}", key=self.key) from exc

    def __iter__(self) -> Iterator[str]:
        return (seed for seed, _ in self.read_from(0))


@dataclass
class IntakeState:
    """Where an intake stands: the checkpoint's value (JSON), plus what this run did."""

    position: int = 0
    seeds: int = 0  # seeds read, all runs
    done: bool = False
    read_now: int = 0  # seeds read in this run
    inserted_now: int = 0
    chunks_now: int = 0
    skipped: bool = False  # done before this run
    resumed: bool = False  # begun before this run

    def value(self, seeds: SeedList) -> dict[str, Any]:
        return {
            "digest": seeds.digest,
            "list": str(seeds.path) if seeds.path is not None else "inline",
            "position": self.position,
            "seeds": self.seeds,
            "done": self.done,
        }


class SeedIntake:
    """The intake of one seed list into one source's frontier. *to_items* turns a chunk of seeds into
    their work items (pure; it runs in the store's worker thread)."""

    def __init__(
        self,
        seeds: SeedList,
        source_system: str,
        source_name: str,
        to_items: Callable[[list[str]], list[NewItem]],
        *,
        chunk_size: int = CHUNK_SIZE,
    ):
        if chunk_size < 1:
            raise ConfigError(f"must be at least 1, got {chunk_size}", key="HOLOCRON_SEED_CHUNK_SIZE")
        self.seeds = seeds
        self.key = CheckpointKey(source_system, source_name, CHECKPOINT_PREFIX + seeds.digest)
        self.to_items = to_items
        self.chunk_size = chunk_size
        self.state: IntakeState | None = None

    def begin(self, store: WorkItemStore) -> IntakeState:
        """Read the checkpoint: where to start, or that the list was taken in already."""
        stored = store.checkpoint(self.key) or {}
        state = IntakeState(
            position=int(stored.get("position", 0)),
            seeds=int(stored.get("seeds", 0)),
            done=bool(stored.get("done", False)),
        )
        state.skipped = state.done
        state.resumed = bool(stored) and not state.done
        self.state = state
        return state

    def step(self, store: WorkItemStore) -> tuple[int, int]:
        """Take in the next chunk (items and checkpoint in one transaction); returns (seeds read, inserted).
        Once the list is exhausted the checkpoint is marked done."""
        state = self.state if self.state is not None else self.begin(store)
        if state.done:
            return 0, 0
        chunk: list[str] = []
        position = state.position
        for seed, after in self.seeds.read_from(state.position):
            chunk.append(seed)
            position = after
            if len(chunk) >= self.chunk_size:
                break
        exhausted = len(chunk) < self.chunk_size or self._at_end(position)
        items = self.to_items(chunk) if chunk else []
        following = IntakeState(position=position, seeds=state.seeds + len(chunk), done=exhausted)
        inserted = store.save_checkpoint(self.key, following.value(self.seeds), items)
        state.position, state.seeds, state.done = following.position, following.seeds, following.done
        state.read_now += len(chunk)
        state.inserted_now += inserted
        state.chunks_now += 1
        return len(chunk), inserted

    def _at_end(self, position: int) -> bool:
        """Nothing but blank lines and comments after *position* (so a full last chunk ends the intake)."""
        return next(self.seeds.read_from(position), None) is None

    def run(self, store: WorkItemStore) -> IntakeState:
        """The whole intake at once, on the caller's thread (commands, tests)."""
        state = self.begin(store)
        while not state.done:
            self.step(store)
        return state

    def log_start(self, spider: Any = None) -> None:
        state = self.state
        if state is None:
            return
        what = self.seeds.describe()
        if state.skipped:
            logger.info(
                "Seed intake: %s (sha256 %s…) was taken in by an earlier run (%d seeds); skipped",
                what,
                self.seeds.digest[:12],
                state.seeds,
                extra={"spider": spider},
            )
        elif state.resumed:
            logger.info(
                "Seed intake: resuming %s (sha256 %s…) after %d seeds",
                what,
                self.seeds.digest[:12],
                state.seeds,
                extra={"spider": spider},
            )

    def log_done(self, spider: Any = None) -> None:
        state = self.state
        if state is None or state.skipped:
            return
        logger.info(
            "Seed intake: %s done: %d seeds read in this run (%d in all), %d new work items",
            self.seeds.describe(),
            state.read_now,
            state.seeds,
            state.inserted_now,
            extra={"spider": spider},
        )


def work_items(
    frontier: FrontierScheduler, seed_request: Callable[[str], Request | None]
) -> Callable[[list[str]], list[NewItem]]:
    """The work items of a chunk of seeds: each seed's start request (*seed_request*, the spider's; None
    drops the seed) as the scheduler would store it. Pure: it runs in the frontier's worker thread. Seed
    lists and generator listings (:mod:`holocron_scrapy.mediawiki.generate`) build their items here."""

    def to_items(chunk: list[str]) -> list[NewItem]:
        items = []
        for seed in chunk:
            request = seed_request(seed)
            if request is None:
                continue
            item = frontier.new_item(request)
            if item is not None:
                items.append(item)
        return items

    return to_items


async def in_worker(frontier: FrontierScheduler, fn: Callable[[], T]) -> T:
    """Run *fn* in the frontier's worker thread, never on the reactor; while the database is gone, wait
    and run it again (a chunk and its checkpoint commit together or not at all, so running one again is
    harmless)."""
    from scrapy.utils.defer import maybe_deferred_to_future

    executor = frontier.executor
    if executor is None:
        raise RuntimeError("the frontier is closed")
    return await ride_out(
        lambda: maybe_deferred_to_future(executor.submit(fn)), frontier.outage, spider=frontier.spider
    )


async def run_in_frontier(
    frontier: FrontierScheduler,
    seeds: SeedList,
    seed_request: Callable[[str], Request | None],
    *,
    chunk_size: int = CHUNK_SIZE,
    stats: StatsCollector | None = None,
) -> IntakeState | None:
    """Take *seeds* into the crawl's frontier, chunk by chunk in its worker thread; *seed_request* is the
    spider's (a seed's start request, or None to drop the seed). Returns the final state, or None when
    the frontier closed first (what was taken in is checkpointed: the next run goes on from there)."""
    store, executor, scope = frontier.store, frontier.executor, frontier.scope
    if store is None or executor is None:
        return None
    if scope is None:
        raise ConfigError("the seed intake needs the crawl's source (HOLOCRON_SOURCE_SYSTEM, HOLOCRON_SOURCE_NAME)")

    to_items = work_items(frontier, seed_request)
    intake = SeedIntake(seeds, scope.source_system, scope.source_name, to_items, chunk_size=chunk_size)
    state = await in_worker(frontier, lambda: intake.begin(store))
    intake.log_start(frontier.spider)
    while not state.done:
        if frontier.store is None or getattr(frontier, "_closing", False):
            return None
        read, inserted = await in_worker(frontier, lambda: intake.step(store))
        _count(stats, read, inserted)
        frontier.stored_elsewhere(inserted, max(read - inserted, 0))
    if stats is not None:
        for name, flag in (("skipped", state.skipped), ("resumed", state.resumed)):
            if flag:
                stats.inc_value(f"intake/{name}")
    intake.log_done(frontier.spider)
    return state


def _count(stats: StatsCollector | None, read: int, inserted: int) -> None:
    if stats is None:
        return
    stats.inc_value("intake/seeds", read)
    stats.inc_value("intake/enqueued", inserted)
    stats.inc_value("intake/chunks")
