-- Ranvier schema, version 12: cheaper push-action writes. Dialect-specific: SQLite rebuilds
-- the table (see sqlite/0012_push_actions.sql), PostgreSQL only swaps an index.
--
-- The (event_id) index, written at a random place for every row, goes: the one statement
-- that looked rows up by event (a redaction dropping its target's rows) finds them by stream
-- position instead, and that index is written in order.

DROP INDEX event_push_actions_by_event;
CREATE INDEX event_push_actions_by_stream ON event_push_actions (stream_ordering);
