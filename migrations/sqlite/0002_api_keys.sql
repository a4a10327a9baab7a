-- API keys (stored hashed) and the lookup of session tokens.
CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL,
    key_hash       TEXT NOT NULL UNIQUE,
    created_ms     BIGINT NOT NULL,
    revoked_ms     BIGINT
);
CREATE INDEX sessions_token ON sessions (token_hash);
