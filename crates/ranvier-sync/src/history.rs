//! Reading a room's history: `/messages` (pagination both ways), `/context` (an event with
//! what surrounds it) and `/timestamp_to_event`. Events from users the reader ignores are
//! left out, except state events.
//!
//! Pagination tokens are sync tokens ([`StreamToken`]) whose events position is the boundary
//! described in [`crate::timeline`]; a `prev_batch` or `next_batch` from `/sync` is therefore
//! a valid `from` or `to`.

use std::collections::HashSet;

use ranvier_core::{Error, Result};
use ranvier_rooms::visibility::{HistoryVisibility, filter_visible};
use ranvier_social::ignore::{hidden, ignored_users};
use ranvier_store::{
    StreamKind, StreamToken,
    events::{Direction, StoredEvent},
};
use ruma::api::client::filter::RoomEventFilter;
use serde_json::Value;

use crate::{
    SyncService,
    filter::{MAX_TIMELINE_LIMIT, lazy_members, room_event_allowed, state_type_allowed},
    format::{Formatter, content_of},
    timeline::Walk,
};

/// A `/messages` request.
#[derive(Clone, Debug)]
pub struct MessagesRequest {
    pub user_id: String,
    pub device_id: String,
    pub room_id: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub direction: Direction,
    pub limit: usize,
    pub filter: RoomEventFilter,
}

/// A `/messages` response.
#[derive(Clone, Debug, Default)]
pub struct MessagesResponse {
    pub start: String,
    pub end: Option<String>,
    pub chunk: Vec<Value>,
    pub state: Vec<Value>,
}

/// A `/context` response.
#[derive(Clone, Debug, Default)]
pub struct ContextResponse {
    pub start: String,
    pub end: String,
    pub events_before: Vec<Value>,
    pub event: Value,
    pub events_after: Vec<Value>,
    pub state: Vec<Value>,
}

impl SyncService {
    /// Fail with `M_FORBIDDEN` unless the user has (or had) a membership in the room, or the
    /// room is world-readable. Which events they see is then up to history visibility.
    ///
    /// Returns the last position the user can read: a user who left or was banned sees
    /// nothing after that (unless the room is world-readable), so reads stop there instead of
    /// walking through events that would all be hidden.
    pub async fn check_can_read(&self, user_id: &str, room_id: &str) -> Result<Option<i64>> {
        let membership = self.store().membership_in(room_id, user_id).await?;
        if membership.as_ref().is_some_and(|row| !matches!(row.membership.as_str(), "leave" | "ban")) {
            return Ok(None);
        }
        let world_readable = match self.store().current_state_event(room_id, "m.room.history_visibility", "").await? {
            Some(event) => {
                let content = content_of(&event);
                let visibility = content.as_ref().and_then(|c| c.get("history_visibility")).and_then(Value::as_str);
                HistoryVisibility::parse(visibility) == HistoryVisibility::WorldReadable
            }
            None => false,
        };
        match membership {
            _ if world_readable => Ok(None),
            Some(row) => Ok(Some(row.stream_ordering)),
            None => Err(Error::forbidden("You are not allowed to view this room.")),
        }
    }

