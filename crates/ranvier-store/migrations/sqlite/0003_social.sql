-- Ranvier schema, version 3: the social layer (profiles, receipts, presence, aliases, directory). Keep sqlite/ and postgres/ identical.

-- Profiles of local users: one row per field. The value is JSON: a string for `displayname`
-- and `avatar_url`, any JSON value for extended fields such as `m.tz`.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);

-- What the user directory searches: a display name and avatar per user, kept in step with
-- the profile of local users. search_name is the display name in lower case (folded by the
-- server, since SQLite's LOWER() only folds ASCII).
CREATE TABLE user_directory (
    user_id TEXT PRIMARY KEY,
    display_name TEXT,
    avatar_url TEXT,
    search_name TEXT NOT NULL DEFAULT ''
);

-- Receipts: the latest event per (room, receipt type, user, thread); thread_id '' is an
-- unthreaded receipt. stream_pos is the receipts-stream position of the last change.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream_ordering BIGINT NOT NULL,   -- the event's position: receipts never move back
    ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_by_room_stream ON receipts (room_id, stream_pos);
CREATE INDEX receipts_by_user ON receipts (user_id, room_id);

-- Presence as last persisted. Only changes of state or status message are written; activity
-- in between lives in memory.
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL
);

-- Local room aliases.
CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_by_room ON room_aliases (room_id);

-- The public room directory lists rooms with rooms.is_public = 1.
CREATE INDEX rooms_by_public ON rooms (is_public);
