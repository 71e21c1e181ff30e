//! Server-side search (`POST /search`, the `room_events` category) over the full-text index
//! of [`ranvier_store::search`].
//!
//! A search covers the rooms the user is in or has left (up to where they left; forgotten
//! rooms are out), narrowed by the request's filter. The index answers a page of candidates
//! at a time; each passes the filter and history visibility
//! ([`ranvier_rooms::visibility::filter_visible`]) before it becomes a result, so a result is
//! always an event the user may read in that room. Pages are cut from a walk over the index:
//! newest first for `recent` (continuing below a stream position) or best first for `rank`
//! (continuing after a number of candidates, over the events that existed when the first page
//! was asked for, so that new messages do not shift later pages).
//!
//! `count` is the number of index matches in the searched rooms (up to where the user left
//! each) before the filter's senders and types and history visibility apply: an estimate, as
//! the spec allows, that never counts what was said after the user left a room.
//!
//! The body is built as JSON in the shape Synapse gives (`results`, `count` and `highlights`
//! always present, `context` on every result), which is what clients read.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ranvier_core::{Error, Result, error::ErrorKind};
use ranvier_rooms::{ignore::hidden, visibility::filter_visible};
use ranvier_store::{
    StreamKind,
    events::{Direction, StoredEvent},
    search::{SearchHit, SearchOrder, SearchQuery, SearchRoom, SearchScope, words},
};
use ruma::{
    RoomId, UserId,
    api::client::search::search_events::v3::{Criteria, GroupingKey, OrderBy, SearchKeys},
};
use serde_json::{Map, Value, json};

use crate::{SyncService, filter::room_event_allowed, format::content_of, history::token_at, timeline::Walk};

/// Results per page when the filter gives no `limit`.
const DEFAULT_LIMIT: usize = 10;
/// The most results per page, whatever the filter asks.
const MAX_LIMIT: usize = 100;
/// The most events of context on each side of a result.
const MAX_CONTEXT: usize = 100;
/// The most candidates one request looks at before it returns what it has, with a
/// `next_batch` to continue from.
const MAX_SCAN: usize = 1000;
/// The most rooms one search covers (the most recently joined or left); each is a value
/// bound to the query.
const MAX_ROOMS: usize = 5000;

/// A `/search` request.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub user_id: String,
    pub device_id: String,
    pub next_batch: Option<String>,
    pub criteria: Criteria,
    /// Whether the request asked for `event_context` at all (ruma fills in the defaults
    /// either way).
    pub context_requested: bool,
}

/// Where the next page starts, as carried in `next_batch`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Batch {
    /// Newest first, below position `before`, optionally only in one room (a group's token).
    Recent { before: i64, room: Option<String> },
    /// Best first, after `offset` candidates, among the events up to `up_to`.
    Rank { offset: i64, up_to: i64 },
}

impl Batch {
    fn encode(&self) -> String {
        let text = match self {
            Batch::Recent { before, room: None } => format!("recent\n{before}"),
            Batch::Recent { before, room: Some(room) } => format!("recent\n{before}\n{room}"),
            Batch::Rank { offset, up_to } => format!("rank\n{offset}\n{up_to}"),
        };
        URL_SAFE_NO_PAD.encode(text)
    }

    /// Parse a token; anything this server did not hand out is `400 M_UNKNOWN`, as Synapse
    /// answers.
    fn decode(token: &str) -> Result<Self> {
        let invalid = || Error::matrix(ErrorKind::Unknown, "Invalid batch");
        let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.splitn(3, '\n');
        let kind = parts.next().unwrap_or_default();
        let number = |part: Option<&str>| part.and_then(|part| part.parse::<i64>().ok()).ok_or_else(invalid);
        match kind {
            "recent" => {
                let before = number(parts.next())?;
                let room = match parts.next() {
                    Some(room) => Some(RoomId::parse(room).map_err(|_| invalid())?.to_string()),
                    None => None,
                };
                Ok(Batch::Recent { before, room })
            }
            "rank" => {
                let offset = number(parts.next())?;
                let up_to = number(parts.next())?;
                if offset < 0 {
                    return Err(invalid());
                }
                Ok(Batch::Rank { offset, up_to })
            }
            _ => Err(invalid()),
        }
    }
}

