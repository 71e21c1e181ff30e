-- Ranvier schema, version 1 (PostgreSQL). Integers are BIGINT, booleans BIGINT 0/1, JSON TEXT.
-- Keep in step with sqlite/0001_init.sql: both backends run the same queries.

-- Accounts ------------------------------------------------------------------------------------
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,                      -- argon2 PHC string; NULL: no password login
    created_ts BIGINT NOT NULL,
    deactivated BIGINT NOT NULL DEFAULT 0,
    admin BIGINT NOT NULL DEFAULT 0,
    is_guest BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,             -- sha256 of the token, hex; the token itself is never stored
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX access_tokens_by_device ON access_tokens (user_id, device_id);

-- Registration tokens (m.login.registration_token). A token is valid while it has not expired
-- and pending + completed < uses_allowed.
CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,                     -- NULL: unlimited
    pending BIGINT NOT NULL DEFAULT 0,       -- live UIA sessions that passed the token stage
    completed BIGINT NOT NULL DEFAULT 0,     -- accounts registered with the token
    expiry_ts BIGINT                         -- NULL: never expires
);

-- User-interactive authentication sessions. A session authorises one operation for one user.
CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,                 -- what the session was started for, e.g. 'POST /account/password'
    user_id TEXT,                            -- the authenticated user; NULL for registration
    completed TEXT NOT NULL DEFAULT '[]',    -- JSON array of completed stage types, in order
    registration_token TEXT,                 -- the token this session holds a pending use of
    created_ts BIGINT NOT NULL
);
CREATE INDEX uia_sessions_by_created ON uia_sessions (created_ts);

-- Nonces of shared-secret registration (/_synapse/admin/v1/register): single use, short-lived.
CREATE TABLE shared_secret_nonces (
    nonce TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);

CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL DEFAULT '',        -- '' for global account data
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_by_stream ON account_data (user_id, stream_pos);

-- Rooms and the event graph ------------------------------------------------------------------
CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    created_ts BIGINT NOT NULL,
    is_public BIGINT NOT NULL DEFAULT 0,     -- published in the room directory
    current_state_group BIGINT               -- the state group equal to current_state
);

-- Every PDU we hold. stream_ordering is the events-stream position (and the order of
-- /sync and /messages); depth is the DAG depth.
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,                          -- NULL for non-state events
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    pdu TEXT NOT NULL,                       -- the PDU as canonical JSON (redacted in place); event_id only
                                             -- in room versions 1 and 2, where it is part of the format.
                                             -- `unsigned` holds local metadata for clients (prev_content,
                                             -- replaces_state, redacted_because): strip it before federation
    outlier BIGINT NOT NULL DEFAULT 0,       -- held for auth/state only; not in the timeline
    rejected_reason TEXT,                    -- NULL unless the event failed auth
    soft_failed BIGINT NOT NULL DEFAULT 0,
    redacted_by TEXT,                        -- event id of the redaction applied, if any
    state_group BIGINT                       -- the room state *before* this event
);
CREATE INDEX events_by_room ON events (room_id, stream_ordering);
CREATE INDEX events_by_room_ts ON events (room_id, origin_server_ts);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_by_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
);
CREATE INDEX event_auth_by_auth ON event_auth (auth_event_id);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- Idempotent sends: (user, device, txn id) -> event.
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- State snapshots as delta chains: a group is its prev_group plus its own entries.
-- A group without prev_group holds the full state.
CREATE TABLE state_groups (
    id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    chain_length BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (state_group, event_type, state_key)
);

-- The resolved current state of every room, for fast reads.
CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

-- Current membership of every user we know of in every room (mirrors current_state).
CREATE TABLE room_memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    forgotten BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_memberships_by_user ON room_memberships (user_id, membership);
CREATE INDEX room_memberships_by_room ON room_memberships (room_id, membership);

-- Sync ----------------------------------------------------------------------------------------
-- A user's own member events in a room, for history visibility ("joined after the event").
CREATE INDEX events_by_room_type_key ON events (room_id, event_type, state_key);
-- Transaction ids of the events a sync returns, looked up by event.
CREATE INDEX event_txn_ids_by_event ON event_txn_ids (event_id);
