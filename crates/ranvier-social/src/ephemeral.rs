//! What `/sync` reports of the social layer, in one call: per room, `m.typing` and
//! `m.receipt` (the `ephemeral` section); for the user, `m.presence` of everyone they share a
//! room with (the top-level `presence` section).
//!
//! Each part costs nothing when its stream did not move between the two tokens: typing is a
//! lookup per room in memory, receipts one query over the changed rows, presence one query
//! that keeps, among the users who changed, those sharing a room with the syncing user.
//!
//! A token from before a restart can be ahead of the in-memory typing and presence streams;
//! such a token is answered with the full current view, as an initial sync would be.
//!
//! # Wiring into `/sync`
//! - Give the sync service the `Social` handle (build `Social` before `SyncService` in
//!   `Services::new`; it needs only the store and the rooms).
//! - In one sync pass over `(since, now]`, with `full = since.is_none() || full_state` and the
//!   user's joined room ids: `sync_ephemeral(user, &joined, &since.unwrap_or_default(), &now,
//!   full)`. A joined room with an entry in [`Ephemeral::rooms`] is reported even without new
//!   events; its events go to `rooms.join.{roomId}.ephemeral.events` (through the
//!   `room.ephemeral` filter), and [`Ephemeral::presence`] goes to `presence.events` (through
//!   the `presence` filter).
//! - In the `/sync` handler, before the long-poll:
//!   `let _presence = social.set_presence_from_sync(user, set_presence.as_ref()).await?;` and
//!   keep the guard until the response is built.

use std::collections::{HashMap, HashSet};

use ranvier_core::Result;
use ranvier_store::{StreamKind, StreamToken};
use ruma::UserId;
use serde_json::Value;

use crate::Social;

/// Up to this many changed users are checked against the syncing user's rooms one by one;
/// past it, the user's room companions are read once instead.
const CHANGED_USERS_BY_LIST: usize = 500;

/// The social part of one `/sync` response.
#[derive(Debug, Default)]
pub struct Ephemeral {
    /// Per joined room: `m.typing` then `m.receipt` events, in the client format without
    /// `room_id` (they go under `rooms.join.{roomId}.ephemeral.events`).
    pub rooms: HashMap<String, Vec<Value>>,
    /// `m.presence` events (they go under `presence.events`).
    pub presence: Vec<Value>,
}

impl Ephemeral {
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.presence.is_empty()
    }
}

impl Social {
    /// Typing, receipts and presence for `user_id` between two sync tokens.
    ///
    /// `room_ids` are the rooms the user is joined to (the ones `/sync` reports under
    /// `rooms.join`). With `full` (an initial or `full_state` sync) `since` is ignored and the
    /// current view is given: who is typing now, every receipt of the rooms, the presence of
    /// every room companion who is not plainly offline.
    pub async fn sync_ephemeral(
        &self,
        user_id: &UserId,
        room_ids: &[String],
        since: &StreamToken,
        until: &StreamToken,
        full: bool,
    ) -> Result<Ephemeral> {
        let mut out = Ephemeral::default();

        let typing_since = since.get(StreamKind::Typing);
        let typing_now = self.store().streams().current(StreamKind::Typing);
        if full || typing_since != until.get(StreamKind::Typing) || typing_since > typing_now {
            // A token ahead of the stream comes from before a restart: report every room, so
            // that typing the client still shows is cleared.
            let reset = typing_since > typing_now;
            let since = if reset { 0 } else { typing_since };
            for (room_id, event) in self.inner.typing.events_since(room_ids, since, full && !reset) {
                out.rooms.entry(room_id).or_default().push(event);
            }
            if reset {
                for room_id in room_ids {
                    out.rooms.entry(room_id.clone()).or_insert_with(|| {
                        vec![serde_json::json!({ "type": "m.typing", "content": { "user_ids": [] } })]
                    });
                }
            }
        }

        let receipts_since = if full { 0 } else { since.get(StreamKind::Receipts) };
        let receipts_until = until.get(StreamKind::Receipts);
        if receipts_until > receipts_since && !room_ids.is_empty() {
            for (room_id, event) in self.receipt_events(user_id, room_ids, receipts_since, receipts_until).await? {
                out.rooms.entry(room_id).or_default().push(event);
            }
        }

        if self.presence_enabled() {
            out.presence = self.presence_for_sync(user_id, since, until, full).await?;
        }
        Ok(out)
    }

    /// The `m.presence` events `user_id` should get between two tokens.
    async fn presence_for_sync(
        &self,
        user_id: &UserId,
        since: &StreamToken,
        until: &StreamToken,
        full: bool,
    ) -> Result<Vec<Value>> {
        let presence_since = since.get(StreamKind::Presence);
        let presence_now = self.store().streams().current(StreamKind::Presence);
        let full = full || presence_since > presence_now;
        if !full && presence_since == until.get(StreamKind::Presence) {
            return Ok(Vec::new());
        }
        self.load_presence().await?;
        let tracker = &self.inner.presence;
        let me = user_id.to_string();
        let users = if full {
            // Everyone with a live record who shares a room with the user, found from
            // whichever side is smaller.
            let candidates: HashSet<String> = if tracker.live_count() <= CHANGED_USERS_BY_LIST {
                let mut known = tracker.known_users();
                known.retain(|user| *user != me);
                self.store().users_sharing_a_room(user_id.as_str(), &known).await?
            } else {
                self.store().users_sharing_any_room(user_id.as_str()).await?
            };
            let mut wanted: Vec<String> = candidates.into_iter().collect();
            wanted.push(me.clone());
            wanted.sort();
            wanted.dedup();
            tracker.live_records(&wanted).into_iter().map(|(user, record)| (user, Some(record))).collect()
        } else {
            let changed = tracker.changed_since(presence_since);
            if changed.is_empty() {
                return Ok(Vec::new());
            }
            let others: Vec<String> = changed.iter().map(|(user, _)| user.clone()).filter(|user| *user != me).collect();
            let visible: HashSet<String> = if others.len() <= CHANGED_USERS_BY_LIST {
                self.store().users_sharing_a_room(user_id.as_str(), &others).await?
            } else {
                self.store().users_sharing_any_room(user_id.as_str()).await?
            };
            changed.into_iter().filter(|(user, _)| *user == me || visible.contains(user)).collect()
        };
        Ok(self.presence_events(users))
    }
}
