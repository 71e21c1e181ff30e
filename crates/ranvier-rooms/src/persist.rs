//! The one path that stores an event: it works out the state group, current-state and
//! membership changes, and the client metadata in `unsigned`, then writes everything in one
//! transaction (`ranvier_store::persist`) and only then updates the room's cache.
//!
//! Callers hold the room's write lock (they pass the [`RoomState`] that lives inside it), so
//! events of one room are persisted one at a time and the cache never runs ahead of the
//! database.

use std::sync::Arc;

use ranvier_core::{Error, Result};
use ranvier_store::{
    StreamKind,
    persist::{CurrentStateChange, MembershipChange, NewRoom, NewStateGroup, PersistEvent, Redaction, TxnKey},
};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, canonical_json::to_canonical_value};
use serde_json::Value;

use crate::{
    Rooms,
    build::BuiltEvent,
    pdu::{Pdu, parse_object},
    room_state::{MAX_STATE_CHAIN, RoomState},
};

/// Extra writes that go with an event.
#[derive(Default)]
pub(crate) struct PersistOptions {
    pub txn: Option<TxnKey>,
    pub new_room: Option<NewRoom>,
    /// For an accepted redaction: the target, already checked to be redactable by the sender.
    pub redact_target: Option<ranvier_store::events::StoredEvent>,
}

impl Rooms {
    /// Persist a built and authorised event into `room`, returning its stream position.
    pub(crate) async fn persist(
        &self,
        room: &mut RoomState,
        built: BuiltEvent,
        options: PersistOptions,
    ) -> Result<i64> {
        let BuiltEvent { pdu, mut object, room_id, .. } = built;
        let store = self.store();
        let guard = store.streams().allocate(StreamKind::Events);
        let position = guard.position();

        let mut event = PersistEvent {
            stream_ordering: position,
            event_id: pdu.event_id.to_string(),
            room_id: room_id.to_string(),
            sender: pdu.sender.to_string(),
            event_type: pdu.event_type.to_string(),
            state_key: pdu.state_key.clone(),
            depth: pdu.depth,
            origin_server_ts: i64::from(pdu.origin_server_ts.0),
            prev_events: pdu.prev_events.iter().map(ToString::to_string).collect(),
            auth_events: pdu.auth_events.iter().map(ToString::to_string).collect(),
            state_group: room.state_group,
            update_extremities: true,
            new_room: options.new_room,
            txn: options.txn,
            ..Default::default()
        };

        let mut new_group = None;
        if let Some(state_key) = &pdu.state_key {
            let key = (pdu.event_type.to_string(), state_key.clone());
            if let Some(prev_id) = room.state.get(&key) {
                let unsigned = self.replaced_state_unsigned(room, &key, prev_id.as_str()).await?;
                object.insert("unsigned".into(), unsigned);
            }
            let chain_length = room.chain_length + 1;
            let group = match room.state_group {
                Some(prev) if chain_length <= MAX_STATE_CHAIN => NewStateGroup {
                    id: position,
                    prev_group: Some(prev),
                    chain_length,
                    entries: vec![(key.0.clone(), key.1.clone(), event.event_id.clone())],
                },
                _ => {
                    let mut entries: Vec<(String, String, String)> = room
                        .state
                        .iter()
                        .filter(|(k, _)| **k != key)
                        .map(|((t, k), id)| (t.clone(), k.clone(), id.to_string()))
                        .collect();
                    entries.push((key.0.clone(), key.1.clone(), event.event_id.clone()));
                    NewStateGroup { id: position, prev_group: None, chain_length: 0, entries }
                }
            };
            new_group = Some((group.id, group.chain_length));
            event.new_state_groups.push(group);
            event.current_state_group = Some(position);
            event.current_state.push(CurrentStateChange {
                event_type: key.0.clone(),
                state_key: key.1.clone(),
                event_id: Some(event.event_id.clone()),
            });
            if key.0 == "m.room.member" {
                let membership = pdu.content_str("membership").unwrap_or_else(|| "leave".to_owned());
                event.memberships.push(MembershipChange {
                    user_id: key.1.clone(),
                    membership,
                    event_id: event.event_id.clone(),
                });
            }
        }

        let mut redacted_pdu = None;
        if let Some(target) = options.redact_target {
            let (text, redacted) = redact_stored(&target, room, &object, &pdu)?;
            event.redaction = Some(Redaction { target_event_id: target.event_id.clone(), redacted_pdu: text });
            redacted_pdu = Some(redacted);
        }

        event.pdu = serde_json::to_string(&object).map_err(|e| Error::internal(format!("serialise PDU: {e}")))?;
        store.persist_event(&event).await?;

        if room.room_id != room_id {
            room.room_id = room_id;
        }
        room.apply(&pdu, new_group);
        if let Some(redacted) = redacted_pdu {
            room.apply_redaction(redacted);
        }
        drop(guard);
        Ok(position)
    }

