//! Stored PDUs into the client event format (`ClientEvent` of the spec).

use ranvier_core::util::now_ms;
use ranvier_store::events::StoredEvent;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Options for [`client_event`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FormatOptions<'a> {
    /// Omit `room_id` (sync timelines and state nest events under their room).
    pub omit_room_id: bool,
    /// The client transaction id, when the event goes to the device that sent it.
    pub transaction_id: Option<&'a str>,
    /// The event's bundled aggregations, put in `unsigned["m.relations"]` (see
    /// [`crate::relations`]).
    pub relations: Option<&'a Value>,
}

/// The keys of a stored PDU that the client format takes over. The rest (hashes, signatures,
/// the DAG's edges) is skipped while parsing, never built into values.
#[derive(Default, Deserialize)]
struct ClientParts {
    content: Option<Value>,
    redacts: Option<Value>,
    unsigned: Option<Value>,
}

/// The client format of a stored event: the PDU's client-visible keys plus `event_id` and
/// `unsigned` (`age`, and `transaction_id` for its sender's device). The stored PDU's own
/// `unsigned` carries what the write path recorded for clients: `prev_content`,
/// `prev_sender` and `replaces_state` for state events, `redacted_because` once redacted.
pub fn client_event(event: &StoredEvent, options: FormatOptions<'_>) -> Value {
    let pdu: ClientParts = serde_json::from_str(&event.pdu).unwrap_or_default();
    let content = pdu.content.unwrap_or_else(|| json!({}));
    // Room version 11 moved `redacts` into the content; clients of older versions read the
    // top-level key, so it is given in both places.
    let redacts = pdu.redacts.or_else(|| match &content {
        Value::Object(content) if event.event_type == "m.room.redaction" => content.get("redacts").cloned(),
        _ => None,
    });
    let mut out = Map::new();
    out.insert("event_id".into(), Value::String(event.event_id.clone()));
    out.insert("type".into(), Value::String(event.event_type.clone()));
    out.insert("sender".into(), Value::String(event.sender.clone()));
    out.insert("origin_server_ts".into(), json!(event.origin_server_ts));
    out.insert("content".into(), content);
    if !options.omit_room_id {
        out.insert("room_id".into(), Value::String(event.room_id.clone()));
    }
    if let Some(state_key) = &event.state_key {
        out.insert("state_key".into(), Value::String(state_key.clone()));
    }
    if let Some(redacts) = redacts {
        out.insert("redacts".into(), redacts);
    }
    let mut unsigned = match pdu.unsigned {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    unsigned.insert("age".into(), json!((now_ms() - event.origin_server_ts).max(0)));
    if let Some(txn) = options.transaction_id {
        unsigned.insert("transaction_id".into(), Value::String(txn.to_owned()));
    }
    if let Some(relations) = options.relations {
        unsigned.insert("m.relations".into(), relations.clone());
    }
    // The write path stores the whole redaction event in `unsigned.redacted_because`; older
    // rows may only know its id.
    if let Some(redacted_by) = &event.redacted_by
        && !unsigned.contains_key("redacted_because")
    {
        unsigned.insert("redacted_because".into(), json!({ "event_id": redacted_by }));
    }
    out.insert("unsigned".into(), Value::Object(unsigned));
    Value::Object(out)
}
