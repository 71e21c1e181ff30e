//! Unread counts held in memory per user and room, so that a sync woken by a new event does
//! not count its user's unread push outcomes in the database again.
//!
//! An entry holds a room's counts per thread as the database gave them up to a stream
//! position (`as_of`), and the push outcomes written since (`pending`), each with its event's
//! position. A count up to `up_to >= as_of` is the entry's counts plus the pending outcomes up
//! to `up_to`. That is exact because:
//! - every write that changes what is unread in a room announces itself first
//!   ([`UnreadCache::writing`]) and ends by handing the cache what it changed
//!   ([`UnreadWrite::events_committed`], [`UnreadWrite::receipt_committed`]); while a room has
//!   a write under way, its counts are read from the database and not cached;
//! - outcomes are only ever written with their event ([`crate::Store::persist_events`]), and
//!   a new outcome is unread: it comes after every receipt and membership of its room (those
//!   name earlier events of the room), except when its own event changes the user's
//!   membership, which drops the entry;
//! - the rest drops what it touches: a receipt its user's entry of the room, a membership
//!   change the member's, a redaction (which deletes its target's outcomes) every entry of the
//!   room, and a write that ended without saying what it changed (failed or cut short) every
//!   entry of its rooms;
//! - counts read from the database are kept only if no write of any room began while they
//!   were read (a read cut short leaves its placeholder, which the first read after the next
//!   write replaces).
//!
//! Bounded by the number of entries: when full, the cache starts afresh.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::{persist::PersistEvent, push::ThreadCounts};

/// Entries kept at most: one per user and room a sync counted.
pub const UNREAD_CACHE_CAPACITY: usize = 65_536;

/// Outcomes an entry keeps apart before they are folded into its counts (which moves the
/// position it answers from forward).
const MAX_PENDING: usize = 64;

/// One push outcome written after an entry's counts were read.
struct Pending {
    position: i64,
    thread_id: String,
    notify: bool,
    highlight: bool,
}

enum Entry {
    /// The counts are being read since write number `epoch` began.
    Loading {
        epoch: u64,
    },
    Ready {
        as_of: i64,
        threads: Vec<ThreadCounts>,
        pending: Vec<Pending>,
    },
}

/// What [`UnreadCache::lookup`] found.
pub enum Lookup {
    /// The counts, threads with nothing unread left out, ordered by thread.
    Hit(Vec<ThreadCounts>),
    /// Not cached: read the counts and hand them to [`UnreadCache::loaded`] with this number.
    Load(u64),
    /// Read the counts, and keep them to yourself.
    Uncached,
}

#[derive(Default)]
struct Inner {
    /// Entries by room, then user: a write finds its room's entries, and a room's entries are
    /// dropped together, without a key built per lookup.
    rooms: HashMap<String, HashMap<String, Entry>>,
    /// Entries in all rooms.
    len: usize,
    /// Writes begun so far.
    epoch: u64,
    /// Rooms with writes under way, and how many.
    writing: HashMap<String, u32>,
}

impl Inner {
    fn get_mut(&mut self, room_id: &str, user_id: &str) -> Option<&mut Entry> {
        self.rooms.get_mut(room_id)?.get_mut(user_id)
    }

    /// Put `entry` in, starting afresh first when `capacity` entries are held.
    fn insert(&mut self, room_id: &str, user_id: &str, entry: Entry, capacity: usize) {
        if self.len >= capacity {
            self.rooms.clear();
            self.len = 0;
        }
        let room = self.rooms.entry(room_id.to_owned()).or_default();
        if room.insert(user_id.to_owned(), entry).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, room_id: &str, user_id: &str) {
        let Some(room) = self.rooms.get_mut(room_id) else { return };
        if room.remove(user_id).is_some() {
            self.len -= 1;
        }
        if room.is_empty() {
            self.rooms.remove(room_id);
        }
    }

    fn drop_room(&mut self, room_id: &str) {
        if let Some(room) = self.rooms.remove(room_id) {
            self.len -= room.len();
        }
    }
}