    /// `unsigned` for a state event that replaces `prev_id`: `replaces_state`, and the previous
    /// content and sender for clients.
    async fn replaced_state_unsigned(
        &self,
        room: &RoomState,
        key: &(String, String),
        prev_id: &str,
    ) -> Result<CanonicalJsonValue> {
        let (prev_content, prev_sender) = match room.auth.get(key) {
            Some(prev) => (prev.content_value(), prev.sender.to_string()),
            None => match self.store().get_event(prev_id).await? {
                Some(prev) => {
                    let object = parse_object(&prev.pdu)?;
                    let content = object.get("content").map(|c| Value::from(c.clone())).unwrap_or_default();
                    (content, prev.sender)
                }
                None => (Value::Object(Default::default()), String::new()),
            },
        };
        let unsigned = serde_json::json!({
            "replaces_state": prev_id,
            "prev_content": prev_content,
            "prev_sender": prev_sender,
        });
        to_canonical_value(unsigned).map_err(|e| Error::internal(format!("unsigned: {e}")))
    }
}

/// The redacted form of `target`, with `unsigned.redacted_because` set to the redaction in the
/// client format, and its parsed PDU for the auth cache.
fn redact_stored(
    target: &ranvier_store::events::StoredEvent,
    room: &RoomState,
    redaction_object: &CanonicalJsonObject,
    redaction: &Arc<Pdu>,
) -> Result<(String, Pdu)> {
    let object = parse_object(&target.pdu)?;
    let mut redacted = ruma::canonical_json::redact(object, &room.rules.redaction, None)
        .map_err(|e| Error::internal(format!("redact event {}: {e}", target.event_id)))?;
    let because = redaction_client_format(redaction_object, redaction);
    if let Ok(CanonicalJsonValue::Object(because)) = to_canonical_value(because) {
        let mut unsigned = CanonicalJsonObject::new();
        unsigned.insert("redacted_because".into(), CanonicalJsonValue::Object(because));
        redacted.insert("unsigned".into(), CanonicalJsonValue::Object(unsigned));
    }
    let text = serde_json::to_string(&redacted).map_err(|e| Error::internal(format!("serialise PDU: {e}")))?;
    let mut pdu = Pdu::from_stored(&ranvier_store::events::StoredEvent { pdu: text.clone(), ..target.clone() })?;
    pdu.rejected = target.rejected;
    Ok((text, pdu))
}

/// A redaction event in the client format, as embedded in `redacted_because`.
fn redaction_client_format(object: &CanonicalJsonObject, pdu: &Pdu) -> Value {
    let content = object.get("content").map(|c| Value::from(c.clone())).unwrap_or_default();
    let mut event = serde_json::json!({
        "event_id": pdu.event_id,
        "type": pdu.event_type.to_string(),
        "sender": pdu.sender,
        "origin_server_ts": pdu.origin_server_ts,
        "content": content,
        "unsigned": {},
    });
    if let Some(room_id) = &pdu.room_id {
        event["room_id"] = Value::String(room_id.to_string());
    }
    if let Some(redacts) = &pdu.redacts {
        event["redacts"] = Value::String(redacts.to_string());
    }
    event
}
