-- Less work for PostgreSQL on every answer (issue 9).
--
-- A user's answers are found through their sessions (sessions_user, then the answers' primary key
-- on session_id), so answers need no index of their own on user_id: one B-tree insert fewer per
-- answer.
DROP INDEX IF EXISTS answers_user;

-- The exact response stored for replays (about 2 KB at J = 16) crosses the TOAST threshold, so
-- every answer compresses it; pglz cost about a twentieth of PostgreSQL's CPU under answer load,
-- lz4 a fraction of that. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE answers ALTER COLUMN response SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available: answers.response stays compressed with pglz';
END
$$;
