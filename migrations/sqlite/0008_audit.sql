-- The audit trail (issue 14): one row per admin action, written in the same transaction as the
-- change. `target` never holds a user id in clear: an erase records a keyed hash of it.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    request_id TEXT
);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_target ON audit_log (target, id);

-- Secrets the service generates for itself. The key of the user-id hash in audit entries is drawn
-- here once (randomblob draws from SQLite's CSPRNG, seeded by the operating system).
CREATE TABLE service_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO service_secrets (name, value) VALUES ('audit_user_hash', lower(hex(randomblob(32))));
