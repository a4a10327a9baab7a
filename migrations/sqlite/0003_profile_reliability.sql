-- Whether the answers behind a profile look random (issue 11): scoring then falls back to the
-- population prior unless the caller opts in. 0 or 1.
ALTER TABLE profiles ADD COLUMN unreliable INTEGER NOT NULL DEFAULT 0;
