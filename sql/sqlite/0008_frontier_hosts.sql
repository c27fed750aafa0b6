-- Fleet-wide politeness in the state database (holocron_scrapy/frontier/politeness.py): one row per
-- politeness key (a host; for MediaWiki sources the API host) with the configured delay and
-- concurrency, the earliest time any worker may send (next_allowed_at), a block set from
-- Retry-After/maxlag or by the backoff after repeated 429/5xx (blocked_until, block_reason, failures),
-- and the requests in flight as slot leases that expire (a killed worker never holds one forever).
CREATE TABLE IF NOT EXISTS frontier_hosts (
    politeness_key VARCHAR(200) NOT NULL,
    delay_s FLOAT NOT NULL DEFAULT 0,
    concurrency INTEGER NOT NULL DEFAULT 1,
    next_allowed_at TEXT,
    blocked_until TEXT,
    block_reason VARCHAR(400),
    failures INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    CONSTRAINT pk_frontier_hosts PRIMARY KEY (politeness_key)
);
CREATE TABLE IF NOT EXISTS frontier_host_slots (
    slot_id VARCHAR(36) NOT NULL,
    politeness_key VARCHAR(200) NOT NULL,
    slot_owner VARCHAR(200) NOT NULL,
    lease_expires_at TEXT NOT NULL,
    CONSTRAINT pk_frontier_host_slots PRIMARY KEY (slot_id)
);
CREATE INDEX IF NOT EXISTS ix_frontier_host_slots_key ON frontier_host_slots (politeness_key, lease_expires_at);
CREATE INDEX IF NOT EXISTS ix_frontier_host_slots_owner ON frontier_host_slots (slot_owner);
