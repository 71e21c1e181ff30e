//! The space hierarchy (`GET /rooms/{roomId}/hierarchy`): a depth-first walk over the
//! `m.space.child` state events of a space and its sub-spaces, each room with its summary.
//!
//! The walk keeps a stack of rooms to visit and a set of rooms already seen, so a loop of
//! spaces ends the walk instead of repeating it, and a room reached twice is listed once.
//! A space's children are visited in the spec's order (a valid `order` first, compared by code
//! point, then the child event's timestamp, then the room id); a child without a `via` list is
//! no child. Only rooms the requester may see are listed, and only their children walked: rooms
//! they are joined or invited to, public, knockable or world-readable rooms, and restricted rooms
//! whose allow rules they satisfy, as Synapse decides. Rooms this server does not know are
//! skipped: filling them in over federation comes with federation.
//!
//! Pagination is stateless: the token counts the rooms already returned and names the walk's
//! parameters, and each page walks again from the root and skips that many. The same token
//! always gives the same page while the tree is unchanged, survives restarts, and costs one
//! walk of the rooms up to the page's end.

use std::collections::HashSet;

use ranvier_core::{Error, Result};
use ruma::{OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::Social;

/// Rooms per page when the client gives no limit, and the most a page holds.
pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 100;
/// How deep the walk goes when the client gives no `max_depth`, and the deepest it goes.
pub const MAX_DEPTH: u64 = 50;
/// The longest valid `order` of an `m.space.child` event, in characters.
const MAX_ORDER_CHARS: usize = 50;

/// The state events a room summary is made of.
const SUMMARY_STATE: [&str; 10] = [
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
    "m.space.child",
];

/// A `/hierarchy` request.
#[derive(Clone, Debug, Default)]
pub struct HierarchyRequest {
    pub from: Option<String>,
    pub limit: Option<u64>,
    pub max_depth: Option<u64>,
    pub suggested_only: bool,
}

/// One page of the hierarchy: room chunks in the spec's shape, and the next page's token.
#[derive(Clone, Debug, Default)]
pub struct HierarchyPage {
    pub rooms: Vec<Value>,
    pub next_batch: Option<String>,
}

/// A pagination token: how many rooms were returned before, and the walk it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    skip: u64,
    max_depth: Option<u64>,
    suggested_only: bool,
    root: u64,
}

impl Token {
    fn encode(&self) -> String {
        let depth = self.max_depth.map_or_else(|| "n".to_owned(), |depth| depth.to_string());
        format!("h{}_{}_{}_{:016x}", self.skip, depth, u8::from(self.suggested_only), self.root)
    }

    fn decode(token: &str) -> Option<Self> {
        let mut parts = token.strip_prefix('h')?.split('_');
        let skip = parts.next()?.parse().ok()?;
        let max_depth = match parts.next()? {
            "n" => None,
            depth => Some(depth.parse().ok()?),
        };
        let suggested_only = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let root = u64::from_str_radix(parts.next()?, 16).ok()?;
        parts.next().is_none().then_some(Self { skip, max_depth, suggested_only, root })
    }
}

