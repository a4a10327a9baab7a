-- Richer questions (issue 12): a pair answer may say how strongly ("slightly" or "clearly"), and a
-- question may show three to six items of which the user picks one. For such a pick `shown` holds
-- the items in display order (a JSON array of ids), `chosen` the index of the one picked (NULL:
-- skipped), `choice` is 'pick' or 'skip', and `direction` holds β·φ of every shown item, stacked.
ALTER TABLE answers ADD COLUMN strength TEXT;
ALTER TABLE answers ADD COLUMN shown TEXT;
ALTER TABLE answers ADD COLUMN chosen INTEGER;
