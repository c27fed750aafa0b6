"""Throw-away PostgreSQL databases for the benchmarks, on the machine's server (127.0.0.1:5432, user root).

:func:`throwaway_database` creates a database named ``holocron_bench_<pid>_<random>``, yields its
``postgresql+psycopg://`` URL and drops it afterwards, whatever happened (an exception, Ctrl-C, or
SIGTERM, which :func:`drop_on_sigterm` turns into ``SystemExit`` so that ``finally`` blocks run),
terminating the connections left open. :func:`copy_database` makes a new throw-away database from
a template (``CREATE DATABASE ... TEMPLATE``: a file copy, much faster than filling it again).

The server is the one the tests use (127.0.0.1:5432, user root, trust auth);
``HOLOCRON_BENCH_PG_HOST`` / ``_PORT`` / ``_USER`` point the benchmarks elsewhere. Benchmarks are
not tests, so nothing here comes from ``tests.support``. Benchmark databases have their own prefix,
so the tests' sweep of orphaned databases never sees them.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

HOST = os.environ.get("HOLOCRON_BENCH_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("HOLOCRON_BENCH_PG_PORT", "5432"))
USER = os.environ.get("HOLOCRON_BENCH_PG_USER", "root")
ADMIN_DB = "postgres"  # CREATE / DROP DATABASE run from here
PREFIX = "holocron_bench_"


def admin_connect() -> psycopg.Connection:
    """An autocommit connection to the ``postgres`` database (CREATE DATABASE cannot run in a transaction)."""
    return psycopg.connect(host=HOST, port=PORT, user=USER, dbname=ADMIN_DB, autocommit=True, connect_timeout=5)


def new_name() -> str:
    return f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"


def drop_on_sigterm() -> None:
    """SIGTERM raises ``SystemExit`` in the main thread, so that databases are dropped on a kill."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def create(template: str | None = None) -> str:
    """A new database (a copy of *template* if given); its name."""
    name = new_name()
    with admin_connect() as admin:
        if template is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            )
    return name


def drop(name: str) -> None:
    """Drop the database *name* (no error if it is gone), ending the sessions still connected to it."""
    with admin_connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def size_mb(name: str) -> float:
    with admin_connect() as admin:
        row = admin.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    return (row[0] if row else 0) / 2**20


@contextmanager
def throwaway_database(template: str | None = None) -> Iterator[tuple[str, str]]:
    """``(name, url)`` of a new database, dropped on the way out (also on errors)."""
    name = create(template)
    try:
        yield name, url_of(name)
    finally:
        drop(name)


def url_of(name: str) -> str:
    return f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{name}"
