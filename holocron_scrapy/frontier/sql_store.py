"""The frontier store on SQLAlchemy Core: :class:`SqlWorkItemStore`, for SQLite, PostgreSQL and SQL Server.

The contract it passes is :class:`holocron_scrapy.frontier.store.WorkItemStore` (its docstring says
what each operation promises; ``tests/test_frontier_store.py`` runs it on every backend). Its
statements are built once in :mod:`holocron_scrapy.frontier.statements` (work items, checkpoints)
and :mod:`holocron_scrapy.frontier.fleet_statements` (host politeness, the fleet view), from the
blocks of :mod:`holocron_scrapy.frontier.sql_parts`. This module runs them: transactions, conflict
retries, the connections each thread keeps.

Settings read: none. Stats written: none (conflict retries are counted in
:attr:`SqlWorkItemStore.conflict_retries`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from holocron_scrapy.db.engine import READ_ONLY, db_error_text, describe_engine, is_write_conflict
from holocron_scrapy.db.schema import UtcDateTime
from holocron_scrapy.errors import StoreError
from holocron_scrapy.frontier import fleet_statements as fleet
from holocron_scrapy.frontier import sql_parts as sqlparts
from holocron_scrapy.frontier import statements as q
from holocron_scrapy.frontier.store import (
    PENDING,
    STATUSES,
    CheckpointKey,
    FailedItem,
    NewItem,
    Scope,
    SlotGrant,
    WorkItemStore,
    claimed_rows,
    local_owner_alive,
    utcnow,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Runs of a write transaction that loses a deadlock or serialization conflict (the first included).
CONFLICT_ATTEMPTS = 5
#: PostgreSQL: ANALYZE work_items after this many rows inserted by a store (and at each further tenfold).
ANALYZE_AFTER = 1000
#: A connection kept between calls goes back to the pool after this long unused.
HOLD_IDLE_SECONDS = 1.0


class SqlWorkItemStore(WorkItemStore):
    """The frontier on SQLAlchemy Core over :data:`holocron_scrapy.db.schema.work_items`, for SQLite,
    PostgreSQL and SQL Server.

    Each operation is one statement, the same on every backend, except the two that truly differ
    (:func:`holocron_scrapy.frontier.statements.insert_sql` and ``claim_sql``) and the row limit of a
    few reads (:func:`holocron_scrapy.frontier.sql_parts.top`: SQL Server's ``TOP (?)``):

    * insert-if-new: ``INSERT ... ON CONFLICT (dedupe_key) DO NOTHING`` (the dialect's own ``insert``),
      the rows inserted counted by ``RETURNING seq`` on PostgreSQL (whatever another worker inserted
      meanwhile) and by the executemany's row count on SQLite (one writer: the transaction began with
      ``BEGIN IMMEDIATE``); on the servers new items are inserted in key order (on SQLite in the order
      they were found), so concurrent flushes of overlapping keys take their locks in one order and
      cannot deadlock;
      SQL Server has no ``ON CONFLICT``: one ``INSERT ... OUTPUT inserted.seq SELECT <values> WHERE NOT
      EXISTS (SELECT 1 FROM work_items WITH (UPDLOCK, HOLDLOCK) WHERE dedupe_key = ?)`` per item (the
      key-range lock makes a second worker inserting the same key wait, then skip it);
    * the claim: on SQLite one ``UPDATE ... WHERE seq IN (SELECT ... LIMIT n) RETURNING`` under the
      write lock of ``BEGIN IMMEDIATE``; on PostgreSQL ``SELECT seq ... FOR UPDATE SKIP LOCKED`` then
      ``UPDATE ... RETURNING``, so concurrent workers claim disjoint rows without waiting on each other;
      on SQL Server the same two steps, ``SELECT TOP (?) seq ... WITH (ROWLOCK, READPAST, UPDLOCK)``
      then ``UPDATE ... OUTPUT inserted...``.

    Our own text constants (statuses) are written into the SQL as literals, ``N'pending'`` on SQL
    Server (:class:`sqlparts.Text`), whose filtered index ``ix_work_items_leases`` matches only the same literal.
    On SQL Server the tables live in the configured schema: the engine of
    :func:`holocron_scrapy.db.engine.open_engine` maps the unqualified tables onto it
    (``schema_translate_map``).

    Statements are built once (bound parameters for values, our own constants such as statuses written
    into the SQL) and reused, so SQLAlchemy neither rebuilds nor re-keys them on every call; each
    thread keeps its connections between calls (:meth:`_connection`). Times are bound as aware UTC
    datetimes and compared in SQL; :class:`UtcDateTime` stores them as today's UTC text on SQLite and
    as ``TIMESTAMP(6)`` on PostgreSQL, and reads them back as aware UTC datetimes. Reads run in a
    read-only transaction (``holocron_read_only``: a deferred ``BEGIN`` on SQLite, no write lock).
    PostgreSQL gets ``ANALYZE`` after bulk inserts (:meth:`_note_inserts`).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_attempts: int = 3,
        retry_backoff: float = 30.0,
        solo_after: int = 2,
        quarantine_after: int = 3,
    ):
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql", "mssql"):
            raise StoreError(f"SqlWorkItemStore supports SQLite, PostgreSQL and SQL Server, not {self.dialect}")
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.solo_after = solo_after
        self.quarantine_after = quarantine_after
        self._insert_text = q.compiled_insert(engine.dialect) if self.dialect == "sqlite" else ""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._held: list[sa.Connection] = []
        self._inserted, self._next_analyze = 0, ANALYZE_AFTER
        #: Write transactions run again after a deadlock or serialization conflict.
        self.conflict_retries = 0

    def describe(self) -> str:
        """``SQLite <path>``, ``PostgreSQL <url without password>`` or ``SQL Server <host:port> ...``
        (for the "Frontier open:" log line)."""
        return describe_engine(self.engine)

    # -- writes ---------------------------------------------------------------------------------
    def flush(self, new: list[NewItem], completed: list[int], failed: list[FailedItem]) -> int:
        if not (new or completed or failed):
            return 0
        now = utcnow()
        ordered = self._insert_order(new)
        done = sorted(set(completed))

        def work(conn: sa.Connection) -> int:
            inserted = self._insert(conn, ordered, now) if ordered else 0
            for part in sqlparts.chunks(done):
                conn.execute(q.COMPLETE, {"b_seqs": part, "b_now": now})
            if failed:
                self._fail(conn, failed, now)
            return inserted

        inserted = self._write(work)
        if inserted and self.dialect == "postgresql":
            self._note_inserts(inserted)
        return inserted

    def _insert_order(self, new: list[NewItem]) -> list[NewItem]:
        """The order new items are inserted in, which is their ``seq`` order: the order they were found
        on SQLite (one writer at a time: items of one priority are claimed first in, first out, as a
        spider yielded them); by dedupe key on the servers, where two workers inserting the same keys
        in different orders could deadlock on the unique index."""
        if self.dialect == "sqlite":
            return list(new)
        return sorted(new, key=lambda n: n.dedupe_key)

    def _note_inserts(self, inserted: int) -> None:
        """PostgreSQL: ``ANALYZE work_items`` once this store has inserted :data:`ANALYZE_AFTER` rows, and
        again at each further tenfold. Until autovacuum's first analyze (up to a minute, and only after
        10% of the table changed) the planner takes a freshly filled table for empty: every claim then
        sorts all pending rows instead of reading the dequeue index in order (20 ms instead of 3 ms a
        claim with 20,000 pending)."""
        self._inserted += inserted
        if self._inserted < self._next_analyze:
            return
        self._next_analyze = self._inserted * 10
        self._write(lambda conn: conn.execute(q.ANALYZE))

    def _insert(self, conn: sa.Connection, new: list[NewItem], now: datetime) -> int:
        if self.dialect == "postgresql":
            return len(conn.execute(q.insert_sql(self.dialect), [q.insert_row(n, now) for n in new]).all())
        if self.dialect == "mssql":  # one guarded INSERT ... SELECT per item (no executemany with OUTPUT)
            insert = q.insert_sql(self.dialect)
            return sum(len(conn.execute(insert, q.insert_row(n, now)).all()) for n in new)
        # SQLite: the compiled statement through the driver's executemany, the time bound once (SQLAlchemy's
        # per-row parameter processing doubled the cost of an insert); its row count is the rows inserted.
        stamp = UtcDateTime().process_bind_param(now, self.engine.dialect)
        rows = [q.insert_values(n, stamp) for n in new]
        return conn.exec_driver_sql(self._insert_text, rows).rowcount

    def _fail(self, conn: sa.Connection, failed: list[FailedItem], now: datetime) -> None:
        attempts: dict[int, int] = {}
        for part in sqlparts.chunks(sorted({item.seq for item in failed})):
            attempts.update((seq, attempt) for seq, attempt in conn.execute(q.ATTEMPTS, {"b_seqs": part}))
        params = []
        for item in failed:
            attempt = attempts.get(item.seq)
            if attempt is None:
                continue
            status = self.failure_status(attempt, item.retryable)
            backoff = timedelta(seconds=self.retry_backoff * (2 ** max(attempt - 1, 0)))
            params.append(
                {
                    "b_seq": item.seq,
                    "b_status": status,
                    "b_error": item.error[:4000],
                    "b_next": now + backoff if status == PENDING else None,
                    "b_now": now,
                }
            )
        if params:
            conn.execute(q.FAIL, params)

    def claim(
        self, owner: str, limit: int, lease_seconds: float, *, scope: Scope | None = None, alone: bool = False
    ) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        now = utcnow()
        params = {
            "b_owner": owner,
            "b_until": now + timedelta(seconds=lease_seconds),
            "b_now": now,
            "b_solo_after": self.solo_after,
            **sqlparts.scope_params(scope),
        }

        def work(conn: sa.Connection) -> list[Any]:
            # Items of hosts blocked now (frontier_hosts) are left for later: a worker claims what it can send.
            blocked = list(conn.execute(fleet.BLOCKED_KEYS, {"b_now": now}).scalars())
            avoid = bool(blocked)
            if avoid:
                params.update(q.avoid_params(blocked))
            rows: list[Any] = []
            if alone:  # a suspect (lost twice) goes alone to a worker with nothing else in flight
                rows = self._claim(conn, scope is not None, True, {**params, "b_limit": 1}, avoid)
            if not rows:
                rows = self._claim(conn, scope is not None, False, {**params, "b_limit": limit}, avoid)
            return rows

        return claimed_rows(self._write(work))

    def _claim(
        self, conn: sa.Connection, scoped: bool, solo: bool, params: dict[str, Any], avoid: bool = False
    ) -> list[Any]:
        lock, update = q.claim_sql(self.dialect, scoped, solo, avoid)
        if lock is not None:  # PostgreSQL, SQL Server: lock the best ready rows nobody holds (held ones are skipped)
            seqs = conn.execute(lock, params).scalars().all()
            if not seqs:
                return []
            params = {**params, "b_seqs": list(seqs)}
        return list(conn.execute(update, params).all())

    def end_solo(self, seqs: list[int]) -> None:
        if not seqs:
            return
        parts = list(sqlparts.chunks(sorted(set(seqs))))

        def work(conn: sa.Connection) -> None:
            for part in parts:
                conn.execute(q.END_SOLO, {"b_seqs": part})

        self._write(work)

    def release(self, seqs: list[int]) -> None:
        if not seqs:
            return
        now = utcnow()
        parts = list(sqlparts.chunks(sorted(set(seqs))))

        def work(conn: sa.Connection) -> None:
            for part in parts:
                conn.execute(q.RELEASE, {"b_seqs": part, "b_now": now})

        self._write(work)

    def renew(self, owner: str, lease_seconds: float) -> int:
        until = utcnow() + timedelta(seconds=lease_seconds)
        return self._rowcount(q.RENEW, {"b_owner": owner, "b_until": until})

    def reclaim(self, owners: list[str] | None = None, *, scope: Scope | None = None) -> int:
        if owners is not None and not owners:
            return 0
        params: dict[str, Any] = {
            "b_now": utcnow(),
            "b_quarantine": self.quarantine_after,
            **sqlparts.scope_params(scope),
        }
        if owners is not None:
            params["b_owners"] = list(owners)
        return self._rowcount(q.reclaim_sql(owners is not None, scope is not None), params)

    def retry_failed(self, source_name: str | None = None) -> int:
        params = {"b_now": utcnow(), "b_source": source_name}
        return self._rowcount(q.retry_failed_sql(source_name is not None), params)

    def recrawl(self, source_name: str, older_than_seconds: float | None = None) -> int:
        now = utcnow()
        params: dict[str, Any] = {"b_now": now, "b_source": source_name}
        if older_than_seconds is not None:
            params["b_cutoff"] = now - timedelta(seconds=older_than_seconds)
        return self._rowcount(q.recrawl_sql(older_than_seconds is not None), params)

    def release_leases(self, owner: str | None = None, *, expired_only: bool = False) -> int:
        params = {"b_now": utcnow(), "b_owner": owner}
        return self._rowcount(q.release_leases_sql(owner is not None, expired_only), params)

    def requeue_keys(self, dedupe_keys: list[str]) -> int:
        keys = sorted(set(dedupe_keys))
        if not keys:
            return 0
        now = utcnow()
        parts = list(sqlparts.chunks(keys))

        def work(conn: sa.Connection) -> int:
            return sum(conn.execute(q.REQUEUE, {"b_keys": part, "b_now": now}).rowcount for part in parts)

        return self._write(work)

    def _rowcount(self, statement: sa.Executable, params: dict[str, Any]) -> int:
        """Run one write statement in its own transaction; the rows it changed."""
        return self._write(lambda conn: conn.execute(statement, params).rowcount)

    # -- reads ----------------------------------------------------------------------------------
    def _all(self, statement: sa.Executable, params: dict[str, Any] | None = None) -> list[Any]:
        with self._begin(read=True) as conn:
            return list(conn.execute(statement, params or {}).all())

    def _scalar(self, statement: sa.Executable, params: dict[str, Any]) -> Any:
        with self._begin(read=True) as conn:
            return conn.execute(statement, params).scalar()

    def lease_owners(self, scope: Scope | None = None) -> list[str]:
        return [row[0] for row in self._all(q.lease_owners_sql(scope is not None), sqlparts.scope_params(scope))]

    def ready_count(self, limit: int, scope: Scope | None = None) -> int:
        params = {"b_now": utcnow(), "b_limit": limit, **sqlparts.scope_params(scope)}
        return int(self._scalar(q.ready_count_sql(self.dialect, scope is not None), params) or 0)

    def min_inflight_depth(self, owner: str, scope: Scope | None = None) -> int | None:
        params = {"b_now": utcnow(), "b_owner": owner, **sqlparts.scope_params(scope)}
        return self._scalar(q.min_inflight_depth_sql(scope is not None), params)

    def outstanding(self, owner: str, scope: Scope | None = None) -> bool:
        params = {"b_now": utcnow(), "b_owner": owner, **sqlparts.scope_params(scope)}
        return bool(self._scalar(q.outstanding_sql(scope is not None), params))

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for source, status, count in self._all(fleet.COUNTS):
            out.setdefault(source, dict.fromkeys(STATUSES, 0))[status] = count
        return out

    def oldest_lease(self) -> dict[str, Any] | None:
        rows = self._all(fleet.OLDEST_LEASE)
        if not rows:
            return None
        return dict(zip(("dedupe_key", "lease_owner", "lease_expires_at", "claimed_at"), rows[0], strict=True))

    def failure_reasons(self, limit: int = 10) -> list[tuple[str, int]]:
        return [(row[0], int(row[1])) for row in self._all(fleet.failure_reasons_sql(self.dialect), {"b_limit": limit})]

    def lease_summary(self) -> list[tuple[str, int, int]]:
        return [(row[0], int(row[1]), int(row[2] or 0)) for row in self._all(fleet.LEASE_SUMMARY, {"b_now": utcnow()})]

    def host_counts(self, since: datetime) -> list[tuple[str, str, str, int, int]]:
        merged: dict[tuple[str, str, str], list[int]] = {}
        for source, netloc, status, items, recent in self._all(fleet.HOST_COUNTS, {"b_since": since}):
            key = (source, fleet.uri_host(netloc or ""), status)  # SQL's cut of the netloc, normalised here
            totals = merged.setdefault(key, [0, 0])
            totals[0] += int(items)
            totals[1] += int(recent or 0)
        return [(*key, items, recent) for key, (items, recent) in sorted(merged.items())]

    def workers(self) -> list[dict[str, Any]]:
        names = ("owner", "items", "live", "last_claim", "lease_expires_at")
        rows = self._all(fleet.WORKERS, {"b_now": utcnow()})
        return [dict(zip(names, (r[0], int(r[1]), int(r[2] or 0), r[3], r[4]), strict=True)) for r in rows]

    def active_blocks(self) -> list[dict[str, Any]]:
        rows = self._all(fleet.ACTIVE_BLOCKS, {"b_now": utcnow()})
        return [{"key": r[0], "blocked_until": r[1], "reason": r[2]} for r in rows]

    def get(self, dedupe_key: str) -> dict[str, Any] | None:
        with self._begin(read=True) as conn:
            row = conn.execute(q.GET, {"b_key": dedupe_key}).mappings().first()
        return None if row is None else dict(row)

    def checkpoint(self, key: CheckpointKey) -> Any:
        with self._begin(read=True) as conn:
            text = conn.execute(q.CHECKPOINT_GET, q.checkpoint_params(key)).scalar()
        return None if text is None else json.loads(text)

    def save_checkpoint(self, key: CheckpointKey, value: Any, new: list[NewItem] | None = None) -> int:
        now = utcnow()
        ordered = self._insert_order(new or [])
        params = {**q.checkpoint_params(key), "b_value": json.dumps(value, separators=(",", ":")), "b_now": now}

        def work(conn: sa.Connection) -> int:
            inserted = self._insert(conn, ordered, now) if ordered else 0
            if self.dialect == "mssql":  # no upsert: update under a key-range lock, else insert
                if not conn.execute(q.CHECKPOINT_UPDATE, params).rowcount:
                    conn.execute(q.checkpoint_put_sql(self.dialect), params)
            else:
                conn.execute(q.checkpoint_put_sql(self.dialect), params)
            return inserted

        inserted = self._write(work)
        if inserted and self.dialect == "postgresql":
            self._note_inserts(inserted)
        return inserted

    # -- host politeness ------------------------------------------------------------------------
    def take_slot(
        self, key: str, owner: str, *, delay: float, concurrency: int, lease_seconds: float, recheck: float = 0.25
    ) -> SlotGrant:
        now = utcnow()
        params = {"b_key": key, "b_now": now, "b_delay": float(delay), "b_concurrency": int(concurrency)}

        def work(conn: sa.Connection) -> SlotGrant:
            row = self._lock_host(conn, params)
            next_allowed, blocked_until, reason = row
            if blocked_until is not None and blocked_until > now:
                return SlotGrant(None, blocked_until, f"blocked: {reason or ''}".rstrip(": "))
            conn.execute(fleet.SLOTS_EXPIRED, params)
            live, soonest = conn.execute(fleet.SLOTS_LIVE, params).one()
            if live >= max(concurrency, 1):
                # Slots of a dead process on this host are free at once (as its work items' leases are).
                owners = conn.execute(fleet.SLOT_OWNERS, params).scalars().all()
                dead = [owner for owner in owners if local_owner_alive(owner) is False]
                if dead:
                    conn.execute(fleet.SLOTS_OF_OWNERS_DELETE, {**params, "b_owners": dead})
                    live, soonest = conn.execute(fleet.SLOTS_LIVE, params).one()
            if live >= max(concurrency, 1):
                cap = now + timedelta(seconds=recheck)
                retry = min(soonest, cap) if soonest is not None else cap
                if next_allowed is not None:
                    retry = max(retry, next_allowed)
                return SlotGrant(None, retry, "full")
            if next_allowed is not None and next_allowed > now:
                return SlotGrant(None, next_allowed, "delay")
            slot_id = str(uuid.uuid4())
            conn.execute(
                fleet.SLOT_INSERT,
                {**params, "b_slot": slot_id, "b_owner": owner, "b_until": now + timedelta(seconds=lease_seconds)},
            )
            conn.execute(fleet.HOST_TAKEN, {**params, "b_next": now + timedelta(seconds=max(delay, 0.0))})
            return SlotGrant(slot_id)

        return self._write(work)

    def _lock_host(self, conn: sa.Connection, params: dict[str, Any]) -> tuple[Any, Any, Any]:
        """Insert the key's row if new, then lock it: ``(next_allowed_at, blocked_until, block_reason)``."""
        if self.dialect == "mssql":
            if conn.execute(fleet.host_lock_sql(self.dialect), params).first() is None:
                conn.execute(fleet.host_ensure_sql(self.dialect), params)
        else:
            conn.execute(fleet.host_ensure_sql(self.dialect), params)
        row = conn.execute(fleet.host_lock_sql(self.dialect), params).one()
        return row[0], row[1], row[2]

    def release_slot(
        self,
        key: str,
        slot_id: str,
        *,
        ok: bool | None = None,
        backoff: float = 1.0,
        backoff_cap: float = 300.0,
        block: tuple[datetime, str] | None = None,
    ) -> datetime | None:
        now = utcnow()
        params = {"b_key": key, "b_slot": slot_id, "b_now": now, "b_delay": 0.0, "b_concurrency": 1}

        def work(conn: sa.Connection) -> datetime | None:
            if block is not None:
                self._lock_host(conn, params)
                conn.execute(fleet.HOST_BLOCK, {**params, "b_until": block[0], "b_reason": block[1][:400]})
            conn.execute(fleet.SLOT_DELETE, params)
            if ok:
                conn.execute(fleet.HOST_OK, params)
                return None
            if ok is None:
                return None
            self._lock_host(conn, params)
            failures = int(conn.execute(fleet.HOST_FAILURES, params).scalar() or 0) + 1
            until = now + timedelta(seconds=min(backoff * 2 ** (failures - 1), backoff_cap))
            conn.execute(fleet.HOST_FAILED, {**params, "b_failures": failures})
            conn.execute(
                fleet.HOST_BLOCK, {**params, "b_until": until, "b_reason": f"backoff after {failures} failures"}
            )
            return until

        return self._write(work)

    def block_key(self, key: str, until: datetime, reason: str) -> None:
        params = {"b_key": key, "b_now": utcnow(), "b_delay": 0.0, "b_concurrency": 1}

        def work(conn: sa.Connection) -> None:
            self._lock_host(conn, params)
            conn.execute(fleet.HOST_BLOCK, {**params, "b_until": until, "b_reason": reason[:400]})

        self._write(work)

    def renew_slots(self, owner: str, lease_seconds: float) -> int:
        until = utcnow() + timedelta(seconds=lease_seconds)
        return self._rowcount(fleet.SLOTS_RENEW, {"b_owner": owner, "b_until": until})

    def release_owner_slots(self, owner: str) -> int:
        return self._rowcount(fleet.SLOTS_OF_OWNER_DELETE, {"b_owner": owner})

    def host_states(self) -> list[dict[str, Any]]:
        return [dict(row._mapping) for row in self._all(fleet.HOST_STATES, {"b_now": utcnow()})]

    def blocked_keys(self) -> list[str]:
        return [row[0] for row in self._all(fleet.BLOCKED_KEYS, {"b_now": utcnow()})]

    def close(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()
        self.engine.dispose()

    # -- connections ----------------------------------------------------------------------------
    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run *work* in one write transaction; run it again (at once, at most :data:`CONFLICT_ATTEMPTS`
        runs in all) when the database chose it as a deadlock victim or failed it on a serialization
        conflict: the whole transaction was rolled back, and the other one has gone through. Every other
        error is raised at once."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                with self._begin() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == CONFLICT_ATTEMPTS or not is_write_conflict(exc):
                    raise
                self.conflict_retries += 1
                logger.info(
                    "frontier transaction lost a write conflict (run %d), running it again: %s",
                    attempt,
                    db_error_text(exc),
                )
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _begin(self, *, read: bool = False) -> Iterator[sa.Connection]:
        """A transaction on this thread's connection (a read begins deferred on SQLite: no write lock)."""
        conn = self._connection(read)
        with conn.begin():
            yield conn

    def _connection(self, read: bool) -> sa.Connection:
        """This thread's connection for writes or reads, kept between calls (a pool checkout per call, and
        PostgreSQL's pre-ping, cost more than the statements) while it is busy: one idle for
        :data:`HOLD_IDLE_SECONDS` goes back to the pool and the next call checks one out (pinged), so a
        server restart between bursts costs no failed call. SQLAlchemy invalidates a connection that
        lost its server; it reconnects on its next use."""
        kind = "read" if read else "write"
        now = time.monotonic()
        held: tuple[sa.Connection, float] | None = getattr(self._local, kind, None)
        if held is not None:
            conn, used = held
            if not conn.closed and now - used < HOLD_IDLE_SECONDS:
                setattr(self._local, kind, (conn, now))
                return conn
            conn.close()
        conn = self.engine.connect()
        if read:
            conn = conn.execution_options(**{READ_ONLY: True})
        setattr(self._local, kind, (conn, now))
        with self._lock:
            self._held = [c for c in self._held if not c.closed]
            self._held.append(conn)
        return conn
