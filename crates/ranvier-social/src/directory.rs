//! The public room directory: publishing rooms (`/directory/list/room/{roomId}`) and listing
//! them (`/publicRooms`), plus the set of publicly joinable or world-readable rooms that the
//! user directory searches.
//!
//! A listed room is published and either joinable by anyone (`public`, `knock`,
//! `knock_restricted` join rules) or `world_readable`. Rooms are ordered by joined members,
//! most first, then by room id; pages are offsets into that order (`since` = `next_batch` or
//! `prev_batch` of another page).

use std::{collections::HashSet, sync::Arc};

use ranvier_core::{Error, Result};
use ranvier_store::{StreamKind, events::StoredEvent};
use ruma::{RoomId, UserId};
use serde_json::Value;

use crate::{Social, without_nul};

/// The most rooms one page holds, whatever the client asks.
pub const MAX_PAGE: usize = 500;
/// The page size when the client names none.
pub const DEFAULT_PAGE: usize = 100;

/// The state event types a room summary is made of.
const SUMMARY_TYPES: [&str; 8] = [
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
];

/// The join rules under which anyone may ask to enter (and so be listed).
const LISTABLE_JOIN_RULES: [&str; 3] = ["public", "knock", "knock_restricted"];

/// What the directory shows of a room.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoomSummary {
    pub room_id: String,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub avatar_url: Option<String>,
    pub canonical_alias: Option<String>,
    pub num_joined_members: u64,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub join_rule: String,
    pub room_type: Option<String>,
}

impl RoomSummary {
    /// Whether the summary matches a generic search term (name, topic or canonical alias,
    /// case-insensitively).
    pub fn matches(&self, term: &str) -> bool {
        let term = term.to_lowercase();
        [&self.name, &self.topic, &self.canonical_alias]
            .into_iter()
            .flatten()
            .any(|text| text.to_lowercase().contains(&term))
    }

    /// Whether the room may appear in the public list.
    pub fn listable(&self) -> bool {
        LISTABLE_JOIN_RULES.contains(&self.join_rule.as_str()) || self.world_readable
    }
}

/// A page of the public room list.
#[derive(Clone, Debug, Default)]
pub struct PublicRoomsPage {
    pub chunk: Vec<RoomSummary>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total_room_count_estimate: u64,
}

/// What a client asked of `/publicRooms`.
#[derive(Clone, Debug, Default)]
pub struct PublicRoomsQuery {
    pub limit: Option<u64>,
    pub since: Option<String>,
    pub generic_search_term: Option<String>,
    /// `Some` to keep only rooms of these types (`None` in the list is a room without a type).
    pub room_types: Option<Vec<Option<String>>>,
}

/// Where a page starts and its neighbours' tokens, for `total` rooms. `400 M_INVALID_PARAM` for
/// a token this server did not give.
pub fn page_bounds(
    total: usize,
    since: Option<&str>,
    limit: Option<u64>,
) -> Result<(std::ops::Range<usize>, Option<String>, Option<String>)> {
    let limit = limit.map_or(DEFAULT_PAGE, |limit| usize::try_from(limit).unwrap_or(MAX_PAGE)).clamp(1, MAX_PAGE);
    let start = match since {
        None => 0,
        Some(token) => token
            .strip_prefix('o')
            .and_then(|offset| offset.parse::<usize>().ok())
            .ok_or_else(|| Error::invalid_param("Invalid `since` token"))?,
    };
    let start = start.min(total);
    let end = (start + limit).min(total);
    let next = (end < total).then(|| format!("o{end}"));
    let prev = (start > 0).then(|| format!("o{}", start.saturating_sub(limit)));
    Ok((start..end, next, prev))
}

/// The summary of one room from its summary state events and joined member count.
pub fn summarise(room_id: &str, events: &[StoredEvent], joined: i64) -> RoomSummary {
    let mut summary = RoomSummary {
        room_id: room_id.to_owned(),
        num_joined_members: u64::try_from(joined).unwrap_or(0),
        join_rule: "invite".to_owned(),
        ..Default::default()
    };
    for event in events {
        let pdu: Value = serde_json::from_str(&event.pdu).unwrap_or_default();
        let content = pdu.get("content").cloned().unwrap_or_default();
        let text =
            |field: &str| content.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        match event.event_type.as_str() {
            "m.room.create" => summary.room_type = text("type"),
            "m.room.name" => summary.name = text("name"),
            "m.room.topic" => summary.topic = text("topic"),
            "m.room.avatar" => summary.avatar_url = text("url"),
            "m.room.canonical_alias" => summary.canonical_alias = text("alias"),
            "m.room.join_rules" => summary.join_rule = text("join_rule").unwrap_or_else(|| "invite".to_owned()),
            "m.room.history_visibility" => {
                summary.world_readable = text("history_visibility").as_deref() == Some("world_readable")
            }
            "m.room.guest_access" => summary.guest_can_join = text("guest_access").as_deref() == Some("can_join"),
            _ => {}
        }
    }
    summary
}

/// The rooms anyone may join or read (`public` join rule or `world_readable`), kept up to date
/// from the state changes since it was last read rather than recomputed.
#[derive(Default)]
pub(crate) struct PublicRoomCache {
    state: tokio::sync::Mutex<Option<(i64, Arc<HashSet<String>>)>>,
}

