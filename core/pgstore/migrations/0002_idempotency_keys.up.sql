-- Idempotent posts: the key a post carried is stored with its event, so
-- that a retry (through any node, after any fault) finds the event instead
-- of appending another.
ALTER TABLE events ADD COLUMN idempotency_key text CHECK (octet_length(idempotency_key) <= 255);
CREATE INDEX events_idempotency_key ON events (conversation_id, idempotency_key, seq) WHERE idempotency_key IS NOT NULL;
