-- 0002: the tables, column by column the twins of sql/sqlite/0002_create_tables.sql
-- (SQLite's ingest_records is [ingest].[IngestRecords] here).
-- Times are DATETIME2(6) in UTC; JSON documents are NVARCHAR(MAX).
-- Key sizes respect SQL Server's index limits (1700 bytes nonclustered, 900 clustered):
-- dedupe_key is NVARCHAR(850) = 1700 bytes, so callers hash longer keys; resource_id is
-- NVARCHAR(450) and hash_sha256 NVARCHAR(64) (hex) so that the records indexes fit.
-- Strings stay NVARCHAR: pyodbc sends str parameters as NVARCHAR, and a VARCHAR column
-- compared with them would be converted row by row (no index seek).

IF OBJECT_ID(N'[ingest].[work_items]', N'U') IS NULL
BEGIN
    CREATE TABLE [ingest].[work_items] (
        seq BIGINT IDENTITY(1, 1) NOT NULL,
        work_item_id NVARCHAR(36) NOT NULL,
        source_system NVARCHAR(100) NOT NULL,
        source_name NVARCHAR(100) NOT NULL,
        resource_type NVARCHAR(100) NOT NULL,
        resource_id NVARCHAR(450) NOT NULL,
        request_uri NVARCHAR(4000) NOT NULL,
        request_method NVARCHAR(10) NOT NULL CONSTRAINT df_work_items_request_method DEFAULT N'GET',
        request_headers NVARCHAR(MAX) NULL,
        request_body NVARCHAR(MAX) NULL,
        metadata NVARCHAR(MAX) NULL,
        priority INT NOT NULL CONSTRAINT df_work_items_priority DEFAULT 0,
        depth INT NOT NULL CONSTRAINT df_work_items_depth DEFAULT 0,
        status NVARCHAR(20) NOT NULL CONSTRAINT df_work_items_status DEFAULT N'pending',
        attempt INT NOT NULL CONSTRAINT df_work_items_attempt DEFAULT 0,
        run_id NVARCHAR(64) NULL,
        discovered_from NVARCHAR(2000) NULL,
        created_at DATETIME2(6) NOT NULL,
        updated_at DATETIME2(6) NOT NULL,
        completed_at DATETIME2(6) NULL,
        error_message NVARCHAR(MAX) NULL,
        dedupe_key NVARCHAR(850) NOT NULL,
        lease_owner NVARCHAR(200) NULL,
        lease_expires_at DATETIME2(6) NULL,
        next_attempt_at DATETIME2(6) NULL,
        CONSTRAINT pk_work_items PRIMARY KEY CLUSTERED (seq),
        CONSTRAINT uq_work_items_work_item_id UNIQUE NONCLUSTERED (work_item_id),
        CONSTRAINT ck_work_items_status
            CHECK (status IN (N'pending', N'in_progress', N'completed', N'failed'))
    );
END
GO

-- Append-mostly: a heap with a nonclustered primary key avoids page splits on random ids.
IF OBJECT_ID(N'[ingest].[IngestRecords]', N'U') IS NULL
BEGIN
    CREATE TABLE [ingest].[IngestRecords] (
        ingest_id NVARCHAR(64) NOT NULL,
        source_system NVARCHAR(100) NOT NULL,
        source_name NVARCHAR(100) NOT NULL,
        resource_type NVARCHAR(100) NOT NULL,
        resource_id NVARCHAR(450) NOT NULL,
        requested_id NVARCHAR(450) NULL,
        outcome NVARCHAR(50) NOT NULL,
        request_uri NVARCHAR(4000) NOT NULL,
        request_method NVARCHAR(10) NOT NULL,
        request_headers NVARCHAR(MAX) NULL,
        status_code INT NULL,
        content_type NVARCHAR(255) NULL,
        response_headers NVARCHAR(MAX) NULL,
        fetched_at_utc DATETIME2(6) NOT NULL,
        duration_ms INT NULL,
        hash_sha256 NVARCHAR(64) NOT NULL,
        run_id NVARCHAR(64) NULL,
        work_item_id NVARCHAR(36) NULL,
        attempt INT NOT NULL CONSTRAINT df_IngestRecords_attempt DEFAULT 1,
        error_message NVARCHAR(MAX) NULL,
        lake_path NVARCHAR(1024) NULL,
        payload NVARCHAR(MAX) NOT NULL,
        CONSTRAINT pk_IngestRecords PRIMARY KEY NONCLUSTERED (ingest_id)
    );
END
GO

IF OBJECT_ID(N'[ingest].[ingest_runs]', N'U') IS NULL
BEGIN
    CREATE TABLE [ingest].[ingest_runs] (
        run_id NVARCHAR(64) NOT NULL,
        spider NVARCHAR(100) NOT NULL,
        source_system NVARCHAR(100) NULL,
        source_name NVARCHAR(100) NULL,
        status NVARCHAR(50) NOT NULL,
        started_at DATETIME2(6) NOT NULL,
        finished_at DATETIME2(6) NULL,
        duration_s FLOAT NULL,
        pages_stored INT NOT NULL CONSTRAINT df_ingest_runs_pages_stored DEFAULT 0,
        pages_unchanged INT NOT NULL CONSTRAINT df_ingest_runs_pages_unchanged DEFAULT 0,
        pages_missing INT NOT NULL CONSTRAINT df_ingest_runs_pages_missing DEFAULT 0,
        pages_failed INT NOT NULL CONSTRAINT df_ingest_runs_pages_failed DEFAULT 0,
        requests INT NOT NULL CONSTRAINT df_ingest_runs_requests DEFAULT 0,
        finish_reason NVARCHAR(200) NULL,
        summary NVARCHAR(MAX) NULL,
        CONSTRAINT pk_ingest_runs PRIMARY KEY CLUSTERED (run_id)
    );
END
GO

-- dedupe_key is 1700 bytes: too wide for a clustered key (900 bytes), so the primary key
-- is nonclustered; 0003 clusters the table on (source_system, source_name) instead.
IF OBJECT_ID(N'[ingest].[seen_resources]', N'U') IS NULL
BEGIN
    CREATE TABLE [ingest].[seen_resources] (
        dedupe_key NVARCHAR(850) NOT NULL,
        source_system NVARCHAR(100) NOT NULL,
        source_name NVARCHAR(100) NOT NULL,
        resource_type NVARCHAR(100) NOT NULL,
        resource_id NVARCHAR(450) NOT NULL,
        last_hash_sha256 NVARCHAR(64) NULL,
        last_revision_id BIGINT NULL,
        etag NVARCHAR(1000) NULL,
        last_modified NVARCHAR(200) NULL,
        last_fetched_at DATETIME2(6) NULL,
        last_changed_at DATETIME2(6) NULL,
        CONSTRAINT pk_seen_resources PRIMARY KEY NONCLUSTERED (dedupe_key)
    );
END
GO
