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
//! The cache is bounded by the bytes its entries take, in two halves: entries go into the
//! current half; when it is full, it becomes the previous half (and the old previous half is
//! dropped). A hit in the previous half moves the entry back into the current one, so what is
//! read often stays.
//!
//! An entry keeps the event's texts (ids, room, sender, type, state key, redaction and PDU) in
//! one allocation and is found by the event id inside it, so a cached event costs one block
//! beside its slot in the table, where a [`StoredEvent`] takes seven and the key one more.

use std::{
    borrow::Borrow,
    collections::HashSet,
    hash::{Hash, Hasher},
};

use parking_lot::Mutex;

use crate::events::StoredEvent;

/// What an entry is counted as besides its texts: the entry itself in the table (with the
/// table's control byte and spare room) and the allocator's header on the texts' block.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() * 2 + 16;

/// Events by id, bounded by size.
pub struct EventCache {
    inner: Mutex<Inner>,
    /// The size of one half, in bytes.
    half_bytes: usize,
}

#[derive(Default)]
struct Inner {
    current: HashSet<Entry>,
    current_bytes: usize,
    previous: HashSet<Entry>,
    generation: u64,
}

/// The optional texts an entry holds.
const HAS_STATE_KEY: u8 = 1;
const HAS_REDACTED_BY: u8 = 2;
const OUTLIER: u8 = 4;
const REJECTED: u8 = 8;
const SOFT_FAILED: u8 = 16;

/// One cached event. Its texts sit back to back in `text`, in the order event id, room id,
/// sender, type, state key, redacted by, PDU; `ends` holds where each but the PDU ends.
/// Entries are equal, hashed and borrowed as their event id.
struct Entry {
    text: Box<str>,
    ends: [u32; 6],
    flags: u8,
    stream_ordering: i64,
    depth: i64,
    origin_server_ts: i64,
    state_group: Option<i64>,
}

impl Entry {
    fn new(event: &StoredEvent) -> Self {
        let state_key = event.state_key.as_deref();
        let redacted_by = event.redacted_by.as_deref();
        let parts = [
            event.event_id.as_str(),
            &event.room_id,
            &event.sender,
            &event.event_type,
            state_key.unwrap_or_default(),
            redacted_by.unwrap_or_default(),
        ];
        let mut text = String::with_capacity(parts.iter().map(|part| part.len()).sum::<usize>() + event.pdu.len());
        let mut ends = [0; 6];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            // An event is at most 64 KiB, its texts far less than 4 GiB.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        text.push_str(&event.pdu);
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let flags = flag(state_key.is_some(), HAS_STATE_KEY)
            | flag(redacted_by.is_some(), HAS_REDACTED_BY)
            | flag(event.outlier, OUTLIER)
            | flag(event.rejected, REJECTED)
            | flag(event.soft_failed, SOFT_FAILED);
        Self {
            text: text.into_boxed_str(),
            ends,
            flags,
            stream_ordering: event.stream_ordering,
            depth: event.depth,
            origin_server_ts: event.origin_server_ts,
            state_group: event.state_group,
        }
    }

    /// The `i`th text (0 the event id … 6 the PDU).
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends.get(i).map_or(self.text.len(), |&end| end as usize);
        &self.text[start..end]
    }

    fn event_id(&self) -> &str {
        self.part(0)
    }

    fn optional(&self, i: usize, flag: u8) -> Option<String> {
        (self.flags & flag != 0).then(|| self.part(i).to_owned())
    }

    fn to_event(&self) -> StoredEvent {
        StoredEvent {
            stream_ordering: self.stream_ordering,
            event_id: self.part(0).to_owned(),
            room_id: self.part(1).to_owned(),
            sender: self.part(2).to_owned(),
            event_type: self.part(3).to_owned(),
            state_key: self.optional(4, HAS_STATE_KEY),
            depth: self.depth,
            origin_server_ts: self.origin_server_ts,
            pdu: self.part(6).to_owned(),
            outlier: self.flags & OUTLIER != 0,
            rejected: self.flags & REJECTED != 0,
            soft_failed: self.flags & SOFT_FAILED != 0,
            redacted_by: self.optional(5, HAS_REDACTED_BY),
            state_group: self.state_group,
        }
    }

    fn size(&self) -> usize {
        self.text.len() + ENTRY_OVERHEAD
    }
}

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        self.event_id()
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the borrowed form hashes, so that lookups by `&str` find the entry.
        self.event_id().hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.event_id() == other.event_id()
    }
}

impl Eq for Entry {}

impl Inner {
    /// A copy of the cached event, moved into the current half if it was in the previous one.
    fn get(&mut self, event_id: &str, half_bytes: usize) -> Option<StoredEvent> {
        if let Some(entry) = self.current.get(event_id) {
            return Some(entry.to_event());
        }
        let entry = self.previous.take(event_id)?;
        let found = entry.to_event();
        self.put(entry, half_bytes);
        Some(found)
    }

    fn put(&mut self, entry: Entry, half_bytes: usize) {
        let size = entry.size();
        if self.current_bytes + size > half_bytes {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        self.current_bytes += size;
        if let Some(old) = self.current.replace(entry) {
            self.current_bytes -= old.size();
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
            inner.put(Entry::new(event), self.half_bytes);
        }
    }

    /// Forget `event_ids` (their rows changed) and refuse rows read before now.
    pub fn invalidate<'a>(&self, event_ids: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        for event_id in event_ids {
            if let Some(old) = inner.current.take(event_id) {
                inner.current_bytes -= old.size();
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
        // Halves of 2,000 bytes: each event counts its 524 bytes of text and the overhead.
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
        assert!(!inner.current.contains("$1") && !inner.previous.contains("$1"), "old entries go");
    }

    #[test]
    fn an_entry_gives_back_every_field() {
        let cache = EventCache::new(1 << 20);
        let plain = event("$plain", 40);
        let mut full = StoredEvent {
            stream_ordering: -7,
            event_id: "$full".to_owned(),
            room_id: "!room:example.org".to_owned(),
            sender: "@alice:example.org".to_owned(),
            event_type: "m.room.member".to_owned(),
            state_key: Some(String::new()),
            depth: 12,
            origin_server_ts: 1_700_000_000_000,
            pdu: r#"{"content":{"membership":"join"}}"#.to_owned(),
            outlier: true,
            rejected: false,
            soft_failed: true,
            redacted_by: Some("$redaction".to_owned()),
            state_group: Some(3),
        };
        cache.insert_read(cache.generation(), [&plain, &full]);
        assert_eq!(cache.get("$plain"), Some(plain));
        assert_eq!(cache.get("$full").as_ref(), Some(&full));
        // Each flag and optional text stands alone.
        full.event_id = "$other".to_owned();
        full.state_key = None;
        (full.outlier, full.rejected, full.soft_failed) = (false, true, false);
        cache.insert_read(cache.generation(), [&full]);
        assert_eq!(cache.get("$other"), Some(full));
        assert!(cache.get("$fu").is_none(), "an id is looked up whole, not as a prefix");
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
