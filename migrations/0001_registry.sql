-- The registry: deployments, their targets, the event log and the audit log.
-- Times are milliseconds since the Unix epoch (UTC), so ranges compare as integers.

CREATE TABLE deployments (
    -- AUTOINCREMENT so that a deleted deployment's id is never handed out again:
    -- `d-<id>` names must stay unique for the life of the registry.
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    extension     TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    scope         TEXT    NOT NULL,  -- JSON, the contract's scope
    strategy      TEXT    NOT NULL,  -- JSON, the contract's strategy
    status        TEXT    NOT NULL CHECK (status IN
                    ('pending', 'running', 'paused', 'succeeded', 'failed', 'aborted', 'rolled_back')),
    reason        TEXT,
    actor_name    TEXT    NOT NULL,
    actor_frontend TEXT   NOT NULL,
    utterance     TEXT    NOT NULL,
    -- The step in progress (0-based) and how many the plan has, so that a restart can
    -- say where an interrupted rollout stood and carry on from there.
    current_step  INTEGER NOT NULL DEFAULT 0,
    step_count    INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    finished_at   INTEGER
);

CREATE INDEX deployments_status ON deployments (status);
CREATE INDEX deployments_created ON deployments (created_at);

CREATE TABLE deployment_targets (
    deployment_id    INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    agent            TEXT    NOT NULL,
    endpoint         TEXT    NOT NULL,
    previous_version TEXT,   -- NULL: the extension was not installed before
    step             INTEGER NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN
                       ('pending', 'installing', 'installed', 'failed', 'rolled_back', 'unreachable')),
    detail           TEXT,
    PRIMARY KEY (deployment_id, agent)
);

CREATE INDEX deployment_targets_agent ON deployment_targets (agent);

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id INTEGER REFERENCES deployments (id) ON DELETE CASCADE,
    at            INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    data          TEXT    NOT NULL  -- JSON
);

CREATE INDEX events_deployment ON events (deployment_id, id);

CREATE TABLE audit (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor_name     TEXT    NOT NULL,
    actor_frontend TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    utterance      TEXT    NOT NULL,
    operation      TEXT,   -- JSON, NULL when nothing was understood
    result         TEXT    NOT NULL CHECK (result IN ('ok', 'refused', 'infeasible', 'failed')),
    message        TEXT    NOT NULL
);

CREATE INDEX audit_at ON audit (at);
