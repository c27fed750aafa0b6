-- SQLite has no schemas: the tables live in the database file itself.
-- This file exists so that both dialects share one list of migration versions.
SELECT 1;
