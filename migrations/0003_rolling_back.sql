-- no-transaction
-- A deployment that is returning its agents is `rolling_back` until they have
-- answered: its final status (rolled_back, aborted, failed) is written only then, so
-- a Parley killed mid-rollback finds it unfinished. SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt. Foreign keys are off meanwhile
-- (they cannot be switched inside a transaction), or dropping the old table would
-- cascade into the targets and the event log.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE deployments_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    extension     TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    scope         TEXT    NOT NULL,
    strategy      TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN
                    ('pending', 'running', 'paused', 'rolling_back', 'succeeded', 'failed', 'aborted',
                     'rolled_back')),
    reason        TEXT,
    actor_name    TEXT    NOT NULL,
    actor_frontend TEXT   NOT NULL,
    utterance     TEXT    NOT NULL,
    current_step  INTEGER NOT NULL DEFAULT 0,
    step_count    INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    finished_at   INTEGER
);
INSERT INTO deployments_new SELECT id, extension, version, scope, strategy, status, reason, actor_name,
    actor_frontend, utterance, current_step, step_count, created_at, updated_at, finished_at FROM deployments;
-- Keeps AUTOINCREMENT's high-water mark: a `d-<id>` is never handed out twice.
DELETE FROM sqlite_sequence WHERE name = 'deployments_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'deployments_new', seq FROM sqlite_sequence WHERE name = 'deployments';
DROP TABLE deployments;
ALTER TABLE deployments_new RENAME TO deployments;
CREATE INDEX deployments_status ON deployments (status);
CREATE INDEX deployments_created ON deployments (created_at);
COMMIT;
PRAGMA foreign_keys = ON;
