-- Ranvier schema, version 6: event relations (`m.relates_to`), for `/relations`, `/threads`
-- and the aggregations bundled with events. The table is the same for both backends; only
-- the backfill below differs, since it reads JSON with each backend's own functions.

-- One row per accepted timeline event whose cleartext content has `m.relates_to` with a
-- `rel_type` and an `event_id` (encrypted events included). The row is written in the same
-- transaction as its event and deleted when the event is redacted (redaction strips
-- `m.relates_to`). `sender`, `event_type` and `stream_ordering` copy the child event's, so
-- that counts, thread lists and filtered pages need no join with `events`.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,               -- the child (the event with `m.relates_to`)
    relates_to_id TEXT NOT NULL,             -- the parent it points at
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL,                   -- the child's room; a parent elsewhere is ignored
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL
);
CREATE INDEX event_relations_by_parent ON event_relations (relates_to_id, rel_type, stream_ordering);
CREATE INDEX event_relations_by_room ON event_relations (room_id, rel_type, relates_to_id, stream_ordering);

-- The relations of events stored before this version.
INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id, sender, event_type, stream_ordering)
SELECT event_id, rel ->> 'event_id', rel ->> 'rel_type', room_id, sender, event_type, stream_ordering
FROM (
    SELECT event_id, room_id, sender, event_type, stream_ordering, pdu::jsonb -> 'content' -> 'm.relates_to' AS rel
    FROM events
    WHERE outlier = 0 AND rejected_reason IS NULL AND soft_failed = 0 AND redacted_by IS NULL
) AS candidates
WHERE jsonb_typeof(rel) = 'object' AND jsonb_typeof(rel -> 'event_id') = 'string'
  AND jsonb_typeof(rel -> 'rel_type') = 'string';