/// Unread counts by user and room.
pub struct UnreadCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl UnreadCache {
    /// A cache of at most `capacity` entries (0 turns it off).
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), capacity }
    }

    /// The counts of `user_id` in `room_id` up to `up_to`.
    pub fn lookup(&self, user_id: &str, room_id: &str, up_to: i64) -> Lookup {
        if self.capacity == 0 {
            return Lookup::Uncached;
        }
        let mut inner = self.inner.lock();
        if inner.writing.contains_key(room_id) {
            return Lookup::Uncached;
        }
        let current = inner.epoch;
        match inner.get_mut(room_id, user_id) {
            Some(Entry::Ready { as_of, threads, pending }) if up_to >= *as_of => {
                let (now, later): (Vec<_>, Vec<_>) =
                    std::mem::take(pending).into_iter().partition(|p| p.position <= up_to);
                fold(threads, now);
                *pending = later;
                *as_of = up_to;
                Lookup::Hit(threads.clone())
            }
            // Another read of the counts is under way, with nothing written since it began.
            Some(Entry::Loading { epoch }) if *epoch == current => Lookup::Uncached,
            Some(Entry::Ready { .. }) => Lookup::Uncached,
            // Absent, or a read that will not be kept (a write began since; or it was cut short
            // and never ended): read afresh.
            _ => {
                inner.insert(room_id, user_id, Entry::Loading { epoch: current }, self.capacity);
                Lookup::Load(current)
            }
        }
    }

    /// The counts read for a [`Lookup::Load`] numbered `epoch`, up to `up_to`: kept unless the
    /// entry was dropped or a write began since.
    pub fn loaded(&self, user_id: &str, room_id: &str, epoch: u64, up_to: i64, threads: &[ThreadCounts]) {
        let mut inner = self.inner.lock();
        let current = inner.epoch;
        let Some(entry) = inner.get_mut(room_id, user_id) else { return };
        if !matches!(entry, Entry::Loading { epoch: loading } if *loading == epoch) {
            return;
        }
        if current != epoch {
            inner.remove(room_id, user_id);
            return;
        }
        let mut threads = threads.to_vec();
        threads.sort_by(|a, b| a.thread_id.cmp(&b.thread_id));
        *entry = Entry::Ready { as_of: up_to, threads, pending: Vec::new() };
    }

    /// Give up a [`Lookup::Load`] numbered `epoch` whose read failed.
    pub fn abandon(&self, user_id: &str, room_id: &str, epoch: u64) {
        let mut inner = self.inner.lock();
        if matches!(inner.get_mut(room_id, user_id), Some(Entry::Loading { epoch: loading }) if *loading == epoch) {
            inner.remove(room_id, user_id);
        }
    }

    /// A write to `room_ids` begins: until it ends, their counts are not cached.
    pub fn writing<'a>(&self, room_ids: impl IntoIterator<Item = &'a str>) -> UnreadWrite<'_> {
        let mut rooms: Vec<String> = room_ids.into_iter().map(str::to_owned).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut inner = self.inner.lock();
        inner.epoch += 1;
        for room_id in &rooms {
            *inner.writing.entry(room_id.clone()).or_default() += 1;
        }
        UnreadWrite { cache: self, rooms, ended: false }
    }
}

/// A write under way (see [`UnreadCache::writing`]). Dropped before it says what it changed,
/// every entry of its rooms is dropped.
pub struct UnreadWrite<'a> {
    cache: &'a UnreadCache,
    rooms: Vec<String>,
    ended: bool,
}

