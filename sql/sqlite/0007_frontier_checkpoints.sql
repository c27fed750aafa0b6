-- Named checkpoints of a source's long-running steps, in the state database beside its work items:
-- the seed intake's digest, position and done flag (holocron_scrapy/frontier/intake.py), and later
-- the recent-changes sync and generator listings. value is a JSON document.
CREATE TABLE IF NOT EXISTS frontier_checkpoints (
    source_system TEXT NOT NULL,
    source_name TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source_system, source_name, name)
);
