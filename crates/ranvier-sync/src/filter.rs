//! Applying filters (`FilterDefinition`, `RoomFilter`, `RoomEventFilter`, `Filter`) to rooms
//! and events. Pure functions: no I/O.

use ruma::api::client::filter::{Filter, FilterDefinition, LazyLoadOptions, RoomEventFilter, RoomFilter, UrlFilter};
use serde_json::{Map, Value};

/// The timeline limit when the filter gives none.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The largest timeline limit honoured, whatever the filter asks.
pub const MAX_TIMELINE_LIMIT: usize = 1000;

/// Whether `event_type` matches `pattern`, where `*` stands for any run of characters.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == event_type;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = (parts[0], &parts[1..]);
    let Some(mut remaining) = event_type.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = match rest.split_last() {
        Some((last, middle)) => (*last, middle),
        None => return remaining.is_empty(),
    };
    for part in middle {
        match remaining.find(part) {
            Some(index) => remaining = &remaining[index + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

fn any_type_matches(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|pattern| type_matches(pattern, event_type))
}

/// The type and sender parts shared by every kind of filter.
fn type_and_sender_allowed(
    types: Option<&[String]>,
    not_types: &[String],
    senders: Option<&[ruma::OwnedUserId]>,
    not_senders: &[ruma::OwnedUserId],
    event_type: &str,
    sender: &str,
) -> bool {
    if any_type_matches(not_types, event_type) {
        return false;
    }
    if let Some(types) = types
        && !any_type_matches(types, event_type)
    {
        return false;
    }
    if not_senders.iter().any(|s| s.as_str() == sender) {
        return false;
    }
    if let Some(senders) = senders
        && !senders.iter().any(|s| s.as_str() == sender)
    {
        return false;
    }
    true
}

/// Whether a room event passes a `RoomEventFilter` (types, senders, rooms and `contains_url`).
/// `content` is consulted only for `contains_url`.
pub fn room_event_allowed(
    filter: &RoomEventFilter,
    room_id: &str,
    event_type: &str,
    sender: &str,
    content: impl FnOnce() -> Option<Value>,
) -> bool {
    if !room_allowed_by_lists(filter.rooms.as_deref(), &filter.not_rooms, room_id) {
        return false;
    }
    if !type_and_sender_allowed(
        filter.types.as_deref(),
        &filter.not_types,
        filter.senders.as_deref(),
        &filter.not_senders,
        event_type,
        sender,
    ) {
        return false;
    }
    match filter.url_filter {
        Some(wanted) => {
            let has_url = content().is_some_and(|content| content.get("url").is_some_and(Value::is_string));
            match wanted {
                UrlFilter::EventsWithUrl => has_url,
                UrlFilter::EventsWithoutUrl => !has_url,
            }
        }
        None => true,
    }
}

/// Whether a state key `(event_type, _)` can pass a filter's type lists (a cheap check before
/// the event itself is loaded).
pub fn state_type_allowed(filter: &RoomEventFilter, event_type: &str) -> bool {
    !any_type_matches(&filter.not_types, event_type)
        && filter.types.as_deref().is_none_or(|types| any_type_matches(types, event_type))
}

/// Whether a non-room event (global account data, presence) passes a `Filter`.
pub fn event_allowed(filter: &Filter, event_type: &str, sender: Option<&str>) -> bool {
    let senders_ok = match sender {
        Some(sender) => {
            type_and_sender_allowed(None, &[], filter.senders.as_deref(), &filter.not_senders, event_type, sender)
        }
        None => true,
    };
    senders_ok && type_and_sender_allowed(filter.types.as_deref(), &filter.not_types, None, &[], event_type, "")
}

fn room_allowed_by_lists(rooms: Option<&[ruma::OwnedRoomId]>, not_rooms: &[ruma::OwnedRoomId], room_id: &str) -> bool {
    if not_rooms.iter().any(|r| r.as_str() == room_id) {
        return false;
    }
    rooms.is_none_or(|rooms| rooms.iter().any(|r| r.as_str() == room_id))
}

/// Whether a room passes the room filter's `rooms` / `not_rooms`.
pub fn room_allowed(filter: &RoomFilter, room_id: &str) -> bool {
    room_allowed_by_lists(filter.rooms.as_deref(), &filter.not_rooms, room_id)
}

/// The timeline limit a filter asks for, within bounds.
pub fn timeline_limit(filter: &RoomEventFilter) -> usize {
    filter
        .limit
        .map_or(DEFAULT_TIMELINE_LIMIT, |limit| usize::try_from(u64::from(limit)).unwrap_or(usize::MAX))
        .min(MAX_TIMELINE_LIMIT)
}

/// The lazy-loading choice of a state filter: `None` when members are loaded in full,
/// `Some(include_redundant_members)` otherwise.
pub fn lazy_members(filter: &RoomEventFilter) -> Option<bool> {
    match filter.lazy_load_options {
        LazyLoadOptions::Disabled => None,
        LazyLoadOptions::Enabled { include_redundant_members } => Some(include_redundant_members),
    }
}

/// Check what the filter's JSON shape alone cannot: `event_format` is `client` or
/// `federation`, and `event_fields` entries are not empty.
pub fn validate(filter: &FilterDefinition) -> ranvier_core::Result<()> {
    use ruma::api::client::filter::EventFormat;
    if !matches!(filter.event_format, EventFormat::Client | EventFormat::Federation) {
        return Err(ranvier_core::Error::invalid_param("event_format must be `client` or `federation`"));
    }
    if filter.event_fields.iter().flatten().any(|field| field.is_empty()) {
        return Err(ranvier_core::Error::invalid_param("event_fields entries must not be empty"));
    }
    Ok(())
}

/// Whether the client asked for events in the federation format.
pub fn wants_federation_format(filter: &FilterDefinition) -> bool {
    filter.event_format == ruma::api::client::filter::EventFormat::Federation
}

/// Keep only the listed fields of a client event (`event_fields`: dotted paths, with `\.`
/// for a literal dot). An empty or absent list keeps everything.
pub fn apply_event_fields(event: Value, fields: Option<&[String]>) -> Value {
    let Some(fields) = fields.filter(|fields| !fields.is_empty()) else {
        return event;
    };
    let mut out = Map::new();
    for field in fields {
        let path = split_field_path(field);
        copy_path(&event, &mut out, &path);
    }
    Value::Object(out)
}

fn split_field_path(field: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('.') | Some('\\')) => {
                if let (Some(next), Some(last)) = (chars.next(), parts.last_mut()) {
                    last.push(next);
                }
            }
            '.' => parts.push(String::new()),
            c => {
                if let Some(last) = parts.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    parts
}

fn copy_path(source: &Value, target: &mut Map<String, Value>, path: &[String]) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = source.get(head) else {
        return;
    };
    if rest.is_empty() {
        target.insert(head.clone(), value.clone());
        return;
    }
    if !value.is_object() {
        return;
    }
    let entry = target.entry(head.clone()).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(inner) = entry {
        copy_path(value, inner, rest);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wildcard_types() {
        let cases = [
            ("m.room.message", "m.room.message", true),
            ("m.room.message", "m.room.messages", false),
            ("m.room.*", "m.room.message", true),
            ("m.room.*", "m.room.", true),
            ("m.room.*", "m.call.invite", false),
            ("*", "anything", true),
            ("*.member", "m.room.member", true),
            ("m.*.member", "m.room.member", true),
            ("m.*.member", "m.room.name", false),
            ("m.*.*", "m.a.b", true),
            ("a*a", "a", false),
            ("a*a", "aa", true),
        ];
        for (pattern, event_type, expected) in cases {
            assert_eq!(type_matches(pattern, event_type), expected, "{pattern} vs {event_type}");
        }
    }

    fn room_event_filter(value: serde_json::Value) -> RoomEventFilter {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn room_event_filter_table() {
        let room = "!r:x";
        // (filter, type, sender, content, expected)
        let cases = [
            (json!({}), "m.room.message", "@a:x", json!({}), true),
            (json!({"types": []}), "m.room.message", "@a:x", json!({}), false),
            (json!({"types": ["m.room.*"]}), "m.room.message", "@a:x", json!({}), true),
            (
                json!({"types": ["m.room.*"], "not_types": ["m.room.message"]}),
                "m.room.message",
                "@a:x",
                json!({}),
                false,
            ),
            (json!({"senders": ["@b:x"]}), "m.room.message", "@a:x", json!({}), false),
            (json!({"senders": ["@a:x"]}), "m.room.message", "@a:x", json!({}), true),
            (json!({"not_senders": ["@a:x"]}), "m.room.message", "@a:x", json!({}), false),
            (json!({"senders": ["@a:x"], "not_senders": ["@a:x"]}), "m.room.message", "@a:x", json!({}), false),
            (json!({"rooms": ["!other:x"]}), "m.room.message", "@a:x", json!({}), false),
            (json!({"not_rooms": ["!r:x"]}), "m.room.message", "@a:x", json!({}), false),
            (json!({"contains_url": true}), "m.room.message", "@a:x", json!({"url": "mxc://x/y"}), true),
            (json!({"contains_url": true}), "m.room.message", "@a:x", json!({"body": "hi"}), false),
            (json!({"contains_url": false}), "m.room.message", "@a:x", json!({"body": "hi"}), true),
            (json!({"contains_url": false}), "m.room.message", "@a:x", json!({"url": "mxc://x/y"}), false),
        ];
        for (i, (filter, event_type, sender, content, expected)) in cases.into_iter().enumerate() {
            let filter = room_event_filter(filter);
            let got = room_event_allowed(&filter, room, event_type, sender, || Some(content.clone()));
            assert_eq!(got, expected, "case {i}");
        }
    }

    #[test]
    fn account_data_filter() {
        let filter: Filter = serde_json::from_value(json!({"types": ["m.push_rules"]})).unwrap();
        assert!(event_allowed(&filter, "m.push_rules", None));
        assert!(!event_allowed(&filter, "m.direct", None));
        let filter: Filter = serde_json::from_value(json!({"not_types": ["m.*"]})).unwrap();
        assert!(!event_allowed(&filter, "m.direct", None));
        assert!(event_allowed(&filter, "org.example", None));
    }

    #[test]
    fn rooms_lists() {
        let filter: RoomFilter =
            serde_json::from_value(json!({"rooms": ["!a:x", "!b:x"], "not_rooms": ["!b:x"]})).unwrap();
        assert!(room_allowed(&filter, "!a:x"));
        assert!(!room_allowed(&filter, "!b:x"));
        assert!(!room_allowed(&filter, "!c:x"));
        assert!(room_allowed(&RoomFilter::default(), "!c:x"));
    }

    #[test]
    fn limits_and_lazy_loading() {
        assert_eq!(timeline_limit(&room_event_filter(json!({}))), DEFAULT_TIMELINE_LIMIT);
        assert_eq!(timeline_limit(&room_event_filter(json!({"limit": 3}))), 3);
        assert_eq!(timeline_limit(&room_event_filter(json!({"limit": 1000000}))), MAX_TIMELINE_LIMIT);
        assert_eq!(lazy_members(&room_event_filter(json!({}))), None);
        assert_eq!(lazy_members(&room_event_filter(json!({"lazy_load_members": true}))), Some(false));
        assert_eq!(
            lazy_members(&room_event_filter(json!({"lazy_load_members": true, "include_redundant_members": true}))),
            Some(true)
        );
    }

    #[test]
    fn validation_rejects_unknown_format_and_empty_fields() {
        let parse = |value| serde_json::from_value::<FilterDefinition>(value).unwrap();
        assert!(validate(&parse(json!({}))).is_ok());
        assert!(validate(&parse(json!({"event_format": "federation", "event_fields": ["type"]}))).is_ok());
        let error = validate(&parse(json!({"event_format": "binary"}))).unwrap_err();
        assert_eq!(error.kind(), Some(&ruma::api::error::ErrorKind::InvalidParam));
        assert!(validate(&parse(json!({"event_fields": [""]}))).is_err());
    }

    #[test]
    fn event_fields_keep_listed_paths() {
        let event = json!({
            "type": "m.room.message",
            "sender": "@a:x",
            "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"rel_type": "x"}},
            "unsigned": {"age": 1},
            "weird.key": 1
        });
        let fields = vec!["type".to_owned(), "content.body".to_owned(), "weird\\.key".to_owned(), "nope.x".to_owned()];
        assert_eq!(
            apply_event_fields(event.clone(), Some(&fields)),
            json!({"type": "m.room.message", "content": {"body": "hi"}, "weird.key": 1})
        );
        assert_eq!(apply_event_fields(event.clone(), None), event);
        assert_eq!(apply_event_fields(event.clone(), Some(&[])), event);
    }
}
