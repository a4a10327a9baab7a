-- A key's own rate limit (issue 14); NULL: its role's default from the configuration.
ALTER TABLE api_keys ADD COLUMN rate_per_s DOUBLE PRECISION;
ALTER TABLE api_keys ADD COLUMN burst BIGINT;
