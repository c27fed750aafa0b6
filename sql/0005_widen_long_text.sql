-- 0005: NVARCHAR(MAX) for the text columns whose values have no upper bound (the twin of
-- sql/sqlite/0005_widen_long_text.sql, where TEXT never had one): raw request URLs
-- (a MediaWiki batch of 50 titles exceeds 4000 characters), the URL or title an item was
-- requested or discovered by, and response header values. None of these columns is in an
-- index (ALTER COLUMN to MAX fails on a key or INCLUDE column). resource_id and dedupe_key
-- stay bounded on purpose: they are index keys, and callers shorten them (web/urls.py,
-- frontier/keys.py). Going from a bounded type to MAX rewrites every row under a schema lock.
-- Each batch runs only while the column is still bounded (COL_LENGTH is -1 for MAX and NULL
-- for a missing column), so applying the file again changes nothing. ALTER COLUMN restates
-- the nullability of 0002, which it would otherwise reset.

IF COL_LENGTH(N'[ingest].[work_items]', N'request_uri') <> -1
BEGIN
    ALTER TABLE [ingest].[work_items] ALTER COLUMN request_uri NVARCHAR(MAX) NOT NULL;
END
GO

IF COL_LENGTH(N'[ingest].[work_items]', N'discovered_from') <> -1
BEGIN
    ALTER TABLE [ingest].[work_items] ALTER COLUMN discovered_from NVARCHAR(MAX) NULL;
END
GO

IF COL_LENGTH(N'[ingest].[IngestRecords]', N'requested_id') <> -1
BEGIN
    ALTER TABLE [ingest].[IngestRecords] ALTER COLUMN requested_id NVARCHAR(MAX) NULL;
END
GO

IF COL_LENGTH(N'[ingest].[IngestRecords]', N'request_uri') <> -1
BEGIN
    ALTER TABLE [ingest].[IngestRecords] ALTER COLUMN request_uri NVARCHAR(MAX) NOT NULL;
END
GO

IF COL_LENGTH(N'[ingest].[IngestRecords]', N'content_type') <> -1
BEGIN
    ALTER TABLE [ingest].[IngestRecords] ALTER COLUMN content_type NVARCHAR(MAX) NULL;
END
GO

IF COL_LENGTH(N'[ingest].[seen_resources]', N'etag') <> -1
BEGIN
    ALTER TABLE [ingest].[seen_resources] ALTER COLUMN etag NVARCHAR(MAX) NULL;
END
GO

IF COL_LENGTH(N'[ingest].[seen_resources]', N'last_modified') <> -1
BEGIN
    ALTER TABLE [ingest].[seen_resources] ALTER COLUMN last_modified NVARCHAR(MAX) NULL;
END
GO
