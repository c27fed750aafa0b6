-- 0007: named checkpoints of a source's long-running steps (the twin of
-- sql/sqlite/0007_frontier_checkpoints.sql): the seed intake's digest, position and done flag, and
-- later the recent-changes sync and generator listings. value is a JSON document.
-- The key (up to 1600 bytes) is too wide for a clustered index (900 bytes): a heap with a
-- nonclustered primary key (a small table, read and written by key only).
-- The batch runs only while the table is missing, so applying the file again changes nothing.

IF OBJECT_ID(N'[ingest].[frontier_checkpoints]', N'U') IS NULL
BEGIN
    CREATE TABLE [ingest].[frontier_checkpoints] (
        source_system NVARCHAR(100) NOT NULL,
        source_name NVARCHAR(100) NOT NULL,
        name NVARCHAR(200) NOT NULL,
        value NVARCHAR(MAX) NOT NULL,
        updated_at DATETIME2(6) NOT NULL,
        CONSTRAINT pk_frontier_checkpoints PRIMARY KEY NONCLUSTERED (source_system, source_name, name)
    );
END
GO
