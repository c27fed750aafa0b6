"""Item pipelines: change filter (200), JSON lake (300), IngestRecords (400)."""
