-- Ranvier schema, version 7: push rules' outcomes and pushers. Keep sqlite/ and postgres/ identical.

-- What the push rules decided for one local user and one event that notifies or highlights:
-- written in the same transaction as the event, so that counts match the timeline exactly.
-- thread_id is `main` or the thread root's event id; actions is the JSON array of actions.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    notify BIGINT NOT NULL,
    highlight BIGINT NOT NULL,
    actions TEXT NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_by_room ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_by_user ON event_push_actions (user_id, stream_ordering);
CREATE INDEX event_push_actions_by_event ON event_push_actions (event_id);

-- Pushers (`POST /pushers/set`). device_id is the device whose access token created the
-- pusher: deleting the device removes it. last_stream_ordering is how far the pusher has
-- delivered notifications; failing_since the time of the first failure since the last success.
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,                      -- JSON object, as the client sent it
    pushkey_ts BIGINT NOT NULL,
    last_stream_ordering BIGINT NOT NULL,
    failing_since BIGINT,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);
