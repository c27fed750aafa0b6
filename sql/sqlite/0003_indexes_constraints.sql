-- The SQLite twins of sql/0003_indexes_constraints.sql.

CREATE UNIQUE INDEX IF NOT EXISTS ix_work_items_dedupe ON work_items (dedupe_key);
CREATE INDEX IF NOT EXISTS ix_work_items_dequeue ON work_items (status, priority DESC, seq);
CREATE INDEX IF NOT EXISTS ix_work_items_leases ON work_items (lease_expires_at)
    WHERE status = 'in_progress';
CREATE INDEX IF NOT EXISTS ix_work_items_run_id ON work_items (run_id);
CREATE INDEX IF NOT EXISTS ix_work_items_source ON work_items (source_system, source_name, status);

CREATE INDEX IF NOT EXISTS ix_ingest_records_resource
    ON ingest_records (source_system, source_name, resource_type, resource_id, fetched_at_utc);
-- One record per distinct payload of a resource: a second copy of the same version
-- (two workers racing on one page) is rejected by the store.
CREATE UNIQUE INDEX IF NOT EXISTS ux_ingest_records_version
    ON ingest_records (source_system, source_name, resource_type, resource_id, hash_sha256);
CREATE INDEX IF NOT EXISTS ix_ingest_records_run_id ON ingest_records (run_id);
CREATE INDEX IF NOT EXISTS ix_ingest_records_hash ON ingest_records (hash_sha256);

CREATE INDEX IF NOT EXISTS ix_ingest_runs_started ON ingest_runs (started_at);
CREATE INDEX IF NOT EXISTS ix_seen_resources_source ON seen_resources (source_system, source_name);

-- SQLite cannot add a CHECK to an existing table; guard the payload with triggers instead.
CREATE TRIGGER IF NOT EXISTS tr_ingest_records_payload_json_insert
BEFORE INSERT ON ingest_records
WHEN NOT json_valid(NEW.payload)
BEGIN
    SELECT RAISE(ABORT, 'ingest_records.payload must be valid JSON');
END;
