-- Event IDs are unique within a conversation, no longer across them: a
-- fork copies its source's events with their IDs. The index keeps the ID
-- first, so that time-ordered IDs still land at its right edge.
DROP INDEX events_id;
CREATE UNIQUE INDEX events_id ON events (id, conversation_id);
