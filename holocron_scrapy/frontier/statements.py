"""The ``work_items`` and ``frontier_checkpoints`` statements of the frontier store, and their catalogue.

Pure (no I/O): built once, executed with bound parameters by
:class:`~holocron_scrapy.frontier.sql_store.SqlWorkItemStore`. Only two differ per dialect, as the
store's docstring explains: insert-if-new (:func:`insert_sql`) and the claim (:func:`claim_sql`);
a few reads differ only in their row limit (:func:`~holocron_scrapy.frontier.sql_parts.top`).
:func:`statements` lists every statement the store runs, by name: the offline T-SQL checks compile
and parse each of them.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from holocron_scrapy.db.schema import (
    LONG_TEXT,
    UtcDateTime,
    frontier_checkpoints,
)
from holocron_scrapy.frontier.fleet_statements import (
    ACTIVE_BLOCKS,
    BLOCKED_KEYS,
    COUNTS,
    HOST_BLOCK,
    HOST_COUNTS,
    HOST_FAILED,
    HOST_FAILURES,
    HOST_OK,
    HOST_STATES,
    HOST_TAKEN,
    LEASE_SUMMARY,
    OLDEST_LEASE,
    SLOT_DELETE,
    SLOT_INSERT,
    SLOT_OWNERS,
    SLOTS_EXPIRED,
    SLOTS_LIVE,
    SLOTS_OF_OWNER_DELETE,
    SLOTS_OF_OWNERS_DELETE,
    SLOTS_RENEW,
    WORKERS,
    failure_reasons_sql,
    host_ensure_sql,
    host_lock_sql,
)
from holocron_scrapy.frontier.sql_parts import (
    CLAIM,
    NULL,
    ONE,
    STATUS_SQL,
    ZERO,
    W,
    const,
    due,
    fresh,
    minus_one,
    now_param,
    param,
    scope_conditions,
    seqs_param,
    top,
    unleased,
)
from holocron_scrapy.frontier.store import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    PENDING,
    CheckpointKey,
    NewItem,
)


def insert_row(n: NewItem, now: datetime) -> dict[str, Any]:
    return {
        "work_item_id": n.work_item_id,
        "source_system": n.source_system,
        "source_name": n.source_name,
        "resource_type": n.resource_type,
        "resource_id": n.resource_id,
        "request_uri": n.request_uri,
        "request_method": n.request_method,
        "request_headers": n.request_headers,
        "request_body": n.request_body,
        "metadata": n.metadata,
        "priority": n.priority,
        "depth": n.depth,
        "status": n.status,
        "attempt": 0,
        "run_id": n.run_id,
        "discovered_from": n.discovered_from,
        "created_at": now,
        "updated_at": now,
        "completed_at": now if n.status == COMPLETED else None,
        "dedupe_key": n.dedupe_key,
    }


def insert_values(n: NewItem, stamp: Any) -> tuple[Any, ...]:
    """The values of :data:`INSERT_COLUMNS` for *n*, the times already bound (*stamp*)."""
    return (
        n.work_item_id,
        n.source_system,
        n.source_name,
        n.resource_type,
        n.resource_id,
        n.request_uri,
        n.request_method,
        n.request_headers,
        n.request_body,
        n.metadata,
        n.priority,
        n.depth,
        n.status,
        0,
        n.run_id,
        n.discovered_from,
        stamp,
        stamp,
        stamp if n.status == COMPLETED else None,
        n.dedupe_key,
    )


#: The columns of :func:`insert_values`, in its order.
INSERT_COLUMNS = (
    "work_item_id",
    "source_system",
    "source_name",
    "resource_type",
    "resource_id",
    "request_uri",
    "request_method",
    "request_headers",
    "request_body",
    "metadata",
    "priority",
    "depth",
    "status",
    "attempt",
    "run_id",
    "discovered_from",
    "created_at",
    "updated_at",
    "completed_at",
    "dedupe_key",
)


def compiled_insert(dialect: sa.Dialect) -> str:
    """The insert-if-new of *dialect* (positional parameters) as SQL text; its parameters are :data:`INSERT_COLUMNS`."""
    compiled = insert_sql(dialect.name).compile(dialect=dialect, column_keys=list(INSERT_COLUMNS))
    if tuple(compiled.positiontup or ()) != INSERT_COLUMNS:
        raise AssertionError(f"unexpected insert parameters {compiled.positiontup}")
    return compiled.string


@functools.cache
def insert_sql(dialect: str) -> sa.Insert:
    """Insert-if-new in *dialect*'s own syntax (``RETURNING seq`` on PostgreSQL to count the rows inserted;
    on SQL Server one row's ``INSERT ... OUTPUT inserted.seq SELECT ... WHERE NOT EXISTS`` under a key-range
    lock, its parameters named after :data:`INSERT_COLUMNS`)."""
    if dialect == "mssql":
        values = sa.select(*(sa.bindparam(name, type_=W.c[name].type) for name in INSERT_COLUMNS))
        known = (
            sa.select(ONE)
            .select_from(W)
            .where(W.c.dedupe_key == sa.bindparam("dedupe_key", type_=W.c.dedupe_key.type))
            .with_hint(W, "WITH (UPDLOCK, HOLDLOCK)", "mssql")
        )
        return sa.insert(W).from_select(list(INSERT_COLUMNS), values.where(~known.exists())).returning(W.c.seq)
    from sqlalchemy.dialects import postgresql, sqlite

    if dialect == "postgresql":
        return postgresql.insert(W).on_conflict_do_nothing(index_elements=[W.c.dedupe_key]).returning(W.c.seq)
    return sqlite.insert(W).on_conflict_do_nothing(index_elements=[W.c.dedupe_key])


@functools.cache
def claim_sql(dialect: str, scoped: bool, solo: bool, avoid: bool = False) -> tuple[sa.Select[Any] | None, sa.Update]:
    """(the locking select of PostgreSQL and SQL Server, or None, the update) of a claim: *solo* claims
    the suspects (``lease_losses >= b_solo_after``) and marks them ``lease_solo``, else the others;
    *avoid* leaves out items whose URL starts with one of the patterns ``b_avoid0`` ..
    (:func:`avoid_params`: the hosts blocked now)."""
    losses = W.c.lease_losses >= param("solo_after") if solo else W.c.lease_losses < param("solo_after")
    avoided = (sa.not_(sa.or_(*(W.c.request_uri.like(param(f"avoid{i}")) for i in range(AVOID_PATTERNS)))),)
    ready = top(
        sa.select(W.c.seq)
        .where(W.c.status == STATUS_SQL[PENDING], due(), losses, *scope_conditions(scoped), *(avoided if avoid else ()))
        .order_by(W.c.priority.desc(), W.c.seq),
        dialect,
    )
    values = {
        "status": STATUS_SQL[IN_PROGRESS],
        "attempt": W.c.attempt + ONE,
        "lease_solo": ONE if solo else ZERO,
        "lease_owner": param("owner"),
        "lease_expires_at": param("until", UtcDateTime()),
        "updated_at": now_param(),
        "next_attempt_at": NULL,
    }
    if dialect in ("postgresql", "mssql"):
        # SQL Server: UPDLOCK holds the rows chosen until the commit, READPAST skips those another claimer holds.
        lock = (
            ready.with_hint(W, "WITH (ROWLOCK, READPAST, UPDLOCK)", "mssql")
            if dialect == "mssql"
            else ready.with_for_update(skip_locked=True)
        )
        target = sa.and_(W.c.seq.in_(seqs_param()), W.c.status == STATUS_SQL[PENDING])
        return lock, sa.update(W).where(target).values(values).returning(*CLAIM)
    # SQLite: the transaction began with BEGIN IMMEDIATE; no other writer until it commits.
    return None, sa.update(W).where(W.c.seq.in_(ready)).values(values).returning(*CLAIM)


#: URL patterns of a claim that leaves blocked hosts out (two per host: http and https); hosts past
#: the first AVOID_PATTERNS // 2 blocked ones are claimed as usual (their requests wait for the block).
AVOID_PATTERNS = 8


def avoid_params(keys: list[str]) -> dict[str, str]:
    """``b_avoid0`` .. of a claim that leaves out the items of hosts *keys* (politeness keys, ``host[:port]``):
    ``http://key/%`` and ``https://key/%``, the unused ones an empty pattern (no URL is empty)."""
    patterns = [f"{scheme}://{key}/%" for key in keys[: AVOID_PATTERNS // 2] for scheme in ("http", "https")]
    patterns += [""] * (AVOID_PATTERNS - len(patterns))
    return {f"b_avoid{i}": pattern for i, pattern in enumerate(patterns)}


COMPLETE = (
    sa.update(W)
    .where(W.c.seq.in_(seqs_param()))
    .values(
        status=STATUS_SQL[COMPLETED],
        completed_at=now_param(),
        updated_at=now_param(),
        lease_owner=NULL,
        lease_expires_at=NULL,
        next_attempt_at=NULL,
        error_message=NULL,
    )
)
ATTEMPTS = sa.select(W.c.seq, W.c.attempt).where(W.c.seq.in_(seqs_param()))
FAIL = (
    sa.update(W)
    .where(W.c.seq == param("seq"))
    .values(
        status=param("status", sa.Unicode()),
        error_message=param("error", sa.UnicodeText()),
        next_attempt_at=param("next", UtcDateTime()),
        updated_at=now_param(),
        lease_owner=NULL,
        lease_expires_at=NULL,
    )
)
END_SOLO = sa.update(W).where(W.c.seq.in_(seqs_param()), W.c.lease_solo == ONE).values(lease_solo=0)
RELEASE = (
    sa.update(W)
    .where(W.c.seq.in_(seqs_param()), W.c.status == STATUS_SQL[IN_PROGRESS])
    .values(unleased(attempt=minus_one(W.c.attempt)))
)
RENEW = (
    sa.update(W)
    .where(W.c.status == STATUS_SQL[IN_PROGRESS], W.c.lease_owner == param("owner"))
    .values(lease_expires_at=param("until", UtcDateTime()))
)
REQUEUE = (
    sa.update(W)
    .where(
        W.c.dedupe_key.in_(param("keys", expanding=True)),
        sa.not_(
            sa.and_(
                W.c.status == STATUS_SQL[PENDING],
                W.c.attempt == ZERO,
                W.c.next_attempt_at.is_(None),
                W.c.completed_at.is_(None),
                W.c.lease_owner.is_(None),
            )
        ),
    )
    .values(
        unleased(
            attempt=ZERO,
            next_attempt_at=NULL,
            completed_at=NULL,
            error_message=NULL,
            lease_losses=ZERO,
            solo_lease_losses=ZERO,
        )
    )
)


@functools.cache
def reclaim_sql(by_owner: bool, scoped: bool) -> sa.Update:
    lost = W.c.lease_owner.in_(param("owners", expanding=True)) if by_owner else W.c.lease_expires_at < now_param()
    quarantined = sa.and_(W.c.lease_solo == ONE, W.c.solo_lease_losses + ONE >= param("quarantine", sa.Integer()))
    message = (
        const("quarantined: its worker died ")
        + sa.cast(W.c.solo_lease_losses + ONE, LONG_TEXT)
        + const(" times while it was the only item in flight")
    )
    return (
        sa.update(W)
        .where(W.c.status == STATUS_SQL[IN_PROGRESS], lost, *scope_conditions(scoped))
        .values(
            attempt=minus_one(W.c.attempt),
            lease_losses=W.c.lease_losses + ONE,
            solo_lease_losses=W.c.solo_lease_losses + W.c.lease_solo,
            status=sa.case((quarantined, STATUS_SQL[FAILED]), else_=STATUS_SQL[PENDING]),
            error_message=sa.case((quarantined, message), else_=W.c.error_message),
            lease_solo=ZERO,
            lease_owner=NULL,
            lease_expires_at=NULL,
            updated_at=now_param(),
        )
    )


@functools.cache
def retry_failed_sql(by_source: bool) -> sa.Update:
    where = [W.c.status == STATUS_SQL[FAILED]]
    if by_source:
        where.append(W.c.source_name == param("source"))
    return sa.update(W).where(*where).values(fresh())


@functools.cache
def recrawl_sql(with_cutoff: bool) -> sa.Update:
    where = [W.c.status == STATUS_SQL[COMPLETED], W.c.attempt > ZERO, W.c.source_name == param("source")]
    if with_cutoff:
        where.append(W.c.completed_at < param("cutoff", UtcDateTime()))
    return sa.update(W).where(*where).values(fresh())


@functools.cache
def release_leases_sql(by_owner: bool, expired_only: bool) -> sa.Update:
    where = [W.c.status == STATUS_SQL[IN_PROGRESS]]
    if by_owner:
        where.append(W.c.lease_owner == param("owner"))
    if expired_only:
        where.append(W.c.lease_expires_at < now_param())
    return sa.update(W).where(*where).values(unleased(attempt=minus_one(W.c.attempt)))


@functools.cache
def lease_owners_sql(scoped: bool) -> sa.Select[Any]:
    where = (W.c.status == STATUS_SQL[IN_PROGRESS], W.c.lease_owner.is_not(None), *scope_conditions(scoped))
    return sa.select(W.c.lease_owner).distinct().where(*where)


@functools.cache
def ready_count_sql(dialect: str, scoped: bool) -> sa.Select[Any]:
    ready = top(sa.select(W.c.seq).where(W.c.status == STATUS_SQL[PENDING], due(), *scope_conditions(scoped)), dialect)
    return sa.select(sa.func.count()).select_from(ready.subquery())


def leased_live_by_others() -> tuple[sa.ColumnElement[bool], ...]:
    return (
        W.c.status == STATUS_SQL[IN_PROGRESS],
        W.c.lease_owner != param("owner"),
        W.c.lease_expires_at >= now_param(),
    )


@functools.cache
def min_inflight_depth_sql(scoped: bool) -> sa.Select[Any]:
    return sa.select(sa.func.min(W.c.depth)).where(*leased_live_by_others(), *scope_conditions(scoped))


@functools.cache
def outstanding_sql(scoped: bool) -> sa.Select[Any]:
    pending = sa.exists().where(W.c.status == STATUS_SQL[PENDING], *scope_conditions(scoped))
    leased = sa.exists().where(*leased_live_by_others(), *scope_conditions(scoped))
    # CASE, not the bare condition: T-SQL cannot select a boolean.
    return sa.select(sa.case((sa.or_(pending, leased), ONE), else_=ZERO))


GET = sa.select(W).where(W.c.dedupe_key == param("key"))
C = frontier_checkpoints
CHECKPOINT_KEY = (
    C.c.source_system == param("cp_system"),
    C.c.source_name == param("cp_source"),
    C.c.name == param("cp_name"),
)
CHECKPOINT_GET = sa.select(C.c.value).where(*CHECKPOINT_KEY)
# SQL Server's upsert, as the record store's: the range lock makes a second writer of the key wait, so the
# INSERT that follows an UPDATE that changed no row never races.
CHECKPOINT_UPDATE = (
    sa.update(C)
    .where(*CHECKPOINT_KEY)
    .values(value=param("value"), updated_at=now_param())
    .with_hint("WITH (UPDLOCK, SERIALIZABLE)", dialect_name="mssql")
)


def checkpoint_params(key: CheckpointKey) -> dict[str, Any]:
    return {"b_cp_system": key.source_system, "b_cp_source": key.source_name, "b_cp_name": key.name}


@functools.cache
def checkpoint_put_sql(dialect: str) -> sa.Insert:
    """Set a checkpoint: an upsert on SQLite and PostgreSQL (``ON CONFLICT ... DO UPDATE``); on SQL Server
    the ``INSERT`` that follows an ``UPDATE ... WITH (UPDLOCK, SERIALIZABLE)`` that changed no row."""
    values = {
        "source_system": param("cp_system"),
        "source_name": param("cp_source"),
        "name": param("cp_name"),
        "value": param("value"),
        "updated_at": now_param(),
    }
    if dialect == "mssql":
        return sa.insert(C).values(values)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(C).values(values)
        return pg.on_conflict_do_update(
            index_elements=[C.c.source_system, C.c.source_name, C.c.name],
            set_={"value": pg.excluded.value, "updated_at": pg.excluded.updated_at},
        )
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    lite = sqlite_insert(C).values(values)
    return lite.on_conflict_do_update(
        index_elements=[C.c.source_system, C.c.source_name, C.c.name],
        set_={"value": lite.excluded.value, "updated_at": lite.excluded.updated_at},
    )


ANALYZE = sa.text("ANALYZE work_items")  # PostgreSQL only


def statements(dialect: str) -> dict[str, sa.Executable]:
    """Every statement :class:`SqlWorkItemStore` runs on *dialect* (``sqlite``, ``postgresql``, ``mssql``), by
    name: the offline checks compile them for SQL Server and parse the T-SQL, and a test proves on SQLite
    and PostgreSQL that the stores run nothing else."""
    found: dict[str, sa.Executable] = {
        "insert": insert_sql(dialect),
        "complete": COMPLETE,
        "attempts": ATTEMPTS,
        "fail": FAIL,
        "end_solo": END_SOLO,
        "release": RELEASE,
        "renew": RENEW,
        "requeue": REQUEUE,
        "counts": COUNTS,
        "oldest_lease": OLDEST_LEASE,
        "failure_reasons": failure_reasons_sql(dialect),
        "lease_summary": LEASE_SUMMARY,
        "host_counts": HOST_COUNTS,
        "workers": WORKERS,
        "active_blocks": ACTIVE_BLOCKS,
        "get": GET,
        "checkpoint_get": CHECKPOINT_GET,
        "checkpoint_put": checkpoint_put_sql(dialect),
    }
    found.update(
        host_ensure=host_ensure_sql(dialect),
        host_lock=host_lock_sql(dialect),
        slots_expired=SLOTS_EXPIRED,
        slots_live=SLOTS_LIVE,
        slot_owners=SLOT_OWNERS,
        slots_of_owners_delete=SLOTS_OF_OWNERS_DELETE,
        slot_insert=SLOT_INSERT,
        host_taken=HOST_TAKEN,
        slot_delete=SLOT_DELETE,
        host_ok=HOST_OK,
        host_failures=HOST_FAILURES,
        host_failed=HOST_FAILED,
        host_block=HOST_BLOCK,
        slots_renew=SLOTS_RENEW,
        slots_of_owner_delete=SLOTS_OF_OWNER_DELETE,
        host_states=HOST_STATES,
        blocked_keys=BLOCKED_KEYS,
    )
    if dialect == "mssql":
        found["checkpoint_update"] = CHECKPOINT_UPDATE
    if dialect == "postgresql":
        found["analyze"] = ANALYZE
    for scoped in (False, True):
        tag = "_of_source" if scoped else ""
        for solo in (False, True):
            for avoid in (False, True):
                lock, update = claim_sql(dialect, scoped, solo, avoid)
                name = f"claim{'_solo' if solo else ''}{tag}{'_avoiding' if avoid else ''}"
                found[name] = update
                if lock is not None:
                    found[f"{name}_lock"] = lock
        for by_owner in (False, True):
            found[f"reclaim{'_owners' if by_owner else ''}{tag}"] = reclaim_sql(by_owner, scoped)
        found[f"lease_owners{tag}"] = lease_owners_sql(scoped)
        found[f"ready_count{tag}"] = ready_count_sql(dialect, scoped)
        found[f"min_inflight_depth{tag}"] = min_inflight_depth_sql(scoped)
        found[f"outstanding{tag}"] = outstanding_sql(scoped)
    for flag in (False, True):
        found[f"retry_failed{'_of_source' if flag else ''}"] = retry_failed_sql(flag)
        found[f"recrawl{'_before' if flag else ''}"] = recrawl_sql(flag)
        for expired_only in (False, True):
            name = f"release_leases{'_of_owner' if flag else ''}{'_expired' if expired_only else ''}"
            found[name] = release_leases_sql(flag, expired_only)
    return found
