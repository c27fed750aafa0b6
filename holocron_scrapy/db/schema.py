"""The one definition of holocron_scrapy's tables, as SQLAlchemy Core ``Table`` objects.

Why: the frontier and the record store each exist twice today (SQLite SQL and T-SQL), with twin
migration sets in ``sql/sqlite/`` and ``sql/``. Issue 10 replaces them with one implementation per
store on SQLAlchemy Core, for SQLite, PostgreSQL and SQL Server; this module is its first slice,
the schema that every backend must end up with. ``tests/test_db_schema.py`` proves that today's
SQLite migrations, ``metadata.create_all`` on a live PostgreSQL and the T-SQL scripts of ``sql/``
all agree with it (tables, columns, types, nullability, defaults, keys and indexes), so any change
to the schema has to be made here and in the migration files together.

Type mapping (SQLite / PostgreSQL / SQL Server):

* bounded text ``Unicode(n)``: ``VARCHAR(n)`` (TEXT affinity) / ``VARCHAR(n)`` / ``NVARCHAR(n)``;
  the bounds exist for SQL Server's index key limits (1700 bytes nonclustered, 900 clustered);
* unbounded text and JSON documents (:data:`LONG_TEXT`): ``TEXT`` / ``TEXT`` / ``NVARCHAR(MAX)``
  (never the deprecated ``NTEXT``); JSON stays text everywhere so that a payload is stored
  byte for byte as fetched (PostgreSQL's ``jsonb`` would reorder it). Its validity is checked
  per dialect: ``CHECK (ISJSON(payload) = 1)`` on SQL Server, a ``CHECK`` casting to ``json``
  on PostgreSQL (15 has no ``IS JSON``), and on SQLite the ``json_valid`` trigger of migration
  0003 (SQLite cannot add a ``CHECK`` to an existing table);
* times (:class:`UtcDateTime`): the same naive UTC instant on every backend: ``TEXT``
  ``'YYYY-MM-DD HH:MM:SS.ffffff'`` on SQLite (today's files, which sort like the instant and
  upgrade in place without rewriting a row), ``TIMESTAMP(6) WITHOUT TIME ZONE`` on PostgreSQL and
  ``DATETIME2(6)`` on SQL Server. Python sees timezone-aware UTC datetimes; an aware value is
  converted to UTC before it is stored, a naive one is taken as UTC;
* ``work_items.seq``: ``INTEGER PRIMARY KEY`` (the rowid) on SQLite, ``BIGINT`` identity elsewhere.

SQL Server keeps two names of its own (:func:`metadata_for`): the records table is
``IngestRecords`` (with its constraints ``pk_IngestRecords`` and ``ck_IngestRecords_payload_json``),
and every table lives in the configured schema (``[ingest]`` by default).

Pure: no I/O at import or anywhere else. Settings read: none. Stats written: none.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, postgresql

SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
SQLSERVER_DEFAULT_SCHEMA = "ingest"
# Tables whose SQL Server name differs from the one defined here (and their constraint names with them).
SQLSERVER_TABLE_NAMES = {"ingest_records": "IngestRecords"}

# Unbounded text: TEXT on SQLite and PostgreSQL, NVARCHAR(MAX) on SQL Server (not NTEXT).
LONG_TEXT = sa.UnicodeText().with_variant(mssql.NVARCHAR(), "mssql")
# work_items.seq: the rowid alias on SQLite (exactly INTEGER), BIGINT elsewhere.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A UTC instant: UTC text on SQLite, ``TIMESTAMP(6)`` on PostgreSQL, ``DATETIME2(6)`` on SQL Server.

    Binds accept aware or naive (taken as UTC) datetimes, and ISO text as today's stores write it;
    results are aware UTC datetimes.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Text())
        if dialect.name == "mssql":
            return dialect.type_descriptor(mssql.DATETIME2(precision=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=False, precision=6))
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        instant = as_utc(value)
        return instant.strftime(SQLITE_TIME_FORMAT) if dialect.name == "sqlite" else instant

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value).replace(tzinfo=UTC)


def as_utc(value: datetime | str) -> datetime:
    """*value* (a datetime, or ISO text such as ``'2026-12-02 18:00:00.000000'``) as a naive UTC datetime."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not a UTC time: {value!r} (expected 'YYYY-MM-DD HH:MM:SS.ffffff')") from exc
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or ISO text, got {type(value).__name__}")
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _zero() -> Any:
    return sa.text("0")


