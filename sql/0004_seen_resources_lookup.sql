-- 0004: incremental re-crawls look a resource's last version up by source and resource id
-- (the twin of sql/sqlite/0004_seen_resources_lookup.sql).

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[seen_resources]') AND name = N'ix_seen_resources_resource'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_seen_resources_resource
        ON [ingest].[seen_resources] (source_system, source_name, resource_id);
END
GO
