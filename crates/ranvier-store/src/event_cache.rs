//! An in-memory cache of stored events by id, in front of the `events` table.
//!
//! A row of `events` never changes after its insert except when the event is redacted (its
//! PDU is replaced and `redacted_by` set, in [`crate::persist`]), and rows are never deleted.
//! So the cache needs one kind of invalidation: [`Store::persist_events`](crate::Store) drops
//! the targets of the redactions it committed, after the commit.
//!
//! A reader that read a row before such a commit must not put the old row back afterwards.
//! Every invalidation bumps a generation; a reader takes the generation before its query and
//! inserts what it read only if the generation has not moved by then ([`EventCache::insert_read`]).
//! The check and the insert happen under the same lock as the invalidation, so an old row is
//! either refused or removed.
//!
//! The cache is bounded by the bytes of the PDUs it holds, in two halves: entries go into the
//! current half; when it is full, it becomes the previous half (and the old previous half is
//! dropped). A hit in the previous half moves the entry back into the current one, so what is
//! read often stays.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

use crate::events::StoredEvent;

/// What an entry is counted as besides its PDU (ids, room, sender, type, map overhead).
const ENTRY_OVERHEAD: usize = 256;

/// Events by id, bounded by size.
pub struct EventCache {
    inner: Mutex<Inner>,
    /// The size of one half, in bytes.
    half_bytes: usize,
}

#[derive(Default)]
struct Inner {
    current: HashMap<String, Arc<StoredEvent>>,
    current_bytes: usize,
    previous: HashMap<String, Arc<StoredEvent>>,
    generation: u64,
}

fn size_of(event: &StoredEvent) -> usize {
    event.pdu.len() + ENTRY_OVERHEAD
}

impl Inner {
    /// A copy of the cached event, moved into the current half if it was in the previous one.
    fn get(&mut self, event_id: &str, half_bytes: usize) -> Option<StoredEvent> {
        if let Some(event) = self.current.get(event_id) {
            return Some((**event).clone());
        }
        let event = self.previous.remove(event_id)?;
        let found = (*event).clone();
        self.put(event, half_bytes);
        Some(found)
    }

    fn put(&mut self, event: Arc<StoredEvent>, half_bytes: usize) {
        let size = size_of(&event);
        if self.current_bytes + size > half_bytes {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        self.current_bytes += size;
        if let Some(old) = self.current.insert(event.event_id.clone(), event) {
            self.current_bytes -= size_of(&old);
        }
    }
}

impl EventCache {
    /// A cache holding up to about `max_bytes` of events (0 disables it).
    pub fn new(max_bytes: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), half_bytes: max_bytes / 2 }
    }

    /// The generation to pass to [`EventCache::insert_read`] for rows read from now on.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// The cached event `event_id`, if any.
    pub fn get(&self, event_id: &str) -> Option<StoredEvent> {
        self.inner.lock().get(event_id, self.half_bytes)
    }

    /// The cached events among `event_ids` (under one lock), and the ids not cached.
    pub fn get_many<'a>(&self, event_ids: impl IntoIterator<Item = &'a str>) -> (Vec<StoredEvent>, Vec<&'a str>) {
        let mut inner = self.inner.lock();
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for event_id in event_ids {
            match inner.get(event_id, self.half_bytes) {
                Some(event) => found.push(event),
                None => missing.push(event_id),
            }
        }
        (found, missing)
    }

    /// Cache events read from the database, unless an invalidation happened since
    /// `generation` was taken (before the read).
    pub fn insert_read<'a>(&self, generation: u64, events: impl IntoIterator<Item = &'a StoredEvent>) {
        if self.half_bytes == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        for event in events {
            inner.put(Arc::new(event.clone()), self.half_bytes);
        }
    }

    /// Forget `event_ids` (their rows changed) and refuse rows read before now.
    pub fn invalidate<'a>(&self, event_ids: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        for event_id in event_ids {
            if let Some(old) = inner.current.remove(event_id) {
                inner.current_bytes -= size_of(&old);
            }
            inner.previous.remove(event_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, pdu_len: usize) -> StoredEvent {
        StoredEvent {
            stream_ordering: 1,
            event_id: id.to_owned(),
            room_id: "!r:x".to_owned(),
            sender: "@a:x".to_owned(),
            event_type: "m.room.message".to_owned(),
            state_key: None,
            depth: 1,
            origin_server_ts: 0,
            pdu: "x".repeat(pdu_len),
            outlier: false,
            rejected: false,
            soft_failed: false,
            redacted_by: None,
            state_group: None,
        }
    }

    #[test]
    fn reads_before_an_invalidation_are_refused() {
        let cache = EventCache::new(1 << 20);
        let before = cache.generation();
        cache.insert_read(before, [&event("$a", 10)]);
        assert!(cache.get("$a").is_some());
        cache.invalidate(["$a"]);
        assert!(cache.get("$a").is_none(), "an invalidated event is gone");
        cache.insert_read(before, [&event("$a", 10)]);
        assert!(cache.get("$a").is_none(), "a row read before the invalidation is not cached");
        cache.insert_read(cache.generation(), [&event("$a", 10)]);
        assert!(cache.get("$a").is_some());
    }

    #[test]
    fn stays_within_its_size_and_keeps_what_is_read() {
        // Halves of 2,000 bytes: each event counts 500 + 256.
        let cache = EventCache::new(4_000);
        let generation = cache.generation();
        for i in 0..10 {
            cache.insert_read(generation, [&event(&format!("${i}"), 500)]);
            // `$0` is read after every insert, so it is never dropped.
            assert!(cache.get("$0").is_some(), "after {i}");
        }
        let inner = cache.inner.lock();
        assert!(inner.current_bytes <= 2_000);
        assert!(inner.current.len() + inner.previous.len() <= 6);
        assert!(!inner.current.contains_key("$1") && !inner.previous.contains_key("$1"), "old entries go");
    }

    #[test]
    fn many_at_once_splits_found_from_missing() {
        let cache = EventCache::new(1 << 20);
        cache.insert_read(cache.generation(), [&event("$a", 10), &event("$c", 10)]);
        let (found, missing) = cache.get_many(["$a", "$b", "$c"]);
        let found: Vec<&str> = found.iter().map(|event| event.event_id.as_str()).collect();
        assert_eq!((found, missing), (vec!["$a", "$c"], vec!["$b"]));
    }

    #[test]
    fn a_zero_size_cache_holds_nothing() {
        let cache = EventCache::new(0);
        cache.insert_read(cache.generation(), [&event("$a", 10)]);
        assert!(cache.get("$a").is_none());
    }
}
