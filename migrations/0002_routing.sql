-- The routing table (which regions serve each region's traffic, with what weight)
-- and its journal: every change, who asked for it, why, and the table before and after.

CREATE TABLE routing (
    region         TEXT    NOT NULL,
    serving_region TEXT    NOT NULL,
    weight         INTEGER NOT NULL CHECK (weight BETWEEN 1 AND 100),
    PRIMARY KEY (region, serving_region)
);

CREATE TABLE routing_changes (
    -- The id is the table's version: a load balancer polls for a higher one.
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor          TEXT    NOT NULL,
    frontend       TEXT    NOT NULL,
    kind           TEXT    NOT NULL,  -- failover, failback, shift, cascade, auto_failback
    reason         TEXT    NOT NULL,
    before         TEXT    NOT NULL,  -- JSON, the table's regions
    after          TEXT    NOT NULL   -- JSON
);

CREATE INDEX routing_changes_at ON routing_changes (at);
