-- Rankings (issue 26): a question of three or more items may ask for an order instead of one
-- pick. `chosen` keeps the first (best) item's index as before; `ranking` holds every ordered
-- index, best first, as a JSON array, for answers that order more than one item (NULL for a
-- pick, a skip or a pair); `choice` is then 'rank'.
ALTER TABLE answers ADD COLUMN ranking TEXT;
