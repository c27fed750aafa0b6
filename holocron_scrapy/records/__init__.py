"""The IngestRecords store: one row per fetch, metadata columns plus the JSON payload."""
