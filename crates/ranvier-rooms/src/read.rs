//! Reads for clients: state, members and single events, each with the access rule Synapse
//! applies. A joined user reads the current state; a user who left or was banned reads the
//! state as it was when they left; anyone reads a `world_readable` room's current state.

use ranvier_core::{Error, Result};
use ranvier_store::{
    StreamToken,
    events::{Direction, StateIds, StoredEvent},
};
use ruma::{EventId, OwnedRoomId, RoomId, UserId};

use crate::{Rooms, send::not_in_room, visibility};

/// Which state a user may read.
enum StateView {
    Current,
    /// The state right after this event (the user's leave or ban).
    After(Box<StoredEvent>),
}

/// A member of a room as `/joined_members` shows it.
#[derive(Clone, Debug)]
pub struct JoinedMember {
    pub user_id: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// A page of mutual rooms.
#[derive(Clone, Debug, Default)]
pub struct MutualRooms {
    pub joined: Vec<OwnedRoomId>,
    /// How many rooms there are in all pages.
    pub count: u64,
    pub next_batch: Option<String>,
}

/// Filters of `/members`.
#[derive(Clone, Debug, Default)]
pub struct MembersQuery {
    /// A sync token: the members at that point of the timeline.
    pub at: Option<String>,
    pub membership: Option<String>,
    pub not_membership: Option<String>,
}

fn content_str(event: &StoredEvent, field: &str) -> Option<String> {
    let pdu: serde_json::Value = serde_json::from_str(&event.pdu).ok()?;
    pdu.get("content")?.get(field)?.as_str().map(str::to_owned)
}

impl Rooms {
    /// What state `user_id` may read in a room, or `403 M_FORBIDDEN`.
    async fn state_view(&self, room_id: &RoomId, user_id: &UserId) -> Result<StateView> {
        let store = self.store();
        if let Some(row) = store.membership(room_id.as_str(), user_id.as_str()).await? {
            match row.membership.as_str() {
                "join" => return Ok(StateView::Current),
                "leave" | "ban" => {
                    if let Some(event) = store.get_event(&row.event_id).await? {
                        return Ok(StateView::After(Box::new(event)));
                    }
                }
                _ => {}
            }
        }
        let world_readable = store
            .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
            .await?
            .is_some_and(|event| content_str(&event, "history_visibility").as_deref() == Some("world_readable"));
        if world_readable {
            return Ok(StateView::Current);
        }
        Err(not_in_room(user_id, room_id))
    }

    /// The room state right after `event`.
    pub async fn state_after(&self, event: &StoredEvent) -> Result<StateIds> {
        let mut state = match event.state_group {
            Some(group) => self.store().state_group_state(group).await?,
            None => StateIds::new(),
        };
        if let Some(state_key) = &event.state_key
            && !event.rejected
            && !event.outlier
        {
            state.insert((event.event_type.clone(), state_key.clone()), event.event_id.clone());
        }
        Ok(state)
    }

    /// The state event `(event_type, state_key)` as `user_id` may see it; `404` if absent.
    pub async fn state_event(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        event_type: &str,
        state_key: &str,
    ) -> Result<StoredEvent> {
        let event = match self.state_view(room_id, user_id).await? {
            StateView::Current => self.store().current_state_event(room_id.as_str(), event_type, state_key).await?,
            StateView::After(leave) => {
                let state = self.state_after(&leave).await?;
                match state.get(&(event_type.to_owned(), state_key.to_owned())) {
                    Some(id) => self.store().get_event(id).await?,
                    None => None,
                }
            }
        };
        event.ok_or_else(|| Error::not_found("Event not found."))
    }

    /// The whole room state as `user_id` may see it.
    pub async fn room_state(&self, room_id: &RoomId, user_id: &UserId) -> Result<Vec<StoredEvent>> {
        match self.state_view(room_id, user_id).await? {
            StateView::Current => self.store().current_state_events(room_id.as_str(), None).await,
            StateView::After(leave) => {
                let ids: Vec<String> = self.state_after(&leave).await?.into_values().collect();
                let mut events = self.store().get_events(&ids).await?;
                events.sort_by_key(|event| event.stream_ordering);
                Ok(events)
            }
        }
    }