/// The event types whose text each search key covers.
fn event_type_of(key: &SearchKeys) -> Result<&'static str> {
    match key {
        SearchKeys::ContentBody => Ok("m.room.message"),
        SearchKeys::ContentName => Ok("m.room.name"),
        SearchKeys::ContentTopic => Ok("m.room.topic"),
        other => Err(Error::invalid_param(format!("Unknown search key `{}`", other.as_str()))),
    }
}

/// The text of an event that search looks at, for highlights.
fn searched_text(event: &StoredEvent) -> String {
    let content = content_of(event).unwrap_or(Value::Null);
    let field = |name: &str| content.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    match event.event_type.as_str() {
        "m.room.message" => field("body"),
        "m.room.name" => field("name"),
        "m.room.topic" => {
            let plain = content
                .get("m.topic")
                .and_then(|topic| topic.get("m.text"))
                .and_then(Value::as_array)
                .and_then(|texts| {
                    texts.iter().find(|text| {
                        text.get("mimetype").and_then(Value::as_str).unwrap_or("text/plain") == "text/plain"
                    })
                })
                .and_then(|text| text.get("body"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            format!("{} {plain}", field("topic"))
        }
        _ => String::new(),
    }
}

/// The forms a word may have without an English ending, for highlights only: the word itself,
/// and the word without each plural, `-ed`, `-ing` or `-ly` ending it has (and without the
/// doubled consonant before one: `running` gives `run`).
fn light_stems(word: &str) -> Vec<&str> {
    let mut stems = vec![word];
    for suffix in ["ing", "ed", "es", "ly", "s"] {
        let Some(stem) = word.strip_suffix(suffix).filter(|stem| stem.chars().count() >= 3) else { continue };
        let mut chars = stem.chars().rev();
        match (chars.next(), chars.next()) {
            (Some(last), Some(before))
                if matches!(suffix, "ing" | "ed") && last == before && !matches!(last, 'l' | 's' | 'z') =>
            {
                stems.push(&stem[..stem.len() - last.len_utf8()]);
            }
            _ => stems.push(stem),
        }
    }
    stems
}

/// Whether `word` (from a result) is a form of the query word `term` (`martian` and
/// `martians`, `runs` and `running`), as the stemmers of both backends would match it.
fn same_stem(term: &str, word: &str) -> bool {
    let terms = light_stems(term);
    light_stems(word).iter().any(|stem| terms.contains(stem))
}

/// The highlights of a page: the query's words and the forms of them found in the results.
fn highlights(query: &SearchQuery, results: &[SearchHit]) -> Vec<String> {
    let terms: Vec<&str> = query.positive_words().collect();
    let mut found: BTreeSet<String> = terms.iter().map(|term| (*term).to_owned()).collect();
    for hit in results {
        for word in words(&searched_text(&hit.event)) {
            if terms.iter().any(|term| same_stem(term, &word)) {
                found.insert(word);
            }
        }
    }
    found.into_iter().collect()
}

fn limit_of(value: Option<ruma::UInt>, default: usize, max: usize) -> usize {
    value.map_or(default, |value| usize::try_from(u64::from(value)).unwrap_or(usize::MAX)).min(max)
}

impl SyncService {
    /// `POST /search`: the `room_events` results as JSON.
    pub async fn search(&self, request: SearchRequest) -> Result<Value> {
        let SearchRequest { user_id, device_id, next_batch, criteria, context_requested } = request;
        let rank_order = match &criteria.order_by {
            None | Some(OrderBy::Rank) => true,
            Some(OrderBy::Recent) => false,
            Some(other) => return Err(Error::invalid_param(format!("Invalid order_by `{}`", other.as_str()))),
        };
        let mut event_types: Vec<&str> = match &criteria.keys {
            None => vec!["m.room.message", "m.room.name", "m.room.topic"],
            Some(keys) => keys.iter().map(event_type_of).collect::<Result<_>>()?,
        };
        event_types.sort_unstable();
        event_types.dedup();
        let mut group_by_room = false;
        let mut group_by_sender = false;
        for grouping in &criteria.groupings.group_by {
            match &grouping.key {
                Some(GroupingKey::RoomId) => group_by_room = true,
                Some(GroupingKey::Sender) => group_by_sender = true,
                Some(other) => return Err(Error::invalid_param(format!("Invalid group by key `{}`", other.as_str()))),
                None => return Err(Error::bad_json("A grouping needs a `key`")),
            }
        }
        let batch = next_batch.as_deref().map(Batch::decode).transpose()?;
        if matches!((&batch, rank_order), (Some(Batch::Rank { .. }), false) | (Some(Batch::Recent { .. }), true)) {
            return Err(Error::matrix(ErrorKind::Unknown, "Invalid batch"));
        }
        let filter = &criteria.filter;
        let limit = limit_of(filter.limit, DEFAULT_LIMIT, MAX_LIMIT);
        let query = SearchQuery::parse(&criteria.search_term);
        let ignored = ranvier_rooms::ignore::ignored_users(self.store(), &user_id).await?;

        // The rooms: every (not forgotten) membership, up to the leave for rooms left.
        let only_room = match &batch {
            Some(Batch::Recent { room: Some(room), .. }) => Some(room.as_str()),
            _ => None,
        };
        let mut memberships = self.store().memberships_of(&user_id).await?;
        memberships.retain(|row| {
            only_room.is_none_or(|room| room == row.room_id)
                && !filter.not_rooms.iter().any(|room| room.as_str() == row.room_id)
                && filter.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|room| room.as_str() == row.room_id))
        });
        memberships.sort_by_key(|row| std::cmp::Reverse(row.stream_ordering));
        memberships.truncate(MAX_ROOMS);
        let rooms: Vec<SearchRoom> = memberships
            .iter()
            .map(|row| SearchRoom {
                room_id: row.room_id.clone(),
                up_to: matches!(row.membership.as_str(), "leave" | "ban").then_some(row.stream_ordering),
            })
            .collect();
        let room_limits: HashMap<&str, Option<i64>> =
            rooms.iter().map(|room| (room.room_id.as_str(), room.up_to)).collect();

        let now = self.store().streams().current_token();
        let up_to = match &batch {
            Some(Batch::Rank { up_to, .. }) => *up_to,
            _ => now.get(StreamKind::Events),
        };
        let scope = SearchScope { rooms: &rooms, event_types: &event_types, up_to };
        let count = self.store().search_count(&query, &scope).await?;

        // Walk the index until the page is full, the candidates run out, or enough were seen.
        let mut cursor = match &batch {
            Some(Batch::Recent { before, .. }) => SearchOrder::Recent { before: *before },
            Some(Batch::Rank { offset, .. }) => SearchOrder::Rank { offset: *offset },
            None if rank_order => SearchOrder::Rank { offset: 0 },
            None => SearchOrder::Recent { before: i64::MAX },
        };
        let mut results: Vec<SearchHit> = Vec::new();
        let mut more = false;
        let mut scanned = 0usize;
        let chunk = (limit * 2).clamp(20, 200);
        if limit > 0 {
            'scan: loop {
                let hits = self.store().search_events(&query, &scope, cursor, chunk as i64).await?;
                let full = hits.len() == chunk;
                let visible = self.visible_hits(&user_id, &hits, |event| {
                    !hidden(&ignored, &event.sender, event.state_key.is_some())
                        && room_event_allowed(filter, &event.room_id, &event.event_type, &event.sender, || {
                            content_of(event)
                        })
                });
                let visible = visible.await?;
                for hit in hits {
                    if results.len() == limit {
                        more = true;
                        break 'scan;
                    }
                    scanned += 1;
                    cursor = match cursor {
                        SearchOrder::Recent { .. } => SearchOrder::Recent { before: hit.event.stream_ordering },
                        SearchOrder::Rank { offset } => SearchOrder::Rank { offset: offset + 1 },
                    };
                    if visible.contains(&hit.event.event_id) {
                        results.push(hit);
                    }
                }
                if !full {
                    break;
                }
                if scanned >= MAX_SCAN {
                    more = true;
                    break;
                }
            }
        }
        let next = |room: Option<String>| match cursor {
            SearchOrder::Recent { before } => Batch::Recent { before, room }.encode(),
            SearchOrder::Rank { offset } => Batch::Rank { offset, up_to }.encode(),
        };

        // Everything the response shows, formatted once with the device's transaction ids.
        let contexts = if context_requested {
            let mut contexts = Vec::with_capacity(results.len());
            for hit in &results {
                let readable_until = room_limits.get(hit.event.room_id.as_str()).copied().flatten();
                contexts
                    .push(self.search_context(&user_id, &ignored, &hit.event, &criteria, readable_until, now).await?);
            }
            Some(contexts)
        } else {
            None
        };
        let mut shown: Vec<StoredEvent> = results.iter().map(|hit| hit.event.clone()).collect();
        for context in contexts.iter().flatten() {
            shown.extend(context.before.iter().chain(context.after.iter()).cloned());
        }
        let formatter = self.formatter_for(&user_id, &device_id, &ignored, &shown).await?;

        let mut body = Map::new();
        let mut result_list = Vec::with_capacity(results.len());
        for (index, hit) in results.iter().enumerate() {
            let context = match contexts.as_ref().and_then(|contexts| contexts.get(index)) {
                Some(context) => {
                    let mut value = json!({
                        "events_before": formatter.events(&context.before, false),
                        "events_after": formatter.events(&context.after, false),
                        "start": token_at(now, context.start),
                        "end": token_at(now, context.end),
                    });
                    if let Some(profiles) = &context.profiles {
                        value["profile_info"] = Value::Object(profiles.clone());
                    }
                    value
                }
                None => json!({}),
            };
            result_list.push(json!({
                "rank": hit.rank,
                "result": formatter.event(&hit.event, false),
                "context": context,
            }));
        }
        body.insert("results".into(), Value::Array(result_list));
        body.insert("count".into(), json!(count));
        body.insert("highlights".into(), json!(highlights(&query, &results)));

        if criteria.include_state == Some(true) {
            let mut state = Map::new();
            let user = UserId::parse(user_id.as_str()).map_err(|e| Error::internal(format!("user id: {e}")))?;
            for hit in &results {
                if state.contains_key(&hit.event.room_id) {
                    continue;
                }
                let Ok(room_id) = RoomId::parse(hit.event.room_id.as_str()) else { continue };
                // The state the user may read: current, or as it was when they left.
                if let Ok(events) = self.rooms().room_state(&room_id, &user).await {
                    state.insert(hit.event.room_id.clone(), Value::Array(formatter.events(&events, false)));
                }
            }
            body.insert("state".into(), Value::Object(state));
        }

        if group_by_room || group_by_sender {
            let mut groups = Map::new();
            if group_by_room {
                let room_next = |room: &str| (more && !rank_order).then(|| next(Some(room.to_owned())));
                groups.insert("room_id".into(), group(&results, |hit| &hit.event.room_id, room_next));
            }
            if group_by_sender {
                groups.insert("sender".into(), group(&results, |hit| &hit.event.sender, |_| None));
            }
            body.insert("groups".into(), Value::Object(groups));
        }
        if more {
            let scope_room = match &batch {
                Some(Batch::Recent { room, .. }) => room.clone(),
                _ => None,
            };
            body.insert("next_batch".into(), Value::String(next(scope_room)));
        }
        Ok(Value::Object(body))
    }

    /// The ids of the `hits` that pass `keep` and that `user_id` may see.
    async fn visible_hits(
        &self,
        user_id: &str,
        hits: &[SearchHit],
        keep: impl Fn(&StoredEvent) -> bool,
    ) -> Result<HashSet<String>> {
        let mut by_room: BTreeMap<&str, Vec<StoredEvent>> = BTreeMap::new();
        for hit in hits.iter().filter(|hit| keep(&hit.event)) {
            by_room.entry(hit.event.room_id.as_str()).or_default().push(hit.event.clone());
        }
        let mut visible = HashSet::new();
        for (room_id, events) in by_room {
            for event in filter_visible(self.store(), user_id, room_id, events).await? {
                visible.insert(event.event_id);
            }
        }
        Ok(visible)
    }

    /// The events around a result, as `/context` gives them (history visibility applied),
    /// and the senders' profiles when asked for.
    async fn search_context(
        &self,
        user_id: &str,
        ignored: &HashSet<String>,
        event: &StoredEvent,
        criteria: &Criteria,
        readable_until: Option<i64>,
        now: ranvier_store::StreamToken,
    ) -> Result<SearchContext> {
        let options = &criteria.event_context;
        let newest = now.get(StreamKind::Events);
        let before = Walk {
            store: self.store(),
            user_id,
            room_id: &event.room_id,
            after: 0,
            up_to: event.stream_ordering - 1,
            direction: Direction::Backward,
            limit: limit_of(Some(options.before_limit), 5, MAX_CONTEXT),
            keep: |e: &StoredEvent| !hidden(ignored, &e.sender, e.state_key.is_some()),
            joined_since: None,
        }
        .run()
        .await?;
        let after = Walk {
            store: self.store(),
            user_id,
            room_id: &event.room_id,
            after: event.stream_ordering,
            up_to: readable_until.map_or(newest, |until| until.min(newest)),
            direction: Direction::Forward,
            limit: limit_of(Some(options.after_limit), 5, MAX_CONTEXT),
            keep: |e: &StoredEvent| !hidden(ignored, &e.sender, e.state_key.is_some()),
            joined_since: None,
        }
        .run()
        .await?;
        let profiles = if options.include_profile {
            let last = after.events.last().unwrap_or(event);
            let senders: BTreeSet<&str> = before
                .events
                .iter()
                .chain(after.events.iter())
                .chain(std::iter::once(event))
                .map(|e| e.sender.as_str())
                .collect();
            Some(self.profiles_at(last, &senders).await?)
        } else {
            None
        };
        Ok(SearchContext { before: before.events, after: after.events, start: before.next, end: after.next, profiles })
    }

    /// The display names and avatars of `senders` in the room state right after `last`.
    async fn profiles_at(&self, last: &StoredEvent, senders: &BTreeSet<&str>) -> Result<Map<String, Value>> {
        let mut member_events: HashMap<String, String> = HashMap::new();
        if let Some(group) = last.state_group {
            let keys: Vec<(String, String)> =
                senders.iter().map(|sender| ("m.room.member".to_owned(), (*sender).to_owned())).collect();
            if let Some(state) = self.store().state_group_keys(&[group], &keys).await?.remove(&group) {
                member_events.extend(state.into_iter().map(|((_, user), event_id)| (user, event_id)));
            }
        }
        if last.event_type == "m.room.member"
            && let Some(user) = last.state_key.as_deref().filter(|user| senders.contains(user))
        {
            member_events.insert(user.to_owned(), last.event_id.clone());
        }
        let ids: Vec<String> = member_events.into_values().collect();
        let mut profiles = Map::new();
        for member in self.store().get_events(&ids).await? {
            let (Some(user), Some(content)) = (member.state_key.clone(), content_of(&member)) else { continue };
            let mut profile = Map::new();
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = content.get(field).filter(|value| value.is_string()) {
                    profile.insert(field.to_owned(), value.clone());
                }
            }
            profiles.insert(user, Value::Object(profile));
        }
        Ok(profiles)
    }
}

