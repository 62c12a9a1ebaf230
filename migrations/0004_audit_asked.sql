-- Every turn is audited (not only executed operations), so a row must be able to say
-- that nothing was carried out: `asked` is a question or a yes/no put to the
-- operator (the operation it would run is recorded, not run), `cancelled` is a
-- proposal withdrawn. SQLite cannot change a CHECK constraint in place, and nothing
-- references the audit table, so it is rebuilt and copied.
ALTER TABLE audit RENAME TO audit_old;
DROP INDEX audit_at;

CREATE TABLE audit (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor_name     TEXT    NOT NULL,
    actor_frontend TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    utterance      TEXT    NOT NULL,
    operation      TEXT,   -- JSON, NULL when nothing was understood
    result         TEXT    NOT NULL CHECK (result IN
                     ('ok', 'refused', 'infeasible', 'failed', 'asked', 'cancelled')),
    message        TEXT    NOT NULL
);

INSERT INTO audit (id, at, actor_name, actor_frontend, role, utterance, operation, result, message)
    SELECT id, at, actor_name, actor_frontend, role, utterance, operation, result, message FROM audit_old;
DROP TABLE audit_old;

CREATE INDEX audit_at ON audit (at);
