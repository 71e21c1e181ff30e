//! History visibility: which events a user may see (`m.room.history_visibility`).
//!
//! Every read path (`/event`, `/messages`, `/context`, `/sync`) filters through
//! [`filter_visible`], so the rules live in one place. The decision for one event is the pure
//! function [`may_see`]; [`filter_visible`] gathers its inputs for a batch of events with a
//! fixed number of queries: the two state entries that matter (history visibility and the
//! user's membership) are resolved for every distinct state group at once, and the user's own
//! member events are read only when the `shared` rule needs them.

use std::collections::{HashMap, HashSet};

use ranvier_core::Result;
use ranvier_store::{Store, events::StoredEvent};
use serde_json::Value;

/// The values of `m.room.history_visibility`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryVisibility {
    WorldReadable,
    Shared,
    Invited,
    Joined,
}

impl HistoryVisibility {
    /// Parse a `history_visibility` value; absent or unknown values mean `shared`, as the spec
    /// asks.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("world_readable") => Self::WorldReadable,
            Some("invited") => Self::Invited,
            Some("joined") => Self::Joined,
            _ => Self::Shared,
        }
    }
}

/// What [`may_see`] needs to know about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisibilityFacts<'a> {
    /// The history visibility in force when the event was sent (the state before it).
    pub visibility_before: HistoryVisibility,
    /// For an `m.room.history_visibility` event: the visibility it sets.
    pub visibility_after: Option<HistoryVisibility>,
    /// The user's membership before the event (`None`: never a member).
    pub membership_before: Option<&'a str>,
    /// For the user's own `m.room.member` event: the membership it sets.
    pub membership_after: Option<&'a str>,
    /// Whether the user joined the room at some point after the event.
    pub joined_later: bool,
}

/// The spec's rules for one event, applied to the state before it and, for history visibility
/// events and the user's own member events, to the state after it as well.
///
/// One addition to the spec's list: a user always sees their own member event that takes them
/// out of the room (leave or ban). Without it a user who rejects an invite, or is kicked from a
/// room whose history is `joined`, would never see why the room went away.
pub fn may_see(facts: &VisibilityFacts<'_>) -> bool {
    if matches!(facts.membership_after, Some("leave" | "ban")) {
        return true;
    }
    let allowed = |visibility: HistoryVisibility, membership: Option<&str>| {
        visibility == HistoryVisibility::WorldReadable
            || membership == Some("join")
            || (visibility == HistoryVisibility::Shared && facts.joined_later)
            || (membership == Some("invite") && visibility == HistoryVisibility::Invited)
    };
    let visibilities = [Some(facts.visibility_before), facts.visibility_after];
    let memberships = [Some(facts.membership_before), facts.membership_after.map(Some)];
    visibilities
        .iter()
        .flatten()
        .any(|visibility| memberships.iter().flatten().any(|membership| allowed(*visibility, *membership)))
}

const HISTORY_VISIBILITY: &str = "m.room.history_visibility";
const MEMBER: &str = "m.room.member";

/// Keep only the events of `room_id` that `user_id` may see, in their original order.
pub async fn filter_visible(
    store: &Store,
    user_id: &str,
    room_id: &str,
    events: Vec<StoredEvent>,
) -> Result<Vec<StoredEvent>> {
    if events.is_empty() {
        return Ok(events);
    }
    // The common case, cheaply: a user who is joined sees everything since their join (their
    // membership has not changed since, so it was `join` at every later event).
    if let Some(row) = store.membership_in(room_id, user_id).await?
        && row.membership == "join"
        && events.iter().all(|event| event.stream_ordering > row.stream_ordering)
    {
        return Ok(events);
    }
    let keys = [(HISTORY_VISIBILITY.to_owned(), String::new()), (MEMBER.to_owned(), user_id.to_owned())];
    let mut groups: Vec<i64> = events.iter().filter_map(|event| event.state_group).collect();
    groups.sort_unstable();
    groups.dedup();
    let by_group = store.state_group_keys(&groups, &keys).await?;
    // The contents of the few state events involved, fetched in one batch.
    let mut wanted: HashSet<String> = HashSet::new();
    for state in by_group.values() {
        wanted.extend(state.values().cloned());
    }
    let wanted: Vec<String> = wanted.into_iter().collect();
    let contents: HashMap<String, Value> = store
        .get_events(&wanted)
        .await?
        .into_iter()
        .map(|event| (event.event_id.clone(), content_of(&event)))
        .collect();
    let field = |key: &(String, String), state: &HashMap<(String, String), String>, name: &str| {
        state
            .get(key)
            .and_then(|id| contents.get(id))
            .and_then(|content| content.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };

    struct Facts {
        visibility_before: HistoryVisibility,
        visibility_after: Option<HistoryVisibility>,
        membership_before: Option<String>,
        membership_after: Option<String>,
    }
    let empty = HashMap::new();
    let facts: Vec<Facts> = events
        .iter()
        .map(|event| {
            let state = match event.state_group {
                Some(group) => by_group.get(&group).unwrap_or(&empty),
                // An event without a state group has no state before it: only a room's create
                // event is stored that way (outliers never reach a timeline).
                None => &empty,
            };
            let visibility_before = HistoryVisibility::parse(field(&keys[0], state, "history_visibility").as_deref());
            let membership_before = field(&keys[1], state, "membership");
            let is_state = event.state_key.is_some();
            let visibility_after = (is_state && event.event_type == HISTORY_VISIBILITY).then(|| {
                let content = content_of(event);
                HistoryVisibility::parse(content.get("history_visibility").and_then(Value::as_str))
            });
            let membership_after = (event.event_type == MEMBER && event.state_key.as_deref() == Some(user_id))
                .then(|| content_of(event).get("membership").and_then(Value::as_str).map(str::to_owned))
                .flatten();
            Facts { visibility_before, visibility_after, membership_before, membership_after }
        })
        .collect();

    // The user's joins are needed only when some event is visible through `shared` alone.
    let needs_joins = facts.iter().any(|f| {
        f.visibility_before == HistoryVisibility::Shared || f.visibility_after == Some(HistoryVisibility::Shared)
    });
    let join_positions: Vec<i64> = if needs_joins {
        store
            .member_event_history(room_id, user_id)
            .await?
            .into_iter()
            .filter(|(_, pdu)| {
                serde_json::from_str::<Value>(pdu).ok().and_then(|pdu| {
                    pdu.get("content")?.get("membership")?.as_str().map(|membership| membership == "join")
                }) == Some(true)
            })
            .map(|(position, _)| position)
            .collect()
    } else {
        Vec::new()
    };
    let last_join = join_positions.iter().max().copied();

    Ok(events
        .into_iter()
        .zip(facts)
        .filter(|(event, f)| {
            may_see(&VisibilityFacts {
                visibility_before: f.visibility_before,
                visibility_after: f.visibility_after,
                membership_before: f.membership_before.as_deref(),
                membership_after: f.membership_after.as_deref(),
                joined_later: last_join.is_some_and(|join| join > event.stream_ordering),
            })
        })
        .map(|(event, _)| event)
        .collect())
}

/// The `membership` of a member event.
pub fn membership_of(event: &StoredEvent) -> Option<&'static str> {
    match content_of(event).get("membership")?.as_str()? {
        "join" => Some("join"),
        "invite" => Some("invite"),
        "leave" => Some("leave"),
        "ban" => Some("ban"),
        "knock" => Some("knock"),
        _ => None,
    }
}