    /// One event of a room, if it exists there and `user_id` may see it.
    pub async fn room_event(&self, room_id: &RoomId, user_id: &UserId, event_id: &EventId) -> Result<StoredEvent> {
        let not_found = || Error::not_found("Event not found.");
        let event = self.store().get_event(event_id.as_str()).await?.ok_or_else(not_found)?;
        if event.room_id != room_id.as_str() || event.rejected {
            return Err(not_found());
        }
        let visible = visibility::filter_visible(self.store(), user_id.as_str(), room_id.as_str(), vec![event]).await?;
        visible.into_iter().next().ok_or_else(not_found)
    }

    /// The member events of a room (`/members`).
    pub async fn members(&self, room_id: &RoomId, user_id: &UserId, query: &MembersQuery) -> Result<Vec<StoredEvent>> {
        let view = self.state_view(room_id, user_id).await?;
        let mut limit_position = match &view {
            StateView::Current => None,
            StateView::After(leave) => Some(leave.stream_ordering),
        };
        if let Some(at) = &query.at {
            let token: StreamToken = at.parse().map_err(|_| Error::invalid_param("`at` is not a valid sync token"))?;
            let at_position = token.get(ranvier_store::StreamKind::Events);
            limit_position = Some(limit_position.map_or(at_position, |limit| limit.min(at_position)));
        }
        let mut events = match limit_position {
            None => self.store().current_state_events(room_id.as_str(), Some(&["m.room.member"])).await?,
            Some(position) => {
                let last = self.store().room_timeline(room_id.as_str(), 0, position, Direction::Backward, 1).await?;
                let state = match last.first() {
                    Some(event) => self.state_after(event).await?,
                    None => StateIds::new(),
                };
                let ids: Vec<String> =
                    state.into_iter().filter(|((kind, _), _)| kind == "m.room.member").map(|(_, id)| id).collect();
                let mut events = self.store().get_events(&ids).await?;
                events.sort_by_key(|event| event.stream_ordering);
                events
            }
        };
        events.retain(|event| {
            let membership = content_str(event, "membership").unwrap_or_default();
            query.membership.as_ref().is_none_or(|m| *m == membership)
                && query.not_membership.as_ref().is_none_or(|m| *m != membership)
        });
        Ok(events)
    }

    /// The joined members with their display names and avatars (`/joined_members`).
    pub async fn joined_members(&self, room_id: &RoomId, user_id: &UserId) -> Result<Vec<JoinedMember>> {
        let joined = self.store().membership(room_id.as_str(), user_id.as_str()).await?;
        if joined.is_none_or(|row| row.membership != "join") {
            return Err(not_in_room(user_id, room_id));
        }
        let ids: Vec<String> = self
            .store()
            .room_members_with(room_id.as_str(), "join")
            .await?
            .into_iter()
            .map(|(_, event_id)| event_id)
            .collect();
        let events = self.store().get_events(&ids).await?;
        Ok(events
            .iter()
            .filter_map(|event| {
                Some(JoinedMember {
                    user_id: event.state_key.clone()?,
                    display_name: content_str(event, "displayname"),
                    avatar_url: content_str(event, "avatar_url"),
                })
            })
            .collect())
    }

    /// One page of the rooms `user_id` and `other` are both joined to (MSC2666, `mutual_rooms`):
    /// at most `limit` rooms after the `from` token of the previous page, with how many there
    /// are in all. The token of the next page is the last room id of this one.
    pub async fn mutual_rooms(
        &self,
        user_id: &UserId,
        other: &UserId,
        from: Option<&str>,
        limit: usize,
    ) -> Result<MutualRooms> {
        if user_id == other {
            return Err(Error::invalid_param("The user_id may not be your own"));
        }
        if let Some(from) = from
            && RoomId::parse(from).is_err()
        {
            return Err(Error::invalid_param("Invalid or expired `from` token"));
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // One room more than asked tells whether another page follows.
        let (mut rooms, count) =
            self.store().mutual_joined_rooms(user_id.as_str(), other.as_str(), from, limit.saturating_add(1)).await?;
        let more = rooms.len() as i64 > limit;
        rooms.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let joined: Vec<OwnedRoomId> = rooms.iter().filter_map(|room| RoomId::parse(room).ok()).collect();
        let next_batch = if more { rooms.last().cloned() } else { None };
        Ok(MutualRooms { joined, count: u64::try_from(count).unwrap_or_default(), next_batch })
    }

    /// The rooms a user is joined to (`/joined_rooms`).
    pub async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .store()
            .rooms_for_user(user_id.as_str())
            .await?
            .into_iter()
            .filter(|(_, membership, _, _)| membership == "join")
            .filter_map(|(room_id, ..)| RoomId::parse(room_id).ok())
            .collect())
    }
}
