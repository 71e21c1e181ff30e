//! Typing notifications, in memory only.
//!
//! Each room with typing activity keeps who is typing (with an expiry) and the typing-stream
//! position of its last change. A change takes the next position and wakes `/sync`; `/sync`
//! then sends the room's whole current list (`m.typing` is a snapshot, not a delta), so
//! reporting a room twice is harmless and no per-user state is needed. One background task
//! expires typing that timed out, sleeping until the next expiry.

use std::{
    collections::HashMap,
    sync::Weak,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ranvier_core::{Error, Result};
use ranvier_store::{StreamKind, Streams};
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use crate::{Inner, Social, without_nul};

/// The longest a client may ask to be shown typing for.
pub const MAX_TYPING_TIMEOUT: Duration = Duration::from_secs(120);

/// Who is typing in one room.
#[derive(Default)]
struct RoomTyping {
    /// User id to when their typing expires.
    users: HashMap<String, Instant>,
    /// The typing-stream position of the last change.
    position: i64,
}

/// The typing state of every room.
#[derive(Default)]
pub(crate) struct Typing {
    rooms: Mutex<HashMap<String, RoomTyping>>,
    /// Wakes the expiry task when a typing notification with an earlier expiry arrives.
    wake: tokio::sync::Notify,
}

impl Typing {
    /// Record that `user_id` is typing until `until`, or stopped (`None`). Returns whether the
    /// room's list changed.
    fn set(&self, streams: &Streams, room_id: &str, user_id: &str, until: Option<Instant>) -> bool {
        let mut rooms = self.rooms.lock();
        let room = rooms.entry(room_id.to_owned()).or_default();
        let changed = match until {
            Some(until) => room.users.insert(user_id.to_owned(), until).is_none(),
            None => room.users.remove(user_id).is_some(),
        };
        if changed {
            let guard = streams.allocate(StreamKind::Typing);
            room.position = guard.position();
            // Dropping the guard marks the position visible and wakes `/sync`.
            drop(guard);
        }
        // A stop for a room never typed in leaves no entry behind.
        if room.position == 0 {
            rooms.remove(room_id);
        }
        changed
    }

    /// Remove expired typing, giving each room that changed a new position. Returns the next
    /// expiry still pending.
    fn expire(&self, streams: &Streams, now: Instant) -> Option<Instant> {
        let mut rooms = self.rooms.lock();
        let mut next: Option<Instant> = None;
        for room in rooms.values_mut() {
            let before = room.users.len();
            room.users.retain(|_, until| *until > now);
            if room.users.len() != before {
                let guard = streams.allocate(StreamKind::Typing);
                room.position = guard.position();
                drop(guard);
            }
            if let Some(earliest) = room.users.values().min() {
                next = Some(next.map_or(*earliest, |next| next.min(*earliest)));
            }
        }
        next
    }

    /// The users typing in `room_id` now, sorted.
    fn typing_in(room: &RoomTyping, now: Instant) -> Vec<String> {
        let mut users: Vec<String> =
            room.users.iter().filter(|(_, until)| **until > now).map(|(user, _)| user.clone()).collect();
        users.sort();
        users
    }

    /// `m.typing` events for the rooms among `room_ids` whose typing changed after `since`
    /// (every room with someone typing when `full`).
    pub(crate) fn events_since(&self, room_ids: &[String], since: i64, full: bool) -> Vec<(String, Value)> {
        let now = Instant::now();
        let rooms = self.rooms.lock();
        room_ids
            .iter()
            .filter_map(|room_id| {
                let room = rooms.get(room_id)?;
                let users = Self::typing_in(room, now);
                let report = if full { !users.is_empty() } else { room.position > since };
                report.then(|| (room_id.clone(), json!({ "type": "m.typing", "content": { "user_ids": users } })))
            })
            .collect()
    }
}

impl Social {
    /// Mark `user_id` as typing in a room for `timeout` (capped at two minutes), or as no
    /// longer typing (`None`). The user must be joined to the room.
    pub async fn set_typing(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) -> Result<()> {
        without_nul(room_id.as_str(), || Error::forbidden(format!("User {user_id} not in room")))?;
        let joined = self
            .store()
            .membership(room_id.as_str(), user_id.as_str())
            .await?
            .is_some_and(|row| row.membership == "join");
        if !joined {
            return Err(Error::forbidden(format!("User {user_id} not in room {room_id}")));
        }
        if timeout.is_some() && self.is_local(user_id) {
            self.note_activity(user_id).await?;
        }
        let until = timeout.map(|timeout| Instant::now() + timeout.min(MAX_TYPING_TIMEOUT));
        let streams = self.store().streams();
        if self.inner.typing.set(streams, room_id.as_str(), user_id.as_str(), until) || until.is_some() {
            self.inner.typing.wake.notify_one();
        }
        Ok(())
    }
}

/// How long the expiry task sleeps at most, so that it notices the service is gone.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// Expire typing notifications as they time out, for as long as the service lives.
pub(crate) async fn expiry_task(weak: Weak<Inner>) {
    while let Some(inner) = weak.upgrade() {
        let now = Instant::now();
        let next = inner.typing.expire(inner.store.streams(), now);
        let wait = next.map_or(IDLE_CHECK, |at| at.saturating_duration_since(now)).min(IDLE_CHECK);
        // A notification that arrives between `expire` and here leaves a permit, so it is not
        // missed.
        tokio::select! {
            _ = inner.typing.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn streams() -> (ranvier_store::Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ranvier_store::Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()), 2).await.unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn typing_changes_take_positions_and_expire() {
        let (store, _dir) = streams().await;
        let streams = store.streams();
        let typing = Typing::default();
        let rooms = vec!["!a:x".to_owned(), "!b:x".to_owned()];
        let start = streams.current(StreamKind::Typing);
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(typing.set(streams, "!a:x", "@u:x", Some(soon)));
        // Extending a notification is not a change.
        assert!(!typing.set(streams, "!a:x", "@u:x", Some(soon + Duration::from_millis(10))));
        let after_set = streams.current(StreamKind::Typing);
        assert_eq!(after_set, start + 1);
        let events = typing.events_since(&rooms, start, false);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].1["content"]["user_ids"], json!(["@u:x"]));
        assert!(typing.events_since(&rooms, after_set, false).is_empty(), "nothing new since");
        // Expiry removes the user and moves the stream so that clients hear of it.
        assert!(typing.expire(streams, Instant::now()).is_some());
        let later = Instant::now() + Duration::from_millis(100);
        assert_eq!(typing.expire(streams, later), None);
        assert_eq!(streams.current(StreamKind::Typing), after_set + 1);
        let events = typing.events_since(&rooms, after_set, false);
        assert_eq!(events[0].1["content"]["user_ids"], json!([]));
        // A full view only names rooms where someone is typing.
        assert!(typing.events_since(&rooms, 0, true).is_empty());
        // Stopping when not typing changes nothing.
        assert!(!typing.set(streams, "!b:x", "@u:x", None));
    }
}
