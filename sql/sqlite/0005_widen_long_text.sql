-- The twin of sql/0005_widen_long_text.sql: SQLite TEXT has no length limit, so there is
-- nothing to widen. This file exists so that both dialects share one list of migration versions.
SELECT 1;
