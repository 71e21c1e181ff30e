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

-- Index what is already there. (The write path also adds the plain-text `m.topic` of topics
-- and splits words at every non-alphanumeric character; here ASCII punctuation is enough for
-- the old rows, since the English parser splits at the rest.)
INSERT INTO event_search (stream_ordering, vector)
SELECT stream_ordering,
       to_tsvector('english', translate(text, '!"#$%&''()*+,-./:;<=>?@[\]^_`{|}~', repeat(' ', 32)))
FROM (
    SELECT stream_ordering,
           CASE event_type
               WHEN 'm.room.message' THEN CAST(pdu AS JSON) -> 'content' ->> 'body'
               WHEN 'm.room.name' THEN CAST(pdu AS JSON) -> 'content' ->> 'name'
               ELSE CAST(pdu AS JSON) -> 'content' ->> 'topic'
           END AS text,
           CASE event_type
               WHEN 'm.room.message' THEN json_typeof(CAST(pdu AS JSON) -> 'content' -> 'body')
               WHEN 'm.room.name' THEN json_typeof(CAST(pdu AS JSON) -> 'content' -> 'name')
               ELSE json_typeof(CAST(pdu AS JSON) -> 'content' -> 'topic')
           END AS kind
    FROM events
    WHERE outlier = 0 AND rejected_reason IS NULL AND soft_failed = 0 AND redacted_by IS NULL
      AND ((event_type = 'm.room.message' AND state_key IS NULL)
        OR (event_type IN ('m.room.name', 'm.room.topic') AND state_key IS NOT NULL))
) AS searchable
WHERE kind = 'string';

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
