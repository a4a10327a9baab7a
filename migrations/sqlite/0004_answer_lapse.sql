-- The lapse rate of the likelihood an answer was applied with (issue 11: a model may estimate it
-- per user). NULL for answers stored before: they used the model's fixed rate.
ALTER TABLE answers ADD COLUMN lapse REAL;
