-- Ranvier schema, version 2 (PostgreSQL): end-to-end encryption tables. Integers are BIGINT, booleans BIGINT 0/1,
-- JSON TEXT. Keep in step with sqlite/0002_e2ee.sql: both backends run the same queries.

-- Device identity keys (`/keys/upload` device_keys), as uploaded: the signed JSON object.
-- Local and remote users share this table; remote rows will be a cache filled by federation.
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys. Each key is handed out once (deleted when claimed), oldest upload
-- first; keys of one upload share an upload_order.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,                    -- the part after `algorithm:`
    key_json TEXT NOT NULL,
    upload_order BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_claim ON e2e_one_time_keys (user_id, device_id, algorithm, upload_order);

-- At most one fallback key per device and algorithm; `used` once it has been claimed.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- The current cross-signing keys of each user: key_type is 'master', 'self_signing' or
-- 'user_signing'; public_key is the unpadded base64 ed25519 key (its key id without `ed25519:`).
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded with `/keys/signatures/upload`, merged into the keys they sign when the
-- keys are queried. target_key_id is a device id or a cross-signing public key; signer_key_id
-- is the full key id (`ed25519:...`).
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE INDEX e2e_signatures_by_signer ON e2e_signatures (signer_user_id, signer_key_id);

-- The device-list stream: user_id's devices or cross-signing keys changed at stream_pos.
-- device_id is '' for cross-signing changes. audience is '' when everyone who shares a room
-- with user_id is told; otherwise only the user it names is (a user-signing key, which only
-- its owner sees, or a signature the audience made of user_id's master key).
CREATE TABLE device_list_changes (
    stream_pos BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    audience TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (stream_pos, user_id, device_id, audience)
);
CREATE INDEX device_list_changes_by_user ON device_list_changes (user_id, stream_pos);

-- To-device messages waiting for their device, with their position in the to-device stream.
-- One send shares a position; seq orders the messages within it. A message is deleted once
-- its device syncs with a token past it.
CREATE TABLE to_device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_pos, seq)
);
CREATE INDEX to_device_inbox_by_pos ON to_device_inbox (stream_pos);

-- Transaction ids of `/sendToDevice`, so that a retried request is not delivered twice.
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX to_device_txns_by_created ON to_device_txns (created_ts);

-- Highest positions of streams whose rows get deleted (delivered to-device messages), so that
-- positions are never handed out twice across restarts.
CREATE TABLE e2e_stream_positions (
    stream TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO e2e_stream_positions (stream, position) VALUES ('to_device', 0);

-- Server-side key backup versions. Deleted versions keep their row (deleted = 1) so that
-- version numbers are never reused and deleting twice succeeds. etag counts changes to the
-- version's keys.
CREATE TABLE e2e_backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

-- The backed-up session keys of each version.
CREATE TABLE e2e_backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BIGINT NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
