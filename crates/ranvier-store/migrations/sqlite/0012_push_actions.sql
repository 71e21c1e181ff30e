-- Ranvier schema, version 12: cheaper push-action writes. Dialect-specific: SQLite rebuilds
-- the table, PostgreSQL only swaps an index.
--
-- A message in a room of N local members writes N-1 push-action rows. Kept WITHOUT ROWID
-- (version 11), every row sat in a tree ordered by user, with whole rows of some 250 bytes
-- in its interior pages too: a group of nine messages in a room of ten dirtied about 120
-- pages of this table and its indexes. As a rowid table the rows are appended in stream
-- order, and only the slim (user_id, room_id, stream_ordering) key and the (user_id,
-- stream_ordering) index are written out of order: about 70 pages. The (event_id) index
-- goes: the one statement that looked rows up by event (a redaction dropping its target's
-- rows) finds them by stream position instead, and that index is written in order.

CREATE TABLE event_push_actions_new (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    notify BIGINT NOT NULL,
    highlight BIGINT NOT NULL,
    actions TEXT NOT NULL,
    ts BIGINT NOT NULL
);
INSERT INTO event_push_actions_new (user_id, room_id, event_id, stream_ordering, thread_id, notify,
    highlight, actions, ts)
SELECT user_id, room_id, event_id, stream_ordering, thread_id, notify, highlight, actions, ts
FROM event_push_actions ORDER BY stream_ordering;
DROP TABLE event_push_actions;
ALTER TABLE event_push_actions_new RENAME TO event_push_actions;
CREATE UNIQUE INDEX event_push_actions_key ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_by_user ON event_push_actions (user_id, stream_ordering);
CREATE INDEX event_push_actions_by_stream ON event_push_actions (stream_ordering);
