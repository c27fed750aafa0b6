"""The ``work_items`` store on SQL Server: the twin of :class:`SqlWorkItemStore`.

Opened by :func:`holocron_scrapy.frontier.store.open_work_item_store` for ``sqlserver://`` URLs with
:class:`~holocron_scrapy.db.sqlserver.SqlServerSettings` resolved from the ``INGEST_SQLSERVER_*``
variables and the YAML ``state.sqlserver`` section (the schema included: ``INGEST_SQLSERVER_SCHEMA``).

* Insert-if-new: ``INSERT ... SELECT ... WHERE NOT EXISTS (... WITH (UPDLOCK, HOLDLOCK))`` per item,
  so two workers adding the same key serialise on the key range of ``ix_work_items_dedupe``; a
  duplicate-key error (2601/2627) is counted as "already known" all the same.
* Claim: an updatable CTE ``SELECT TOP (n) ... WITH (ROWLOCK, READPAST, UPDLOCK) ... ORDER BY
  priority DESC, seq`` updated with ``OUTPUT inserted.*``: concurrent claimers skip each other's
  rows instead of waiting, and get the best rows (``UPDATE TOP`` alone ignores ORDER BY).
* Predicates on ``status`` are literals (``status = N'in_progress'``): SQL Server matches the
  filtered index ``ix_work_items_leases`` only to literals, never to parameters.
* Times are UTC instants bound as naive ``datetime`` objects (DATETIME2 parameters, no text
  parsing, no DATEFORMAT dependence) and returned as the SQLite text form
  ``YYYY-MM-DD HH:MM:SS.ffffff`` (:func:`holocron_scrapy.frontier.store.ts`).
* Every method is one transaction run by :class:`SqlServerSession`: transient errors (lost
  connection, Azure throttling, deadlock victim 1205) roll back, reconnect when needed and retry
  the whole transaction with backoff. When a *commit* fails the outcome is unknown: the claim
  and the flush first look for what the lost commit wrote (their own lease time / work item ids)
  and only run again when it did not happen.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from holocron_scrapy.db import sqlserver
from holocron_scrapy.db.migrations import validate_identifier
from holocron_scrapy.db.sqlserver import SqlServerSettings
from holocron_scrapy.errors import StoreError
from holocron_scrapy.frontier.store import (
    CLAIM_COLUMNS,
    COMPLETED,
    PENDING,
    STATUSES,
    FailedItem,
    NewItem,
    Scope,
    WorkItemStore,
    claimed_rows,
    utcnow,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ODBC's SQL_WVARCHAR (``pyodbc.SQL_WVARCHAR``): text parameters are always sent as NVARCHAR.
SQL_WVARCHAR = -9
#: ``setinputsizes`` column size meaning NVARCHAR(MAX).
NVARCHAR_MAX = 0
#: Text parameters are declared NVARCHAR(4000) (one cached plan whatever the value's length);
#: MAX columns, and longer values (which SQL Server then rejects with 2628), as NVARCHAR(MAX).
NVARCHAR_PARAM = 4000
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

#: Columns written by :data:`TSQL["insert_new"]`, in parameter order (``attempt`` is the literal 0).
INSERT_COLUMNS = (
    "work_item_id", "source_system", "source_name", "resource_type", "resource_id",
    "request_uri", "request_method", "request_headers", "request_body", "metadata",
    "priority", "depth", "status", "run_id", "discovered_from", "created_at", "updated_at",
    "completed_at", "dedupe_key",
)  # fmt: skip
#: Text columns of work_items with their widths (NVARCHAR_MAX for NVARCHAR(MAX); request_uri and
#: discovered_from since sql/0005_widen_long_text.sql).
TEXT_WIDTHS = {
    "work_item_id": 36, "source_system": 100, "source_name": 100, "resource_type": 100,
    "resource_id": 450, "request_uri": NVARCHAR_MAX, "request_method": 10, "request_headers": NVARCHAR_MAX,
    "request_body": NVARCHAR_MAX, "metadata": NVARCHAR_MAX, "status": 20, "run_id": 64,
    "discovered_from": NVARCHAR_MAX, "dedupe_key": 850,
}  # fmt: skip

_CLAIM_OUTPUT = ", ".join(f"inserted.{c}" for c in CLAIM_COLUMNS)
#: A lost lease: the claim's attempt undone, the loss counted (also as a solo death for an item
#: marked lease_solo), and quarantine at the limit. Parameters: limit, limit, now, the lost-lease value.
_RECLAIM = (
    "UPDATE {{t}} SET attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END,"
    " lease_losses = lease_losses + 1, solo_lease_losses = solo_lease_losses + lease_solo,"
    " status = CASE WHEN lease_solo = 1 AND solo_lease_losses + 1 >= ? THEN N'failed' ELSE N'pending' END,"
    " error_message = CASE WHEN lease_solo = 1 AND solo_lease_losses + 1 >= ?"
    " THEN CONCAT(N'quarantined: its worker died ', solo_lease_losses + 1,"
    " N' times while it was the only item in flight') ELSE error_message END,"
    " lease_solo = 0, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
    " WHERE status = N'in_progress' AND {lost}{{scope}}"
)
#: Templates with ``{scope}`` also exist as ``<name>_source``, limited to one source (two more parameters).
_SCOPE = " AND source_system = ? AND source_name = ?"
_TEMPLATES = {
    # -- flush ------------------------------------------------------------------------------
    "insert_new": (
        "INSERT INTO {t} ({insert_columns}, attempt)\n"
        "OUTPUT inserted.seq\n"
        "SELECT {insert_marks}, 0\n"
        "WHERE NOT EXISTS (\n"
        "    SELECT 1 FROM {t} WITH (UPDLOCK, HOLDLOCK) WHERE dedupe_key = ?\n"
        ")"
    ),
    "mark_completed": (
        "UPDATE {t} SET status = N'completed', completed_at = ?, updated_at = ?, lease_owner = NULL,"
        " lease_expires_at = NULL, next_attempt_at = NULL, error_message = NULL WHERE seq = ?"
    ),
    "select_attempt": "SELECT attempt FROM {t} WITH (UPDLOCK, ROWLOCK) WHERE seq = ?",
    "mark_failed": (
        "UPDATE {t} SET status = ?, error_message = ?, updated_at = ?, lease_owner = NULL,"
        " lease_expires_at = NULL, next_attempt_at = ? WHERE seq = ?"
    ),
    "count_work_item_id": "SELECT COUNT(*) FROM {t} WHERE work_item_id = ?",
    # -- claims and leases ------------------------------------------------------------------
    "claim": (
        "WITH next_items AS (\n"
        "    SELECT TOP (?) *\n"
        "    FROM {t} WITH (ROWLOCK, READPAST, UPDLOCK)\n"
        "    WHERE status = N'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
        " AND lease_losses < ?{scope}\n"
        "    ORDER BY priority DESC, seq\n"
        ")\n"
        "UPDATE next_items\n"
        "SET status = N'in_progress', attempt = attempt + 1, lease_solo = 0, lease_owner = ?, lease_expires_at = ?,"
        " updated_at = ?, next_attempt_at = NULL\n"
        "OUTPUT {claim_output}"
    ),
    "claim_suspect": (
        "WITH next_items AS (\n"
        "    SELECT TOP (1) *\n"
        "    FROM {t} WITH (ROWLOCK, READPAST, UPDLOCK)\n"
        "    WHERE status = N'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
        " AND lease_losses >= ?{scope}\n"
        "    ORDER BY priority DESC, seq\n"
        ")\n"
        "UPDATE next_items\n"
        "SET status = N'in_progress', attempt = attempt + 1, lease_solo = 1, lease_owner = ?, lease_expires_at = ?,"
        " updated_at = ?, next_attempt_at = NULL\n"
        "OUTPUT {claim_output}"
    ),
    "end_solo": "UPDATE {t} SET lease_solo = 0 WHERE seq = ? AND lease_solo = 1",
    "claimed_by_lease": (
        "SELECT {claim_columns} FROM {t} WHERE status = N'in_progress' AND lease_expires_at = ? AND lease_owner = ?"
    ),
    "release": (
        "UPDATE {t} SET status = N'pending', attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END,"
        " lease_solo = 0, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE seq = ? AND status = N'in_progress'"
    ),
    "renew": "UPDATE {t} SET lease_expires_at = ? WHERE status = N'in_progress' AND lease_owner = ?",
    "reclaim_expired": _RECLAIM.format(lost="lease_expires_at < ?"),
    "reclaim_owner": _RECLAIM.format(lost="lease_owner = ?"),
    "lease_owners": (
        "SELECT DISTINCT lease_owner FROM {t} WHERE status = N'in_progress' AND lease_owner IS NOT NULL{scope}"
    ),
    "ready_count": (
        "SELECT COUNT(*) FROM (SELECT TOP (?) seq FROM {t}"
        " WHERE status = N'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?){scope}) AS ready"
    ),
    "min_inflight_depth": (
        "SELECT MIN(depth) FROM {t} WHERE status = N'in_progress' AND lease_owner <> ? AND lease_expires_at >= ?{scope}"
    ),
    "outstanding": (
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM {t} WHERE status = N'pending'{scope})"
        " OR EXISTS (SELECT 1 FROM {t} WHERE status = N'in_progress' AND lease_expires_at >= ?"
        " AND lease_owner <> ?{scope}) THEN 1 ELSE 0 END"
    ),
    # -- reports and admin ------------------------------------------------------------------
    "counts": "SELECT source_name, status, COUNT(*) FROM {t} GROUP BY source_name, status",
    "oldest_lease": (
        "SELECT TOP (1) dedupe_key, lease_owner, lease_expires_at, updated_at FROM {t}"
        " WHERE status = N'in_progress' ORDER BY lease_expires_at"
    ),
    "failure_reasons": (
        "SELECT TOP (?) COALESCE(error_message, N'(none)') AS reason, COUNT(*) AS n FROM {t}"
        " WHERE status = N'failed' GROUP BY COALESCE(error_message, N'(none)') ORDER BY n DESC"
    ),
    "retry_failed_all": (
        "UPDATE {t} SET status = N'pending', attempt = 0, lease_losses = 0, solo_lease_losses = 0,"
        " next_attempt_at = NULL, updated_at = ? WHERE status = N'failed'"
    ),
    "retry_failed_by_name": (
        "UPDATE {t} SET status = N'pending', attempt = 0, lease_losses = 0, solo_lease_losses = 0,"
        " next_attempt_at = NULL, updated_at = ? WHERE status = N'failed' AND source_name = ?"
    ),
    "recrawl_all": (
        "UPDATE {t} SET status = N'pending', attempt = 0, lease_losses = 0, solo_lease_losses = 0,"
        " next_attempt_at = NULL, updated_at = ? WHERE status = N'completed' AND attempt > 0 AND source_name = ?"
    ),
    "recrawl_older": (
        "UPDATE {t} SET status = N'pending', attempt = 0, lease_losses = 0, solo_lease_losses = 0,"
        " next_attempt_at = NULL, updated_at = ?"
        " WHERE status = N'completed' AND attempt > 0 AND source_name = ? AND completed_at < ?"
    ),
    "release_leases_all": (
        "UPDATE {t} SET status = N'pending', attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END,"
        " lease_solo = 0, lease_owner = NULL, lease_expires_at = NULL, updated_at = ? WHERE status = N'in_progress'"
    ),
    "release_leases_owner": (
        "UPDATE {t} SET status = N'pending', attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END,"
        " lease_solo = 0, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE status = N'in_progress' AND lease_owner = ?"
    ),
    "release_leases_owner_expired": (
        "UPDATE {t} SET status = N'pending', attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END,"
        " lease_solo = 0, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE status = N'in_progress' AND lease_owner = ? AND lease_expires_at < ?"
    ),
    "release_leases_expired": (
        "UPDATE {t} SET status = N'pending', attempt = CASE WHEN attempt > 0 THEN attempt - 1 ELSE 0 END,"
        " lease_solo = 0, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE status = N'in_progress' AND lease_expires_at < ?"
    ),
    "lease_summary": (
        "SELECT lease_owner, COUNT(*) AS items, SUM(CASE WHEN lease_expires_at >= ? THEN 1 ELSE 0 END) AS live"
        " FROM {t} WHERE status = N'in_progress' AND lease_owner IS NOT NULL GROUP BY lease_owner ORDER BY lease_owner"
    ),
    "requeue_key": (
        "UPDATE {t} SET status = N'pending', attempt = 0, next_attempt_at = NULL, completed_at = NULL,"
        " lease_owner = NULL, lease_expires_at = NULL, error_message = NULL, lease_losses = 0,"
        " solo_lease_losses = 0, lease_solo = 0, updated_at = ?"
        " WHERE dedupe_key = ? AND NOT (status = N'pending' AND attempt = 0 AND next_attempt_at IS NULL"
        " AND completed_at IS NULL AND lease_owner IS NULL)"
    ),
    "get": "SELECT * FROM {t} WHERE dedupe_key = ?",
}


def statements(schema: str = sqlserver.DEFAULT_SCHEMA) -> dict[str, str]:
    """Every T-SQL string :class:`SqlServerWorkItemStore` executes, for the validated *schema*
    (a template with ``{scope}`` twice: as is, and limited to one source as ``<name>_source``)."""
    validate_identifier(schema)
    out: dict[str, str] = {}
    for name, template in _TEMPLATES.items():
        variants = [(name, "")]
        if "{scope" in template:
            variants.append((f"{name}_source", _SCOPE))
        for key, scope in variants:
            out[key] = template.format(
                t=f"[{schema}].[work_items]",
                insert_columns=", ".join(INSERT_COLUMNS),
                insert_marks=", ".join("?" for _ in INSERT_COLUMNS),
                claim_output=_CLAIM_OUTPUT,
                claim_columns=", ".join(CLAIM_COLUMNS),
                scope=scope,
            )
    return out


# -- times ----------------------------------------------------------------------------------
def db_time(moment: datetime) -> datetime:
    """A DATETIME2 parameter: the UTC instant as a naive ``datetime`` (aware or local input)."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def parse_time(value: Any) -> datetime | None:
    """A DATETIME2 parameter from a ``datetime`` or from text (``ts()`` form or ISO 8601; text
    without an offset is UTC, the project's convention)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return db_time(value)
    moment = datetime.fromisoformat(str(value).strip())
    return db_time(moment) if moment.tzinfo is not None else moment


def text_time(value: Any) -> Any:
    """DATETIME2 values read back (naive UTC) in the text form SQLite stores; others unchanged."""
    if isinstance(value, datetime):
        return value.strftime(TIME_FORMAT)
    return value


def text_sizes(values: Sequence[Any], widths: Sequence[int | None]) -> list[tuple[int, int, int] | None]:
    """``cursor.setinputsizes`` entries: NVARCHAR for each text parameter (width None: leave the
    parameter to pyodbc)."""
    sizes: list[tuple[int, int, int] | None] = []
    for value, width in zip(values, widths, strict=True):
        if width is None:
            sizes.append(None)
        elif width == NVARCHAR_MAX or (isinstance(value, str) and len(value) > NVARCHAR_PARAM):
            sizes.append((SQL_WVARCHAR, NVARCHAR_MAX, 0))
        else:
            sizes.append((SQL_WVARCHAR, NVARCHAR_PARAM, 0))
    return sizes


# -- connection, transactions and retries ---------------------------------------------------------
def is_deadlock(exc: BaseException) -> bool:
    """Deadlock victim (1205 / SQLSTATE 40001): the server rolled back; the connection is fine."""
    return sqlserver.sqlstate(exc) == "40001" or 1205 in sqlserver.native_errors(exc)


def _quietly(action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception:  # cleanup of a connection that is already broken
        logger.debug("ignored error during SQL Server cleanup", exc_info=True)


class SqlServerSession:
    """One pyodbc connection (autocommit off) that runs each operation as one transaction.

    :meth:`run` retries transient errors (:func:`holocron_scrapy.db.sqlserver.is_transient`) up to
    *attempts* times with exponential backoff (*base_delay* doubling, jittered, at most *max_delay*):
    a deadlock victim is rolled back and run again on the same connection, any other transient
    error drops the connection and reconnects (``connect(settings, wait_timeout=reconnect_wait)``).
    Other errors roll back and raise :class:`StoreError` at once. Messages name the server and
    the masked connection string, never the password. Thread-safe (one operation at a time).
    """

    def __init__(
        self,
        conn: Any,
        settings: SqlServerSettings,
        *,
        what: str,
        attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        reconnect_wait: float = 30.0,
        connector: Callable[[], Any] | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        errors: tuple[type[BaseException], ...] | None = None,
    ):
        self.conn = conn
        self.settings = settings
        self.what = what
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._connector = connector or (lambda: sqlserver.connect(settings, wait_timeout=reconnect_wait))
        self._sleep = sleep
        self.errors = errors or (sqlserver.import_pyodbc().Error,)
        self._lock = threading.RLock()
        self._closed = False

    def run(
        self,
        name: str,
        work: Callable[[Any], T],
        *,
        recover: Callable[[Any], T | None] | None = None,
    ) -> T:
        """Run ``work(cursor)`` and commit, retrying as described above.

        After a failed *commit* the transaction may or may not have been applied: before running
        *work* again, ``recover(cursor)`` (if given) looks for its effects and returns the
        result to report, or None when the transaction did not happen. Without *recover*, *work*
        must be safe to run again (idempotent).
        """
        with self._lock:
            if self._closed:
                raise StoreError(f"the SQL Server {self.what} store is closed")
            delay = self.base_delay
            unknown = False  # a commit failed earlier: was it applied?
            for attempt in range(1, self.attempts + 1):
                stage = "connect"
                try:
                    conn = self._connection()
                    cursor = sqlserver.new_cursor(conn, self.settings)
                    try:
                        stage = "execute"
                        result = recover(cursor) if unknown and recover is not None else None
                        if result is None:
                            result = work(cursor)
                        stage = "commit"
                        conn.commit()
                    finally:
                        _quietly(cursor.close)
                    return result
                except self.errors as exc:
                    transient = sqlserver.is_transient(exc)
                    unknown = unknown or stage == "commit"
                    self._after_error(reconnect=transient and not is_deadlock(exc))
                    if not transient or attempt == self.attempts:
                        raise self._error(name, exc, attempt, stage) from None
                    wait = min(delay, self.max_delay) * random.uniform(1.0, 1.5)
                    delay *= 2
                    logger.warning(
                        "SQL Server %s %s failed during %s (attempt %d of %d), retrying in %.1fs: %s",
                        self.what,
                        name,
                        stage,
                        attempt,
                        self.attempts,
                        wait,
                        self.settings.redact(sqlserver.error_text(exc)),
                    )
                    self._sleep(wait)
                except BaseException:  # not a database error (a bug, an interrupt): never leave the transaction open
                    self._after_error(reconnect=False)
                    raise
            raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> Any:
        if self.conn is None:
            logger.info("reconnecting to SQL Server at %s (%s store)", self.settings.where(), self.what)
            self.conn = self._connector()
        return self.conn

    def _after_error(self, *, reconnect: bool) -> None:
        """Roll back (keeping the connection), or drop the connection so the next try reconnects."""
        conn = self.conn
        if conn is None:
            return
        if not reconnect:
            try:
                conn.rollback()
                return
            except self.errors:
                pass
        _quietly(conn.rollback)
        _quietly(conn.close)
        self.conn = None

    def _error(self, name: str, exc: BaseException, attempts: int, stage: str) -> StoreError:
        reason = self.settings.redact(sqlserver.error_text(exc))
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        unknown = " (the commit failed: its outcome is unknown)" if stage == "commit" else ""
        return StoreError(
            f"SQL Server {self.what} {name} failed{tried} at {self.settings.where()}{unknown}: {reason}; "
            f"connection string: {self.settings.masked()}"
        )

    def describe(self, table: str) -> str:
        database = self.settings.describe()["Database"]
        return f"SQL Server [{self.settings.schema}].[{table}] at {self.settings.where()} (database {database})"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self.conn is not None:
                _quietly(self.conn.rollback)
                _quietly(self.conn.close)
                self.conn = None


# -- the store --------------------------------------------------------------------------------
class SqlServerWorkItemStore(WorkItemStore):
    """The frontier on ``[schema].[work_items]`` (schema from *settings*, already validated).

    *conn* is an open pyodbc connection (``holocron_scrapy.db.sqlserver.connect``) with the
    migrations applied; the store reconnects with *settings* when it is lost. *session_options*
    go to :class:`SqlServerSession` (attempts, delays, connector, sleep, errors).
    """

    def __init__(
        self,
        conn: Any,
        settings: SqlServerSettings,
        *,
        max_attempts: int = 3,
        retry_backoff: float = 30.0,
        solo_after: int = 2,
        quarantine_after: int = 3,
        **session_options: Any,
    ):
        self.settings = settings
        self.schema = settings.schema
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.solo_after = solo_after
        self.quarantine_after = quarantine_after
        self.sql = statements(self.schema)
        self.session = SqlServerSession(conn, settings, what="frontier", **session_options)

    def describe(self) -> str:
        return self.session.describe("work_items")

    # -- writes ---------------------------------------------------------------------------------
    def flush(self, new: list[NewItem], completed: list[int], failed: list[FailedItem]) -> int:
        if not (new or completed or failed):
            return 0
        sql = self.sql
        widths = [TEXT_WIDTHS.get(c) for c in INSERT_COLUMNS] + [TEXT_WIDTHS["dedupe_key"]]

        def work(cur: Any) -> int:
            now = db_time(utcnow())
            inserted = 0
            for n in new:
                params = (
                    n.work_item_id, n.source_system, n.source_name, n.resource_type, n.resource_id,
                    n.request_uri, n.request_method, n.request_headers, n.request_body, n.metadata,
                    n.priority, n.depth, n.status, n.run_id, n.discovered_from, now, now,
                    now if n.status == COMPLETED else None, n.dedupe_key, n.dedupe_key,
                )  # fmt: skip
                cur.setinputsizes(text_sizes(params, widths))
                try:
                    cur.execute(sql["insert_new"], *params)
                    inserted += len(cur.fetchall())
                except self.session.errors as exc:
                    if not sqlserver.is_duplicate_key(exc):  # a racing insert: the key is known
                        raise
            cur.setinputsizes(None)
            if completed:
                cur.executemany(sql["mark_completed"], [(now, now, seq) for seq in completed])
            for item in failed:
                cur.execute(sql["select_attempt"], item.seq)
                row = cur.fetchone()
                if row is None:
                    continue
                attempt = row[0]
                status = self.failure_status(attempt, item.retryable)
                next_at = parse_time(self.backoff_until(attempt)) if status == PENDING else None
                cur.execute(sql["mark_failed"], status, item.error[:4000], now, next_at, item.seq)
            return inserted

        def recover(cur: Any) -> int | None:
            # The new items' ids are ours alone: finding any means the lost commit was applied.
            found = 0
            for n in new:
                cur.execute(sql["count_work_item_id"], n.work_item_id)
                found += cur.fetchone()[0]
            return found or None

        return self.session.run("flush", work, recover=recover)

    def _scoped(self, name: str, scope: Scope | None) -> tuple[str, tuple[str, ...]]:
        """The statement *name*, or its ``_source`` variant and parameters for *scope*."""
        if scope is None:
            return self.sql[name], ()
        return self.sql[f"{name}_source"], (scope.source_system, scope.source_name)

    def claim(
        self, owner: str, limit: int, lease_seconds: float, *, scope: Scope | None = None, alone: bool = False
    ) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        sql = self.sql
        claim_sql, extra = self._scoped("claim", scope)
        suspect_sql, _ = self._scoped("claim_suspect", scope)
        lease: dict[str, datetime] = {}

        def work(cur: Any) -> list[Any]:
            now = utcnow()
            lease["until"] = db_time(now + timedelta(seconds=lease_seconds))
            rows: list[Any] = []
            if alone:  # a suspect (lost twice) goes alone to a worker with nothing else in flight
                cur.execute(suspect_sql, db_time(now), self.solo_after, *extra, owner, lease["until"], db_time(now))
                rows = cur.fetchall()
            if not rows:
                params = (limit, db_time(now), self.solo_after, *extra, owner, lease["until"], db_time(now))
                cur.execute(claim_sql, *params)
                rows = cur.fetchall()
            return rows

        def recover(cur: Any) -> list[Any] | None:
            # A claim writes this owner and this exact lease expiry: those rows are what it took.
            cur.execute(sql["claimed_by_lease"], lease["until"], owner)
            return cur.fetchall() or None

        rows = self.session.run("claim", work, recover=recover)
        return claimed_rows(rows)

    def end_solo(self, seqs: list[int]) -> None:
        if not seqs:
            return

        def work(cur: Any) -> None:
            cur.executemany(self.sql["end_solo"], [(seq,) for seq in seqs])

        self.session.run("end_solo", work)  # idempotent

    def release(self, seqs: list[int]) -> None:
        if not seqs:
            return

        def work(cur: Any) -> None:
            now = db_time(utcnow())
            cur.executemany(self.sql["release"], [(now, seq) for seq in seqs])

        self.session.run("release", work)

    def renew(self, owner: str, lease_seconds: float) -> int:
        def work(cur: Any) -> int:
            cur.execute(self.sql["renew"], db_time(utcnow() + timedelta(seconds=lease_seconds)), owner)
            return cur.rowcount

        return self.session.run("renew", work)

    def reclaim(self, owners: list[str] | None = None, *, scope: Scope | None = None) -> int:
        if owners is not None and not owners:
            return 0
        limit = self.quarantine_after
        expired_sql, extra = self._scoped("reclaim_expired", scope)
        owner_sql, _ = self._scoped("reclaim_owner", scope)

        def work(cur: Any) -> int:
            now = db_time(utcnow())
            if owners is None:
                cur.execute(expired_sql, limit, limit, now, now, *extra)
                return cur.rowcount
            total = 0
            for owner in dict.fromkeys(owners):
                cur.execute(owner_sql, limit, limit, now, owner, *extra)
                total += cur.rowcount
            return total

        return self.session.run("reclaim", work)

    def retry_failed(self, source_name: str | None = None) -> int:
        def work(cur: Any) -> int:
            now = db_time(utcnow())
            if source_name is None:
                cur.execute(self.sql["retry_failed_all"], now)
            else:
                cur.execute(self.sql["retry_failed_by_name"], now, source_name)
            return cur.rowcount

        return self.session.run("retry_failed", work)

    def recrawl(self, source_name: str, older_than_seconds: float | None = None) -> int:
        def work(cur: Any) -> int:
            now = utcnow()
            if older_than_seconds is None:
                cur.execute(self.sql["recrawl_all"], db_time(now), source_name)
            else:
                cutoff = db_time(now - timedelta(seconds=older_than_seconds))
                cur.execute(self.sql["recrawl_older"], db_time(now), source_name, cutoff)
            return cur.rowcount

        return self.session.run("recrawl", work)

    def release_leases(self, owner: str | None = None, *, expired_only: bool = False) -> int:
        def work(cur: Any) -> int:
            now = db_time(utcnow())
            if owner is None and expired_only:
                cur.execute(self.sql["release_leases_expired"], now, now)
            elif owner is None:
                cur.execute(self.sql["release_leases_all"], now)
            elif expired_only:
                cur.execute(self.sql["release_leases_owner_expired"], now, owner, now)
            else:
                cur.execute(self.sql["release_leases_owner"], now, owner)
            return cur.rowcount

        return self.session.run("release_leases", work)

    def requeue_keys(self, dedupe_keys: list[str]) -> int:
        keys = list(dict.fromkeys(dedupe_keys))
        if not keys:
            return 0

        def work(cur: Any) -> int:
            now = db_time(utcnow())
            changed = 0
            for key in keys:
                cur.setinputsizes([None, (SQL_WVARCHAR, TEXT_WIDTHS["dedupe_key"], 0)])
                cur.execute(self.sql["requeue_key"], now, key)
                changed += cur.rowcount
            cur.setinputsizes(None)
            return changed

        return self.session.run("requeue_keys", work)  # idempotent: a re-run after a lost commit changes 0

    # -- reads ----------------------------------------------------------------------------------
    def _query(self, name: str, *params: Any) -> list[Any]:
        def work(cur: Any) -> list[Any]:
            cur.execute(self.sql[name], *params)
            return cur.fetchall()

        return self.session.run(name, work)

    def _query_scoped(self, name: str, scope: Scope | None, *params: Any) -> list[Any]:
        """:meth:`_query` of *name*, or of its ``_source`` variant with the scope's parameters last."""
        sql_name = name if scope is None else f"{name}_source"
        extra = () if scope is None else (scope.source_system, scope.source_name)
        return self._query(sql_name, *params, *extra)

    def lease_owners(self, scope: Scope | None = None) -> list[str]:
        return [row[0] for row in self._query_scoped("lease_owners", scope)]

    def ready_count(self, limit: int, scope: Scope | None = None) -> int:
        if limit <= 0:
            return 0
        return self._query_scoped("ready_count", scope, limit, db_time(utcnow()))[0][0]

    def min_inflight_depth(self, owner: str, scope: Scope | None = None) -> int | None:
        return self._query_scoped("min_inflight_depth", scope, owner, db_time(utcnow()))[0][0]

    def outstanding(self, owner: str, scope: Scope | None = None) -> bool:
        if scope is None:
            return bool(self._query("outstanding", db_time(utcnow()), owner)[0][0])
        extra = (scope.source_system, scope.source_name)
        return bool(self._query("outstanding_source", *extra, db_time(utcnow()), owner, *extra)[0][0])

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for source, status, count in self._query("counts"):
            out.setdefault(source, dict.fromkeys(STATUSES, 0))[status] = count
        return out

    def lease_summary(self) -> list[tuple[str, int, int]]:
        return [(row[0], row[1], row[2] or 0) for row in self._query("lease_summary", db_time(utcnow()))]

    def oldest_lease(self) -> dict[str, Any] | None:
        rows = self._query("oldest_lease")
        if not rows:
            return None
        names = ("dedupe_key", "lease_owner", "lease_expires_at", "claimed_at")
        return {name: text_time(value) for name, value in zip(names, rows[0], strict=True)}

    def failure_reasons(self, limit: int = 10) -> list[tuple[str, int]]:
        if limit <= 0:
            return []
        return [(row[0], row[1]) for row in self._query("failure_reasons", limit)]

    def get(self, dedupe_key: str) -> dict[str, Any] | None:
        def work(cur: Any) -> dict[str, Any] | None:
            cur.execute(self.sql["get"], dedupe_key)
            row = cur.fetchone()
            if row is None:
                return None
            return {d[0]: text_time(value) for d, value in zip(cur.description, row, strict=True)}

        return self.session.run("get", work)

    def close(self) -> None:
        self.session.close()
