-- A deployment that is returning its agents is `rolling_back` until they have
-- answered: its final status (rolled_back, aborted, failed) is written only then, so
-- a Parley killed mid-rollback finds it unfinished. SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt. sqlx runs this in a transaction,
-- where foreign keys cannot be switched off: dropping the old table would cascade
-- into the targets and the event log, and renaming it repoints their references.
-- So the two tables that point at it are rebuilt with it, and the old ones dropped
-- children first, when nothing points at them any more.
ALTER TABLE events RENAME TO events_old;
ALTER TABLE deployment_targets RENAME TO deployment_targets_old;
ALTER TABLE deployments RENAME TO deployments_old;
DROP INDEX deployments_status;
DROP INDEX deployments_created;
DROP INDEX deployment_targets_agent;
DROP INDEX events_deployment;

CREATE TABLE deployments (
    -- AUTOINCREMENT so that a deleted deployment's id is never handed out again:
    -- `d-<id>` names must stay unique for the life of the registry.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    extension     TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    scope         TEXT    NOT NULL,  -- JSON, the contract's scope
    strategy      TEXT    NOT NULL,  -- JSON, the contract's strategy
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

CREATE TABLE deployment_targets (
    deployment_id    INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    agent            TEXT    NOT NULL,
    -- Where the agent answered when the deployment was created; rollouts reach it
    -- where the live model says it answers now.
    endpoint         TEXT    NOT NULL,
    previous_version TEXT,   -- NULL: the extension was not installed before
    step             INTEGER NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN
                       ('pending', 'installing', 'installed', 'failed', 'rolled_back', 'unreachable')),
    detail           TEXT,
    PRIMARY KEY (deployment_id, agent)
);

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER REFERENCES deployments (id) ON DELETE CASCADE,
    at            INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    data          TEXT    NOT NULL  -- JSON
);

INSERT INTO deployments (id, extension, version, scope, strategy, status, reason, actor_name, actor_frontend,
        utterance, current_step, step_count, created_at, updated_at, finished_at)
    SELECT id, extension, version, scope, strategy, status, reason, actor_name, actor_frontend,
        utterance, current_step, step_count, created_at, updated_at, finished_at FROM deployments_old;
INSERT INTO deployment_targets (deployment_id, agent, endpoint, previous_version, step, state, detail)
    SELECT deployment_id, agent, endpoint, previous_version, step, state, detail FROM deployment_targets_old
    ORDER BY rowid;
INSERT INTO events (id, deployment_id, at, kind, data)
    SELECT id, deployment_id, at, kind, data FROM events_old;

-- Keeps AUTOINCREMENT's high-water marks: a `d-<id>` is never handed out twice.
DELETE FROM sqlite_sequence WHERE name IN ('deployments', 'events');
INSERT INTO sqlite_sequence (name, seq) SELECT 'deployments', seq FROM sqlite_sequence WHERE name = 'deployments_old';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events', seq FROM sqlite_sequence WHERE name = 'events_old';

DROP TABLE events_old;
DROP TABLE deployment_targets_old;
DROP TABLE deployments_old;

CREATE INDEX deployments_status ON deployments (status);
CREATE INDEX deployments_created ON deployments (created_at);
CREATE INDEX deployment_targets_agent ON deployment_targets (agent);
CREATE INDEX events_deployment ON events (deployment_id, id);
