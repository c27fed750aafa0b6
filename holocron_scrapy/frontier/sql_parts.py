"""The building blocks of the frontier's SQL: constants written into the SQL, bound parameters, row limits.

Pure (no I/O). :mod:`holocron_scrapy.frontier.statements` and :mod:`holocron_scrapy.frontier.fleet_statements`
build every statement of :class:`~holocron_scrapy.frontier.sql_store.SqlWorkItemStore` from these, once.
Bound parameters are named ``b_<name>`` (:func:`param`); our own constants (statuses, 0 and 1) are
written into the SQL (:func:`const`), ``N'...'`` on SQL Server (:class:`Text`), so that the planners
match them against partial and filtered indexes.

Settings read: none. Stats written: none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from holocron_scrapy.db.schema import (
    UtcDateTime,
    work_items,
)
from holocron_scrapy.frontier.store import (
    CLAIM_COLUMNS,
    PENDING,
    STATUSES,
    Scope,
)

#: Rows per statement of the bulk updates (``seq IN (...)``): well under every backend's parameter limit
#: (SQL Server's is 2,100).
CHUNK = 500
W = work_items
#: The claim's RETURNING columns, in the order of :data:`CLAIM_COLUMNS`.
CLAIM = tuple(W.c[name] for name in CLAIM_COLUMNS)


# -- statements (pure: built once, executed with bound parameters) ---------------------------------
def chunks(values: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Text(sa.sql.expression.ColumnElement[str]):
    """A text constant of ours written into the SQL: ``'pending'``, and ``N'pending'`` on SQL Server
    (an NVARCHAR literal, as its filtered indexes spell the predicate)."""

    inherit_cache = True
    _traverse_internals = [("value", InternalTraversal.dp_string)]
    type = sa.Unicode()

    def __init__(self, value: str):
        if "'" in value:
            raise ValueError(f"not a plain constant: {value!r}")
        self.value = value


@compiles(Text)
def _text_literal(element: Text, compiler: Any, **kw: Any) -> str:
    return f"'{element.value}'"


@compiles(Text, "mssql")
def _ntext_literal(element: Text, compiler: Any, **kw: Any) -> str:
    return f"N'{element.value}'"


def const(value: str | int) -> sa.ColumnElement[Any]:
    """A constant of ours written into the SQL, not bound: the planners see it (a partial index on
    ``status = 'in_progress'`` matches it) and SQLite runs the claim faster than with parameters."""
    if isinstance(value, str):
        return Text(value)
    return sa.literal_column(str(int(value)), sa.Integer())


AnySelect = TypeVar("AnySelect", bound="sa.Select[*tuple[Any, ...]]")


def top(select: AnySelect, dialect: str) -> AnySelect:
    """*select* limited to ``b_limit`` rows: ``LIMIT ?`` (SQLite, PostgreSQL) or ``SELECT TOP (?)`` (SQL
    Server, where a bound LIMIT would become a ``ROW_NUMBER()`` subquery)."""
    if dialect == "mssql":
        return select.prefix_with(sa.text("TOP (:b_limit)").bindparams(param("limit", sa.Integer())), dialect="mssql")
    return select.limit(param("limit", sa.Integer()))


STATUS_SQL = {status: const(status) for status in STATUSES}
ZERO, ONE, NULL = const(0), const(1), sa.null()


def param(name: str, type_: Any = None, *, expanding: bool = False) -> sa.BindParameter[Any]:
    return sa.bindparam(f"b_{name}", type_=type_, expanding=expanding)


def now_param() -> sa.BindParameter[Any]:
    return param("now", UtcDateTime())


def seqs_param() -> sa.BindParameter[Any]:
    return param("seqs", expanding=True)


def minus_one(column: Any) -> sa.ColumnElement[int]:
    """``MAX(column - 1, 0)`` in portable SQL (SQLite's scalar MAX is PostgreSQL's GREATEST)."""
    return sa.case((column > ZERO, column - ONE), else_=ZERO)


def scope_conditions(scoped: bool) -> tuple[sa.ColumnElement[bool], ...]:
    """The conditions of a scope (``b_system``, ``b_name``), none without one."""
    if not scoped:
        return ()
    return (W.c.source_system == param("system"), W.c.source_name == param("name"))


def scope_params(scope: Scope | None) -> dict[str, str]:
    return {} if scope is None else {"b_system": scope.source_system, "b_name": scope.source_name}


def due() -> sa.ColumnElement[bool]:
    return sa.or_(W.c.next_attempt_at.is_(None), W.c.next_attempt_at <= now_param())


def unleased(**extra: Any) -> dict[str, Any]:
    """Back to pending without a lease (released, interrupted or requeued)."""
    return {
        "status": STATUS_SQL[PENDING],
        "lease_solo": ZERO,
        "lease_owner": NULL,
        "lease_expires_at": NULL,
        "updated_at": now_param(),
        **extra,
    }


def fresh() -> dict[str, Any]:
    """Back to pending with fresh attempt and lease-loss counts (retry-failed, re-crawl)."""
    return {
        "status": STATUS_SQL[PENDING],
        "attempt": ZERO,
        "lease_losses": ZERO,
        "solo_lease_losses": ZERO,
        "next_attempt_at": NULL,
        "updated_at": now_param(),
    }
