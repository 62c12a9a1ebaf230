-- The emergency stop ("freeze"): while this one row exists every running rollout is
-- held paused and the automatic failover and failback stand still, in every process
-- on this registry and after a restart. Lifting it ("unfreeze") deletes the row; the
-- event log keeps both.
CREATE TABLE freeze (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    at        INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    frontend  TEXT    NOT NULL,
    reason    TEXT    NOT NULL
);

-- "What changed in the last hour?" reads the event log by time.
CREATE INDEX events_at ON events (at);
