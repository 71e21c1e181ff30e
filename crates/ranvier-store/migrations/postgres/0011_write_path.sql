-- Ranvier schema, version 11: fewer indexes written per event. Dialect-specific: SQLite
-- rebuilds tables (see sqlite/0011_write_path.sql), PostgreSQL only changes keys and indexes.
--
-- `event_push_actions` is keyed by (user_id, room_id, stream_ordering), which is what unread
-- counts read, so that index and the (user_id, event_id) key go (stream_ordering identifies
-- the event, so the key is still one row per user and event). `event_auth_by_auth` goes:
-- nothing looks events up by the auth events they cite.

ALTER TABLE event_push_actions DROP CONSTRAINT event_push_actions_pkey;
ALTER TABLE event_push_actions ADD PRIMARY KEY (user_id, room_id, stream_ordering);
DROP INDEX event_push_actions_by_room;
DROP INDEX event_auth_by_auth;
