//! One `/sync` pass: which rooms to report and what to say about each.
//!
//! An initial sync (no `since`) reports every joined room with its latest timeline events and
//! the state at the start of that timeline. An incremental sync reports only rooms with
//! something new since `since`: it asks the store for the rooms among the user's memberships
//! that have events after `since` (one query whose cost follows the new events) and for the
//! user's membership changes; rooms with nothing new are never loaded.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures_util::{StreamExt, stream};
use ranvier_core::Result;
use ranvier_social::ignore::hidden;
use ranvier_store::{
    StreamKind, StreamToken,
    events::{Direction, StateIds, StoredEvent},
    sync::MembershipRow,
};
use ruma::api::client::filter::FilterDefinition;
use serde_json::{Value, json};

use crate::{
    SyncService,
    filter::{
        event_allowed, lazy_members, room_allowed, room_event_allowed, state_type_allowed, timeline_limit,
        wants_federation_format,
    },
    format::{Formatter, content_of, stripped_state},
    response::{
        InvitedRoom, JoinedRoom, KnockedRoom, LeftRoom, RoomSummary, SyncResponse, Timeline, UnreadNotifications,
    },
    timeline::{Walk, first_batch_size},
};

/// How many rooms are built at once.
const ROOM_CONCURRENCY: usize = 4;

/// The stripped state an invite or knock carries, besides the membership event itself.
const STRIPPED_STATE_TYPES: [&str; 6] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];

/// What a client asked of `/sync`, resolved (the filter is a definition, not an id).
#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub user_id: String,
    pub device_id: String,
    /// Boxed: a definition is about a kilobyte, and a waiting `/sync` holds its request.
    pub filter: Box<FilterDefinition>,
    pub since: Option<StreamToken>,
    pub full_state: bool,
    /// How long to wait for something new (already capped by the server's limit).
    pub timeout: std::time::Duration,
}

/// What the caller already knows about `(since, now]` from the log of recent events, so that
/// a pass need not ask the store again.
#[derive(Clone, Debug)]
pub(crate) struct Hint {
    /// The user's (not forgotten) memberships, current as of `now`.
    pub memberships: Vec<MembershipRow>,
    /// The rooms among `memberships` with timeline events in `(since, now]`, with the last
    /// position of each (what `Store::rooms_with_new_events` answers).
    pub new_events: HashMap<String, i64>,
    /// Whether any member event (of any room) lies in `(since, now]`.
    pub member_events: bool,
    /// For the rooms of `new_events`, the positions and ids of their newest timeline events in
    /// `(since, now]`, newest first (see [`crate::changes::Window::newest`]).
    pub newest: HashMap<String, Vec<(i64, String)>>,
}

/// What to compute for one joined or left room.
#[derive(Clone, Debug)]
struct RoomPlan {
    room_id: String,
    left: bool,
    /// The position the client knows the room at; `None` for a full (initial) view.
    since: Option<i64>,
    /// The last position to report (the leave, for a left room).
    up_to: i64,
    /// For a joined room, the position of the user's join (their membership as read for this
    /// pass, which is at least as new as `up_to`).
    joined_since: Option<i64>,
}

/// What every room of one sync pass shares.
#[derive(Clone, Copy)]
struct RoomContext<'a> {
    request: &'a SyncRequest,
    room_account_data: &'a HashMap<String, Vec<Value>>,
    /// Summaries computed ahead for all rooms (initial and full-state syncs).
    summaries: &'a HashMap<String, (HashMap<String, i64>, Vec<String>)>,
    /// The users the syncing user ignores (read once per pass).
    ignored: &'a HashSet<String>,
    /// Whether the pass continues from a `since` token (rooms new to the client then get all
    /// their account data, not only the changes).
    incremental: bool,
    now: StreamToken,
}

/// How many other members a room summary names.
const HEROES: i64 = 5;

