//! Unread notification counts and the notifications list, read from the push outcomes the
//! persist path stored with each event.
//!
//! An outcome is unread while its event is after the user's latest read receipt (`m.read` or
//! `m.read.private`) that is unthreaded or of the event's thread: a receipt in a thread clears
//! that thread only, a `main` receipt the main timeline, an unthreaded one everything.

use std::collections::{BTreeMap, HashMap};

use ranvier_core::{Error, Result};
use ranvier_rooms::format::{FormatOptions, client_event};
use ruma::{
    MilliSecondsSinceUnixEpoch, RoomId, UInt, UserId,
    api::client::push::get_notifications::v3::{Notification, Response},
    serde::Raw,
};
use serde_json::value::to_raw_value;

use crate::{Push, evaluate::MAIN};

/// Notifications listed by default, and at most, per page.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 1_000;

/// Unread counts: notifications and highlights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub notifications: u64,
    pub highlights: u64,
}

/// A room's unread counts as `/sync` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomCounts {
    /// All of the room, or the main timeline alone when counted per thread.
    pub room: Counts,
    /// Per thread root, when counted per thread (threads with something unread).
    pub threads: BTreeMap<String, Counts>,
}

impl Push {
    /// The unread counts of `user_id` in a room, counting events up to `up_to`; separately for
    /// each thread if `per_thread`.
    pub async fn room_counts(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        up_to: i64,
        per_thread: bool,
    ) -> Result<RoomCounts> {
        let room_id = room_id.as_str().to_owned();
        let mut counts = self.rooms_counts(user_id, std::slice::from_ref(&room_id), up_to, per_thread).await?;
        Ok(counts.remove(&room_id).unwrap_or_default())
    }

    /// [`Self::room_counts`] for several rooms at once, in one query per few hundred rooms;
    /// every room asked about is in the answer (with zero counts when nothing is unread).
    pub async fn rooms_counts(
        &self,
        user_id: &UserId,
        room_ids: &[String],
        up_to: i64,
        per_thread: bool,
    ) -> Result<HashMap<String, RoomCounts>> {
        let mut out: HashMap<String, RoomCounts> =
            room_ids.iter().map(|room_id| (room_id.clone(), RoomCounts::default())).collect();
        for (room_id, row) in self.store().unread_counts_in_rooms(user_id.as_str(), room_ids, up_to).await? {
            let Some(room) = out.get_mut(&room_id) else { continue };
            let counts = Counts {
                notifications: u64::try_from(row.notifications).unwrap_or(0),
                highlights: u64::try_from(row.highlights).unwrap_or(0),
            };
            if per_thread && row.thread_id != MAIN {
                room.threads.insert(row.thread_id, counts);
            } else {
                room.room.notifications += counts.notifications;
                room.room.highlights += counts.highlights;
            }
        }
        Ok(out)
    }

    /// `GET /notifications`: the user's notifications, newest first, from the `from` token,
    /// only highlights with `only=highlight`.
    pub async fn notifications(
        &self,
        user_id: &UserId,
        from: Option<&str>,
        limit: Option<UInt>,
        only: Option<&str>,
    ) -> Result<Response> {
        let before = match from {
            Some(token) => Some(token.parse::<i64>().map_err(|_| Error::invalid_param("Invalid `from` token"))?),
            None => None,
        };
        let limit = limit.map_or(DEFAULT_LIMIT, u64::from).clamp(1, MAX_LIMIT);
        let only_highlight = only.is_some_and(|only| only.contains("highlight"));
        let rows = self.store().notifications(user_id.as_str(), before, limit as i64, only_highlight).await?;
        let ids: Vec<String> = rows.iter().map(|row| row.event_id.clone()).collect();
        let events: HashMap<String, _> =
            self.store().get_events(&ids).await?.into_iter().map(|event| (event.event_id.clone(), event)).collect();
        // Notifications stored before the sender was ignored are left out too.
        let ignored = self.ignored_by(user_id).await?;
        let mut read_positions: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        let mut notifications = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(event) = events.get(&row.event_id) else { continue };
            if ranvier_rooms::ignore::hidden(&ignored, &event.sender, event.state_key.is_some()) {
                continue;
            }
            let Ok(room_id) = RoomId::parse(row.room_id.as_str()) else { continue };
            if !read_positions.contains_key(&row.room_id) {
                let positions = self.store().read_positions(user_id.as_str(), &row.room_id).await?;
                read_positions.insert(row.room_id.clone(), positions);
            }
            let read = read_positions[&row.room_id].iter().any(|(thread_id, position)| {
                (thread_id.is_empty() || *thread_id == row.thread_id) && row.stream_ordering <= *position
            });
            let event = client_event(event, FormatOptions::default());
            let Ok(event) = to_raw_value(&event) else { continue };
            let actions = serde_json::from_str(&row.actions).unwrap_or_default();
            let ts = MilliSecondsSinceUnixEpoch(UInt::new(u64::try_from(row.ts).unwrap_or(0)).unwrap_or_default());
            notifications.push(Notification::new(actions, Raw::from_json(event), read, room_id, ts));
        }
        let mut response = Response::new(notifications);
        if rows.len() as u64 == limit {
            response.next_token = rows.last().map(|row| row.stream_ordering.to_string());
        }
        Ok(response)
    }
}