# SQLite: the trigger of sql/sqlite/0003 guards the payload (SQLite cannot add a CHECK to an existing table).
SQLITE_PAYLOAD_TRIGGER = """\
CREATE TRIGGER IF NOT EXISTS tr_ingest_records_payload_json_insert
BEFORE INSERT ON ingest_records
WHEN NOT json_valid(NEW.payload)
BEGIN
    SELECT RAISE(ABORT, 'ingest_records.payload must be valid JSON');
END"""
SQLITE_TRIGGERS = {"tr_ingest_records_payload_json_insert": "ingest_records"}


def build_metadata(*, schema: str | None = None, names: dict[str, str] | None = None) -> sa.MetaData:
    """Every table, in *schema*, with the table names of *names* (defined name -> name used).

    The one definition: :data:`metadata` is its plain form, :func:`metadata_for` its per-dialect forms.
    """
    md = sa.MetaData(schema=schema)
    names = names or {}

    def table(name: str, *items: Any) -> sa.Table:
        real = names.get(name, name)
        renamed = [_rename_constraint(item, name, real) for item in items]
        return sa.Table(real, md, *renamed)

    # -- the frontier ----------------------------------------------------------------------------
    work_items = table(
        "work_items",
        sa.Column("seq", SEQ, sa.Identity(start=1, increment=1), nullable=False),
        sa.Column("work_item_id", sa.Unicode(36), nullable=False),
        sa.Column("source_system", sa.Unicode(100), nullable=False),
        sa.Column("source_name", sa.Unicode(100), nullable=False),
        sa.Column("resource_type", sa.Unicode(100), nullable=False),
        sa.Column("resource_id", sa.Unicode(450), nullable=False),
        sa.Column("request_uri", LONG_TEXT, nullable=False),
        sa.Column("request_method", sa.Unicode(10), nullable=False, server_default="GET"),
        sa.Column("request_headers", LONG_TEXT),
        sa.Column("request_body", LONG_TEXT),
        sa.Column("metadata", LONG_TEXT),
        sa.Column("priority", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("depth", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("status", sa.Unicode(20), nullable=False, server_default="pending"),
        sa.Column("attempt", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("run_id", sa.Unicode(64)),
        sa.Column("discovered_from", LONG_TEXT),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("completed_at", UtcDateTime),
        sa.Column("error_message", LONG_TEXT),
        sa.Column("dedupe_key", sa.Unicode(850), nullable=False),
        sa.Column("lease_owner", sa.Unicode(200)),
        sa.Column("lease_expires_at", UtcDateTime),
        sa.Column("next_attempt_at", UtcDateTime),
        # 0006: a lost lease is not an attempt; an item lost twice is claimed alone (lease_solo), and
        # quarantined after too many losses while alone (solo_lease_losses).
        sa.Column("lease_losses", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("solo_lease_losses", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("lease_solo", sa.Integer, nullable=False, server_default=_zero()),
        sa.PrimaryKeyConstraint("seq", name="pk_work_items", mssql_clustered=True),
        sa.UniqueConstraint("work_item_id", name="uq_work_items_work_item_id", mssql_clustered=False),
        sa.CheckConstraint("status IN ('pending', 'in_progress', 'completed', 'failed')", name="ck_work_items_status"),
    )
    c = work_items.c
    sa.Index("ix_work_items_dedupe", c.dedupe_key, unique=True, mssql_clustered=False)
    # Dequeue: highest priority first, then insertion order.
    sa.Index(
        "ix_work_items_dequeue",
        c.status,
        c.priority.desc(),
        c.seq,
        mssql_clustered=False,
        mssql_include=["next_attempt_at"],
    )
    # Expired leases: only rows being worked on.
    in_progress = "status = 'in_progress'"
    sa.Index(
        "ix_work_items_leases",
        c.lease_expires_at,
        mssql_clustered=False,
        sqlite_where=sa.text(in_progress),
        postgresql_where=sa.text(in_progress),
        mssql_where=sa.text("status = N'in_progress'"),
    )
    sa.Index("ix_work_items_run_id", c.run_id, mssql_clustered=False)
    sa.Index("ix_work_items_source", c.source_system, c.source_name, c.status, mssql_clustered=False)
    # The claim of one source, best first.
    sa.Index(
        "ix_work_items_source_dequeue",
        c.source_system,
        c.source_name,
        c.status,
        c.priority.desc(),
        c.seq,
        mssql_clustered=False,
        mssql_include=["next_attempt_at", "lease_losses"],
    )

    # 0007: named checkpoints of a source's long-running steps, kept beside its work items (the seed
    # intake's position; later the recent-changes sync and generator listings). ``value`` is JSON.
    # Nonclustered on SQL Server: the key (up to 1600 bytes) is wider than a clustered key may be (900).
    table(
        "frontier_checkpoints",
        sa.Column("source_system", sa.Unicode(100), nullable=False),
        sa.Column("source_name", sa.Unicode(100), nullable=False),
        sa.Column("name", sa.Unicode(200), nullable=False),
        sa.Column("value", LONG_TEXT, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint(
            "source_system", "source_name", "name", name="pk_frontier_checkpoints", mssql_clustered=False
        ),
    )

    # 0008: fleet-wide politeness, one row per politeness key (a host; for MediaWiki sources the API
    # host), shared by every worker of the frontier (holocron_scrapy/frontier/politeness.py): the
    # configured delay and concurrency, the earliest time any worker may send (next_allowed_at), a
    # block (blocked_until, block_reason) from Retry-After/maxlag or from the backoff after repeated
    # 429/5xx (failures: how many in a row), and the requests in flight as expiring slot leases.
    table(
        "frontier_hosts",
        sa.Column("politeness_key", sa.Unicode(200), nullable=False),
        sa.Column("delay_s", sa.Float, nullable=False, server_default=_zero()),
        sa.Column("concurrency", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("next_allowed_at", UtcDateTime),
        sa.Column("blocked_until", UtcDateTime),
        sa.Column("block_reason", sa.Unicode(400)),
        sa.Column("failures", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("politeness_key", name="pk_frontier_hosts", mssql_clustered=True),
    )
    frontier_host_slots = table(
        "frontier_host_slots",
        sa.Column("slot_id", sa.Unicode(36), nullable=False),
        sa.Column("politeness_key", sa.Unicode(200), nullable=False),
        sa.Column("slot_owner", sa.Unicode(200), nullable=False),
        sa.Column("lease_expires_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("slot_id", name="pk_frontier_host_slots", mssql_clustered=False),
    )
    c = frontier_host_slots.c
    # The live slots of a key (counted under the key's row lock), and the owner's (released at close).
    sa.Index("ix_frontier_host_slots_key", c.politeness_key, c.lease_expires_at, mssql_clustered=True)
    sa.Index("ix_frontier_host_slots_owner", c.slot_owner, mssql_clustered=False)

    # -- the records -----------------------------------------------------------------------------
    ingest_records = table(
        "ingest_records",
        sa.Column("ingest_id", sa.Unicode(64), nullable=False),
        sa.Column("source_system", sa.Unicode(100), nullable=False),
        sa.Column("source_name", sa.Unicode(100), nullable=False),
        sa.Column("resource_type", sa.Unicode(100), nullable=False),
        sa.Column("resource_id", sa.Unicode(450), nullable=False),
        sa.Column("requested_id", LONG_TEXT),
        sa.Column("outcome", sa.Unicode(50), nullable=False),
        sa.Column("request_uri", LONG_TEXT, nullable=False),
        sa.Column("request_method", sa.Unicode(10), nullable=False),
        sa.Column("request_headers", LONG_TEXT),
        sa.Column("status_code", sa.Integer),
        sa.Column("content_type", LONG_TEXT),
        sa.Column("response_headers", LONG_TEXT),
        sa.Column("fetched_at_utc", UtcDateTime, nullable=False),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("hash_sha256", sa.Unicode(64), nullable=False),
        sa.Column("run_id", sa.Unicode(64)),
        sa.Column("work_item_id", sa.Unicode(36)),
        sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("error_message", LONG_TEXT),
        sa.Column("lake_path", sa.Unicode(1024)),
        sa.Column("payload", LONG_TEXT, nullable=False),
        # Append-mostly: on SQL Server a heap with a nonclustered key (no page splits on random ids).
        sa.PrimaryKeyConstraint("ingest_id", name="pk_ingest_records", mssql_clustered=False),
        sa.CheckConstraint("ISJSON(payload) = 1", name="ck_ingest_records_payload_json").ddl_if(dialect="mssql"),
        sa.CheckConstraint("(payload::json) IS NOT NULL", name="ck_ingest_records_payload_json").ddl_if(
            dialect="postgresql"
        ),
    )
    sa.event.listen(ingest_records, "after_create", sa.DDL(SQLITE_PAYLOAD_TRIGGER).execute_if(dialect="sqlite"))
    c = ingest_records.c
    resource = (c.source_system, c.source_name, c.resource_type, c.resource_id)
    sa.Index("ix_ingest_records_resource", *resource, c.fetched_at_utc, mssql_clustered=False)
    # One record per distinct payload of a resource: a second copy of the same version is rejected.
    sa.Index("ux_ingest_records_version", *resource, c.hash_sha256, unique=True, mssql_clustered=False)
    sa.Index("ix_ingest_records_run_id", c.run_id, mssql_clustered=False)
    sa.Index("ix_ingest_records_hash", c.hash_sha256, mssql_clustered=False)

    ingest_runs = table(
        "ingest_runs",
        sa.Column("run_id", sa.Unicode(64), nullable=False),
        sa.Column("spider", sa.Unicode(100), nullable=False),
        sa.Column("source_system", sa.Unicode(100)),
        sa.Column("source_name", sa.Unicode(100)),
        sa.Column("status", sa.Unicode(50), nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("finished_at", UtcDateTime),
        sa.Column("duration_s", sa.Float),
        sa.Column("pages_stored", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("pages_unchanged", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("pages_missing", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("pages_failed", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("requests", sa.Integer, nullable=False, server_default=_zero()),
        sa.Column("finish_reason", sa.Unicode(200)),
        sa.Column("summary", LONG_TEXT),
        sa.PrimaryKeyConstraint("run_id", name="pk_ingest_runs", mssql_clustered=True),
    )
    sa.Index("ix_ingest_runs_started", ingest_runs.c.started_at, mssql_clustered=False)

    seen_resources = table(
        "seen_resources",
        sa.Column("dedupe_key", sa.Unicode(850), nullable=False),
        sa.Column("source_system", sa.Unicode(100), nullable=False),
        sa.Column("source_name", sa.Unicode(100), nullable=False),
        sa.Column("resource_type", sa.Unicode(100), nullable=False),
        sa.Column("resource_id", sa.Unicode(450), nullable=False),
        sa.Column("last_hash_sha256", sa.Unicode(64)),
        sa.Column("last_revision_id", sa.BigInteger),
        sa.Column("etag", LONG_TEXT),
        sa.Column("last_modified", LONG_TEXT),
        sa.Column("last_fetched_at", UtcDateTime),
        sa.Column("last_changed_at", UtcDateTime),
        # dedupe_key (1700 bytes) is too wide to cluster on SQL Server: the source index is clustered.
        sa.PrimaryKeyConstraint("dedupe_key", name="pk_seen_resources", mssql_clustered=False),
    )
    c = seen_resources.c
    sa.Index("ix_seen_resources_source", c.source_system, c.source_name, mssql_clustered=True)
    # Incremental re-crawls look a resource's last version up by source and resource id.
    sa.Index("ix_seen_resources_resource", c.source_system, c.source_name, c.resource_id, mssql_clustered=False)

    # -- bookkeeping -----------------------------------------------------------------------------
    table(
        "schema_migrations",
        sa.Column("version", sa.Unicode(20), nullable=False),
        sa.Column("name", sa.Unicode(200), nullable=False),
        sa.Column("applied_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_schema_migrations"),
    )
    return md


def _rename_constraint(item: Any, name: str, real: str) -> Any:
    """A named constraint of table *name* takes the table's *real* name (pk_ingest_records -> pk_IngestRecords)."""
    if real != name and isinstance(item, sa.Constraint) and isinstance(item.name, str):
        item.name = item.name.replace(name, real)
    return item


metadata = build_metadata()
work_items = metadata.tables["work_items"]
ingest_records = metadata.tables["ingest_records"]
ingest_runs = metadata.tables["ingest_runs"]
seen_resources = metadata.tables["seen_resources"]
frontier_checkpoints = metadata.tables["frontier_checkpoints"]
frontier_hosts = metadata.tables["frontier_hosts"]
frontier_host_slots = metadata.tables["frontier_host_slots"]
schema_migrations = metadata.tables["schema_migrations"]


def metadata_for(dialect: str, *, schema: str | None = None) -> sa.MetaData:
    """The tables as *dialect* (``sqlite``, ``postgresql``, ``mssql``) names them, in *schema*.

    SQL Server gets its own table names (:data:`SQLSERVER_TABLE_NAMES`, constraints renamed with
    their table) and the schema ``ingest`` unless *schema* says otherwise. Without *schema*,
    SQLite and PostgreSQL use :data:`metadata` itself.
    """
    if dialect == "mssql":
        return build_metadata(schema=schema or SQLSERVER_DEFAULT_SCHEMA, names=SQLSERVER_TABLE_NAMES)
    if schema is None:
        return metadata
    return build_metadata(schema=schema)
