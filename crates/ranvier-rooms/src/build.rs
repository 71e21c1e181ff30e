//! Building a local PDU: choosing prev_events, depth and auth_events from the room's current
//! state, hashing and signing it, and deriving its event id; then checking it against the room
//! version's authorization rules.

use std::sync::Arc;

use ranvier_core::{Error, Result, error::ErrorKind, util::now_ms};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId, UserId,
    canonical_json::to_canonical_value,
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion},
    signatures::{hash_and_sign_event, reference_hash},
    state_res,
};
use serde_json::{Map, Value};

use crate::{Rooms, pdu::Pdu, room_state::RoomState};

/// The largest PDU accepted, as canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

/// How many forward extremities a new event references at most.
const MAX_PREV_EVENTS: usize = 10;

/// What a local event is made of before it becomes a PDU.
#[derive(Clone, Debug)]
pub struct EventTemplate {
    pub event_type: String,
    /// `Some` for state events.
    pub state_key: Option<String>,
    /// The content: must be a JSON object.
    pub content: Value,
    /// For redactions: the redacted event.
    pub redacts: Option<OwnedEventId>,
    /// `origin_server_ts` to use instead of the clock (application services may set it).
    pub timestamp: Option<i64>,
}

impl EventTemplate {
    /// A non-state event.
    pub fn message(event_type: impl Into<String>, content: Value) -> Self {
        Self { event_type: event_type.into(), state_key: None, content, redacts: None, timestamp: None }
    }

    /// A state event.
    pub fn state(event_type: impl Into<String>, state_key: impl Into<String>, content: Value) -> Self {
        Self {
            event_type: event_type.into(),
            state_key: Some(state_key.into()),
            content,
            redacts: None,
            timestamp: None,
        }
    }
}

/// A signed PDU ready to be checked and persisted.
pub struct BuiltEvent {
    pub pdu: Arc<Pdu>,
    pub object: CanonicalJsonObject,
    /// The events named in `auth_events`, for the auth check.
    pub auth_events: Vec<Arc<Pdu>>,
    /// The room's id (for a version 12 create event, derived from its hash: the PDU itself
    /// has no `room_id`).
    pub room_id: OwnedRoomId,
}

fn to_canonical(value: Value, what: &str) -> Result<CanonicalJsonValue> {
    to_canonical_value(value).map_err(|e| Error::bad_json(format!("{what} is not valid canonical JSON: {e}")))
}

/// An event reference in the room version's format.
fn event_ref(id: &EventId, format: EventsReferenceFormatVersion) -> Value {
    match format {
        EventsReferenceFormatVersion::V1 => {
            Value::Array(vec![Value::String(id.to_string()), Value::Object(Map::new())])
        }
        _ => Value::String(id.to_string()),
    }
}