    /// `GET /rooms/{roomId}/messages`.
    pub async fn messages(&self, request: MessagesRequest) -> Result<MessagesResponse> {
        let MessagesRequest { user_id, device_id, room_id, from, to, direction, limit, filter } = request;
        let readable_until = self.check_can_read(&user_id, &room_id).await?;
        let ignored = ignored_users(self.store(), &user_id).await?;
        let now = self.store().streams().current_token();
        let from_token = match &from {
            Some(from) => Self::parse_token(from)?,
            None => {
                let mut token = now;
                if direction == Direction::Forward {
                    token.set(StreamKind::Events, 0);
                }
                token
            }
        };
        let to_position = to.as_deref().map(Self::parse_token).transpose()?.map(|t| t.get(StreamKind::Events));
        let from_position = from_token.get(StreamKind::Events);
        let (after, up_to) = match direction {
            Direction::Backward => (to_position.unwrap_or(0), from_position),
            Direction::Forward => (from_position, to_position.unwrap_or(now.get(StreamKind::Events))),
        };
        let up_to = readable_until.map_or(up_to, |until| up_to.min(until));
        let mut response =
            MessagesResponse { start: from.unwrap_or_else(|| from_token.to_string()), ..Default::default() };
        let room_excluded = filter.not_rooms.iter().any(|r| r.as_str() == room_id)
            || filter.rooms.as_ref().is_some_and(|rooms| !rooms.iter().any(|r| r.as_str() == room_id));
        if room_excluded {
            return Ok(response);
        }
        let page = Walk {
            store: self.store(),
            user_id: &user_id,
            room_id: &room_id,
            after,
            up_to,
            direction,
            limit: limit.min(MAX_TIMELINE_LIMIT),
            keep: |event: &StoredEvent| {
                !hidden(&ignored, &event.sender, event.state_key.is_some())
                    && room_event_allowed(&filter, &room_id, &event.event_type, &event.sender, || content_of(event))
            },
            joined_since: None,
        }
        .run()
        .await?;
        if page.more {
            let mut end = from_token;
            end.set(StreamKind::Events, page.next);
            response.end = Some(end.to_string());
        }
        let state = match (lazy_members(&filter), page.events.first()) {
            (Some(_), Some(first)) => {
                let senders: HashSet<&str> = page.events.iter().map(|e| e.sender.as_str()).collect();
                self.member_events_before(first, senders).await?
            }
            _ => Vec::new(),
        };
        let formatter = self.formatter_for(&user_id, &device_id, &ignored, &page.events).await?;
        response.chunk = formatter.events(&page.events, false);
        response.state = formatter.events(&state, false);
        Ok(response)
    }

    /// `GET /rooms/{roomId}/context/{eventId}`.
    pub async fn context(
        &self,
        user_id: &str,
        device_id: &str,
        room_id: &str,
        event_id: &str,
        limit: usize,
        filter: &RoomEventFilter,
    ) -> Result<ContextResponse> {
        let readable_until = self.check_can_read(user_id, room_id).await?;
        let not_found = || Error::not_found("Event not found.");
        let event = self.store().get_event(event_id).await?.ok_or_else(not_found)?;
        if event.room_id != room_id || event.outlier || event.rejected || event.soft_failed {
            return Err(not_found());
        }
        let event = filter_visible(self.store(), user_id, room_id, vec![event]).await?.pop().ok_or_else(not_found)?;
        let ignored = ignored_users(self.store(), user_id).await?;
        if hidden(&ignored, &event.sender, event.state_key.is_some()) {
            return Err(not_found());
        }
        let limit = limit.min(MAX_TIMELINE_LIMIT);
        let before_limit = limit / 2;
        let after_limit = limit - before_limit;
        let keep = |e: &StoredEvent| {
            !hidden(&ignored, &e.sender, e.state_key.is_some())
                && room_event_allowed(filter, room_id, &e.event_type, &e.sender, || content_of(e))
        };
        let before = Walk {
            store: self.store(),
            user_id,
            room_id,
            after: 0,
            up_to: event.stream_ordering - 1,
            direction: Direction::Backward,
            limit: before_limit,
            keep,
            joined_since: None,
        }
        .run()
        .await?;
        let now = self.store().streams().current_token();
        let after = Walk {
            store: self.store(),
            user_id,
            room_id,
            after: event.stream_ordering,
            up_to: readable_until.map_or(now.get(StreamKind::Events), |until| until.min(now.get(StreamKind::Events))),
            direction: Direction::Forward,
            limit: after_limit,
            keep,
            joined_since: None,
        }
        .run()
        .await?;

        // The state after the last event returned, filtered as the request asks.
        let last = after.events.last().unwrap_or(&event);
        let state_ids = self.state_after(room_id, last.stream_ordering).await?;
        let lazy = lazy_members(filter);
        let senders: HashSet<&str> = before
            .events
            .iter()
            .chain(after.events.iter())
            .chain(std::iter::once(&event))
            .map(|e| e.sender.as_str())
            .collect();
        let wanted: Vec<String> = state_ids
            .iter()
            .filter(|((event_type, state_key), _)| {
                state_type_allowed(filter, event_type)
                    && (lazy.is_none() || event_type != "m.room.member" || senders.contains(state_key.as_str()))
            })
            .map(|(_, id)| id.clone())
            .collect();
        let mut state = self.store().get_events(&wanted).await?;
        state.retain(|e| {
            filter.senders.as_ref().is_none_or(|s| s.iter().any(|s| s.as_str() == e.sender))
                && !filter.not_senders.iter().any(|s| s.as_str() == e.sender)
        });
        state.sort_by_key(|e| e.stream_ordering);

        let all: Vec<StoredEvent> =
            before.events.iter().chain(after.events.iter()).chain(std::iter::once(&event)).cloned().collect();
        let formatter = self.formatter_for(user_id, device_id, &ignored, &all).await?;
        let token = |position: i64| {
            let mut token = now;
            token.set(StreamKind::Events, position);
            token.to_string()
        };
        Ok(ContextResponse {
            start: token(before.next),
            end: token(after.next),
            events_before: formatter.events(&before.events, false),
            event: formatter.event(&event, false),
            events_after: formatter.events(&after.events, false),
            state: formatter.events(&state, false),
        })
    }

