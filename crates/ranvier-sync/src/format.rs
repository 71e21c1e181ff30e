//! Events on their way out of the read side: the client format (or the federation format when
//! a filter asks), `event_fields`, transaction ids, and stripped state for invites and knocks.

use std::collections::HashMap;

use ranvier_rooms::format::{FormatOptions, client_event};
use ranvier_store::events::StoredEvent;
use serde_json::{Map, Value, json};

use crate::filter::apply_event_fields;

/// How to format events for one response.
#[derive(Default)]
pub struct Formatter<'a> {
    /// `event_fields` of the filter.
    pub event_fields: Option<&'a [String]>,
    /// `event_format: federation`.
    pub federation: bool,
    /// Transaction ids of the requesting device's own events, by event id.
    pub transaction_ids: HashMap<String, String>,
    /// Bundled aggregations (`unsigned["m.relations"]`) by event id, computed for the whole
    /// page at once with [`ranvier_rooms::Rooms::bundled_aggregations`].
    pub relations: HashMap<String, Value>,
}

impl Formatter<'_> {
    /// One event. `omit_room_id` for events nested under their room (sync).
    pub fn event(&self, event: &StoredEvent, omit_room_id: bool) -> Value {
        let value = if self.federation {
            let mut pdu: Map<String, Value> = serde_json::from_str(&event.pdu).unwrap_or_default();
            pdu.entry("event_id").or_insert_with(|| Value::String(event.event_id.clone()));
            Value::Object(pdu)
        } else {
            let transaction_id = self.transaction_ids.get(&event.event_id).map(String::as_str);
            let relations = self.relations.get(&event.event_id);
            client_event(event, FormatOptions { omit_room_id, transaction_id, relations })
        };
        apply_event_fields(value, self.event_fields)
    }

    /// Several events, in order.
    pub fn events<'e>(&self, events: impl IntoIterator<Item = &'e StoredEvent>, omit_room_id: bool) -> Vec<Value> {
        events.into_iter().map(|event| self.event(event, omit_room_id)).collect()
    }
}

/// The content of a stored event, if its PDU is readable (the other keys are skipped while
/// parsing).
pub fn content_of(event: &StoredEvent) -> Option<Value> {
    #[derive(serde::Deserialize)]
    struct Content {
        content: Option<Value>,
    }
    serde_json::from_str::<Content>(&event.pdu).ok()?.content
}

/// The stripped form of a state event (`type`, `state_key`, `content`, `sender`), as invites and
/// knocks carry.
pub fn stripped_state(event: &StoredEvent) -> Value {
    json!({
        "type": event.event_type,
        "state_key": event.state_key.clone().unwrap_or_default(),
        "content": content_of(event).unwrap_or_else(|| json!({})),
        "sender": event.sender,
    })
}
