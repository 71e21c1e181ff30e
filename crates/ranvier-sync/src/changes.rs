//! A short in-memory log of recent timeline events (position, room, event id, member target),
//! shared by every long-polling `/sync`.
//!
//! Without it, every new event anywhere would make every waiting client run a sync pass. With
//! it, one waiter reads the new events once and every other waiter answers "anything for me?"
//! from memory: only a client with a new event in one of its joined rooms, or a membership
//! change of its own, goes on to a real pass, and that pass takes the ids of each room's
//! newest events from the log rather than from the database.

use std::collections::{HashMap, HashSet, VecDeque};

use ranvier_core::Result;
use ranvier_store::{Store, sync::EventPosition};

/// How many of a room's newest event ids a window carries (the most the first statement of
/// a timeline walk reads, [`crate::timeline::first_batch_size`]).
pub const WINDOW_IDS_PER_ROOM: usize = 200;

/// How many events the log keeps; older positions are answered by a full pass.
const CAPACITY: usize = 20_000;

#[derive(Default)]
struct Log {
    /// Everything at or below this position has been read.
    scanned_to: i64,
    /// Positions at or below this may have been dropped from `entries`.
    floor: i64,
    /// Oldest first.
    entries: VecDeque<EventPosition>,
}

/// The shared log.
pub struct RecentEvents {
    log: tokio::sync::Mutex<Log>,
}

impl RecentEvents {
    /// A log that starts at `position` (events at or below it are not in it).
    pub fn new(position: i64) -> Self {
        Self { log: tokio::sync::Mutex::new(Log { scanned_to: position, floor: position, entries: VecDeque::new() }) }
    }

    /// What happened in `(since, now]` as far as `user_id` is concerned: the last position of
    /// each of `rooms` that has events in it, and the last event changing `user_id`'s own
    /// membership (in any room). `None` when the log cannot tell (`since` is older than what
    /// it holds).
    pub async fn window(
        &self,
        store: &Store,
        user_id: &str,
        rooms: &HashSet<String>,
        since: i64,
        now: i64,
    ) -> Result<Option<Window>> {
        let mut log = self.log.lock().await;
        log.scan(store, now).await?;
        if since < log.floor {
            return Ok(None);
        }
        let mut window = Window::default();
        for entry in log
            .entries
            .iter()
            .rev()
            .take_while(|entry| entry.stream_ordering > since)
            .filter(|entry| entry.stream_ordering <= now)
        {
            let position = entry.stream_ordering;
            if rooms.contains(&entry.room_id) {
                let last = window.rooms.entry(entry.room_id.clone()).or_insert(position);
                *last = (*last).max(position);
                let ids = window.newest.entry(entry.room_id.clone()).or_default();
                if ids.len() < WINDOW_IDS_PER_ROOM {
                    ids.push((position, entry.event_id.clone()));
                }
            }
            window.member_events |= entry.target.is_some();
            if entry.target.as_deref() == Some(user_id) {
                window.own_membership = Some(window.own_membership.map_or(position, |last: i64| last.max(position)));
            }
        }
        Ok(Some(window))
    }
}

impl Log {
    /// Read what is new up to `now`, dropping the oldest entries past the capacity.
    async fn scan(&mut self, store: &Store, now: i64) -> Result<()> {
        if now > self.scanned_to {
            let new = store.event_positions_between(self.scanned_to, now).await?;
            self.entries.extend(new);
            self.scanned_to = now;
            while self.entries.len() > CAPACITY {
                if let Some(entry) = self.entries.pop_front() {
                    self.floor = entry.stream_ordering;
                }
            }
        }
        Ok(())
    }
}

impl RecentEvents {
    /// The positions and ids of the newest `size` timeline events of each `(room_id, after,
    /// up_to)` range (`up_to` at most `now`), newest first, for the ranges the log can answer
    /// for: those it holds whole (`after` is not older than the log) and those with at least
    /// `size` events in it (nothing newer than them can be missing). Other ranges are absent.
    pub async fn newest_ids(
        &self,
        store: &Store,
        ranges: &[(String, i64, i64)],
        size: usize,
        now: i64,
    ) -> Result<HashMap<String, Vec<(i64, String)>>> {
        let mut log = self.log.lock().await;
        log.scan(store, now).await?;
        let wanted: HashMap<&str, (i64, i64)> =
            ranges.iter().map(|(room_id, after, up_to)| (room_id.as_str(), (*after, (*up_to).min(now)))).collect();
        let mut found: HashMap<String, Vec<(i64, String)>> = HashMap::new();
        for entry in log.entries.iter().rev() {
            let Some((after, up_to)) = wanted.get(entry.room_id.as_str()) else { continue };
            if entry.stream_ordering > *after && entry.stream_ordering <= *up_to {
                let ids = found.entry(entry.room_id.clone()).or_default();
                if ids.len() < size {
                    ids.push((entry.stream_ordering, entry.event_id.clone()));
                }
            }
        }
        let floor = log.floor;
        found.retain(|room_id, ids| {
            ids.len() >= size || wanted.get(room_id.as_str()).is_some_and(|(after, _)| *after >= floor)
        });
        for (room_id, (after, _)) in &wanted {
            if *after >= floor {
                found.entry((*room_id).to_owned()).or_default();
            }
        }
        Ok(found)
    }
}

/// The events of a window of positions that concern one user.
#[derive(Debug, Default)]
pub struct Window {
    /// The rooms (among those asked about) with events in the window, with the last position.
    pub rooms: HashMap<String, i64>,
    /// For the same rooms, the positions and ids of their newest events in the window, newest
    /// first, at most [`WINDOW_IDS_PER_ROOM`] per room.
    pub newest: HashMap<String, Vec<(i64, String)>>,
    /// The last position in the window of an event about the user's own membership.
    pub own_membership: Option<i64>,
    /// Whether any member event (of any room) lies in the window.
    pub member_events: bool,
}
