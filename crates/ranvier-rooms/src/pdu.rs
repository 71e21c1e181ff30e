//! The PDU as the room code sees it: the fields the auth rules and state resolution read,
//! parsed once from the canonical JSON, and the [`ruma::state_res::Event`] implementation.
//!
//! Parsing accepts both event-reference formats (`["$id"]` from room version 3 and
//! `[["$id:server", {hashes}]]` in versions 1 and 2) and `redacts` at the top level or in
//! `content` (version 11 moved it), so the same type serves local and remote events.

use ranvier_core::{Error, Result};
use ranvier_store::events::StoredEvent;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId, events::TimelineEventType,
};
use serde_json::value::RawValue;

/// A parsed PDU.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// `None` only for the create event of room version 12 and later.
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub event_type: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Box<RawValue>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: i64,
    pub rejected: bool,
}

fn bad(field: &str) -> Error {
    Error::bad_json(format!("Invalid or missing `{field}` in PDU"))
}

fn string_field<'a>(object: &'a CanonicalJsonObject, field: &str) -> Option<&'a str> {
    match object.get(field) {
        Some(CanonicalJsonValue::String(value)) => Some(value),
        _ => None,
    }
}

/// Event ids from `prev_events`/`auth_events` in either reference format.
fn event_refs(object: &CanonicalJsonObject, field: &str) -> Result<Vec<OwnedEventId>> {
    let Some(CanonicalJsonValue::Array(items)) = object.get(field) else {
        return Err(bad(field));
    };
    items
        .iter()
        .map(|item| {
            let id = match item {
                CanonicalJsonValue::String(id) => id,
                CanonicalJsonValue::Array(pair) => match pair.first() {
                    Some(CanonicalJsonValue::String(id)) => id,
                    _ => return Err(bad(field)),
                },
                _ => return Err(bad(field)),
            };
            EventId::parse(id).map_err(|_| bad(field))
        })
        .collect()
}

impl Pdu {
    /// Parse the PDU `object` whose event id is `event_id`.
    pub fn from_json(event_id: OwnedEventId, object: &CanonicalJsonObject) -> Result<Self> {
        let room_id = match string_field(object, "room_id") {
            Some(id) => Some(RoomId::parse(id).map_err(|_| bad("room_id"))?),
            None => None,
        };
        let sender =
            UserId::parse(string_field(object, "sender").ok_or_else(|| bad("sender"))?).map_err(|_| bad("sender"))?;
        let origin_server_ts = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => {
                MilliSecondsSinceUnixEpoch(UInt::try_from(i64::from(*ts)).map_err(|_| bad("origin_server_ts"))?)
            }
            _ => return Err(bad("origin_server_ts")),
        };
        let event_type = TimelineEventType::from(string_field(object, "type").ok_or_else(|| bad("type"))?);
        let state_key = match object.get("state_key") {
            Some(CanonicalJsonValue::String(key)) => Some(key.clone()),
            None => None,
            Some(_) => return Err(bad("state_key")),
        };
        let content_value = match object.get("content") {
            Some(value @ CanonicalJsonValue::Object(_)) => value,
            _ => return Err(bad("content")),
        };
        let content = serde_json::value::to_raw_value(content_value).map_err(|_| bad("content"))?;
        let depth = match object.get("depth") {
            Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth),
            _ => return Err(bad("depth")),
        };
        let redacts = match (object.get("redacts"), content_value) {
            (Some(CanonicalJsonValue::String(id)), _) => Some(EventId::parse(id).map_err(|_| bad("redacts"))?),
            (_, CanonicalJsonValue::Object(content)) => match content.get("redacts") {
                Some(CanonicalJsonValue::String(id)) if event_type == TimelineEventType::RoomRedaction => {
                    Some(EventId::parse(id).map_err(|_| bad("redacts"))?)
                }
                _ => None,
            },
            _ => None,
        };
        Ok(Self {
            event_id,
            room_id,
            sender,
            origin_server_ts,
            event_type,
            state_key,
            content,
            prev_events: event_refs(object, "prev_events")?,
            auth_events: event_refs(object, "auth_events")?,
            redacts,
            depth,
            rejected: false,
        })
    }

    /// Parse a stored event.
    pub fn from_stored(event: &StoredEvent) -> Result<Self> {
        let object = parse_object(&event.pdu)?;
        let event_id = EventId::parse(&event.event_id)
            .map_err(|_| Error::internal(format!("stored event id {} is invalid", event.event_id)))?;
        let mut pdu = Self::from_json(event_id, &object)
            .map_err(|e| Error::internal(format!("stored event {} does not parse: {e}", event.event_id)))?;
        pdu.rejected = event.rejected;
        Ok(pdu)
    }

    /// A copy without `prev_events` and `auth_events`, as the room cache keeps its current
    /// auth state (see [`crate::room_state::RoomState::auth`]): the authorization rules read
    /// the id, type, state key, sender and content of the state they check an event against,
    /// never that state's own edges, which are about 300 bytes of a member event in memory.
    pub fn state_entry(&self) -> Self {
        Self {
            event_id: self.event_id.clone(),
            room_id: self.room_id.clone(),
            sender: self.sender.clone(),
            origin_server_ts: self.origin_server_ts,
            event_type: self.event_type.clone(),
            state_key: self.state_key.clone(),
            content: self.content.clone(),
            prev_events: Vec::new(),
            auth_events: Vec::new(),
            redacts: self.redacts.clone(),
            depth: self.depth,
            rejected: self.rejected,
        }
    }

    /// The content as a JSON value.
    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or_default()
    }

    /// A string field of the content.
    pub fn content_str(&self, field: &str) -> Option<String> {
        self.content_value().get(field)?.as_str().map(str::to_owned)
    }
}

/// Parse stored canonical JSON text into an object.
pub fn parse_object(text: &str) -> Result<CanonicalJsonObject> {
    serde_json::from_str(text).map_err(|e| Error::internal(format!("stored PDU is not a JSON object: {e}")))
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.event_type
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}
