-- Incremental re-crawls look a resource's last version up by source and resource id.
CREATE INDEX IF NOT EXISTS ix_seen_resources_resource
    ON seen_resources (source_system, source_name, resource_id);
