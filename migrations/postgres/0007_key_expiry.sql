-- Key expiry and rotation (issue 14): a key stops working at expires_ms; a rotated key's successor
-- names it in rotated_from.
ALTER TABLE api_keys ADD COLUMN expires_ms BIGINT;
ALTER TABLE api_keys ADD COLUMN rotated_from TEXT;
