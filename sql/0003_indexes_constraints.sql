-- 0003: indexes and constraints, the twins of sql/sqlite/0003_indexes_constraints.sql.
-- Every object is created only when sys.indexes / sys.check_constraints lacks it.

-- Dedupe: one work item per dedupe_key (1700 bytes, the nonclustered key limit).
IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[work_items]') AND name = N'ix_work_items_dedupe'
)
BEGIN
    CREATE UNIQUE NONCLUSTERED INDEX ix_work_items_dedupe
        ON [ingest].[work_items] (dedupe_key);
END
GO

-- Dequeue: highest priority first, then insertion order.
IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[work_items]') AND name = N'ix_work_items_dequeue'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_work_items_dequeue
        ON [ingest].[work_items] (status, priority DESC, seq)
        INCLUDE (next_attempt_at);
END
GO

-- Expired leases: only rows being worked on (a filtered index; sessions need
-- QUOTED_IDENTIFIER and ANSI_NULLS ON, which holocron_scrapy.db.sqlserver.connect sets).
IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[work_items]') AND name = N'ix_work_items_leases'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_work_items_leases
        ON [ingest].[work_items] (lease_expires_at)
        WHERE status = N'in_progress';
END
GO

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[work_items]') AND name = N'ix_work_items_run_id'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_work_items_run_id
        ON [ingest].[work_items] (run_id);
END
GO

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[work_items]') AND name = N'ix_work_items_source'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_work_items_source
        ON [ingest].[work_items] (source_system, source_name, status);
END
GO

-- Records: latest fetch of a resource (key 1508 bytes < 1700).
IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[IngestRecords]') AND name = N'ix_ingest_records_resource'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_ingest_records_resource
        ON [ingest].[IngestRecords] (source_system, source_name, resource_type, resource_id, fetched_at_utc);
END
GO

-- One record per distinct payload of a resource: a second copy of the same version
-- (two workers racing on one page) is rejected (key 1628 bytes < 1700).
IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[IngestRecords]') AND name = N'ux_ingest_records_version'
)
BEGIN
    CREATE UNIQUE NONCLUSTERED INDEX ux_ingest_records_version
        ON [ingest].[IngestRecords] (source_system, source_name, resource_type, resource_id, hash_sha256);
END
GO

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[IngestRecords]') AND name = N'ix_ingest_records_run_id'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_ingest_records_run_id
        ON [ingest].[IngestRecords] (run_id);
END
GO

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[IngestRecords]') AND name = N'ix_ingest_records_hash'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_ingest_records_hash
        ON [ingest].[IngestRecords] (hash_sha256);
END
GO

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[ingest_runs]') AND name = N'ix_ingest_runs_started'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_ingest_runs_started
        ON [ingest].[ingest_runs] (started_at);
END
GO

-- seen_resources is clustered on its source (its primary key is too wide to cluster).
IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[seen_resources]') AND name = N'ix_seen_resources_source'
)
BEGIN
    CREATE CLUSTERED INDEX ix_seen_resources_source
        ON [ingest].[seen_resources] (source_system, source_name);
END
GO

-- The payload must be a JSON object or array (ISJSON without a type constraint).
-- SQLite guards the same column with a trigger (json_valid).
IF NOT EXISTS (
    SELECT 1 FROM sys.check_constraints
    WHERE parent_object_id = OBJECT_ID(N'[ingest].[IngestRecords]')
        AND name = N'ck_IngestRecords_payload_json'
)
BEGIN
    ALTER TABLE [ingest].[IngestRecords] WITH CHECK
        ADD CONSTRAINT ck_IngestRecords_payload_json CHECK (ISJSON(payload) = 1);
END
GO