/// What surrounds one result.
struct SearchContext {
    before: Vec<StoredEvent>,
    after: Vec<StoredEvent>,
    start: i64,
    end: i64,
    profiles: Option<Map<String, Value>>,
}

/// Results grouped by `key`, each group with its results in order and `order` (the 1-based
/// position of the group's first result on the page), and a `next_batch` where given.
fn group<'h>(
    results: &'h [SearchHit],
    key: impl Fn(&'h SearchHit) -> &'h String,
    next_batch: impl Fn(&str) -> Option<String>,
) -> Value {
    let mut groups: Map<String, Value> = Map::new();
    for hit in results {
        let key = key(hit);
        if !groups.contains_key(key.as_str()) {
            let mut group = json!({ "results": [], "order": groups.len() + 1 });
            if let Some(token) = next_batch(key) {
                group["next_batch"] = Value::String(token);
            }
            groups.insert(key.clone(), group);
        }
        if let Some(Value::Array(ids)) = groups.get_mut(key.as_str()).and_then(|group| group.get_mut("results")) {
            ids.push(Value::String(hit.event.event_id.clone()));
        }
    }
    Value::Object(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_garbage_is_refused() {
        for batch in [
            Batch::Recent { before: 42, room: None },
            Batch::Recent { before: 7, room: Some("!room:example.org".to_owned()) },
            Batch::Rank { offset: 10, up_to: 99 },
        ] {
            assert_eq!(Batch::decode(&batch.encode()).ok(), Some(batch));
        }
        for garbage in ["", "nope", "!!!", &URL_SAFE_NO_PAD.encode("rank\n-1\n5"), &URL_SAFE_NO_PAD.encode("recent\nx")]
        {
            match Batch::decode(garbage) {
                Err(Error::Matrix { kind: ErrorKind::Unknown, .. }) => {}
                other => panic!("{garbage:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn stems_match_forms_of_a_word() {
        assert!(same_stem("martian", "martians"));
        assert!(same_stem("runs", "running"));
        assert!(same_stem("go", "go"));
        assert!(same_stem("walked", "walks"));
        assert!(same_stem("name", "names"));
        assert!(!same_stem("go", "gone"));
        assert!(!same_stem("men", "man"));
        assert!(!same_stem("martian", "mars"));
    }
}
