-- elicit schema (SQLite). Every per-user row carries user_id and every hot query filters by
-- it or by the session id, so the schema can later be distributed by user_id.

CREATE TABLE models (
    name           TEXT PRIMARY KEY,
    spec           TEXT NOT NULL,          -- JSON: dimensions, noise, update method, strategy
    prior_mean     BLOB NOT NULL,
    prior_cov      BLOB NOT NULL,
    bank_version   BIGINT NOT NULL DEFAULT 0,
    created_ms     BIGINT NOT NULL
);

CREATE TABLE items (
    model          TEXT NOT NULL REFERENCES models (name) ON DELETE CASCADE,
    id             TEXT NOT NULL,
    features       BLOB NOT NULL,
    item_group     TEXT,
    payload        TEXT,                   -- JSON, opaque to the service
    PRIMARY KEY (model, id)
);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    model          TEXT NOT NULL REFERENCES models (name),
    token_hash     TEXT NOT NULL,
    status         TEXT NOT NULL,
    stop_reason    TEXT,
    settings       TEXT NOT NULL,          -- JSON: max_questions, strategy, allowed items
    mean           BLOB NOT NULL,
    cov            BLOB NOT NULL,
    version        BIGINT NOT NULL,
    answers        BIGINT NOT NULL,
    question       TEXT,                   -- JSON: the current question, NULL when none
    created_ms     BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- The answer log is the truth: append-only, keyed by (session, sequence number).
CREATE TABLE answers (
    session_id      TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    user_id         TEXT NOT NULL,
    item_a          TEXT NOT NULL,
    item_b          TEXT NOT NULL,
    choice          TEXT NOT NULL,
    log_evidence    REAL,
    direction       BLOB NOT NULL,          -- x = β(φa − φb) when answered: the log alone rebuilds the posterior
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL,
    response        TEXT NOT NULL,          -- the exact body first returned, for replays
    created_ms      BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq),
    UNIQUE (session_id, idempotency_key)
);
CREATE INDEX answers_user ON answers (user_id);

CREATE TABLE profiles (
    user_id        TEXT NOT NULL,
    model          TEXT NOT NULL REFERENCES models (name),
    session_id     TEXT NOT NULL,
    status         TEXT NOT NULL,
    mean           BLOB NOT NULL,
    cov            BLOB NOT NULL,
    version        BIGINT NOT NULL,
    answers        BIGINT NOT NULL,
    updated_ms     BIGINT NOT NULL,
    PRIMARY KEY (user_id, model)
);