impl UnreadWrite<'_> {
    /// `events` committed: add their push outcomes to the entries of their users and rooms,
    /// then drop the entries their membership changes and redactions touch.
    pub fn events_committed(mut self, events: &[&PersistEvent]) {
        let cache = self.cache;
        let mut inner = cache.inner.lock();
        for event in events {
            let Some(room) = inner.rooms.get_mut(&event.room_id) else { continue };
            for action in &event.push_actions {
                let Some(Entry::Ready { as_of, threads, pending }) = room.get_mut(&action.user_id) else { continue };
                pending.push(Pending {
                    position: event.stream_ordering,
                    thread_id: action.thread_id.clone(),
                    notify: action.notify,
                    highlight: action.highlight,
                });
                if pending.len() > MAX_PENDING {
                    let all = std::mem::take(pending);
                    *as_of = all.iter().map(|p| p.position).fold(*as_of, i64::max);
                    fold(threads, all);
                }
            }
            for change in &event.memberships {
                inner.remove(&event.room_id, &change.user_id);
            }
            if event.redaction.is_some() {
                inner.drop_room(&event.room_id);
            }
        }
        self.end(&mut inner);
    }

    /// A receipt of `user_id` in `room_id` (this write's room) committed.
    pub fn receipt_committed(mut self, user_id: &str, room_id: &str) {
        let cache = self.cache;
        let mut inner = cache.inner.lock();
        inner.remove(room_id, user_id);
        self.end(&mut inner);
    }

    fn end(&mut self, inner: &mut Inner) {
        self.ended = true;
        for room_id in &self.rooms {
            if let Some(count) = inner.writing.get_mut(room_id) {
                *count -= 1;
                if *count == 0 {
                    inner.writing.remove(room_id);
                }
            }
        }
    }
}

impl Drop for UnreadWrite<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let cache = self.cache;
        let mut inner = cache.inner.lock();
        for room_id in &self.rooms {
            inner.drop_room(room_id);
        }
        self.end(&mut inner);
    }
}

