-- Whether the answers behind a profile look random (issue 11): scoring then falls back to the
-- population prior unless the caller opts in. 0 or 1 (an integer keeps one column type for both
-- dialects through sqlx's Any driver).
ALTER TABLE profiles ADD COLUMN unreliable BIGINT NOT NULL DEFAULT 0;
