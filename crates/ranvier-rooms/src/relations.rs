//! Event relations: the aggregations bundled with events (`unsigned["m.relations"]`),
//! `/relations` and `/threads`.
//!
//! The write side is in the persist path: every accepted timeline event whose cleartext
//! content has `m.relates_to` with a `rel_type` gets a row in `event_relations`, removed again
//! when the event is redacted ([`ranvier_store::relations`]).
//!
//! [`Rooms::bundled_aggregations`] computes the aggregations of a whole page of events with a fixed
//! number of queries: one that counts the children of every event of the page by `rel_type`
//! (which is all a page without relations costs), then one per kind present (the candidate
//! edits, the threads' latest events, the references), and one more for the edits of the
//! threads' latest events; a room known to hold no relation at all costs no query. Every
//! read path that hands events to clients attaches them.
//!
//! What users the reader ignores send is left out everywhere here, as from timelines: their
//! edits, thread replies (from `latest_event` and `count`) and references are not
//! aggregated, `/relations` and `/threads` do not list them, and their events are not found
//! by `/event` or as the parent of `/relations`. Thread counts, like `latest_event`, count
//! only the replies the reader may see.

use std::collections::{HashMap, HashSet};

use ranvier_core::{Error, Result};
use ranvier_store::{
    Store, StreamKind, StreamToken,
    events::{Direction, StoredEvent},
    relations::{RelationSummary, RelationsQuery},
};
use ruma::{EventId, RoomId, UserId};
use serde_json::{Value, json};

use crate::{
    Rooms,
    format::{FormatOptions, client_event},
    ignore::{hidden, ignored_users},
    send::not_in_room,
    visibility::{HistoryVisibility, filter_visible},
};

/// Bundled aggregations by event id: the value of each event's `unsigned["m.relations"]`.
pub type Aggregations = HashMap<String, Value>;

const REPLACE: &str = "m.replace";
const THREAD: &str = "m.thread";
const REFERENCE: &str = "m.reference";

/// How many relations deep `/relations?recurse=true` looks (direct children are depth 1).
pub const RECURSION_DEPTH: i64 = 3;
/// `/relations` and `/threads` page sizes: the default and the most one page may hold.
pub const DEFAULT_RELATIONS_LIMIT: usize = 5;
pub const DEFAULT_THREADS_LIMIT: usize = 5;
pub const MAX_LIMIT: usize = 1000;
/// The most candidates one `/relations` or `/threads` request looks at before it returns what
/// it has (with a token to continue).
const MAX_SCAN: usize = 1000;

/// Which rooms hold any relation at all, so that pages of rooms without any (most rooms, and
/// every page a benchmark's sync returns) cost no query. A room's entry is read from the
/// database once and set by the persist path whenever it stores a relation; it never goes
/// back to `false` (a room whose relations were all redacted only costs a query per page).
#[derive(Default)]
pub(crate) struct RelationRooms {
    rooms: parking_lot::Mutex<HashMap<String, bool>>,
}

impl RelationRooms {
    /// A relation was stored in `room_id`.
    pub(crate) fn note(&self, room_id: &str) {
        self.rooms.lock().insert(room_id.to_owned(), true);
    }

    /// Whether `room_id` may hold relations.
    async fn has_relations(&self, store: &Store, room_id: &str) -> Result<bool> {
        if let Some(known) = self.rooms.lock().get(room_id) {
            return Ok(*known);
        }
        let found = store.room_has_relations(room_id).await?;
        // A relation stored meanwhile has set `true`, which the database read may predate.
        Ok(*self.rooms.lock().entry(room_id.to_owned()).or_insert(found))
    }
}

