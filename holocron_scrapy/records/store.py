"""Write IngestRecords rows and run summaries; read the latest record and version of a resource.

:class:`SqlRecordStore` keeps the ``ingest_records`` / ``ingest_runs`` / ``seen_resources`` tables
of :mod:`holocron_scrapy.db.schema` on SQLAlchemy Core, for SQLite (``sqlite:///path``),
PostgreSQL (``postgresql://...``) and SQL Server (``mssql+pyodbc://``, ``sqlserver://``: the
records table is ``[<schema>].[IngestRecords]``, :data:`MSSQL_TABLES`). :func:`open_record_store`
opens it on the URL's engine. The row shapes it reads and writes are in
:mod:`holocron_scrapy.records.rows`; the few statements that differ per dialect are in
:mod:`holocron_scrapy.records.dialects`.

Insert-if-new is ``INSERT ... ON CONFLICT (resource, hash_sha256) DO NOTHING`` (SQLite and
PostgreSQL spell it alike); SQL Server has no ``ON CONFLICT``: each row is one ``INSERT ... OUTPUT
inserted.ingest_id SELECT ... WHERE NOT EXISTS (... WITH (UPDLOCK, HOLDLOCK) ...)``. The "inserted"
flags are exact per row, also when two workers race for one version (the second waits for the
first's commit, then skips): on PostgreSQL the batch is one statement whose ``RETURNING ingest_id``
names the rows inserted; on SQLite each row's ``rowcount`` says it, on SQL Server each row's
``OUTPUT``. The upserts (``seen_resources``, ``ingest_runs``) are ``ON CONFLICT DO UPDATE``, and on
SQL Server an ``UPDATE ... WITH (UPDLOCK, SERIALIZABLE)`` followed by an ``INSERT`` when it changed
no row. Payloads are JSON text, stored byte for byte (validated by the SQLite trigger, the
PostgreSQL ``CHECK`` and SQL Server's ``ISJSON`` CHECK).

SQLite's hot paths (the insert and its versions upsert, the change filter's per-item
``latest_record``, the spiders' per-batch ``versions``, the pages of ``iter_records``) run their
Core statements' compiled SQL on the DB-API cursor: through SQLAlchemy's execution they cost 1.2
to 7 times as much (``python -m benchmarks.records_store_ops``, docs/benchmarks.md). The rest,
and every statement on PostgreSQL, goes through SQLAlchemy.

Settings read: none (callers pass the URL). Stats written: none.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from holocron_scrapy.db import schema
from holocron_scrapy.db.engine import MSSQL, READ_ONLY, SQLITE, describe_engine
from holocron_scrapy.errors import StoreError
from holocron_scrapy.records.dialects import (
    MSSQL_TABLES,
    dbapi_cursor,
    dialect_insert,
    mssql_insert_if_new,
    mssql_upsert,
    resource_key,
    run_mssql_upsert,
)
from holocron_scrapy.records.rows import (
    HELD_COLUMNS,
    KEY_NAMES,
    META_COLUMNS,
    RECORD_COLUMNS,
    RUN_COLUMNS,
    SEEN_COLUMNS,
    VERSION_PARAMS,
    VERSION_UPDATES,
    held_row,
    meta_record,
    seen_version,
    version_params,
)

# Lists of values (ids, paths) are looked up this many at a time (bound parameters per statement).
IN_CHUNK = 500


class RecordStore(ABC):
    @abstractmethod
    def insert(self, rows: list[dict[str, Any]], *, record_versions: bool = False) -> list[bool]:
        """Insert *rows* in one transaction (all or none); a row whose resource already has a
        record with the same hash is skipped. With *record_versions*, the ``seen_resources``
        versions of the rows (``item_row`` plus version fields; a skipped row's version has its
        record already) are upserted in the same transaction. Returns, per row, whether it was
        inserted."""

    @abstractmethod
    def latest_hash(self, source_system: str, source_name: str, resource_type: str, resource_id: str) -> str | None:
        """Hash of the newest stored record of a resource, or None."""

    @abstractmethod
    def latest_record(
        self, source_system: str, source_name: str, resource_type: str, resource_id: str
    ) -> dict[str, Any] | None:
        """The newest stored record of a resource (``META_COLUMNS``: every column but the
        payload; times as UTC text), or None."""

    @abstractmethod
    def records_by_ids(self, ingest_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The records (``META_COLUMNS``) with these ``ingest_id`` values (the key), by ingest id."""

    @abstractmethod
    def records_by_lake_path(self, lake_paths: list[str]) -> dict[str, dict[str, Any]]:
        """The records (``META_COLUMNS``) whose ``lake_path`` is one of *lake_paths*, by lake path
        (no index: for the few lake files too damaged to name their ingest id)."""

    @abstractmethod
    def iter_records(self, source_name: str | None = None, batch_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Every record (``META_COLUMNS``, optionally of one source) in batches of at most
        *batch_size*, in ``ingest_id`` order (keyset pagination: memory stays flat)."""

    @abstractmethod
    def write_run(self, summary: dict[str, Any]) -> None:
        """Insert or update the ``ingest_runs`` row of ``summary["run_id"]``."""

    @abstractmethod
    def versions(self, source_system: str, source_name: str, resource_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``seen_resources``: the last stored version of each resource id (any resource type):
        ``{resource_id: {hash_sha256, revision_id, etag, last_modified, last_fetched_at}}``."""

    @abstractmethod
    def record_versions(self, rows: list[dict[str, Any]]) -> None:
        """Upsert ``seen_resources`` for freshly stored rows (``item_row`` plus version fields)."""

    @abstractmethod
    def held_versions(self, keys: list[tuple[str, str, str | None, str]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The version held of each resource key ``(source_system, source_name, resource_type,
        resource_id)`` (a type of None: any), with its ``ingest_records`` row (``record``); keys not
        held are left out."""

    @abstractmethod
    def count(self, **where: Any) -> int: ...

    @abstractmethod
    def close(self) -> None: ...


class SqlRecordStore(RecordStore):
    """``ingest_records`` / ``ingest_runs`` / ``seen_resources`` on a SQLAlchemy *engine* (SQLite or
    PostgreSQL, schema up to date: :func:`holocron_scrapy.db.engine.open_engine`).

    The store holds one connection, as the SQLite store always did (one writer thread at a time uses
    it); each method is one transaction. Writes begin with ``BEGIN IMMEDIATE`` on SQLite, reads with a
    deferred ``BEGIN`` or, on the hot paths, none (a WAL reader never waits for a writer). Errors
    come out as the driver's own exceptions (``sqlite3.IntegrityError``, ``psycopg.errors...``), as
    they did before SQLAlchemy. With *owns_engine* :meth:`close` also disposes of the engine.
    """

    def __init__(self, engine: sa.Engine, *, owns_engine: bool = False):
        self.engine = engine
        self.dialect = engine.dialect.name
        self._owns_engine = owns_engine
        seen, runs = schema.seen_resources, schema.ingest_runs
        #: The records table (SQL Server's is ``IngestRecords``).
        self._records = records = MSSQL_TABLES["IngestRecords"] if self.dialect == MSSQL else schema.ingest_records
        self._mssql: dict[str, Any] = {}
        if self.dialect == MSSQL:  # no ON CONFLICT: guarded inserts and update-then-insert upserts
            self._insert_records = mssql_insert_if_new(records)
            self._mssql["versions"] = mssql_upsert(seen, "dedupe_key", VERSION_UPDATES)
            self._mssql["run"] = mssql_upsert(runs, "run_id", RUN_COLUMNS[1:])
        else:
            insert = dialect_insert(self.dialect)
            # Insert-if-new on the version key (resource + hash); RETURNING names the rows really inserted.
            insert_if_new = insert(records).on_conflict_do_nothing(
                index_elements=[*resource_key(records), records.c.hash_sha256]
            )
            self._insert_records = insert_if_new.returning(records.c.ingest_id)
            upsert = insert(seen)
            self._upsert_versions = upsert.on_conflict_do_update(
                index_elements=[seen.c.dedupe_key],
                set_={c: upsert.excluded[c] for c in VERSION_UPDATES},
            )
            upsert = insert(runs)
            self._upsert_run = upsert.on_conflict_do_update(
                index_elements=[runs.c.run_id],
                set_={c: upsert.excluded[c] for c in RUN_COLUMNS if c != "run_id"},
            )
        meta = [self._read_column(records.c[c]) for c in META_COLUMNS]
        self._meta = sa.select(*meta)
        latest = (
            sa.select(*meta)
            .where(*(col == sa.bindparam(col.name) for col in resource_key(records)))
            .order_by(records.c.fetched_at_utc.desc())
        )
        if self.dialect == MSSQL:  # TOP 1 (a LIMIT/OFFSET of expressions would become a ROW_NUMBER() subquery)
            self._latest = latest.limit(1)
        else:  # SQLite's LIMIT always comes with an OFFSET
            self._latest = latest.limit(sa.literal_column("1")).offset(sa.literal_column("0"))
        # SQLite's hot paths: these statements' compiled SQL, run on the DB-API cursor (module docstring).
        self._sqlite: dict[str, str] = {}
        if self.dialect == SQLITE:
            for name, statement, keys in (
                ("insert", insert_if_new, RECORD_COLUMNS),  # one row at a time: its rowcount is its flag
                ("versions", self._upsert_versions, VERSION_PARAMS),  # executemany
                ("latest", self._latest, KEY_NAMES),  # the change filter's per-item lookup, on the reactor
            ):
                compiled = statement.compile(dialect=engine.dialect, column_keys=list(keys))
                assert tuple(compiled.positiontup or ()) == keys, (name, compiled.positiontup)
                self._sqlite[name] = compiled.string
        self._process_time = functools.partial(schema.UtcDateTime().process_bind_param, dialect=engine.dialect)
        self._connected: sa.Connection | None = None

    @property
    def _connection(self) -> sa.Connection:
        """The store's one connection, opened on first use (the engine was connected and migrated by
        :func:`holocron_scrapy.db.engine.open_engine` already)."""
        if self._connected is None:
            self._connected = self.engine.connect()
        return self._connected

    # -- plumbing ----------------------------------------------------------------------------------
    def _read_column(self, column: sa.Column[Any]) -> Any:
        """*column* as the lookups read it: a SQLite time as its stored UTC text (what the callers want,
        without a round trip through datetime per row), everything else as it is."""
        if self.dialect == SQLITE and isinstance(column.type, schema.UtcDateTime):
            return sa.type_coerce(column, sa.UnicodeText).label(column.name)
        return column

    @property
    def records_table(self) -> sa.Table:
        """The ``ingest_records`` table as this store's database names it (SQL Server: ``IngestRecords``)."""
        return self._records

    @property
    def conn(self) -> Any:
        """The DB-API connection under the store (``sqlite3.Connection`` / ``psycopg.Connection``)."""
        return self._connection.connection.dbapi_connection

    def describe(self) -> str:
        """The database, as an error line names it (password masked)."""
        if self.dialect == MSSQL:
            return describe_engine(self.engine)
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def _begin(self, *, write: bool) -> Iterator[sa.Connection]:
        """One transaction on the store's connection; a driver error is raised as itself."""
        conn = self._connection.execution_options(**{READ_ONLY: not write})
        try:
            with conn.begin():
                yield conn
        except sa.exc.DBAPIError as exc:
            if isinstance(exc.orig, BaseException):
                raise exc.orig from None
            raise

    # -- records -----------------------------------------------------------------------------------
    def insert(self, rows: list[dict[str, Any]], *, record_versions: bool = False) -> list[bool]:
        if not rows:
            return []
        with self._begin(write=True) as conn:
            if "insert" in self._sqlite:
                inserted = self._sqlite_insert(conn, rows)
            elif self.dialect == MSSQL:  # one guarded INSERT per row; its OUTPUT says whether it inserted
                inserted = [
                    bool(conn.execute(self._insert_records, {c: row[c] for c in RECORD_COLUMNS}).all()) for row in rows
                ]
            else:
                params = [{c: row[c] for c in RECORD_COLUMNS} for row in rows]
                stored = set(conn.execute(self._insert_records, params).scalars())
                # A second row of one ingest id in the batch is never inserted (it conflicts with the first).
                first: set[str] = set()
                inserted = []
                for row in rows:
                    ingest_id = row["ingest_id"]
                    inserted.append(ingest_id in stored and ingest_id not in first)
                    first.add(ingest_id)
            if record_versions:  # "seen" only with the record, in the same transaction
                # A row not inserted has its version's record already (the conflict on resource and
                # hash proves it): that version is the one held now, so it is recorded as well.
                self._write_versions(conn, rows)
        return inserted

    def _bind_time(self, value: Any) -> Any:
        """A time as the SQLite fast paths bind it: UtcDateTime's text (what ``item_row`` already gives)."""
        if isinstance(value, str) and len(value) == 26 and value[10] == " " and value[19] == ".":
            return value  # 'YYYY-MM-DD HH:MM:SS.ffffff' already
        return self._process_time(value)

    def _sqlite_insert(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> list[bool]:
        cursor = dbapi_cursor(conn)
        sql, at = self._sqlite["insert"], RECORD_COLUMNS.index("fetched_at_utc")
        inserted = []
        for row in rows:
            params = [row[c] for c in RECORD_COLUMNS]
            params[at] = self._bind_time(params[at])
            cursor.execute(sql, params)
            inserted.append(cursor.rowcount == 1)
        return inserted

    def latest_hash(self, source_system: str, source_name: str, resource_type: str, resource_id: str) -> str | None:
        record = self.latest_record(source_system, source_name, resource_type, resource_id)
        return None if record is None else record["hash_sha256"]

    def latest_record(
        self, source_system: str, source_name: str, resource_type: str, resource_id: str
    ) -> dict[str, Any] | None:
        key = (source_system, source_name, resource_type, resource_id)
        if "latest" in self._sqlite:  # one implicit read transaction; times are the stored UTC text
            row = self.conn.execute(self._sqlite["latest"], key).fetchone()
        else:
            with self._begin(write=False) as conn:
                row = conn.execute(self._latest, dict(zip(KEY_NAMES, key, strict=True))).first()
        return None if row is None else meta_record(row)

    def _records_where(self, column: str, values: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if not values:
            return out
        query = self._where_in(column)
        with self._begin(write=False) as conn:
            for start in range(0, len(values), IN_CHUNK):
                for row in conn.execute(query, {"values": values[start : start + IN_CHUNK]}):
                    record = meta_record(row)
                    out[record[column]] = record
        return out

    def _where_in(self, column: str) -> sa.Select[Any]:
        """The records whose *column* is one of the list bound as ``values``."""
        return self._meta.where(self._records.c[column].in_(sa.bindparam("values", expanding=True)))

    def records_by_ids(self, ingest_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._records_where("ingest_id", ingest_ids)

    def records_by_lake_path(self, lake_paths: list[str]) -> dict[str, dict[str, Any]]:
        return self._records_where("lake_path", lake_paths)

    def _page(self, by_source: bool) -> sa.Select[Any]:
        """A page of :meth:`iter_records`: binds ``after``, (with *by_source*) ``source_name``, ``size``."""
        records = self._records
        page = self._meta.where(records.c.ingest_id > sa.bindparam("after"))
        if by_source:
            page = page.where(records.c.source_name == sa.bindparam("source_name"))
        page = page.order_by(records.c.ingest_id)
        size = sa.bindparam("size", type_=sa.Integer)
        if self.dialect == MSSQL:  # SELECT TOP (?): a bound LIMIT would become a ROW_NUMBER() subquery
            return page.prefix_with(sa.text("TOP (:size)").bindparams(size), dialect=MSSQL)
        return page.limit(size).offset(sa.literal_column("0"))

    def iter_records(self, source_name: str | None = None, batch_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        page = self._page(source_name is not None)
        names = ("after", "source_name", "size") if source_name is not None else ("after", "size")
        sql = None
        if self.dialect == SQLITE:  # thousands of rows a page: compiled SQL on the cursor, times as stored
            compiled = page.compile(dialect=self.engine.dialect)
            assert tuple(compiled.positiontup or ()) == names, compiled.positiontup
            sql = compiled.string
        after = ""
        while True:  # one short (read) transaction per page: nothing is held open between pages
            params = {"after": after, "source_name": source_name, "size": batch_size}
            if sql is not None:
                rows = self.conn.execute(sql, tuple(params[n] for n in names)).fetchall()
            else:
                with self._begin(write=False) as conn:
                    rows = conn.execute(page, params).all()
            if not rows:
                return
            found = [meta_record(row) for row in rows]
            yield found
            after = found[-1]["ingest_id"]

    def count(self, **where: Any) -> int:
        unknown = [c for c in where if c not in RECORD_COLUMNS]
        if unknown:
            raise StoreError(f"unknown ingest_records column(s): {', '.join(map(str, unknown))}")
        with self._begin(write=False) as conn:
            return int(conn.execute(self._count(tuple(where)), where).scalar_one())

    def _count(self, columns: tuple[str, ...]) -> sa.Select[Any]:
        """``count(*)`` of the records whose *columns* equal the values bound under their names."""
        records = self._records
        query = sa.select(sa.func.count()).select_from(records)
        return query.where(*(records.c[c] == sa.bindparam(c, type_=records.c[c].type) for c in columns))

    # -- runs --------------------------------------------------------------------------------------
    def write_run(self, summary: dict[str, Any]) -> None:
        row = {c: summary.get(c) for c in RUN_COLUMNS}
        if not isinstance(row["summary"], (str, type(None))):
            row["summary"] = json.dumps(row["summary"], ensure_ascii=False, default=str)
        with self._begin(write=True) as conn:
            if self.dialect == MSSQL:
                run_mssql_upsert(conn, self._mssql["run"], [row])
            else:
                conn.execute(self._upsert_run, row)

    # -- versions (seen_resources) -----------------------------------------------------------------
    def versions(self, source_system: str, source_name: str, resource_ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(resource_ids))
        chunks = [ids[start : start + IN_CHUNK] for start in range(0, len(ids), IN_CHUNK)]
        if not chunks:
            return out
        if self.dialect == SQLITE:  # a hot path (the spiders' per-batch check): compiled SQL on the cursor
            cursor = self.conn.cursor()
            for chunk in chunks:
                for row in cursor.execute(self._versions_sql(len(chunk)), (source_system, source_name, *chunk)):
                    out[row[0]] = seen_version(tuple(row))
            return out
        with self._begin(write=False) as conn:
            for chunk in chunks:
                params = {"source_system": source_system, "source_name": source_name}
                params |= {f"id_{i}": value for i, value in enumerate(chunk)}
                for row in conn.execute(self._versions_query(len(chunk)), params):
                    out[row[0]] = seen_version(tuple(row))
        return out

    def _versions_query(self, n: int) -> sa.Select[Any]:
        """The last versions of *n* resource ids of one source (binds ``source_system``,
        ``source_name``, ``id_0`` ... ``id_<n-1>``), oldest fetch first: the newest wins."""
        seen = schema.seen_resources
        return (
            sa.select(*(self._read_column(seen.c[c]) for c in SEEN_COLUMNS))
            .where(seen.c.source_system == sa.bindparam("source_system"))
            .where(seen.c.source_name == sa.bindparam("source_name"))
            .where(seen.c.resource_id.in_([sa.bindparam(f"id_{i}") for i in range(n)]))
            .order_by(seen.c.last_fetched_at)
        )

    def _versions_sql(self, n: int) -> str:
        sql = self._sqlite.get(f"versions_{n}")
        if sql is None:
            compiled = self._versions_query(n).compile(dialect=self.engine.dialect)
            names = ("source_system", "source_name", *(f"id_{i}" for i in range(n)))
            assert tuple(compiled.positiontup or ()) == names, compiled.positiontup
            sql = self._sqlite[f"versions_{n}"] = compiled.string
        return sql

    def held_versions(self, keys: list[tuple[str, str, str | None, str]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The version held of each resource key ``(source_system, source_name, resource_type,
        resource_id)``, from ``seen_resources``, with the ``ingest_records`` row of that version
        (``record``: ``META_COLUMNS``, None if absent). A key whose resource type is None matches
        any type (the newest fetch wins). One statement per 500 keys (the typed keys by primary
        key, the others per source by ``ix_seen_resources_resource``); the record joins on the
        unique ``(resource, hash_sha256)`` index. Keys not held are left out."""
        from holocron_scrapy.frontier.keys import make_dedupe_key

        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        typed: dict[str, tuple[Any, ...]] = {}
        untyped: dict[tuple[str, str], dict[str, tuple[Any, ...]]] = {}
        for key in dict.fromkeys(keys):
            system, name, kind, rid = key
            if kind is None:
                untyped.setdefault((system, name), {})[rid] = key
            else:
                typed[make_dedupe_key(system, name, kind, rid)] = key
        chunks: list[tuple[bool, tuple[Any, ...], list[str], dict[str, tuple[Any, ...]]]] = []
        dedupe = list(typed)
        for start in range(0, len(dedupe), IN_CHUNK):
            chunks.append((True, (), dedupe[start : start + IN_CHUNK], typed))
        for (system, name), by_id in untyped.items():
            ids = list(by_id)
            for start in range(0, len(ids), IN_CHUNK):
                chunks.append((False, (system, name), ids[start : start + IN_CHUNK], by_id))
        if not chunks:
            return out
        if self.dialect == SQLITE:  # the change filter's lookup: compiled SQL on the cursor (module docstring)
            cursor = self.conn.cursor()
            for is_typed, source, values, by in chunks:
                for row in cursor.execute(self._held_statement(is_typed, len(values)), (*source, *values)):
                    version = held_row(row)
                    dedupe_key = version.pop("dedupe_key")
                    out[by[dedupe_key if is_typed else version["resource_id"]]] = version
            return out
        with self._begin(write=False) as conn:
            for is_typed, source, values, by in chunks:
                params = dict(zip(("system", "name"), source, strict=False))  # typed keys: no source
                params |= {f"id_{i}": value for i, value in enumerate(values)}
                for row in conn.execute(self._held_statement(is_typed, len(values)), params):
                    version = held_row(row)
                    dedupe_key = version.pop("dedupe_key")
                    out[by[dedupe_key if is_typed else version["resource_id"]]] = version
        return out

    def _held_statement(self, typed: bool, n: int) -> Any:
        """The lookup of *n* typed keys (binds ``id_0`` ... dedupe keys) or of *n* resource ids of one
        source (binds ``system``, ``name``, ``id_0`` ..., oldest fetch first: the newest wins), made
        once per shape; on SQLite its compiled SQL, run on the cursor."""
        cache: dict[tuple[bool, int], Any] = self.__dict__.setdefault("_held_statements", {})
        statement = cache.get((typed, n))
        if statement is not None:
            return statement
        seen = schema.seen_resources
        ids: list[sa.BindParameter[Any]] = [sa.bindparam(f"id_{i}") for i in range(n)]
        names: tuple[str, ...] = tuple(f"id_{i}" for i in range(n))
        if typed:
            statement = self._held_query().where(seen.c.dedupe_key.in_(ids))
        else:
            statement = (
                self._held_query()
                .where(seen.c.source_system == sa.bindparam("system"), seen.c.source_name == sa.bindparam("name"))
                .where(seen.c.resource_id.in_(ids))
                .order_by(seen.c.last_fetched_at)
            )
            names = ("system", "name", *names)
        if self.dialect == SQLITE:
            compiled = statement.compile(dialect=self.engine.dialect)
            assert tuple(compiled.positiontup or ()) == names, compiled.positiontup
            statement = compiled.string
        cache[(typed, n)] = statement
        return statement

    def _held_query(self) -> sa.Select[Any]:
        seen, records = schema.seen_resources, self._records  # SQL Server's is IngestRecords
        version = sa.and_(
            *(record_col == seen.c[record_col.name] for record_col in resource_key(records)),
            records.c.hash_sha256 == seen.c.last_hash_sha256,
        )
        columns = [self._read_column(seen.c[c]) for c in HELD_COLUMNS]
        columns += [self._read_column(records.c[c]).label(f"r_{c}") for c in META_COLUMNS]
        return sa.select(*columns).select_from(seen.outerjoin(records, version))

    def record_versions(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self._begin(write=True) as conn:
            self._write_versions(conn, rows)

    def _write_versions(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        # One row per resource (the last wins, as one upsert after another would): PostgreSQL refuses
        # to update one row twice in a statement, and SQLAlchemy sends the rows as one statement.
        latest = {}
        for row in rows:
            params = version_params(row)
            latest[params[0]] = params  # by dedupe key
        if not latest:
            return
        if self.dialect == MSSQL:
            run_mssql_upsert(
                conn, self._mssql["versions"], [dict(zip(VERSION_PARAMS, p, strict=True)) for p in latest.values()]
            )
            return
        if "versions" not in self._sqlite:
            conn.execute(self._upsert_versions, [dict(zip(VERSION_PARAMS, p, strict=True)) for p in latest.values()])
            return
        time = self._bind_time
        bound = [(*p[:-2], time(p[-2]), time(p[-1])) for p in latest.values()]
        dbapi_cursor(conn).executemany(self._sqlite["versions"], bound)

    def statements(self) -> dict[str, sa.Executable]:
        """Every statement this store runs through SQLAlchemy on its dialect, by name (SQLite's hot paths run
        the compiled SQL of the same statements); the offline T-SQL check compiles and parses them."""
        found: dict[str, sa.Executable] = {
            "insert": self._insert_records,
            "latest": self._latest,
            "by_ingest_id": self._where_in("ingest_id"),
            "by_lake_path": self._where_in("lake_path"),
            "page": self._page(False),
            "page_of_source": self._page(True),
            "count": self._count(()),
            "count_where": self._count(("source_name", "resource_id")),
            "versions": self._versions_query(2),
        }
        if hasattr(self, "_held_query"):
            found["held_versions"] = self._held_query()
        if self.dialect == MSSQL:
            for name in ("versions", "run"):
                found[f"upsert_{name}_update"], found[f"upsert_{name}_insert"] = self._mssql[name]
        else:
            found |= {"upsert_versions": self._upsert_versions, "upsert_run": self._upsert_run}
        return found

    def close(self) -> None:
        try:
            if self._connected is not None:
                self._connected.close()
        finally:
            if self._owns_engine:
                self.engine.dispose()


def open_record_store(
    url: str, *, setting: str = "HOLOCRON_RECORDS_URL", sqlserver_config: dict[str, Any] | None = None
) -> RecordStore:
    """Open the records backend named by the store *url* (schema brought up to date): a
    :class:`SqlRecordStore` on :func:`holocron_scrapy.db.engine.open_engine`, for ``sqlite:///``,
    ``postgresql://``, ``mssql+pyodbc://`` and ``sqlserver://``. For SQL Server the connection
    settings, schema included, come from :meth:`SqlServerSettings.resolve` (``INGEST_SQLSERVER_*``
    first, then *sqlserver_config*, the YAML ``sql_server`` section).
    """
    from holocron_scrapy.db.engine import open_engine

    return SqlRecordStore(open_engine(url, setting=setting, sqlserver_config=sqlserver_config), owns_engine=True)
