-- The conversations and their event logs. See docs/storage.md.

-- One row per conversation. doc is the conversation's metadata as the
-- server's JSON (core.Conversation), kept as written (json, not jsonb, so
-- the agent and workspace objects come back byte for byte); the columns
-- beside it are what the server filters, sorts and checks on.
CREATE TABLE conversations (
    id               uuid        PRIMARY KEY,
    doc              json        NOT NULL,
    execution_status text        NOT NULL,
    created_at       timestamptz NOT NULL,
    -- The last event's timestamp once the log is not empty (appends set it).
    updated_at       timestamptz NOT NULL,
    -- The Seq of the last event, 0 for an empty log. Every append is
    -- conditional on it, so Seq is gap-free and never assigned twice.
    last_seq         bigint      NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    -- The ownership epoch: each activation in cluster mode takes a new one,
    -- and every append is conditional on it (fencing). A single node leaves
    -- it at 0.
    epoch            bigint      NOT NULL DEFAULT 0 CHECK (epoch >= 0)
);

CREATE INDEX conversations_created_at ON conversations (created_at, id);
CREATE INDEX conversations_updated_at ON conversations (updated_at, id);

-- One row per event. raw is the sealed wire form every client receives,
-- byte for byte (JSON text; convert_from(raw, 'UTF8')::jsonb to query it).
CREATE TABLE events (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint      NOT NULL CHECK (seq > 0),
    id              uuid        NOT NULL,
    ts              timestamptz NOT NULL,
    source          text        NOT NULL,
    kind            text        NOT NULL,
    raw             bytea       NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

-- find an event by ID (after_id, page_id, GET .../events/{id}); IDs are
-- unique across conversations.
CREATE UNIQUE INDEX events_id ON events (id);
-- find the first event at or after a time (resend_mode=since,
-- timestamp__gte and __lt).
CREATE INDEX events_ts ON events (conversation_id, ts, seq);
-- search and count by kind.
CREATE INDEX events_kind ON events (conversation_id, kind, seq);