impl Social {
    /// The rooms whose members anyone may see: `public` join rule or `world_readable` history.
    pub(crate) async fn public_room_set(&self) -> Result<Arc<HashSet<String>>> {
        const TYPES: [&str; 2] = ["m.room.join_rules", "m.room.history_visibility"];
        let mut cached = self.inner.public_rooms.state.lock().await;
        let now = self.store().streams().current(StreamKind::Events);
        let (mut set, changed) = match cached.as_ref() {
            Some((position, set)) if *position >= now => return Ok(set.clone()),
            Some((position, set)) => {
                let (rooms, _) = self.store().rooms_with_state_changes(&TYPES, *position).await?;
                ((**set).clone(), rooms)
            }
            None => (HashSet::new(), self.store().all_room_ids().await?),
        };
        let state = self.store().current_state_of_rooms(&changed, &TYPES).await?;
        for room_id in changed {
            let summary = summarise(&room_id, state.get(&room_id).map(Vec::as_slice).unwrap_or(&[]), 0);
            if summary.join_rule == "public" || summary.world_readable {
                set.insert(room_id);
            } else {
                set.remove(&room_id);
            }
        }
        let set = Arc::new(set);
        *cached = Some((now, set.clone()));
        Ok(set)
    }

    /// The summaries of several rooms.
    pub async fn room_summaries(&self, room_ids: &[String]) -> Result<Vec<RoomSummary>> {
        let state = self.store().current_state_of_rooms(room_ids, &SUMMARY_TYPES).await?;
        let counts = self.store().joined_counts(room_ids).await?;
        Ok(room_ids
            .iter()
            .map(|room_id| {
                let events = state.get(room_id).map(Vec::as_slice).unwrap_or(&[]);
                summarise(room_id, events, counts.get(room_id).copied().unwrap_or(0))
            })
            .collect())
    }

    /// Whether a room is published; `404 M_NOT_FOUND` for an unknown room.
    pub async fn room_published(&self, room_id: &RoomId) -> Result<bool> {
        without_nul(room_id.as_str(), || Error::not_found("Room not found"))?;
        let room = self.store().room(room_id.as_str()).await?.ok_or_else(|| Error::not_found("Room not found"))?;
        Ok(room.is_public)
    }

    /// Publish or unpublish a room. A joined member allowed to change the canonical alias, or
    /// a server admin, may.
    pub async fn set_room_published(&self, requester: &UserId, room_id: &RoomId, published: bool) -> Result<()> {
        without_nul(room_id.as_str(), || Error::not_found("Room not found"))?;
        if self.store().room(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found("Room not found"));
        }
        let allowed = self.rooms().may_send_state(room_id, requester, "m.room.canonical_alias").await? == Some(true)
            || self.store().get_user(requester.as_str()).await?.is_some_and(|user| user.admin);
        if !allowed {
            return Err(Error::forbidden("You don't have permission to change the room's directory visibility"));
        }
        self.store().set_room_published(room_id.as_str(), published).await?;
        Ok(())
    }

    /// A page of the public room list.
    pub async fn public_rooms(&self, query: &PublicRoomsQuery) -> Result<PublicRoomsPage> {
        let published = self.store().published_rooms().await?;
        let mut rooms: Vec<RoomSummary> =
            self.room_summaries(&published).await?.into_iter().filter(RoomSummary::listable).collect();
        let total = rooms.len();
        if let Some(term) = query.generic_search_term.as_deref().filter(|term| !term.trim().is_empty()) {
            rooms.retain(|room| room.matches(term.trim()));
        }
        if let Some(types) = &query.room_types {
            rooms.retain(|room| types.contains(&room.room_type));
        }
        rooms.sort_by(|a, b| b.num_joined_members.cmp(&a.num_joined_members).then_with(|| a.room_id.cmp(&b.room_id)));
        let (range, next_batch, prev_batch) = page_bounds(rooms.len(), query.since.as_deref(), query.limit)?;
        let chunk = rooms.drain(range).collect();
        Ok(PublicRoomsPage {
            chunk,
            next_batch,
            prev_batch,
            total_room_count_estimate: u64::try_from(total).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_forward_and_back() {
        let (range, next, prev) = page_bounds(25, None, Some(10)).unwrap();
        assert_eq!((range, next.as_deref(), prev.as_deref()), (0..10, Some("o10"), None));
        let (range, next, prev) = page_bounds(25, Some("o10"), Some(10)).unwrap();
        assert_eq!((range, next.as_deref(), prev.as_deref()), (10..20, Some("o20"), Some("o0")));
        let (range, next, prev) = page_bounds(25, Some("o20"), Some(10)).unwrap();
        assert_eq!((range, next.as_deref(), prev.as_deref()), (20..25, None, Some("o10")));
        // A token past the end gives an empty last page.
        let (range, next, _) = page_bounds(25, Some("o99"), Some(10)).unwrap();
        assert_eq!((range, next), (25..25, None));
        // Limits are clamped; no limit is the default page.
        assert_eq!(page_bounds(1000, None, Some(0)).unwrap().0, 0..1);
        assert_eq!(page_bounds(1000, None, Some(100_000)).unwrap().0, 0..MAX_PAGE);
        assert_eq!(page_bounds(1000, None, None).unwrap().0, 0..DEFAULT_PAGE);
        assert_eq!(page_bounds(0, None, None).unwrap(), (0..0, None, None));
        for bad in ["", "10", "o", "o-1", "ox"] {
            assert!(page_bounds(10, Some(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn summaries_and_search() {
        let room = RoomSummary {
            name: Some("Rust Lovers".into()),
            topic: Some("Talk about ownership".into()),
            canonical_alias: Some("#rust:example.org".into()),
            join_rule: "public".into(),
            ..Default::default()
        };
        assert!(room.matches("rust"));
        assert!(room.matches("OWNERSHIP"));
        assert!(room.matches("#rust:"));
        assert!(!room.matches("python"));
        assert!(room.listable());
        let private = RoomSummary { join_rule: "invite".into(), ..Default::default() };
        assert!(!private.listable());
        assert!(RoomSummary { world_readable: true, ..private }.listable());
    }
}
