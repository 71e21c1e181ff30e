-- Ranvier schema, version 13: cheaper message writes and unread counts. Dialect-specific:
-- SQLite also widens the push-action key (PostgreSQL keeps its shared buffers across writes,
-- so the table reads below cost it little).
--
-- The events index by room, type and state key covers state events only. Its one reader
-- looks events up by state key (a user's membership events), so message events need no
-- entry in it; leaving them out spares every sent message a write to one more index.
DROP INDEX events_by_room_type_key;
CREATE INDEX events_by_room_type_key ON events (room_id, event_type, state_key) WHERE state_key IS NOT NULL;

-- The unique key of push actions also carries what unread counts add up (thread, notify,
-- highlight), so counting reads the key alone. Without it each unread row cost a read of
-- the table page holding it, and after every write, which empties a reader's page cache,
-- that page came from the file again. The key is still one row per user and event: the
-- event's position identifies it, and its outcome for a user is decided once, when the event
-- is prepared; the added columns only ever repeat what the row already holds.
DROP INDEX event_push_actions_key;
CREATE UNIQUE INDEX event_push_actions_key ON event_push_actions (user_id, room_id, stream_ordering, thread_id, notify, highlight);
