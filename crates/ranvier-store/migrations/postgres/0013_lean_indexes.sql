-- Ranvier schema, version 13: cheaper message writes. Dialect-specific: SQLite also widens
-- the push-action key (see sqlite/0013_lean_indexes.sql); PostgreSQL keeps its shared
-- buffers across writes, so the table reads that change avoids cost it little.
--
-- The events index by room, type and state key covers state events only. Its one reader
-- looks events up by state key (a user's membership events), so message events need no
-- entry in it; leaving them out spares every sent message a write to one more index.
DROP INDEX events_by_room_type_key;
CREATE INDEX events_by_room_type_key ON events (room_id, event_type, state_key) WHERE state_key IS NOT NULL;
