-- Ranvier schema, version 8: server-side search and content reports.
-- The full-text index differs between the backends (a tsvector column with a GIN index here,
-- SQLite FTS5 in sqlite/); the reports table is the same in both.

-- The searchable text of every indexed event (`content.body` of m.room.message,
-- `content.name` of m.room.name, `content.topic` and the plain-text `m.topic` of
-- m.room.topic) as an English tsvector, written in the event's own transaction and deleted
-- when it is redacted. The key is the event's `events.stream_ordering`.
CREATE TABLE event_search (
    stream_ordering BIGINT PRIMARY KEY,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);

-- Reports of events, rooms and users, for the server's administrators.
CREATE TABLE reports (
    id BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,                      -- 'event', 'room' or 'user'
    reporter TEXT NOT NULL,                  -- who reported
    room_id TEXT,                            -- event and room reports
    event_id TEXT,                           -- event reports
    target_user_id TEXT,                     -- the reported user, or the sender of the reported event
    reason TEXT,
    score BIGINT,                            -- event reports, when the client sent one
    content TEXT,                            -- event reports: the request body as sent (JSON)
    received_ts BIGINT NOT NULL
);
CREATE INDEX reports_by_kind ON reports (kind, id);
