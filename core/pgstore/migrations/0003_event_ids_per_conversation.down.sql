-- Fails while a fork shares event IDs with its source: delete such forks
-- first.
DROP INDEX events_id;
CREATE UNIQUE INDEX events_id ON events (id);
