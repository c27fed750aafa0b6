-- The SQLite twins of sql/0002_create_tables.sql (SQL Server's ingest schema).
-- Times are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', which sorts like the instant.

CREATE TABLE IF NOT EXISTS work_items (
    seq INTEGER PRIMARY KEY,
    work_item_id TEXT NOT NULL UNIQUE,
    source_system TEXT NOT NULL,
    source_name TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    request_uri TEXT NOT NULL,
    request_method TEXT NOT NULL DEFAULT 'GET',
    request_headers TEXT,
    request_body TEXT,
    metadata TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    depth INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'in_progress', 'completed', 'failed')),
    attempt INTEGER NOT NULL DEFAULT 0,
    run_id TEXT,
    discovered_from TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    completed_at TEXT,
    error_message TEXT,
    dedupe_key TEXT NOT NULL,
    lease_owner TEXT,
    lease_expires_at TEXT,
    next_attempt_at TEXT
);

CREATE TABLE IF NOT EXISTS ingest_records (
    ingest_id TEXT PRIMARY KEY,
    source_system TEXT NOT NULL,
    source_name TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    requested_id TEXT,
    outcome TEXT NOT NULL,
    request_uri TEXT NOT NULL,
    request_method TEXT NOT NULL,
    request_headers TEXT,
    status_code INTEGER,
    content_type TEXT,
    response_headers TEXT,
    fetched_at_utc TEXT NOT NULL,
    duration_ms INTEGER,
    hash_sha256 TEXT NOT NULL,
    run_id TEXT,
    work_item_id TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    error_message TEXT,
    lake_path TEXT,
    payload TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id TEXT PRIMARY KEY,
    spider TEXT NOT NULL,
    source_system TEXT,
    source_name TEXT,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    duration_s REAL,
    pages_stored INTEGER NOT NULL DEFAULT 0,
    pages_unchanged INTEGER NOT NULL DEFAULT 0,
    pages_missing INTEGER NOT NULL DEFAULT 0,
    pages_failed INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    finish_reason TEXT,
    summary TEXT
);

CREATE TABLE IF NOT EXISTS seen_resources (
    dedupe_key TEXT PRIMARY KEY,
    source_system TEXT NOT NULL,
    source_name TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    last_hash_sha256 TEXT,
    last_revision_id INTEGER,
    etag TEXT,
    last_modified TEXT,
    last_fetched_at TEXT,
    last_changed_at TEXT
);
