-- Ranvier schema, version 8: server-side search and content reports.
-- The full-text index differs between the backends (SQLite FTS5 here, a tsvector column with a
-- GIN index in postgres/); the reports table is the same in both.

-- The searchable text of every indexed event (`content.body` of m.room.message,
-- `content.name` of m.room.name, `content.topic` and the plain-text `m.topic` of
-- m.room.topic), written in the event's own transaction and deleted when it is redacted. The
-- rowid is the event's `events.stream_ordering`. Contentless: the text stays in `events.pdu`,
-- the index only records which rows hold which words.
CREATE VIRTUAL TABLE event_search USING fts5(
    value,
    content = '',
    contentless_delete = 1,
    tokenize = 'porter unicode61'
);

-- Index what is already there. (The write path also adds the plain-text `m.topic` of topics
-- and splits words at every non-alphanumeric character first; for the tokenizer that is the
-- same split.)
INSERT INTO event_search (rowid, value)
SELECT stream_ordering,
       CASE event_type
           WHEN 'm.room.message' THEN json_extract(pdu, '$.content.body')
           WHEN 'm.room.name' THEN json_extract(pdu, '$.content.name')
           ELSE json_extract(pdu, '$.content.topic')
       END
FROM events
WHERE outlier = 0 AND rejected_reason IS NULL AND soft_failed = 0 AND redacted_by IS NULL
  AND ((event_type = 'm.room.message' AND state_key IS NULL AND json_type(pdu, '$.content.body') = 'text')
    OR (event_type = 'm.room.name' AND state_key IS NOT NULL AND json_type(pdu, '$.content.name') = 'text')
    OR (event_type = 'm.room.topic' AND state_key IS NOT NULL AND json_type(pdu, '$.content.topic') = 'text'));

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
