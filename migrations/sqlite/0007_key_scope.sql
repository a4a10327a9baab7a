-- Keys scoped to models (issue 14): a JSON array of model names; NULL: every model.
ALTER TABLE api_keys ADD COLUMN models TEXT;
