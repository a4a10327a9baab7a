-- Every answer rewrites its session row and upserts the user's profile. With free space left on
-- each page, PostgreSQL updates those rows in place (HOT: no new index entries, less vacuum work)
-- since no indexed column changes.
ALTER TABLE sessions SET (fillfactor = 70);
ALTER TABLE profiles SET (fillfactor = 70);
