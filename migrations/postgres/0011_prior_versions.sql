-- Versioned population priors (issue 10): a refit or a restore makes a new version of the model's
-- prior; every version is kept, sessions and profiles record the version they started from (a
-- session keeps its prior, and its log replays under it, whatever the model's prior becomes).
ALTER TABLE models ADD COLUMN prior_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE sessions ADD COLUMN prior_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE profiles ADD COLUMN prior_version BIGINT NOT NULL DEFAULT 1;
CREATE TABLE model_priors (
    model      TEXT NOT NULL,
    version    BIGINT NOT NULL,
    mean       BYTEA NOT NULL,
    cov        BYTEA NOT NULL,
    users      BIGINT NOT NULL DEFAULT 0,    -- finished sessions it was fitted to (0: given)
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (model, version)
);
INSERT INTO model_priors (model, version, mean, cov, users, created_ms)
SELECT name, 1, prior_mean, prior_cov, 0, created_ms FROM models;
