-- A user's answers are found through their sessions (sessions_user, then the answers' primary key
-- on session_id), so answers need no index of their own on user_id: one B-tree insert fewer per
-- answer.
DROP INDEX IF EXISTS answers_user;