/// Add `pending` outcomes to `threads`, keeping them ordered by thread.
fn fold(threads: &mut Vec<ThreadCounts>, pending: Vec<Pending>) {
    for p in pending {
        let at = match threads.binary_search_by(|t| t.thread_id.as_str().cmp(&p.thread_id)) {
            Ok(at) => at,
            Err(at) => {
                threads.insert(at, ThreadCounts { thread_id: p.thread_id, notifications: 0, highlights: 0 });
                at
            }
        };
        threads[at].notifications += i64::from(p.notify);
        threads[at].highlights += i64::from(p.highlight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{persist::MembershipChange, push::NewPushAction};

    fn event(position: i64, room_id: &str, actions: &[(&str, &str, bool, bool)]) -> PersistEvent {
        PersistEvent {
            stream_ordering: position,
            room_id: room_id.to_owned(),
            push_actions: actions
                .iter()
                .map(|(user_id, thread_id, notify, highlight)| NewPushAction {
                    user_id: (*user_id).to_owned(),
                    thread_id: (*thread_id).to_owned(),
                    notify: *notify,
                    highlight: *highlight,
                    actions: "[]".to_owned(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn counts(thread_id: &str, notifications: i64, highlights: i64) -> ThreadCounts {
        ThreadCounts { thread_id: thread_id.to_owned(), notifications, highlights }
    }

    fn hit(cache: &UnreadCache, up_to: i64) -> Vec<ThreadCounts> {
        match cache.lookup("@a:x", "!r:x", up_to) {
            Lookup::Hit(threads) => threads,
            Lookup::Load(_) => panic!("expected a hit, got a load"),
            Lookup::Uncached => panic!("expected a hit, got uncached"),
        }
    }

    fn commit(cache: &UnreadCache, event: &PersistEvent) {
        cache.writing([event.room_id.as_str()]).events_committed(&[event]);
    }

    /// Loads the counts of @a in !r up to `up_to` as `threads`.
    fn load(cache: &UnreadCache, up_to: i64, threads: &[ThreadCounts]) {
        let Lookup::Load(epoch) = cache.lookup("@a:x", "!r:x", up_to) else { panic!("expected a load") };
        cache.loaded("@a:x", "!r:x", epoch, up_to, threads);
    }

    #[test]
    fn outcomes_written_after_the_read_count_up_to_their_position() {
        let cache = UnreadCache::new(10);
        load(&cache, 10, &[counts("main", 2, 0)]);
        assert_eq!(hit(&cache, 10), vec![counts("main", 2, 0)]);
        commit(&cache, &event(11, "!r:x", &[("@a:x", "main", true, false)]));
        commit(&cache, &event(12, "!r:x", &[("@a:x", "$t", true, true), ("@b:x", "main", true, false)]));
        assert_eq!(hit(&cache, 11), vec![counts("main", 3, 0)]);
        assert_eq!(hit(&cache, 12), vec![counts("$t", 1, 1), counts("main", 3, 0)]);
        assert!(matches!(cache.lookup("@a:x", "!r:x", 11), Lookup::Uncached), "before the entry's position");
        assert!(matches!(cache.lookup("@b:x", "!r:x", 12), Lookup::Load(_)), "never read");
    }

    #[test]
    fn receipts_memberships_redactions_and_unfinished_writes_drop_entries() {
        let cache = UnreadCache::new(10);
        load(&cache, 5, &[counts("main", 1, 0)]);
        cache.writing(["!r:x"]).receipt_committed("@a:x", "!r:x");
        load(&cache, 5, &[counts("main", 1, 0)]);
        let mut join = event(6, "!r:x", &[("@a:x", "main", true, false)]);
        join.memberships.push(MembershipChange {
            user_id: "@a:x".into(),
            membership: "join".into(),
            event_id: "$j".into(),
        });
        commit(&cache, &join);
        load(&cache, 6, &[counts("main", 1, 0)]);
        let mut redaction = event(7, "!r:x", &[]);
        redaction.redaction =
            Some(crate::persist::Redaction { target_event_id: "$e".into(), redacted_pdu: "{}".into() });
        commit(&cache, &redaction);
        load(&cache, 7, &[]);
        assert_eq!(hit(&cache, 7), vec![]);
        drop(cache.writing(["!r:x"]));
        assert!(matches!(cache.lookup("@a:x", "!r:x", 7), Lookup::Load(_)), "a write that said nothing");
    }

    #[test]
    fn nothing_is_cached_around_a_write() {
        let cache = UnreadCache::new(10);
        let write = cache.writing(["!r:x"]);
        assert!(matches!(cache.lookup("@a:x", "!r:x", 5), Lookup::Uncached), "while the room is written");
        write.events_committed(&[]);
        let Lookup::Load(epoch) = cache.lookup("@a:x", "!r:x", 5) else { panic!("expected a load") };
        assert!(matches!(cache.lookup("@a:x", "!r:x", 5), Lookup::Uncached), "another read meanwhile");
        // A write of another room begins while the counts are read.
        cache.writing(["!other:x"]).events_committed(&[]);
        let Lookup::Load(again) = cache.lookup("@a:x", "!r:x", 5) else { panic!("a write began: read afresh") };
        cache.loaded("@a:x", "!r:x", epoch, 5, &[counts("main", 1, 0)]);
        assert!(matches!(cache.lookup("@a:x", "!r:x", 5), Lookup::Uncached), "the first read is not kept");
        cache.loaded("@a:x", "!r:x", again, 5, &[counts("main", 2, 0)]);
        assert_eq!(hit(&cache, 5), vec![counts("main", 2, 0)]);
        // A read that began before a write is not kept, even when no later read replaced it.
        let Lookup::Load(epoch) = cache.lookup("@b:x", "!r:x", 5) else { panic!("expected a load") };
        cache.writing(["!other:x"]).events_committed(&[]);
        cache.loaded("@b:x", "!r:x", epoch, 5, &[]);
        assert!(matches!(cache.lookup("@b:x", "!r:x", 5), Lookup::Load(_)), "read while a write began");
    }

    #[test]
    fn many_pending_outcomes_are_folded() {
        let cache = UnreadCache::new(10);
        load(&cache, 1, &[]);
        let more = MAX_PENDING as i64 + 1;
        for position in 2..2 + more {
            commit(&cache, &event(position, "!r:x", &[("@a:x", "main", true, false)]));
        }
        assert!(matches!(cache.lookup("@a:x", "!r:x", more), Lookup::Uncached));
        assert_eq!(hit(&cache, 1 + more), vec![counts("main", more, 0)]);
    }
}