/// A room's timeline and the ids of the state events to send with it (the first half of its
/// update).
struct RoomDraft {
    plan: RoomPlan,
    /// Oldest first.
    timeline_events: Vec<StoredEvent>,
    limited: bool,
    prev_batch_token: StreamToken,
    /// Not among the timeline's events.
    state_ids: Vec<String>,
    /// Whether the room's whole state is sent (not only what changed since the client's token).
    full_state: bool,
}

/// One room's computed update.
enum RoomOutcome {
    Joined(String, JoinedRoom),
    Left(String, LeftRoom),
}

impl SyncService {
    /// Compute the response for the positions `(since, now]`.
    pub(crate) async fn compute(
        &self,
        request: &SyncRequest,
        since: Option<StreamToken>,
        now: StreamToken,
        hint: Option<Hint>,
    ) -> Result<SyncResponse> {
        let store = self.store();
        let user_id = request.user_id.as_str();
        let filter = &request.filter;
        let now_events = now.get(StreamKind::Events);
        let since_events = since.map(|token| token.get(StreamKind::Events));
        let mut response = SyncResponse { next_batch: now.to_string(), ..Default::default() };
        if since.is_none() {
            self.inner.sent_members.reset(user_id, &request.device_id);
        }

        // Account data, global and per room.
        let account_data_since = since.map_or(0, |token| token.get(StreamKind::AccountData));
        let account_data_now = now.get(StreamKind::AccountData);
        let mut room_account_data: HashMap<String, Vec<Value>> = HashMap::new();
        if account_data_now > account_data_since {
            for (room_id, data_type, content) in
                store.account_data_changes(user_id, account_data_since, account_data_now).await?
            {
                let content: Value = serde_json::from_str(&content).unwrap_or_else(|_| json!({}));
                let event = json!({ "type": data_type, "content": content });
                if room_id.is_empty() {
                    if event_allowed(&filter.account_data, &data_type, None) {
                        response.account_data.events.push(event);
                    }
                } else if room_allowed(&filter.room, &room_id)
                    && room_event_allowed(&filter.room.account_data, &room_id, &data_type, user_id, || None)
                {
                    room_account_data.entry(room_id).or_default().push(event);
                }
            }
        }

        // The push service keeps every user's ignore list in memory (it needs them on the
        // write path); without it, the list is read from the account data.
        let ignored = match (&self.inner.push, ruma::UserId::parse(user_id)) {
            (Some(push), Ok(parsed)) => (*push.ignored_by(&parsed).await?).clone(),
            _ => ranvier_social::ignore::ignored_users(store, user_id).await?,
        };
        let mut member_events = true;
        let mut newest = None;
        let (memberships, new_events) = match hint {
            Some(Hint { memberships, new_events, member_events: any, newest: ids }) if since_events.is_some() => {
                member_events = any;
                newest = Some(ids);
                (memberships, new_events)
            }
            _ => {
                let memberships = store.memberships_of(user_id).await?;
                let new_events: HashMap<String, i64> = match since_events {
                    Some(since) if now_events > since => {
                        store.rooms_with_new_events(user_id, since, now_events).await?
                    }
                    _ => HashMap::new(),
                };
                (memberships, new_events)
            }
        };

        let mut plans = Vec::new();
        let mut joined_ids = Vec::new();
        let mut invites = Vec::new();
        let mut knocks = Vec::new();
        for membership in memberships {
            if !room_allowed(&filter.room, &membership.room_id) {
                continue;
            }
            let changed = since_events.is_none_or(|since| membership.stream_ordering > since);
            match membership.membership.as_str() {
                "join" => {
                    joined_ids.push(membership.room_id.clone());
                    let room_since = match since_events {
                        Some(since) if membership.stream_ordering <= since => Some(since),
                        // A room joined since the last sync is new to the client: send it whole.
                        // A join that only changed a display name or avatar is not a new join.
                        Some(since) if self.was_joined_at(&membership.room_id, user_id, since).await? => Some(since),
                        _ => None,
                    };
                    let wanted = room_since.is_none()
                        || request.full_state
                        || new_events.contains_key(&membership.room_id)
                        || room_account_data.contains_key(&membership.room_id);
                    if wanted {
                        plans.push(RoomPlan {
                            room_id: membership.room_id,
                            left: false,
                            since: room_since,
                            up_to: now_events,
                            joined_since: Some(membership.stream_ordering),
                        });
                    }
                }
                "invite" if changed => invites.push(membership),
                "knock" if changed => knocks.push(membership),
                "leave" | "ban" => {
                    let up_to = membership.stream_ordering.min(now_events);
                    match since_events {
                        None if filter.room.include_leave => plans.push(RoomPlan {
                            room_id: membership.room_id,
                            left: true,
                            since: None,
                            up_to,
                            joined_since: None,
                        }),
                        Some(since) if changed || (request.full_state && filter.room.include_leave) => {
                            plans.push(RoomPlan {
                                room_id: membership.room_id,
                                left: true,
                                since: changed.then_some(since),
                                up_to,
                                joined_since: None,
                            })
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }

        // Summaries for every joined room at once when every room will need one.
        let summaries = if since.is_none() || request.full_state {
            let joined: Vec<String> = plans.iter().filter(|plan| !plan.left).map(|plan| plan.room_id.clone()).collect();
            store.room_summaries(&joined, user_id, HEROES).await?
        } else {
            HashMap::new()
        };
        let context = RoomContext {
            request,
            room_account_data: &room_account_data,
            summaries: &summaries,
            ignored: &ignored,
            incremental: since.is_some(),
            now,
        };
        let (mut first_batches, covered) = self
            .first_batches(&plans, timeline_limit(&filter.room.timeline), since_events, now_events, newest.as_ref())
            .await?;
        let plans: Vec<(RoomPlan, Option<Vec<StoredEvent>>)> = plans
            .into_iter()
            .map(|plan| {
                // A covered room that got no events has none in its range.
                let batch =
                    covered.contains(&plan.room_id).then(|| first_batches.remove(&plan.room_id).unwrap_or_default());
                (plan, batch)
            })
            .collect();
        let drafts: Vec<Result<RoomDraft>> = stream::iter(plans)
            .map(|(plan, batch)| self.room_draft(&context, plan, batch))
            .buffer_unordered(ROOM_CONCURRENCY)
            .collect()
            .await;
        let drafts = drafts.into_iter().collect::<Result<Vec<RoomDraft>>>()?;
        // The state events of every room, read together.
        let state_ids: Vec<String> = drafts.iter().flat_map(|draft| draft.state_ids.iter().cloned()).collect();
        let mut state_events: HashMap<String, StoredEvent> =
            store.get_events(&state_ids).await?.into_iter().map(|event| (event.event_id.clone(), event)).collect();
        let drafts: Vec<(RoomDraft, Vec<StoredEvent>)> = drafts
            .into_iter()
            .map(|draft| {
                let events = draft.state_ids.iter().filter_map(|id| state_events.remove(id)).collect();
                (draft, events)
            })
            .collect();
        let outcomes: Vec<Result<Option<RoomOutcome>>> = stream::iter(drafts)
            .map(|(draft, events)| self.room_finish(&context, draft, events))
            .buffer_unordered(ROOM_CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome? {
                Some(RoomOutcome::Joined(room_id, room)) => {
                    response.rooms.join.insert(room_id, room);
                }
                Some(RoomOutcome::Left(room_id, room)) => {
                    response.rooms.leave.insert(room_id, room);
                }
                None => {}
            }
        }
        for invite in invites {
            // Invites from ignored users are not delivered.
            if !ignored.is_empty()
                && let Some(event) = store.get_event(&invite.event_id).await?
                && ignored.contains(&event.sender)
            {
                continue;
            }
            let events = self.stripped_state_for(&invite).await?;
            let mut room = InvitedRoom::default();
            room.invite_state.events = events;
            response.rooms.invite.insert(invite.room_id, room);
        }
        for knock in knocks {
            let events = self.stripped_state_for(&knock).await?;
            let mut room = KnockedRoom::default();
            room.knock_state.events = events;
            response.rooms.knock.insert(knock.room_id, room);
        }
        if let Some(social) = &self.inner.social {
            self.add_social(social, request, &joined_ids, since, now, &mut response).await?;
        }
        if let Some(push) = &self.inner.push {
            self.add_push(push, request, since, now, &mut response).await?;
        }
        if let Some(e2ee) = &self.inner.e2ee {
            let data = e2ee.sync_data_with(user_id, &request.device_id, since.as_ref(), &now, member_events).await?;
            response.to_device.events = data.to_device_events;
            response.device_lists.changed = data.device_lists_changed;
            response.device_lists.left = data.device_lists_left;
            response.device_one_time_keys_count = Some(data.one_time_keys_count);
            response.device_unused_fallback_key_types = Some(data.unused_fallback_key_types);
            // A response carries a bounded batch of to-device messages; the token must say how
            // far this one went, or the rest would be deleted unseen on the next sync.
            let mut next_batch = now;
            next_batch.set(StreamKind::ToDevice, data.to_device_position);
            response.next_batch = next_batch.to_string();
        }
        Ok(response)
    }

    /// The answer of the first statement of each room's timeline walk, read for all rooms at
    /// once, and the rooms it covers. Rooms continuing from the pass's `since` take the ids of
    /// their newest events from the window of the log of recent events (`newest`, exactly
    /// `(since, now]`); other rooms take them from the log when it can answer for their range;
    /// the events come from the store's cache. The rest share one statement per 50 rooms when
    /// there are several.
    async fn first_batches(
        &self,
        plans: &[RoomPlan],
        limit: usize,
        since: Option<i64>,
        now: i64,
        newest: Option<&HashMap<String, Vec<(i64, String)>>>,
    ) -> Result<(HashMap<String, Vec<StoredEvent>>, HashSet<String>)> {
        let mut batches: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        let mut covered = HashSet::new();
        if limit == 0 {
            return Ok((batches, covered));
        }
        let size = first_batch_size(limit);
        let mut from_log: Vec<String> = Vec::new();
        let mut ranges: Vec<(String, i64, i64)> = Vec::new();
        for plan in plans.iter().filter(|plan| plan.since.unwrap_or(0) < plan.up_to) {
            match (newest, plan.since) {
                (Some(newest), Some(after)) if Some(after) == since => {
                    let ids = newest.get(&plan.room_id).into_iter().flatten();
                    from_log.extend(
                        ids.filter(|(position, _)| *position > after && *position <= plan.up_to)
                            .take(size)
                            .map(|(_, event_id)| event_id.clone()),
                    );
                    covered.insert(plan.room_id.clone());
                }
                _ => ranges.push((plan.room_id.clone(), plan.since.unwrap_or(0), plan.up_to)),
            }
        }
        if !ranges.is_empty() {
            let logged = self.inner.recent.newest_ids(self.store(), &ranges, size, now).await?;
            ranges.retain(|(room_id, _, _)| !logged.contains_key(room_id));
            for (room_id, ids) in logged {
                from_log.extend(ids.into_iter().map(|(_, event_id)| event_id));
                covered.insert(room_id);
            }
        }
        if !from_log.is_empty() {
            let mut events = self.store().get_events(&from_log).await?;
            events.sort_unstable_by_key(|event| std::cmp::Reverse(event.stream_ordering));
            for event in events {
                batches.entry(event.room_id.clone()).or_default().push(event);
            }
        }
        if ranges.len() >= 2 {
            batches.extend(self.store().rooms_timelines(&ranges, size as i64).await?);
            covered.extend(ranges.into_iter().map(|(room_id, _, _)| room_id));
        }
        Ok((batches, covered))
    }

    /// The first half of a room's update: its timeline and the ids of the state events to
    /// send with it. `first_batch` is the first statement's answer of the timeline walk, when
    /// the caller read it for several rooms at once.
    async fn room_draft(
        &self,
        context: &RoomContext<'_>,
        plan: RoomPlan,
        first_batch: Option<Vec<StoredEvent>>,
    ) -> Result<RoomDraft> {
        let RoomContext { request, ignored, now, .. } = *context;
        let store = self.store();
        let user_id = request.user_id.as_str();
        let filter = &request.filter;
        let room_id = plan.room_id.as_str();
        let timeline_filter = &filter.room.timeline;

        let page = Walk {
            store,
            user_id,
            room_id,
            after: plan.since.unwrap_or(0),
            up_to: plan.up_to,
            direction: Direction::Backward,
            limit: timeline_limit(timeline_filter),
            keep: |event: &StoredEvent| {
                !hidden(ignored, &event.sender, event.state_key.is_some())
                    && room_event_allowed(timeline_filter, room_id, &event.event_type, &event.sender, || {
                        content_of(event)
                    })
            },
            joined_since: plan.joined_since,
        }
        .run_from(first_batch)
        .await?;
        let complete = !page.more && !page.skipped;
        let mut timeline_events = page.events;
        timeline_events.reverse();
        let limited = page.more;
        // The client closes a gap with `/messages?dir=b&from=prev_batch`, which must start just
        // before the first event it was given.
        let mut prev_batch_token = now;
        prev_batch_token
            .set(StreamKind::Events, timeline_events.first().map_or(page.next, |first| first.stream_ordering - 1));

        // State.
        let state_filter = &filter.room.state;
        let lazy = lazy_members(state_filter);
        let full_state = plan.since.is_none() || request.full_state;
        let mut senders: HashSet<&str> = timeline_events.iter().map(|event| event.sender.as_str()).collect();
        senders.insert(user_id);
        let in_timeline: HashSet<&str> = timeline_events.iter().map(|event| event.event_id.as_str()).collect();
        let keep_key = |(event_type, state_key): &(String, String)| {
            state_type_allowed(state_filter, event_type)
                && (lazy.is_none() || event_type != "m.room.member" || senders.contains(state_key.as_str()))
        };
        let mut state_ids: Vec<String> = Vec::new();
        if full_state {
            let start = self.state_at_start(room_id, timeline_events.first(), plan.up_to).await?;
            state_ids.extend(start.iter().filter(|(key, _)| keep_key(key)).map(|(_, id)| id.clone()));
        } else if let Some(since) = plan.since {
            if !complete {
                let start = self.state_at_start(room_id, timeline_events.first(), plan.up_to).await?;
                let before = self.state_after(room_id, since).await?;
                state_ids.extend(
                    start
                        .iter()
                        .filter(|(key, id)| before.get(*key) != Some(*id) && keep_key(key))
                        .map(|(_, id)| id.clone()),
                );
            }
            if let (Some(include_redundant), Some(first)) = (lazy, timeline_events.first()) {
                // Lazy-loading clients need the member events of the timeline's senders; send
                // those the device has not had yet (or all of them, if it asks).
                let keys: Vec<(String, String)> =
                    senders.iter().map(|sender| ("m.room.member".to_owned(), (*sender).to_owned())).collect();
                let members: Vec<String> = match first.state_group {
                    Some(group) => store
                        .state_group_keys(&[group], &keys)
                        .await?
                        .remove(&group)
                        .map(|state| state.into_values().collect())
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                let members: Vec<String> = members
                    .into_iter()
                    .filter(|id| !state_ids.contains(id) && !in_timeline.contains(id.as_str()))
                    .collect();
                let members = if include_redundant {
                    members
                } else {
                    self.inner.sent_members.unsent(user_id, &request.device_id, members)
                };
                state_ids.extend(members);
            }
        }
        state_ids.retain(|id| !in_timeline.contains(id.as_str()));
        Ok(RoomDraft { plan, timeline_events, limited, prev_batch_token, state_ids, full_state })
    }

    /// The second half of a room's update: its state events (read for every room at once),
    /// account data, summary and the formatted timeline.
    async fn room_finish(
        &self,
        context: &RoomContext<'_>,
        draft: RoomDraft,
        mut state_events: Vec<StoredEvent>,
    ) -> Result<Option<RoomOutcome>> {
        let RoomContext { request, room_account_data, summaries, ignored, incremental, now } = *context;
        let RoomDraft { plan, timeline_events, limited, prev_batch_token, full_state, .. } = draft;
        let store = self.store();
        let user_id = request.user_id.as_str();
        let filter = &request.filter;
        let room_id = plan.room_id.as_str();
        let state_filter = &filter.room.state;
        let lazy = lazy_members(state_filter);
        state_events.retain(|event| {
            room_event_allowed(state_filter, room_id, &event.event_type, &event.sender, || content_of(event))
        });
        state_events.sort_by_key(|event| event.stream_ordering);
        if lazy.is_some() {
            let members = state_events
                .iter()
                .chain(timeline_events.iter())
                .filter(|event| event.event_type == "m.room.member")
                .map(|event| event.event_id.clone());
            self.inner.sent_members.record(user_id, &request.device_id, members);
        }

        let own: Vec<String> = timeline_events
            .iter()
            .filter(|event| event.sender == user_id)
            .map(|event| event.event_id.clone())
            .collect();
        let transaction_ids = if own.is_empty() {
            HashMap::new()
        } else {
            store.transaction_ids(user_id, &request.device_id, &own).await?
        };
        let federation = wants_federation_format(filter);
        let relations = if federation {
            HashMap::new()
        } else {
            self.rooms().bundled_aggregations(user_id, ignored, &timeline_events).await?
        };
        let formatter =
            Formatter { event_fields: filter.event_fields.as_deref(), federation, transaction_ids, relations };
        let timeline = Timeline {
            events: formatter.events(&timeline_events, true),
            limited,
            prev_batch: Some(prev_batch_token.to_string()),
        };
        let state = formatter.events(&state_events, true);
        let account_data = if incremental && plan.since.is_none() && !plan.left {
            // A room the client gets whole (joined since its last sync) comes with all of its
            // account data, such as tags set while the user was invited.
            let until = now.get(StreamKind::AccountData);
            store
                .room_account_data(user_id, room_id, until)
                .await?
                .into_iter()
                .filter(|(data_type, _)| {
                    room_event_allowed(&filter.room.account_data, room_id, data_type, user_id, || None)
                })
                .map(|(data_type, content)| {
                    let content: Value = serde_json::from_str(&content).unwrap_or_else(|_| json!({}));
                    json!({ "type": data_type, "content": content })
                })
                .collect()
        } else {
            room_account_data.get(room_id).cloned().unwrap_or_default()
        };

        if plan.left {
            let mut room = LeftRoom { timeline, ..Default::default() };
            room.state.events = state;
            room.account_data.events = account_data;
            return Ok(Some(RoomOutcome::Left(plan.room_id, room)));
        }
        let members_changed = full_state
            || state_events.iter().chain(timeline_events.iter()).any(|event| event.event_type == "m.room.member");
        let summary = match summaries.get(room_id) {
            _ if !members_changed => None,
            Some((counts, heroes)) => Some(RoomSummary {
                heroes: heroes.clone(),
                joined_member_count: counts.get("join").copied().unwrap_or(0),
                invited_member_count: counts.get("invite").copied().unwrap_or(0),
            }),
            None => Some(self.summary(room_id, user_id).await?),
        };
        let mut room = JoinedRoom { summary, timeline, ..Default::default() };
        room.state.events = state;
        room.account_data.events = account_data;
        if plan.since.is_some() && !request.full_state && room.is_empty() {
            return Ok(None);
        }
        Ok(Some(RoomOutcome::Joined(plan.room_id, room)))
    }

    /// Whether the user's membership at `position` was `join`, from their own member events.
    async fn was_joined_at(&self, room_id: &str, user_id: &str, position: i64) -> Result<bool> {
        let history = self.store().member_event_history(room_id, user_id).await?;
        let last = history.iter().rev().find(|(stream_ordering, _)| *stream_ordering <= position);
        Ok(last.is_some_and(|(_, pdu)| {
            serde_json::from_str::<Value>(pdu)
                .ok()
                .is_some_and(|pdu| pdu.pointer("/content/membership").and_then(Value::as_str) == Some("join"))
        }))
    }

    /// The state before `first` (the first timeline event), or the state at `up_to` when the
    /// timeline is empty.
    async fn state_at_start(&self, room_id: &str, first: Option<&StoredEvent>, up_to: i64) -> Result<Arc<StateIds>> {
        match first.and_then(|event| event.state_group) {
            Some(group) => self.inner.state_cache.get(self.store(), group).await,
            None => self.state_after(room_id, up_to).await,
        }
    }

    /// The room state after the last timeline event at or before `position`.
    pub(crate) async fn state_after(&self, room_id: &str, position: i64) -> Result<Arc<StateIds>> {
        let Some(event) = self.store().latest_event_at(room_id, position).await? else {
            return Ok(Arc::new(StateIds::new()));
        };
        let before = match event.state_group {
            Some(group) => self.inner.state_cache.get(self.store(), group).await?,
            None => Arc::new(StateIds::new()),
        };
        match &event.state_key {
            Some(state_key) => {
                let mut after = (*before).clone();
                after.insert((event.event_type.clone(), state_key.clone()), event.event_id.clone());
                Ok(Arc::new(after))
            }
            None => Ok(before),
        }
    }

    /// The room summary: member counts and up to five other members to name the room by.
    async fn summary(&self, room_id: &str, user_id: &str) -> Result<RoomSummary> {
        let counts = self.store().membership_counts(room_id).await?;
        let heroes = self.store().room_heroes(room_id, user_id, HEROES).await?;
        Ok(RoomSummary {
            heroes,
            joined_member_count: counts.get("join").copied().unwrap_or(0),
            invited_member_count: counts.get("invite").copied().unwrap_or(0),
        })
    }

    /// The stripped state for an invite or knock: what the membership event carried over
    /// federation, or else the room's key state events at that event, then the event itself.
    async fn stripped_state_for(&self, membership: &MembershipRow) -> Result<Vec<Value>> {
        let store = self.store();
        let Some(event) = store.get_event(&membership.event_id).await? else {
            return Ok(Vec::new());
        };
        let pdu: Value = serde_json::from_str(&event.pdu).unwrap_or(Value::Null);
        let carried = pdu
            .pointer("/unsigned/invite_room_state")
            .or_else(|| pdu.pointer("/unsigned/knock_room_state"))
            .and_then(Value::as_array);
        let mut out = match carried {
            Some(events) => events.clone(),
            None => match event.state_group {
                Some(group) => {
                    let mut keys: Vec<(String, String)> =
                        STRIPPED_STATE_TYPES.iter().map(|t| ((*t).to_owned(), String::new())).collect();
                    keys.push(("m.room.member".to_owned(), event.sender.clone()));
                    let ids: Vec<String> = store
                        .state_group_keys(&[group], &keys)
                        .await?
                        .remove(&group)
                        .map(|state| state.into_values().filter(|id| *id != event.event_id).collect())
                        .unwrap_or_default();
                    let mut events = store.get_events(&ids).await?;
                    events.sort_by_key(|e| e.stream_ordering);
                    events.iter().map(stripped_state).collect()
                }
                None => Vec::new(),
            },
        };
        out.push(stripped_state(&event));
        Ok(out)
    }
}

impl SyncService {
    /// Typing and receipts (per joined room, through the `room.ephemeral` filter) and presence
    /// (through the `presence` filter). A room with ephemeral news but no new events is
    /// reported too.
    async fn add_social(
        &self,
        social: &ranvier_social::Social,
        request: &SyncRequest,
        joined_ids: &[String],
        since: Option<StreamToken>,
        now: StreamToken,
        response: &mut SyncResponse,
    ) -> Result<()> {
        let filter = &request.filter;
        let user_id = ruma::UserId::parse(request.user_id.as_str())
            .map_err(|e| ranvier_core::Error::internal(format!("syncing user id {}: {e}", request.user_id)))?;
        let full = since.is_none() || request.full_state;
        let ephemeral = social.sync_ephemeral(&user_id, joined_ids, &since.unwrap_or_default(), &now, full).await?;
        for (room_id, events) in ephemeral.rooms {
            let events: Vec<Value> = events
                .into_iter()
                .filter(|event| {
                    let event_type = event["type"].as_str().unwrap_or_default();
                    room_event_allowed(&filter.room.ephemeral, &room_id, event_type, "", || None)
                })
                .collect();
            if !events.is_empty() {
                response.rooms.join.entry(room_id).or_default().ephemeral.events.extend(events);
            }
        }
        response.presence.events = ephemeral
            .presence
            .into_iter()
            .filter(|event| {
                let event_type = event["type"].as_str().unwrap_or_default();
                event_allowed(&filter.presence, event_type, event["sender"].as_str())
            })
            .collect();
        Ok(())
    }

    /// Unread notification counts of every joined room in the response, counted up to the
    /// events it reports (per thread when the timeline filter asks for
    /// `unread_thread_notifications`), and on an initial sync the push rules of a user who
    /// never changed them (clients read them from the `m.push_rules` account data).
    async fn add_push(
        &self,
        push: &ranvier_push::Push,
        request: &SyncRequest,
        since: Option<StreamToken>,
        now: StreamToken,
        response: &mut SyncResponse,
    ) -> Result<()> {
        let user_id = ruma::UserId::parse(request.user_id.as_str())
            .map_err(|e| ranvier_core::Error::internal(format!("syncing user id {}: {e}", request.user_id)))?;
        let per_thread = request.filter.room.timeline.unread_thread_notifications;
        let up_to = now.get(StreamKind::Events);
        // The counts of every room in the response, in one query.
        let room_ids: Vec<String> = response.rooms.join.keys().cloned().collect();
        let counted = if room_ids.is_empty() {
            HashMap::new()
        } else {
            push.rooms_counts(&user_id, &room_ids, up_to, per_thread).await?
        };
        for (room_id, counts) in counted {
            let Some(room) = response.rooms.join.get_mut(&room_id) else { continue };
            let unread = |counts: ranvier_push::counts::Counts| UnreadNotifications {
                notification_count: counts.notifications,
                highlight_count: counts.highlights,
            };
            room.unread_notifications = Some(unread(counts.room));
            if per_thread && !counts.threads.is_empty() {
                room.unread_thread_notifications =
                    Some(counts.threads.into_iter().map(|(root, counts)| (root, unread(counts))).collect());
            }
        }
        let rules = ranvier_push::rules::PUSH_RULES;
        if since.is_none()
            && event_allowed(&request.filter.account_data, rules, None)
            && !response.account_data.events.iter().any(|event| event["type"] == rules)
        {
            let content = push.rules_content(&user_id).await?;
            response.account_data.events.push(json!({ "type": rules, "content": content }));
        }
        Ok(())
    }
}
