-- 0008: fleet-wide politeness (the twin of sql/sqlite/0008_frontier_hosts.sql): one row per
-- politeness key (a host; for MediaWiki sources the API host) with the configured delay and
-- concurrency, the earliest time any worker may send (next_allowed_at), a block set from
-- Retry-After/maxlag or by the backoff after repeated 429/5xx (blocked_until, block_reason, failures),
-- and the requests in flight as slot leases that expire (a killed worker never holds one forever).
-- A slot is taken under the key's row lock (UPDLOCK, ROWLOCK on frontier_hosts).
-- Each batch runs only while its table is missing, so applying the file again changes nothing.

IF OBJECT_ID(N'[ingest].[frontier_hosts]', N'U') IS NULL
BEGIN
    CREATE TABLE [ingest].[frontier_hosts] (
        politeness_key NVARCHAR(200) NOT NULL,
        delay_s FLOAT NOT NULL CONSTRAINT df_frontier_hosts_delay_s DEFAULT 0,
        concurrency INT NOT NULL CONSTRAINT df_frontier_hosts_concurrency DEFAULT 1,
        next_allowed_at DATETIME2(6) NULL,
        blocked_until DATETIME2(6) NULL,
        block_reason NVARCHAR(400) NULL,
        failures INT NOT NULL CONSTRAINT df_frontier_hosts_failures DEFAULT 0,
        updated_at DATETIME2(6) NOT NULL,
        CONSTRAINT pk_frontier_hosts PRIMARY KEY CLUSTERED (politeness_key)
    );
END
GO

IF OBJECT_ID(N'[ingest].[frontier_host_slots]', N'U') IS NULL
BEGIN
    CREATE TABLE [ingest].[frontier_host_slots] (
        slot_id NVARCHAR(36) NOT NULL,
        politeness_key NVARCHAR(200) NOT NULL,
        slot_owner NVARCHAR(200) NOT NULL,
        lease_expires_at DATETIME2(6) NOT NULL,
        CONSTRAINT pk_frontier_host_slots PRIMARY KEY NONCLUSTERED (slot_id)
    );
END
GO

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[frontier_host_slots]') AND name = N'ix_frontier_host_slots_key'
)
BEGIN
    CREATE CLUSTERED INDEX ix_frontier_host_slots_key
        ON [ingest].[frontier_host_slots] (politeness_key, lease_expires_at);
END
GO

IF NOT EXISTS (
    SELECT 1 FROM sys.indexes
    WHERE object_id = OBJECT_ID(N'[ingest].[frontier_host_slots]') AND name = N'ix_frontier_host_slots_owner'
)
BEGIN
    CREATE NONCLUSTERED INDEX ix_frontier_host_slots_owner
        ON [ingest].[frontier_host_slots] (slot_owner);
END
GO
