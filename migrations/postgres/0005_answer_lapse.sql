-- The lapse rate of the likelihood an answer was applied with (issue 11: a model may estimate it
-- per user), so that a replay, EP and the reliability figures use the same likelihood. NULL for
-- answers stored before: they used the model's fixed rate.
ALTER TABLE answers ADD COLUMN lapse DOUBLE PRECISION;
