-- 0001: the schema that holds every holocron_scrapy table on SQL Server.
-- Idempotent, no DROP. Write the schema as [ingest]: the migration runner replaces it
-- with the configured schema (INGEST_SQLSERVER_SCHEMA) after validating the name.
-- CREATE SCHEMA must be alone in its batch, hence sp_executesql.

IF NOT EXISTS (SELECT 1 FROM sys.schemas WHERE QUOTENAME(name) = N'[ingest]')
BEGIN
    EXEC sys.sp_executesql N'CREATE SCHEMA [ingest]';
END
GO