    /// `GET /rooms/{roomId}/timestamp_to_event`: the visible event closest to `ts` in the
    /// direction asked.
    pub async fn timestamp_to_event(
        &self,
        user_id: &str,
        room_id: &str,
        ts: i64,
        forward: bool,
    ) -> Result<StoredEvent> {
        self.check_can_read(user_id, room_id).await?;
        let not_found = || Error::not_found(format!("Unable to find event from {ts} in the given direction"));
        let event = self.store().event_near_timestamp(room_id, ts, forward).await?.ok_or_else(not_found)?;
        filter_visible(self.store(), user_id, room_id, vec![event]).await?.pop().ok_or_else(not_found)
    }

    /// The member events of `senders` in the state before `event`.
    async fn member_events_before(&self, event: &StoredEvent, senders: HashSet<&str>) -> Result<Vec<StoredEvent>> {
        let Some(group) = event.state_group else {
            return Ok(Vec::new());
        };
        let keys: Vec<(String, String)> =
            senders.into_iter().map(|s| ("m.room.member".to_owned(), s.to_owned())).collect();
        let ids: Vec<String> = self
            .store()
            .state_group_keys(&[group], &keys)
            .await?
            .remove(&group)
            .map(|state| state.into_values().collect())
            .unwrap_or_default();
        let mut events = self.store().get_events(&ids).await?;
        events.sort_by_key(|e| e.stream_ordering);
        Ok(events)
    }

    /// A formatter that adds transaction ids to the requesting device's own events and the
    /// bundled aggregations of `events`.
    pub(crate) async fn formatter_for(
        &self,
        user_id: &str,
        device_id: &str,
        ignored: &HashSet<String>,
        events: &[StoredEvent],
    ) -> Result<Formatter<'static>> {
        let own: Vec<String> = events.iter().filter(|e| e.sender == user_id).map(|e| e.event_id.clone()).collect();
        let transaction_ids = if own.is_empty() {
            Default::default()
        } else {
            self.store().transaction_ids(user_id, device_id, &own).await?
        };
        let relations = self.rooms().bundled_aggregations(user_id, ignored, events).await?;
        Ok(Formatter { transaction_ids, relations, ..Default::default() })
    }
}

/// A pagination token for a position, carrying the other streams of `base`.
pub fn token_at(base: StreamToken, position: i64) -> String {
    let mut token = base;
    token.set(StreamKind::Events, position);
    token.to_string()
}
