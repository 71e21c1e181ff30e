-- Ranvier schema, version 11: fewer B-trees written per event. Dialect-specific: SQLite
-- rebuilds tables, PostgreSQL only changes keys and indexes.
--
-- Every B-tree an event's rows land in costs one page written to the WAL at commit, and the
-- pages written are what a commit costs. So on SQLite:
-- - `events` keys its rows by stream_ordering itself (INTEGER PRIMARY KEY is the rowid), not
--   by a hidden rowid plus an index on stream_ordering;
-- - the edge, auth, extremity, transaction-id and push-action tables are WITHOUT ROWID: their
--   primary key is the table, not an index beside a rowid table;
-- - `event_push_actions` is keyed by (user_id, room_id, stream_ordering), which is what unread
--   counts read, so that index and the (user_id, event_id) key go (stream_ordering identifies
--   the event, so the key is still one row per user and event);
-- - `event_auth_by_auth` goes: nothing looks events up by the auth events they cite.

CREATE TABLE events_new (
    stream_ordering INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    pdu TEXT NOT NULL,
    outlier BIGINT NOT NULL DEFAULT 0,
    rejected_reason TEXT,
    soft_failed BIGINT NOT NULL DEFAULT 0,
    redacted_by TEXT,
    state_group BIGINT
);
INSERT INTO events_new (stream_ordering, event_id, room_id, sender, event_type, state_key, depth,
    origin_server_ts, pdu, outlier, rejected_reason, soft_failed, redacted_by, state_group)
SELECT stream_ordering, event_id, room_id, sender, event_type, state_key, depth,
    origin_server_ts, pdu, outlier, rejected_reason, soft_failed, redacted_by, state_group
FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_by_room ON events (room_id, stream_ordering);
CREATE INDEX events_by_room_ts ON events (room_id, origin_server_ts);
CREATE INDEX events_by_room_type_key ON events (room_id, event_type, state_key);

CREATE TABLE event_edges_new (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) WITHOUT ROWID;
INSERT INTO event_edges_new (event_id, prev_event_id) SELECT event_id, prev_event_id FROM event_edges;
DROP TABLE event_edges;
ALTER TABLE event_edges_new RENAME TO event_edges;
CREATE INDEX event_edges_by_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth_new (
    event_id TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
) WITHOUT ROWID;
INSERT INTO event_auth_new (event_id, auth_event_id) SELECT event_id, auth_event_id FROM event_auth;
DROP TABLE event_auth;
ALTER TABLE event_auth_new RENAME TO event_auth;

CREATE TABLE forward_extremities_new (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;
INSERT INTO forward_extremities_new (room_id, event_id) SELECT room_id, event_id FROM forward_extremities;
DROP TABLE forward_extremities;
ALTER TABLE forward_extremities_new RENAME TO forward_extremities;

CREATE TABLE event_txn_ids_new (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
) WITHOUT ROWID;
INSERT INTO event_txn_ids_new (user_id, device_id, txn_id, event_id)
SELECT user_id, device_id, txn_id, event_id FROM event_txn_ids;
DROP TABLE event_txn_ids;
ALTER TABLE event_txn_ids_new RENAME TO event_txn_ids;
CREATE INDEX event_txn_ids_by_event ON event_txn_ids (event_id);

CREATE TABLE event_push_actions_new (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    notify BIGINT NOT NULL,
    highlight BIGINT NOT NULL,
    actions TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, stream_ordering)
) WITHOUT ROWID;
INSERT INTO event_push_actions_new (user_id, room_id, event_id, stream_ordering, thread_id, notify,
    highlight, actions, ts)
SELECT user_id, room_id, event_id, stream_ordering, thread_id, notify, highlight, actions, ts
FROM event_push_actions;
DROP TABLE event_push_actions;
ALTER TABLE event_push_actions_new RENAME TO event_push_actions;
CREATE INDEX event_push_actions_by_user ON event_push_actions (user_id, stream_ordering);
CREATE INDEX event_push_actions_by_event ON event_push_actions (event_id);
