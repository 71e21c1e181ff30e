-- Ranvier schema, version 5: dehydrated devices (MSC3814). Keep sqlite/ and postgres/ identical.

-- At most one dehydrated device per user. The device itself is an ordinary row of `devices`
-- (without access tokens), so that its keys and to-device inbox work as any device's do;
-- this table marks which device it is and holds the client's opaque device data.
CREATE TABLE dehydrated_devices (
    user_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL,               -- JSON object, as the client sent it
    created_ts BIGINT NOT NULL
);