impl Rooms {
    /// Build, hash and sign a PDU for `template` on top of `room`'s current state.
    ///
    /// `room.room_id` is ignored for a version 12 create event, whose room id is derived from
    /// its own hash; read it back from [`BuiltEvent::room_id`].
    pub(crate) fn build_event(
        &self,
        room: &RoomState,
        sender: &UserId,
        template: &EventTemplate,
    ) -> Result<BuiltEvent> {
        let rules = &room.rules;
        let Value::Object(mut content) = template.content.clone() else {
            return Err(Error::bad_json("Event content must be a JSON object"));
        };
        let event_type = TimelineEventType::from(template.event_type.as_str());
        let is_create = event_type == TimelineEventType::RoomCreate;
        let redacts_in_content = rules.redaction.content_field_redacts;
        if let Some(redacts) = &template.redacts
            && redacts_in_content
        {
            content.insert("redacts".into(), Value::String(redacts.to_string()));
        }
        let raw_content = serde_json::value::to_raw_value(&content).map_err(|e| Error::bad_json(e.to_string()))?;

        let auth_types = state_res::auth_types_for_event(
            &event_type,
            sender,
            template.state_key.as_deref(),
            &raw_content,
            &rules.authorization,
        )
        .map_err(Error::bad_json)?;
        // Every auth type is an auth-cache type, so the chosen events come from the cache.
        let auth_pdus: Vec<Arc<Pdu>> =
            auth_types.iter().filter_map(|(kind, key)| room.auth_event(&kind.to_string(), key).cloned()).collect();
        let auth_events: Vec<OwnedEventId> = auth_pdus.iter().map(|event| event.event_id.clone()).collect();

        let mut prev: Vec<&(OwnedEventId, i64)> = room.extremities.iter().collect();
        prev.sort_by_key(|(_, depth)| std::cmp::Reverse(*depth));
        prev.truncate(MAX_PREV_EVENTS);
        let depth = prev.iter().map(|(_, depth)| *depth).max().map_or(1, |d| d + 1);

        let format = rules.events_reference_format;
        let mut object = Map::new();
        object.insert("type".into(), Value::String(template.event_type.clone()));
        object.insert("sender".into(), Value::String(sender.to_string()));
        object.insert("content".into(), Value::Object(content));
        object.insert("depth".into(), Value::from(depth));
        object.insert("origin_server_ts".into(), Value::from(template.timestamp.unwrap_or_else(now_ms)));
        object.insert("prev_events".into(), prev.iter().map(|(id, _)| event_ref(id, format)).collect());
        object.insert("auth_events".into(), auth_events.iter().map(|id| event_ref(id, format)).collect());
        if let Some(state_key) = &template.state_key {
            object.insert("state_key".into(), Value::String(state_key.clone()));
        }
        if let Some(redacts) = &template.redacts
            && !redacts_in_content
        {
            object.insert("redacts".into(), Value::String(redacts.to_string()));
        }
        if !(is_create && rules.authorization.room_create_event_id_as_room_id) {
            object.insert("room_id".into(), Value::String(room.room_id.to_string()));
        }
        // Versions whose redaction algorithm keeps `origin` still expect it.
        if rules.redaction.keep_origin_membership_prev_state {
            object.insert("origin".into(), Value::String(self.server_name().to_string()));
        }
        let v1_event_id = match rules.event_id_format {
            EventIdFormatVersion::V1 => {
                let id = EventId::new_v1(self.server_name());
                object.insert("event_id".into(), Value::String(id.to_string()));
                Some(id)
            }
            _ => None,
        };

        let CanonicalJsonValue::Object(mut object) = to_canonical(Value::Object(object), "Event")? else {
            return Err(Error::internal("canonical PDU is not an object"));
        };
        hash_and_sign_event(self.server_name().as_str(), self.signing_key(), &mut object, &rules.redaction).map_err(
            |e| match e {
                ruma::signatures::JsonError::PduTooLarge => too_large(),
                e => Error::bad_json(format!("Cannot sign event: {e}")),
            },
        )?;
        let size = serde_json::to_string(&object).map(|s| s.len()).unwrap_or(usize::MAX);
        if size > MAX_PDU_BYTES {
            return Err(too_large());
        }
        let event_id = match v1_event_id {
            Some(id) => id,
            None => {
                let hash = reference_hash(&object, rules).map_err(|e| match e {
                    ruma::signatures::JsonError::PduTooLarge => too_large(),
                    e => Error::internal(format!("reference hash: {e}")),
                })?;
                EventId::new_v2_or_v3(&hash).map_err(|e| Error::internal(format!("event id: {e}")))?
            }
        };
        let pdu = Pdu::from_json(event_id.clone(), &object)?;
        let room_id = if is_create && rules.authorization.room_create_event_id_as_room_id {
            room_id_from_create(&event_id)?
        } else {
            room.room_id.clone()
        };
        Ok(BuiltEvent { pdu: Arc::new(pdu), object, auth_events: auth_pdus, room_id })
    }
}

fn too_large() -> Error {
    Error::too_large(format!("Event is larger than the {MAX_PDU_BYTES} bytes allowed"))
}

/// The room id of a version 12+ room: the create event's id with `!` for `$`.
pub fn room_id_from_create(create_event_id: &EventId) -> Result<OwnedRoomId> {
    RoomId::new_v2(create_event_id.as_str().trim_start_matches('$'))
        .map_err(|e| Error::internal(format!("room id from create event: {e}")))
}

/// Check `pdu` against the room version's authorization rules, with `room`'s current state
/// as the state before it; `auth_events` are the events its `auth_events` name. The error is
/// the rule that failed.
pub fn check_auth(room: &RoomState, pdu: &Pdu, auth_events: &[Arc<Pdu>]) -> Result<(), String> {
    let rules = &room.rules.authorization;
    let fetch_event = |id: &EventId| -> Option<Arc<Pdu>> {
        auth_events
            .iter()
            .find(|event| event.event_id == id)
            .or_else(|| room.create_event().filter(|create| create.event_id == id))
            .cloned()
    };
    state_res::check_state_independent_auth_rules(rules, pdu, fetch_event)?;
    state_res::check_state_dependent_auth_rules(rules, pdu, |kind: &ruma::events::StateEventType, key: &str| {
        room.fetch_state(kind, key)
    })
}

/// [`check_auth`] as a client error: `403 M_FORBIDDEN` with the failed rule.
pub fn authorize(room: &RoomState, built: &BuiltEvent) -> Result<()> {
    check_auth(room, &built.pdu, &built.auth_events).map_err(|reason| Error::matrix(ErrorKind::Forbidden, reason))
}