async fn aggregate(
    store: &Store,
    user_id: &str,
    ignored: &HashSet<String>,
    events: &[StoredEvent],
    threads: bool,
) -> Result<Aggregations> {
    let mut out = Aggregations::new();
    let mut rooms: Vec<&str> = events.iter().map(|event| event.room_id.as_str()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    for room_id in rooms {
        let parents: Vec<&StoredEvent> = events
            .iter()
            .filter(|event| event.room_id == room_id && event.state_key.is_none() && !event.rejected)
            .collect();
        if parents.is_empty() {
            continue;
        }
        aggregate_room(store, user_id, ignored, room_id, &parents, threads, &mut out).await?;
    }
    Ok(out)
}

async fn aggregate_room(
    store: &Store,
    user_id: &str,
    ignored: &HashSet<String>,
    room_id: &str,
    parents: &[&StoredEvent],
    threads: bool,
    out: &mut Aggregations,
) -> Result<()> {
    let mut ids: Vec<String> = parents.iter().map(|event| event.event_id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rel_types: &[&str] = if threads { &[REPLACE, THREAD, REFERENCE] } else { &[REPLACE, REFERENCE] };
    let summaries = store.relation_summaries(room_id, &ids, rel_types, user_id).await?;
    if summaries.is_empty() {
        return Ok(());
    }
    let by_id: HashMap<&str, &StoredEvent> = parents.iter().map(|event| (event.event_id.as_str(), *event)).collect();
    let of_type = |rel_type: &str| -> Vec<&RelationSummary> {
        summaries.iter().filter(|summary| summary.rel_type == rel_type).collect()
    };
    let mut relations: HashMap<String, serde_json::Map<String, Value>> = HashMap::new();

    // Edits: the most recent valid one. A redacted original bundles none, and an edit cannot
    // itself be edited.
    let editable: Vec<String> = of_type(REPLACE)
        .iter()
        .filter_map(|summary| by_id.get(summary.parent_id.as_str()))
        .filter(|parent| parent.redacted_by.is_none() && relation_type(parent).as_deref() != Some(REPLACE))
        .map(|parent| parent.event_id.clone())
        .collect();
    if !editable.is_empty() {
        let candidates: Vec<(String, StoredEvent)> = store
            .relating_events(room_id, &editable, REPLACE)
            .await?
            .into_iter()
            .filter(|(parent_id, edit)| {
                !hidden(ignored, &edit.sender, false)
                    && by_id.get(parent_id.as_str()).is_some_and(|parent| valid_edit(parent, edit))
            })
            .collect();
        let parent_of: HashMap<String, String> =
            candidates.iter().map(|(parent, edit)| (edit.event_id.clone(), parent.clone())).collect();
        let edits =
            filter_visible(store, user_id, room_id, candidates.into_iter().map(|(_, edit)| edit).collect()).await?;
        let mut latest: HashMap<&str, &StoredEvent> = HashMap::new();
        for edit in &edits {
            let Some(parent) = parent_of.get(&edit.event_id) else { continue };
            let newer = latest.get(parent.as_str()).is_none_or(|current| {
                (edit.origin_server_ts, edit.event_id.as_str()) > (current.origin_server_ts, current.event_id.as_str())
            });
            if newer {
                latest.insert(parent, edit);
            }
        }
        for (parent, edit) in latest {
            relations
                .entry(parent.to_owned())
                .or_default()
                .insert(REPLACE.into(), client_event(edit, FormatOptions::default()));
        }
    }

    // Threads: the latest reply the user may see (itself with its own aggregations), the
    // count of the replies the user may see, and whether the user took part. A reader joined
    // since before a thread's first reply sees every reply, so the summary is exact for them
    // (less the replies of users they ignore, counted in one query); for the other threads,
    // and those whose newest reply is from an ignored user, the replies of all of them are
    // read at once and filtered by history visibility and the ignore list.
    let thread_summaries = of_type(THREAD);
    if !thread_summaries.is_empty() {
        let joined_at = store
            .membership_in(room_id, user_id)
            .await?
            .filter(|row| row.membership == "join")
            .map(|row| row.stream_ordering);
        let (whole, mut partial): (Vec<&RelationSummary>, Vec<&RelationSummary>) =
            thread_summaries.iter().partition(|summary| joined_at.is_some_and(|at| summary.first_position > at));
        // The root's id → (visible replies, latest visible reply).
        let mut visible_threads: HashMap<String, (i64, StoredEvent)> = HashMap::new();
        if !whole.is_empty() {
            // Ignored users' replies are counted in one query and taken off.
            let ignored_counts = if ignored.is_empty() {
                HashMap::new()
            } else {
                let roots: Vec<String> = whole.iter().map(|summary| summary.parent_id.clone()).collect();
                let senders: Vec<String> = ignored.iter().cloned().collect();
                store.relation_counts_by_senders(room_id, &roots, THREAD, &senders).await?
            };
            let counts: HashMap<&str, i64> = whole
                .iter()
                .map(|summary| {
                    let ignored = ignored_counts.get(&summary.parent_id).copied().unwrap_or(0);
                    (summary.parent_id.as_str(), summary.count - ignored)
                })
                .collect();
            let positions: Vec<i64> = whole.iter().map(|summary| summary.latest_position).collect();
            for event in store.events_at_positions(&positions).await? {
                let Some(root) = thread_root_of(&event) else { continue };
                let Some(count) = counts.get(root.as_str()) else { continue };
                if !hidden(ignored, &event.sender, event.state_key.is_some()) {
                    visible_threads.insert(root, (*count, event));
                }
            }
            // A thread whose newest reply is an ignored user's looks further back, below.
            partial.extend(whole.iter().filter(|summary| !visible_threads.contains_key(&summary.parent_id)));
        }
        if !partial.is_empty() {
            let roots: Vec<String> = partial.iter().map(|summary| summary.parent_id.clone()).collect();
            let mut root_of: HashMap<String, String> = HashMap::new();
            let mut replies = Vec::new();
            for (root, reply) in store.relating_events(room_id, &roots, THREAD).await? {
                if !hidden(ignored, &reply.sender, reply.state_key.is_some()) {
                    root_of.insert(reply.event_id.clone(), root);
                    replies.push(reply);
                }
            }
            // Oldest first, so the last one seen is the latest.
            for reply in filter_visible(store, user_id, room_id, replies).await? {
                let Some(root) = root_of.remove(&reply.event_id) else { continue };
                let entry = visible_threads.entry(root).or_insert((0, reply.clone()));
                entry.0 += 1;
                entry.1 = reply;
            }
        }
        let latest: Vec<StoredEvent> = visible_threads.values().map(|(_, event)| event.clone()).collect();
        let nested = Box::pin(aggregate(store, user_id, ignored, &latest, false)).await?;
        for summary in thread_summaries {
            let (Some(parent), Some((count, event))) =
                (by_id.get(summary.parent_id.as_str()), visible_threads.get(&summary.parent_id))
            else {
                continue;
            };
            let options = FormatOptions { relations: nested.get(&event.event_id), ..Default::default() };
            relations.entry(summary.parent_id.clone()).or_default().insert(
                THREAD.into(),
                json!({
                    "latest_event": client_event(event, options),
                    "count": count,
                    "current_user_participated": parent.sender == user_id || summary.by_user,
                }),
            );
        }
    }

    // References: the ids of the children.
    let referenced: Vec<String> = of_type(REFERENCE).iter().map(|summary| summary.parent_id.clone()).collect();
    if !referenced.is_empty() {
        let children_of: HashMap<String, Vec<String>> = if ignored.is_empty() {
            store.relating_event_ids(room_id, &referenced, REFERENCE).await?
        } else {
            let mut children_of: HashMap<String, Vec<String>> = HashMap::new();
            for (parent, child) in store.relating_events(room_id, &referenced, REFERENCE).await? {
                if !hidden(ignored, &child.sender, child.state_key.is_some()) {
                    children_of.entry(parent).or_default().push(child.event_id);
                }
            }
            children_of
        };
        for (parent, children) in children_of {
            let chunk: Vec<Value> = children.into_iter().map(|id| json!({ "event_id": id })).collect();
            relations.entry(parent).or_default().insert(REFERENCE.into(), json!({ "chunk": chunk }));
        }
    }

    out.extend(relations.into_iter().map(|(id, map)| (id, Value::Object(map))));
    Ok(())
}

/// The spec's rules for a replacement of `original`: same sender and type, neither a state
/// event, and (unless encrypted, which the server cannot look into) an `m.new_content`.
fn valid_edit(original: &StoredEvent, edit: &StoredEvent) -> bool {
    original.sender == edit.sender
        && original.event_type == edit.event_type
        && original.state_key.is_none()
        && edit.state_key.is_none()
        && (edit.event_type == "m.room.encrypted"
            || content_of(edit).is_some_and(|content| content.get("m.new_content").is_some_and(Value::is_object)))
}

fn content_of(event: &StoredEvent) -> Option<Value> {
    let mut pdu: Value = serde_json::from_str(&event.pdu).ok()?;
    pdu.get_mut("content").map(Value::take)
}

/// `m.relates_to` of an event: `(rel_type, event_id)`.
fn relates_to(event: &StoredEvent) -> Option<(String, String)> {
    let content = content_of(event)?;
    let relates_to = content.get("m.relates_to")?;
    Some((relates_to.get("rel_type")?.as_str()?.to_owned(), relates_to.get("event_id")?.as_str()?.to_owned()))
}

fn relation_type(event: &StoredEvent) -> Option<String> {
    relates_to(event).map(|(rel_type, _)| rel_type)
}

fn thread_root_of(event: &StoredEvent) -> Option<String> {
    relates_to(event).filter(|(rel_type, _)| rel_type == THREAD).map(|(_, root)| root)
}

/// A `/relations` request.
#[derive(Clone, Debug)]
pub struct RelationsRequest {
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub direction: Direction,
    pub recurse: bool,
}

/// A `/relations` response.
#[derive(Clone, Debug, Default)]
pub struct RelationsPage {
    pub chunk: Vec<Value>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub recursion_depth: Option<i64>,
}

/// A `/threads` response.
#[derive(Clone, Debug, Default)]
pub struct ThreadsPage {
    pub chunk: Vec<Value>,
    pub next_batch: Option<String>,
}

fn parse_token(token: &str) -> Result<StreamToken> {
    token.parse().map_err(|_| Error::invalid_param("Unknown pagination token"))
}

impl Rooms {
    /// The aggregations of `events` as `user_id` sees them: the latest valid edit
    /// (`m.replace`), the thread summary (`m.thread`) and the references (`m.reference`).
    /// Events without children, and state events (the spec gives them no aggregations), have
    /// no entry.
    pub async fn bundled_aggregations(
        &self,
        user_id: &str,
        ignored: &HashSet<String>,
        events: &[StoredEvent],
    ) -> Result<Aggregations> {
        let mut rooms: Vec<&str> = events.iter().map(|event| event.room_id.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut with_relations = HashSet::new();
        for room_id in rooms {
            if self.inner.relation_rooms.has_relations(self.store(), room_id).await? {
                with_relations.insert(room_id);
            }
        }
        if with_relations.is_empty() {
            return Ok(Aggregations::new());
        }
        let events: Vec<StoredEvent> =
            events.iter().filter(|event| with_relations.contains(event.room_id.as_str())).cloned().collect();
        aggregate(self.store(), user_id, ignored, &events, true).await
    }

    /// Stored events in the client format with their bundled aggregations.
    pub async fn format_with_aggregations(
        &self,
        user_id: &str,
        ignored: &HashSet<String>,
        events: &[StoredEvent],
    ) -> Result<Vec<Value>> {
        let aggregations = self.bundled_aggregations(user_id, ignored, events).await?;
        Ok(events
            .iter()
            .map(|event| {
                let options = FormatOptions { relations: aggregations.get(&event.event_id), ..Default::default() };
                client_event(event, options)
            })
            .collect())
    }

    /// Refuse (`400 M_UNKNOWN`, as Synapse does) a new event whose `m.relates_to` points at an
    /// event of another room, or that starts a thread from an event which itself relates to
    /// another (the spec's rule for `m.thread`). A parent the server does not know passes.
    pub(crate) async fn check_relation(&self, room_id: &RoomId, content: &Value) -> Result<()> {
        let Some(relates_to) = content.get("m.relates_to") else {
            return Ok(());
        };
        let (Some(rel_type), Some(parent_id)) =
            (relates_to.get("rel_type").and_then(Value::as_str), relates_to.get("event_id").and_then(Value::as_str))
        else {
            return Ok(());
        };
        let Some(parent) = self.store().get_event(parent_id).await? else {
            return Ok(());
        };
        if parent.room_id != room_id.as_str() {
            return Err(Error::unknown("Relations must be in the same room"));
        }
        if rel_type == THREAD && relation_type(&parent).is_some() {
            return Err(Error::unknown("Cannot start threads from an event with a relation"));
        }
        Ok(())
    }

    /// `GET /rooms/{roomId}/event/{eventId}`: the event in the client format with its bundled
    /// aggregations. An event (other than a state event) from a user the reader ignores is
    /// not found, as Synapse does.
    pub async fn client_room_event(&self, room_id: &RoomId, user_id: &UserId, event_id: &EventId) -> Result<Value> {
        let ignored = ignored_users(self.store(), user_id.as_str()).await?;
        let event = self.unignored_room_event(room_id, user_id, event_id, &ignored).await?;
        let mut formatted = self.format_with_aggregations(user_id.as_str(), &ignored, &[event]).await?;
        formatted.pop().ok_or_else(|| Error::not_found("Event not found."))
    }

    /// `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`: the children of an
    /// event the user may see (`404` otherwise), newest first unless walking forward. Tokens
    /// are stream tokens, so `/sync` and `/messages` tokens work too.
    pub async fn relations(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        event_id: &EventId,
        request: RelationsRequest,
    ) -> Result<RelationsPage> {
        let store = self.store();
        let ignored = ignored_users(store, user_id.as_str()).await?;
        let parent = self.unignored_room_event(room_id, user_id, event_id, &ignored).await?;
        if parent.outlier || parent.soft_failed {
            return Err(Error::not_found("Event not found."));
        }
        let now = store.streams().current_token();
        let current = now.get(StreamKind::Events);
        let from = request.from.as_deref().map(parse_token).transpose()?.map(|t| t.get(StreamKind::Events));
        let to = request.to.as_deref().map(parse_token).transpose()?.map(|t| t.get(StreamKind::Events));
        let (mut after, mut up_to) = match request.direction {
            Direction::Backward => (to.unwrap_or(0), from.unwrap_or(current)),
            Direction::Forward => (from.unwrap_or(0), to.unwrap_or(current)),
        };
        let limit = request.limit.unwrap_or(DEFAULT_RELATIONS_LIMIT).min(MAX_LIMIT);
        let mut next = match request.direction {
            Direction::Backward => up_to,
            Direction::Forward => after,
        };
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut more = false;
        let mut scanned = 0;
        let mut batch_size = (limit + 1).clamp(2, 200);
        'walk: while limit > 0 && after < up_to {
            let query = RelationsQuery {
                room_id: room_id.as_str(),
                parent_id: event_id.as_str(),
                rel_type: request.rel_type.as_deref(),
                event_type: request.event_type.as_deref(),
                depth: if request.recurse { RECURSION_DEPTH } else { 1 },
                after,
                up_to,
                direction: request.direction,
                limit: batch_size as i64,
            };
            let batch = store.relations_page(&query).await?;
            let exhausted = batch.len() < batch_size;
            let candidates: Vec<StoredEvent> = batch
                .iter()
                .filter(|event| !hidden(&ignored, &event.sender, event.state_key.is_some()))
                .cloned()
                .collect();
            let visible = filter_visible(store, user_id.as_str(), room_id.as_str(), candidates).await?;
            let mut visible = visible.into_iter().peekable();
            for event in &batch {
                scanned += 1;
                if visible.peek().is_some_and(|v| v.event_id == event.event_id) {
                    if events.len() == limit {
                        more = true;
                        break 'walk;
                    }
                    events.extend(visible.next());
                }
                next = match request.direction {
                    Direction::Backward => event.stream_ordering - 1,
                    Direction::Forward => event.stream_ordering,
                };
            }
            match request.direction {
                Direction::Backward => up_to = next,
                Direction::Forward => after = next,
            }
            if exhausted {
                break;
            }
            if scanned >= MAX_SCAN {
                more = after < up_to;
                break;
            }
            batch_size = (batch_size * 2).min(200);
        }
        if limit == 0 {
            more = after < up_to;
        }
        let token = |position: i64| {
            let mut token = now;
            token.set(StreamKind::Events, position);
            token.to_string()
        };
        Ok(RelationsPage {
            chunk: self.format_with_aggregations(user_id.as_str(), &ignored, &events).await?,
            next_batch: more.then(|| token(next)),
            prev_batch: request.from,
            recursion_depth: request.recurse.then_some(RECURSION_DEPTH),
        })
    }

    /// `GET /rooms/{roomId}/threads`: the thread roots the user may see, most recent activity
    /// first. With `participated`, only threads whose root or a reply the user sent. A
    /// `next_batch` is a stream token whose events position bounds the next page's latest
    /// activity.
    pub async fn threads(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        participated: bool,
        from: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ThreadsPage> {
        let store = self.store();
        let readable_until = self.readable_until(room_id, user_id).await?;
        let ignored = ignored_users(store, user_id.as_str()).await?;
        let now = store.streams().current_token();
        let mut at_most = match from {
            Some(from) => parse_token(from)?.get(StreamKind::Events),
            None => now.get(StreamKind::Events),
        };
        let up_to = readable_until.unwrap_or(i64::MAX);
        let limit = limit.unwrap_or(DEFAULT_THREADS_LIMIT).clamp(1, MAX_LIMIT);
        let participant = participated.then_some(user_id.as_str());
        let mut roots: Vec<StoredEvent> = Vec::new();
        let mut more = false;
        let mut next = at_most;
        let mut scanned = 0;
        let batch_size = (limit + 1).clamp(2, 200);
        'walk: loop {
            let rows = store.thread_roots(room_id.as_str(), up_to, at_most, participant, batch_size as i64).await?;
            let exhausted = rows.len() < batch_size;
            let ids: Vec<String> = rows.iter().map(|row| row.root_id.clone()).collect();
            let mut events = store.get_events(&ids).await?;
            events.retain(|event| !hidden(&ignored, &event.sender, event.state_key.is_some()));
            let visible = filter_visible(store, user_id.as_str(), room_id.as_str(), events).await?;
            let mut visible: HashMap<String, StoredEvent> =
                visible.into_iter().map(|event| (event.event_id.clone(), event)).collect();
            for row in &rows {
                scanned += 1;
                if let Some(root) = visible.remove(&row.root_id) {
                    if roots.len() == limit {
                        more = true;
                        break 'walk;
                    }
                    roots.push(root);
                }
                next = row.latest_position - 1;
            }
            at_most = next;
            if exhausted {
                break;
            }
            if scanned >= MAX_SCAN {
                more = true;
                break;
            }
        }
        let mut token = now;
        token.set(StreamKind::Events, next);
        Ok(ThreadsPage {
            chunk: self.format_with_aggregations(user_id.as_str(), &ignored, &roots).await?,
            next_batch: more.then(|| token.to_string()),
        })
    }

    /// [`Rooms::room_event`], and not found either when its sender is ignored (state events
    /// excepted).
    async fn unignored_room_event(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        event_id: &EventId,
        ignored: &HashSet<String>,
    ) -> Result<StoredEvent> {
        let event = self.room_event(room_id, user_id, event_id).await?;
        if hidden(ignored, &event.sender, event.state_key.is_some()) {
            return Err(Error::not_found("Event not found."));
        }
        Ok(event)
    }

    /// Whether `user_id` may read a room at all (`403` otherwise), and up to which position: a
    /// user who left or was banned reads up to their leaving, unless the room is
    /// world-readable; a member (or invitee) reads everything history visibility allows.
    async fn readable_until(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<i64>> {
        let store = self.store();
        let membership = store.membership_in(room_id.as_str(), user_id.as_str()).await?;
        if membership.as_ref().is_some_and(|row| !matches!(row.membership.as_str(), "leave" | "ban")) {
            return Ok(None);
        }
        let world_readable = store
            .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
            .await?
            .and_then(|event| content_of(&event))
            .is_some_and(|content| {
                HistoryVisibility::parse(content.get("history_visibility").and_then(Value::as_str))
                    == HistoryVisibility::WorldReadable
            });
        match membership {
            _ if world_readable => Ok(None),
            Some(row) => Ok(Some(row.stream_ordering)),
            None => Err(not_in_room(user_id, room_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, sender: &str, event_type: &str, state_key: Option<&str>, content: Value) -> StoredEvent {
        StoredEvent {
            stream_ordering: 1,
            event_id: id.into(),
            room_id: "!r:x".into(),
            sender: sender.into(),
            event_type: event_type.into(),
            state_key: state_key.map(Into::into),
            depth: 1,
            origin_server_ts: 1,
            pdu: json!({ "content": content }).to_string(),
            outlier: false,
            rejected: false,
            soft_failed: false,
            redacted_by: None,
            state_group: None,
        }
    }

    #[test]
    fn edit_validity_follows_the_spec() {
        let original = event("$o", "@a:x", "m.room.message", None, json!({"body": "hi"}));
        let edit = |sender: &str, event_type: &str, content: Value| event("$e", sender, event_type, None, content);
        let new_content = json!({"body": "* hey", "m.new_content": {"body": "hey"}});
        assert!(valid_edit(&original, &edit("@a:x", "m.room.message", new_content.clone())));
        assert!(!valid_edit(&original, &edit("@b:x", "m.room.message", new_content.clone())), "another sender");
        assert!(!valid_edit(&original, &edit("@a:x", "m.sticker", new_content.clone())), "another type");
        assert!(!valid_edit(&original, &edit("@a:x", "m.room.message", json!({"body": "x"}))), "no m.new_content");
        let state = event("$s", "@a:x", "m.room.message", Some(""), json!({}));
        assert!(!valid_edit(&state, &edit("@a:x", "m.room.message", new_content)), "state events are not edited");
        let encrypted = event("$c", "@a:x", "m.room.encrypted", None, json!({"ciphertext": "..."}));
        assert!(valid_edit(&encrypted, &edit("@a:x", "m.room.encrypted", json!({"ciphertext": "..."}))));
    }
}
