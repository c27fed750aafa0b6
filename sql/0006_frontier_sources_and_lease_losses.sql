-- 0006: a crawl claims only its own source's items, and a lost lease is not an attempt (the twin
-- of sql/sqlite/0006_frontier_sources_and_lease_losses.sql).
-- * lease_losses: how many times the item's lease was lost (lease expired, or its worker died);
--   an item lost twice is only claimed alone (the worker has nothing else in flight).
-- * lease_solo: 1 while such an item is claimed alone and its request is being fetched and parsed.
-- * solo_lease_losses: how many leases were lost while lease_solo was 1; an item at the quarantine
--   limit is failed ("quarantined: ...").
-- * ix_work_items_source_dequeue: the claim of one source, best first.
-- Each batch runs only while its column or index is missing, so applying the file again changes nothing.

IF COL_LENGTH(N'[ingest].[work_items]', N'lease_losses') IS NULL
BEGIN
    ALTER TABLE [ingest].[work_items]
        ADD lease_losses INT NOT NULL CONSTRAINT df_work_items_lease_losses DEFAULT 0;
END
GO

IF COL_LENGTH(N'[ingest].[work_items]', N'solo_lease_losses') IS NULL
BEGIN
    ALTER TABLE [ingest].[work_items]
        ADD solo_lease_losses INT NOT NULL CONSTRAINT df_work_items_solo_lease_losses DEFAULT 0;
END
GO

IF COL_LENGTH(N'[ingest].[work_items]', N'lease_solo') IS NULL
BEGIN
    ALTER TABLE [ingest].[work_items]
        ADD lease_solo INT NOT NULL CONSTRAINT df_work_items_lease_solo DEFAULT 0;
END
GO

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[work_items]') AND name = N'ix_work_items_source_dequeue'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_work_items_source_dequeue
        ON [ingest].[work_items] (source_system, source_name, status, priority DESC, seq)
        INCLUDE (next_attempt_at, lease_losses);
END
GO