/// The `content` of a stored event (an empty object if the PDU is unreadable).
fn content_of(event: &StoredEvent) -> Value {
    serde_json::from_str::<Value>(&event.pdu)
        .ok()
        .and_then(|mut pdu| pdu.get_mut("content").map(Value::take))
        .unwrap_or_else(|| Value::Object(Default::default()))
}

#[cfg(test)]
mod tests {
    use super::{HistoryVisibility::*, *};

    /// One row: visibility before, visibility after (history visibility events), membership
    /// before, membership after (own member events), joined later, expected.
    type Row = (HistoryVisibility, Option<HistoryVisibility>, Option<&'static str>, Option<&'static str>, bool, bool);

    #[test]
    fn spec_rules_table() {
        let rows: &[Row] = &[
            // Rule 1: world_readable is visible to anyone.
            (WorldReadable, None, None, None, false, true),
            (WorldReadable, None, Some("leave"), None, false, true),
            // Rule 2: members at the time see everything.
            (Joined, None, Some("join"), None, false, true),
            (Invited, None, Some("join"), None, false, true),
            (Shared, None, Some("join"), None, false, true),
            // Rule 3: shared history opens to those who join later, and only to them.
            (Shared, None, None, None, true, true),
            (Shared, None, None, None, false, false),
            (Shared, None, Some("leave"), None, false, false),
            (Shared, None, Some("invite"), None, false, false),
            // Rule 4: invited history opens from the invite on.
            (Invited, None, Some("invite"), None, false, true),
            (Invited, None, None, None, true, false),
            (Joined, None, Some("invite"), None, false, false),
            // Rule 5: otherwise deny.
            (Joined, None, None, None, true, false),
            (Joined, None, Some("leave"), None, true, false),
            (Joined, None, Some("ban"), None, false, false),
            (Invited, None, Some("leave"), None, false, false),
            // History visibility events: before or after.
            (Joined, Some(WorldReadable), None, None, false, true),
            (WorldReadable, Some(Joined), None, None, false, true),
            (Joined, Some(Shared), None, None, true, true),
            (Joined, Some(Invited), None, None, false, false),
            // Own member events: before or after.
            (Joined, None, None, Some("join"), false, true),
            (Joined, None, Some("join"), Some("leave"), false, true),
            (Joined, None, Some("invite"), Some("leave"), false, true),
            (Joined, None, None, Some("ban"), false, true),
            (Invited, None, None, Some("invite"), false, true),
            (Joined, None, None, Some("invite"), false, false),
        ];
        for (i, (before, after, m_before, m_after, joined_later, expected)) in rows.iter().enumerate() {
            let facts = VisibilityFacts {
                visibility_before: *before,
                visibility_after: *after,
                membership_before: *m_before,
                membership_after: *m_after,
                joined_later: *joined_later,
            };
            assert_eq!(may_see(&facts), *expected, "row {i}: {facts:?}");
        }
    }

    #[test]
    fn unknown_or_missing_visibility_is_shared() {
        assert_eq!(HistoryVisibility::parse(None), Shared);
        assert_eq!(HistoryVisibility::parse(Some("sometimes")), Shared);
        assert_eq!(HistoryVisibility::parse(Some("joined")), Joined);
        assert_eq!(HistoryVisibility::parse(Some("invited")), Invited);
        assert_eq!(HistoryVisibility::parse(Some("world_readable")), WorldReadable);
    }
}
