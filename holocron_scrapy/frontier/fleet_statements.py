"""The fleet's statements: host politeness (``frontier_hosts``, ``frontier_host_slots``) and the fleet view.

Pure (no I/O): built once, executed by :class:`~holocron_scrapy.frontier.sql_store.SqlWorkItemStore`
(``take_slot``, ``release_slot``, ``block_key``, ... and the reads of ``scrapy frontier stats``).
The host row lock is the one statement that differs per dialect (:func:`host_lock_sql`: ``FOR
UPDATE`` on PostgreSQL, ``UPDLOCK, ROWLOCK`` on SQL Server; SQLite's ``BEGIN IMMEDIATE`` already
holds the database's write lock).

Settings read: none. Stats written: none.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from holocron_scrapy.db.schema import (
    UtcDateTime,
    frontier_host_slots,
    frontier_hosts,
)
from holocron_scrapy.frontier.sql_parts import (
    ONE,
    STATUS_SQL,
    ZERO,
    W,
    now_param,
    param,
    top,
)
from holocron_scrapy.frontier.store import (
    FAILED,
    IN_PROGRESS,
)

COUNTS = sa.select(W.c.source_name, W.c.status, sa.func.count()).group_by(W.c.source_name, W.c.status)
OLDEST_LEASE = (
    sa.select(W.c.dedupe_key, W.c.lease_owner, W.c.lease_expires_at, W.c.updated_at)
    .where(W.c.status == STATUS_SQL[IN_PROGRESS])
    .order_by(W.c.lease_expires_at)
    .limit(1)
)
# A literal, not a bound parameter: PostgreSQL must see the same expression in SELECT and GROUP BY.
MESSAGE = sa.func.coalesce(W.c.error_message, sa.literal_column("'(none)'"))


@functools.cache
def failure_reasons_sql(dialect: str) -> sa.Select[Any, int]:
    return top(
        sa.select(MESSAGE, sa.func.count())
        .where(W.c.status == STATUS_SQL[FAILED])
        .group_by(MESSAGE)
        .order_by(sa.func.count().desc(), MESSAGE),
        dialect,
    )


LEASE_SUMMARY = (
    sa.select(
        W.c.lease_owner, sa.func.count(), sa.func.sum(sa.case((W.c.lease_expires_at >= now_param(), ONE), else_=ZERO))
    )
    .where(W.c.status == STATUS_SQL[IN_PROGRESS], W.c.lease_owner.is_not(None))
    .group_by(W.c.lease_owner)
    .order_by(W.c.lease_owner)
)


class UriHost(sa.sql.expression.ColumnElement[str]):
    """The netloc of a request URI column, cut in SQL (what follows ``://`` up to the next ``/``), so
    that a full scan groups by host without sending every URI to Python; :func:`uri_host` finishes it
    (query, fragment, user info, case). One expression per dialect, the same text in SELECT and GROUP BY."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]
    type = sa.Unicode()

    def __init__(self, column: sa.ColumnElement[Any]):
        self.column = column


@compiles(UriHost)
def _uri_host_sqlite(element: UriHost, compiler: Any, **kw: Any) -> str:
    u = compiler.process(element.column, **kw)
    rest = f"substr({u}, instr({u}, '://') + 3)"
    return f"substr({rest}, 1, instr({rest} || '/', '/') - 1)"


@compiles(UriHost, "postgresql")
def _uri_host_postgresql(element: UriHost, compiler: Any, **kw: Any) -> str:
    u = compiler.process(element.column, **kw)
    return f"split_part(split_part({u}, '://', 2), '/', 1)"


@compiles(UriHost, "mssql")
def _uri_host_mssql(element: UriHost, compiler: Any, **kw: Any) -> str:
    u = compiler.process(element.column, **kw)
    start = f"CHARINDEX(N'://', {u}) + 3"
    return f"SUBSTRING({u}, {start}, CHARINDEX(N'/', {u} + N'/', {start}) - ({start}))"


def uri_host(netloc_or_uri: str) -> str:
    """The host (with its port) of a URI or of the netloc :class:`UriHost` cut: lower case, without
    user info, query or fragment (``https://U@Wiki.Example:8080?x`` -> ``wiki.example:8080``)."""
    text = netloc_or_uri.split("://", 1)[-1]
    for stop in "/?#":
        text = text.split(stop, 1)[0]
    return text.rsplit("@", 1)[-1].lower()


HOST = UriHost(W.c.request_uri)
FINISHED_SINCE = sa.and_(
    W.c.attempt > ZERO, W.c.status != STATUS_SQL[IN_PROGRESS], W.c.updated_at >= param("since", UtcDateTime())
)
# One scan of work_items: items per source, host and status, and the attempts finished in the window.
HOST_COUNTS = sa.select(
    W.c.source_name, HOST, W.c.status, sa.func.count(), sa.func.sum(sa.case((FINISHED_SINCE, ONE), else_=ZERO))
).group_by(W.c.source_name, HOST, W.c.status)
WORKERS = (
    sa.select(
        W.c.lease_owner,
        sa.func.count(),
        sa.func.sum(sa.case((W.c.lease_expires_at >= now_param(), ONE), else_=ZERO)),
        sa.func.max(W.c.updated_at),
        sa.func.max(W.c.lease_expires_at),
    )
    .where(W.c.status == STATUS_SQL[IN_PROGRESS], W.c.lease_owner.is_not(None))
    .group_by(W.c.lease_owner)
    .order_by(W.c.lease_owner)
)
HOSTS = frontier_hosts
ACTIVE_BLOCKS = (
    sa.select(HOSTS.c.politeness_key, HOSTS.c.blocked_until, HOSTS.c.block_reason)
    .where(HOSTS.c.blocked_until > now_param())
    .order_by(HOSTS.c.politeness_key)
)


# -- host politeness statements ------------------------------------------------------------------
H, HS = frontier_hosts, frontier_host_slots
HOST_KEY = H.c.politeness_key == param("key")


@functools.cache
def host_ensure_sql(dialect: str) -> sa.Insert:
    """The key's row if new (delay and concurrency as configured): ``ON CONFLICT DO NOTHING`` on SQLite and
    PostgreSQL; on SQL Server ``INSERT ... SELECT ... WHERE NOT EXISTS`` under a key-range lock."""
    values = {
        "politeness_key": param("key"),
        "delay_s": param("delay", sa.Float()),
        "concurrency": param("concurrency", sa.Integer()),
        "failures": ZERO,
        "updated_at": now_param(),
    }
    if dialect == "mssql":
        known = sa.select(ONE).select_from(H).where(HOST_KEY).with_hint(H, "WITH (UPDLOCK, HOLDLOCK)", "mssql")
        row = sa.select(*(v.label(k) for k, v in values.items())).where(~known.exists())
        return sa.insert(H).from_select(list(values), row)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(H).values(values).on_conflict_do_nothing(index_elements=[H.c.politeness_key])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(H).values(values).on_conflict_do_nothing(index_elements=[H.c.politeness_key])


@functools.cache
def host_lock_sql(dialect: str) -> sa.Select[Any]:
    """The key's row, locked until the commit: ``FOR UPDATE`` (PostgreSQL), ``WITH (UPDLOCK, ROWLOCK)``
    (SQL Server); SQLite's ``BEGIN IMMEDIATE`` already holds the database's write lock."""
    select = sa.select(H.c.next_allowed_at, H.c.blocked_until, H.c.block_reason).where(HOST_KEY)
    if dialect == "postgresql":
        return select.with_for_update()
    if dialect == "mssql":
        return select.with_hint(H, "WITH (UPDLOCK, ROWLOCK)", "mssql")
    return select


SLOT_KEY = HS.c.politeness_key == param("key")
SLOTS_EXPIRED = sa.delete(HS).where(SLOT_KEY, HS.c.lease_expires_at < now_param())
SLOTS_LIVE = sa.select(sa.func.count(), sa.func.min(HS.c.lease_expires_at)).where(
    SLOT_KEY, HS.c.lease_expires_at >= now_param()
)
SLOT_OWNERS = sa.select(HS.c.slot_owner).distinct().where(SLOT_KEY, HS.c.lease_expires_at >= now_param())
SLOTS_OF_OWNERS_DELETE = sa.delete(HS).where(SLOT_KEY, HS.c.slot_owner.in_(param("owners", expanding=True)))
SLOT_INSERT = sa.insert(HS).values(
    slot_id=param("slot"),
    politeness_key=param("key"),
    slot_owner=param("owner"),
    lease_expires_at=param("until", UtcDateTime()),
)
HOST_TAKEN = (
    sa.update(H)
    .where(HOST_KEY)
    .values(
        next_allowed_at=param("next", UtcDateTime()),
        delay_s=param("delay", sa.Float()),
        concurrency=param("concurrency", sa.Integer()),
        updated_at=now_param(),
    )
)
SLOT_DELETE = sa.delete(HS).where(HS.c.slot_id == param("slot"))
HOST_OK = sa.update(H).where(HOST_KEY, H.c.failures > ZERO).values(failures=ZERO, updated_at=now_param())
HOST_FAILURES = sa.select(H.c.failures).where(HOST_KEY)
HOST_FAILED = sa.update(H).where(HOST_KEY).values(failures=param("failures", sa.Integer()), updated_at=now_param())
HOST_BLOCK = (
    sa.update(H)
    .where(HOST_KEY, sa.or_(H.c.blocked_until.is_(None), H.c.blocked_until < param("until", UtcDateTime())))
    .values(
        blocked_until=param("until", UtcDateTime()), block_reason=param("reason", sa.Unicode()), updated_at=now_param()
    )
)
SLOTS_RENEW = (
    sa.update(HS).where(HS.c.slot_owner == param("owner")).values(lease_expires_at=param("until", UtcDateTime()))
)
SLOTS_OF_OWNER_DELETE = sa.delete(HS).where(HS.c.slot_owner == param("owner"))
LIVE_SLOTS = (
    sa.select(sa.func.count())
    .where(HS.c.politeness_key == H.c.politeness_key, HS.c.lease_expires_at >= now_param())
    .scalar_subquery()
)
HOST_STATES = sa.select(
    H.c.politeness_key,
    H.c.delay_s,
    H.c.concurrency,
    H.c.next_allowed_at,
    H.c.blocked_until,
    H.c.block_reason,
    H.c.failures,
    H.c.updated_at,
    LIVE_SLOTS.label("live_slots"),
).order_by(H.c.politeness_key)
BLOCKED_KEYS = sa.select(H.c.politeness_key).where(H.c.blocked_until > now_param()).order_by(H.c.politeness_key)
