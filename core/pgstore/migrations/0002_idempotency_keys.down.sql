DROP INDEX events_idempotency_key;
ALTER TABLE events DROP COLUMN idempotency_key;