/// A stable (FNV-1a) hash of the root room id, so a token is refused for another space.
fn root_hash(room_id: &RoomId) -> u64 {
    room_id
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// A child room named by a space, with what its ordering needs.
#[derive(Clone, Debug)]
struct Child {
    room_id: OwnedRoomId,
    order: Option<String>,
    origin_server_ts: i64,
    suggested: bool,
    /// The stripped event for `children_state`.
    stripped: Value,
}

/// The `m.space.child` events with a valid `via`, in the spec's order.
fn children(events: &[(String, String, i64, Value)]) -> Vec<Child> {
    let mut children: Vec<Child> = events
        .iter()
        .filter_map(|(state_key, sender, origin_server_ts, content)| {
            let via = content.get("via")?.as_array()?;
            if via.is_empty() || !via.iter().all(Value::is_string) {
                return None;
            }
            let room_id = RoomId::parse(state_key.as_str()).ok()?;
            let order =
                content.get("order").and_then(Value::as_str).filter(|order| valid_order(order)).map(str::to_owned);
            let suggested = content.get("suggested").and_then(Value::as_bool).unwrap_or(false);
            let stripped = json!({
                "type": "m.space.child",
                "state_key": state_key,
                "content": content,
                "sender": sender,
                "origin_server_ts": origin_server_ts,
            });
            Some(Child { room_id, order, origin_server_ts: *origin_server_ts, suggested, stripped })
        })
        .collect();
    children.sort_by(|a, b| {
        (a.order.is_none(), &a.order, a.origin_server_ts, &a.room_id).cmp(&(
            b.order.is_none(),
            &b.order,
            b.origin_server_ts,
            &b.room_id,
        ))
    });
    children
}

/// An `order` is valid when it is at most 50 characters, all printable ASCII (`\x20`–`\x7E`).
fn valid_order(order: &str) -> bool {
    order.chars().count() <= MAX_ORDER_CHARS && order.chars().all(|c| ('\x20'..='\x7E').contains(&c))
}

/// What the walk knows of one local room.
struct RoomInfo {
    summary: Map<String, Value>,
    is_space: bool,
    children: Vec<Child>,
    join_rule: String,
    world_readable: bool,
    version: RoomVersionId,
    allowed_room_ids: Vec<String>,
}

impl Social {
    /// One page of the space hierarchy under `root`, as `user_id` may see it.
    ///
    /// `403 M_FORBIDDEN` when the user may not see the root (or it is unknown); `400
    /// M_INVALID_PARAM` for a zero limit, or a `from` token that is unknown or was made with
    /// another `max_depth`, `suggested_only` or root.
    pub async fn hierarchy(
        &self,
        user_id: &UserId,
        root: &RoomId,
        request: &HierarchyRequest,
    ) -> Result<HierarchyPage> {
        let limit = match request.limit {
            Some(0) => return Err(Error::invalid_param("limit must be greater than zero")),
            Some(limit) => limit.min(MAX_LIMIT),
            None => DEFAULT_LIMIT,
        };
        let skip = match &request.from {
            Some(from) => {
                let token = Token::decode(from).ok_or_else(|| Error::invalid_param("Unknown pagination token"))?;
                let same_walk = token.max_depth == request.max_depth
                    && token.suggested_only == request.suggested_only
                    && token.root == root_hash(root);
                if !same_walk {
                    return Err(Error::invalid_param(
                        "suggested_only and max_depth cannot change on paginated requests",
                    ));
                }
                token.skip
            }
            None => 0,
        };
        let max_depth = request.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH);

        let forbidden = || Error::forbidden("You are not allowed to view this room.");
        let root_info = self.room_info(root).await?.ok_or_else(forbidden)?;
        if !self.accessible(user_id, root, &root_info).await? {
            return Err(forbidden());
        }

        let mut page = HierarchyPage::default();
        let mut stack: Vec<(OwnedRoomId, u64)> = vec![(root.to_owned(), 0)];
        let mut seen: HashSet<OwnedRoomId> = HashSet::new();
        let mut listed: u64 = 0;
        let mut first = Some(root_info);
        while let Some((room_id, depth)) = stack.pop() {
            if !seen.insert(room_id.clone()) {
                continue;
            }
            let info = match first.take() {
                Some(info) => info,
                None => match self.room_info(&room_id).await? {
                    Some(info) if self.accessible(user_id, &room_id, &info).await? => info,
                    _ => continue,
                },
            };
            if listed >= skip {
                if page.rooms.len() as u64 == limit {
                    let token = Token {
                        skip: listed,
                        max_depth: request.max_depth,
                        suggested_only: request.suggested_only,
                        root: root_hash(root),
                    };
                    page.next_batch = Some(token.encode());
                    break;
                }
                page.rooms.push(chunk(&info, request.suggested_only));
            }
            listed += 1;
            if info.is_space && depth < max_depth {
                let walked = info.children.iter().filter(|child| !request.suggested_only || child.suggested);
                let next: Vec<(OwnedRoomId, u64)> = walked.map(|child| (child.room_id.clone(), depth + 1)).collect();
                stack.extend(next.into_iter().rev());
            }
        }
        Ok(page)
    }

    /// The summary and children of a room this server knows; `None` for any other room.
    async fn room_info(&self, room_id: &RoomId) -> Result<Option<RoomInfo>> {
        let store = self.store();
        if store.room(room_id.as_str()).await?.is_none() {
            return Ok(None);
        }
        let events = store.current_state_events(room_id.as_str(), Some(&SUMMARY_STATE)).await?;
        let mut contents: std::collections::HashMap<&str, Value> = std::collections::HashMap::new();
        let mut child_events = Vec::new();
        for event in &events {
            let content = serde_json::from_str::<Value>(&event.pdu)
                .ok()
                .and_then(|mut pdu| pdu.get_mut("content").map(Value::take))
                .unwrap_or_else(|| json!({}));
            if event.event_type == "m.space.child" {
                let state_key = event.state_key.clone().unwrap_or_default();
                child_events.push((state_key, event.sender.clone(), event.origin_server_ts, content));
            } else if event.state_key.as_deref() == Some("") {
                contents.insert(event.event_type.as_str(), content);
            }
        }
        let text = |event_type: &str, field: &str| {
            contents.get(event_type).and_then(|content| content.get(field)).and_then(Value::as_str).map(str::to_owned)
        };
        let create = contents.get("m.room.create");
        let room_type = create.and_then(|content| content.get("type")).and_then(Value::as_str).map(str::to_owned);
        let version_text = text("m.room.create", "room_version").unwrap_or_else(|| "1".to_owned());
        let version = RoomVersionId::try_from(version_text.as_str()).unwrap_or(RoomVersionId::V1);
        let join_rule = text("m.room.join_rules", "join_rule").unwrap_or_else(|| "invite".to_owned());
        let world_readable =
            text("m.room.history_visibility", "history_visibility").as_deref() == Some("world_readable");
        let guest_can_join = text("m.room.guest_access", "guest_access").as_deref() == Some("can_join");
        let allowed_room_ids =
            contents.get("m.room.join_rules").map(ranvier_rooms::membership::allowed_room_ids).unwrap_or_default();
        let joined = store.membership_counts(room_id.as_str()).await?.get("join").copied().unwrap_or(0);

        let mut summary = Map::new();
        summary.insert("room_id".into(), json!(room_id));
        for (key, event_type, field) in [
            ("name", "m.room.name", "name"),
            ("topic", "m.room.topic", "topic"),
            ("avatar_url", "m.room.avatar", "url"),
            ("canonical_alias", "m.room.canonical_alias", "alias"),
            ("encryption", "m.room.encryption", "algorithm"),
        ] {
            if let Some(value) = text(event_type, field).filter(|value| !value.is_empty()) {
                summary.insert(key.into(), Value::String(value));
            }
        }
        summary.insert("num_joined_members".into(), json!(joined));
        summary.insert("join_rule".into(), Value::String(join_rule.clone()));
        summary.insert("world_readable".into(), Value::Bool(world_readable));
        summary.insert("guest_can_join".into(), Value::Bool(guest_can_join));
        if let Some(room_type) = &room_type {
            summary.insert("room_type".into(), Value::String(room_type.clone()));
        }
        summary.insert("room_version".into(), Value::String(version_text));
        if matches!(join_rule.as_str(), "restricted" | "knock_restricted") {
            summary.insert("allowed_room_ids".into(), json!(allowed_room_ids));
        }
        let is_space = room_type.as_deref() == Some("m.space");
        let children = if is_space { children(&child_events) } else { Vec::new() };
        Ok(Some(RoomInfo { summary, is_space, children, join_rule, world_readable, version, allowed_room_ids }))
    }

    /// Whether `user_id` may see a room in the hierarchy, as Synapse decides: joined or
    /// invited, a public or knockable room, a world-readable one, or a restricted room whose
    /// allow rules the user satisfies. A banned user sees only world-readable rooms.
    async fn accessible(&self, user_id: &UserId, room_id: &RoomId, info: &RoomInfo) -> Result<bool> {
        if info.world_readable {
            return Ok(true);
        }
        let membership = self.store().membership(room_id.as_str(), user_id.as_str()).await?.map(|row| row.membership);
        match membership.as_deref() {
            Some("join" | "invite") => return Ok(true),
            Some("ban") => return Ok(false),
            _ => {}
        }
        let rules = info.version.rules().map(|rules| rules.authorization);
        let supports =
            |check: fn(&ruma::room_version_rules::AuthorizationRules) -> bool| rules.as_ref().is_some_and(check);
        let restricted = match info.join_rule.as_str() {
            "public" => return Ok(true),
            "knock" => return Ok(supports(|rules| rules.knocking)),
            "knock_restricted" if supports(|rules| rules.knock_restricted_join_rule) => return Ok(true),
            "restricted" => supports(|rules| rules.restricted_join_rule),
            _ => false,
        };
        if restricted {
            for allowed in &info.allowed_room_ids {
                let row = self.store().membership(allowed, user_id.as_str()).await?;
                if row.is_some_and(|row| row.membership == "join") {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// A room's chunk of the response: its summary with its `children_state`.
fn chunk(info: &RoomInfo, suggested_only: bool) -> Value {
    let mut chunk = info.summary.clone();
    let children_state: Vec<Value> = info
        .children
        .iter()
        .filter(|child| !suggested_only || child.suggested)
        .map(|child| child.stripped.clone())
        .collect();
    chunk.insert("children_state".into(), Value::Array(children_state));
    Value::Object(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(room: &str, ts: i64, content: Value) -> (String, String, i64, Value) {
        (room.to_owned(), "@a:x".to_owned(), ts, content)
    }

    #[test]
    fn children_follow_the_spec_example_order() {
        let events = vec![
            child("!b:example.org", 1_640_341_000_000, json!({ "order": " ", "via": ["example.org"] })),
            child("!a:example.org", 1_640_141_000_000, json!({ "order": "aaaa", "via": ["example.org"] })),
            child("!c:example.org", 1_640_841_000_000, json!({ "order": "first", "via": ["example.org"] })),
            child("!e:example.org", 1_640_641_000_000, json!({ "via": ["example.org"] })),
            child("!d:example.org", 1_640_741_000_000, json!({ "via": ["example.org"] })),
        ];
        let order: Vec<String> = children(&events).into_iter().map(|c| c.room_id.to_string()).collect();
        assert_eq!(order, ["!b:example.org", "!a:example.org", "!c:example.org", "!e:example.org", "!d:example.org"]);
    }

    #[test]
    fn ties_and_invalid_orders() {
        let long = "x".repeat(51);
        let events = vec![
            child("!z:x", 5, json!({ "order": "same", "via": ["x"] })),
            child("!y:x", 5, json!({ "order": "same", "via": ["x"] })),
            child("!w:x", 1, json!({ "order": long, "via": ["x"] })),
            child("!v:x", 2, json!({ "order": "caf\u{e9}", "via": ["x"] })),
            child("!u:x", 0, json!({ "order": 3, "via": ["x"] })),
            child("!t:x", 0, json!({ "via": [] })),
            child("!s:x", 0, json!({ "via": "x" })),
            child("!r:x", 0, json!({})),
            child("not a room", 0, json!({ "via": ["x"] })),
        ];
        let order: Vec<String> = children(&events).into_iter().map(|c| c.room_id.to_string()).collect();
        assert_eq!(order, ["!y:x", "!z:x", "!u:x", "!w:x", "!v:x"]);
    }

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let token = Token { skip: 7, max_depth: Some(2), suggested_only: true, root: 42 };
        assert_eq!(Token::decode(&token.encode()), Some(token));
        let token = Token { skip: 0, max_depth: None, suggested_only: false, root: u64::MAX };
        assert_eq!(Token::decode(&token.encode()), Some(token));
        for bad in ["", "h", "x1_n_0_0", "h1_n_2_0", "h1_n_0_zz", "h1_n_0_0_1", "h-1_n_0_0"] {
            assert_eq!(Token::decode(bad), None, "{bad}");
        }
    }
}
