-- A crawl claims only its own source's items, and a lost lease is not an attempt:
-- lease_losses counts lost leases (an item lost twice is only claimed alone), lease_solo is 1 while
-- such an item is claimed alone and being fetched and parsed, solo_lease_losses counts the leases
-- lost then (the quarantine count).
ALTER TABLE work_items ADD COLUMN lease_losses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE work_items ADD COLUMN solo_lease_losses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE work_items ADD COLUMN lease_solo INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS ix_work_items_source_dequeue
    ON work_items (source_system, source_name, status, priority DESC, seq);
