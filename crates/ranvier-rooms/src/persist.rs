//! The one path that stores an event: it works out the state group, current-state and
//! membership changes, and the client metadata in `unsigned`, then writes everything in one
//! transaction (`ranvier_store::persist`) and only then updates the room's cache.
//!
//! The same path stores events that change nothing (see [`Disposition`]): outliers, rejected
//! and soft-failed events, as federation will deliver them.
//!
//! Callers hold the room's write lock (they pass the [`RoomState`] that lives inside it), so
//! events of one room are persisted one at a time and the cache never runs ahead of the
//! database.

use std::sync::Arc;

use ranvier_core::{Error, Result};
use ranvier_store::{
    StreamKind,
    persist::{
        CurrentStateChange, MembershipChange, NewRelation, NewRoom, NewStateGroup, PersistEvent, Redaction, TxnKey,
    },
    streams::StreamGuard,
};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, canonical_json::to_canonical_value};
use serde_json::Value;

use crate::{
    Rooms,
    build::BuiltEvent,
    hooks::NewTimelineEvent,
    pdu::{Pdu, parse_object},
    room_state::{MAX_STATE_CHAIN, RoomState},
};

/// Where an event goes in the room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Disposition {
    /// An accepted event: it joins the DAG's forward edge and, if it is a state event,
    /// changes the room state.
    #[default]
    Timeline,
    /// Held only to authorise or give state for other events (received over federation):
    /// no state group, not in the timeline, not an extremity.
    Outlier,
    /// Failed the auth rules on receipt: stored with the reason (so it is never fetched and
    /// checked again) but changes nothing.
    Rejected(String),
    /// Passed auth against its own state but not against the current state: stored and
    /// visible to federation, but neither an extremity nor a state change.
    SoftFailed,
}

/// Extra writes that go with an event.
#[derive(Default)]
pub(crate) struct PersistOptions {
    pub disposition: Disposition,
    pub txn: Option<TxnKey>,
    pub new_room: Option<NewRoom>,
    /// For an accepted redaction: the target, already checked to be redactable by the sender.
    pub redact_target: Option<ranvier_store::events::StoredEvent>,
}

/// An event ready to be written: its rows, its held stream position, and what the room's cache
/// and the hook need once it has committed.
pub(crate) struct PreparedEvent {
    event: PersistEvent,
    guard: StreamGuard,
    pdu: Arc<Pdu>,
    room_id: OwnedRoomId,
    accepted: bool,
    new_group: Option<(i64, i64)>,
    redacted_pdu: Option<Pdu>,
}

impl PreparedEvent {
    /// The event's stream position.
    pub(crate) fn position(&self) -> i64 {
        self.event.stream_ordering
    }

    /// The rows to write.
    pub(crate) fn event(&self) -> &PersistEvent {
        &self.event
    }
}

impl Rooms {
    /// Persist a built and authorised event into `room`, returning its stream position.
    pub(crate) async fn persist(
        &self,
        room: &mut RoomState,
        built: BuiltEvent,
        options: PersistOptions,
    ) -> Result<i64> {
        let prepared = self.prepare(room, built, options).await?;
        self.store().persist_event(&prepared.event).await?;
        self.apply_prepared(room, &prepared);
        let position = prepared.position();
        self.finish_committed(vec![prepared]);
        Ok(position)
    }

    /// Everything written for `built`, worked out against `room` as it is before the event;
    /// the room's cache is not touched.
    pub(crate) async fn prepare(
        &self,
        room: &RoomState,
        built: BuiltEvent,
        options: PersistOptions,
    ) -> Result<PreparedEvent> {
        let BuiltEvent { pdu, mut object, room_id, .. } = built;
        let guard = self.store().streams().allocate(StreamKind::Events);
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
            update_extremities: options.disposition == Disposition::Timeline,
            new_room: options.new_room,
            txn: options.txn,
            ..Default::default()
        };
        let accepted = options.disposition == Disposition::Timeline;
        match &options.disposition {
            Disposition::Timeline => {}
            Disposition::Outlier => {
                event.outlier = true;
                event.state_group = None;
            }
            Disposition::Rejected(reason) => event.rejected_reason = Some(reason.clone()),
            Disposition::SoftFailed => event.soft_failed = true,
        }

        let mut new_group = None;
        if let Some(state_key) = pdu.state_key.as_ref().filter(|_| accepted) {
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

        if accepted {
            event.relation = relation_of(&object);
        }

        let mut redacted_pdu = None;
        if let Some(target) = options.redact_target.filter(|_| accepted) {
            let (text, redacted) = redact_stored(&target, room, &object, &pdu)?;
            event.redaction = Some(Redaction { target_event_id: target.event_id.clone(), redacted_pdu: text });
            redacted_pdu = Some(redacted);
        }

        if accepted {
            event.search_text = searchable_text(&event.event_type, event.state_key.is_some(), &object);
        }
        event.pdu = serde_json::to_string(&object).map_err(|e| Error::internal(format!("serialise PDU: {e}")))?;
        if let Some(hook) = self.event_hook().filter(|_| accepted) {
            let new_event = NewTimelineEvent { room, pdu: &pdu, object: &object, stream_ordering: position };
            event.push_actions = hook.push_actions(new_event).await;
        }
        Ok(PreparedEvent { event, guard, pdu, room_id, accepted, new_group, redacted_pdu })
    }

    /// Bring the room's cache up to a prepared event, once it is written (or, in a batch, once
    /// it will be written in the same transaction as the events after it).
    pub(crate) fn apply_prepared(&self, room: &mut RoomState, prepared: &PreparedEvent) {
        if !prepared.accepted {
            return;
        }
        if prepared.event.relation.is_some() {
            // Before the event's position becomes visible: a reader that sees the event sees
            // that its room has relations.
            self.inner.relation_rooms.note(&prepared.event.room_id);
        }
        if room.room_id != prepared.room_id {
            room.room_id = prepared.room_id.clone();
        }
        room.apply(&prepared.pdu, prepared.new_group);
        if let Some(redacted) = &prepared.redacted_pdu {
            room.apply_redaction(redacted.clone());
        }
    }

    /// Release the stream positions of committed events, in order, and tell the hook.
    pub(crate) fn finish_committed(&self, prepared: Vec<PreparedEvent>) {
        let hook = self.event_hook();
        for PreparedEvent { event, guard, accepted, .. } in prepared {
            drop(guard);
            if let Some(hook) = hook.filter(|_| accepted) {
                hook.committed(&event.room_id, event.stream_ordering, &event.push_actions);
            }
        }
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

/// The `m.relates_to` of an event's cleartext content, when it names a `rel_type` and a valid
/// parent event id (replies without `rel_type` are not relations the server indexes).
fn relation_of(object: &CanonicalJsonObject) -> Option<NewRelation> {
    let Some(CanonicalJsonValue::Object(content)) = object.get("content") else {
        return None;
    };
    let Some(CanonicalJsonValue::Object(relates_to)) = content.get("m.relates_to") else {
        return None;
    };
    let (Some(CanonicalJsonValue::String(rel_type)), Some(CanonicalJsonValue::String(parent))) =
        (relates_to.get("rel_type"), relates_to.get("event_id"))
    else {
        return None;
    };
    ruma::EventId::parse(parent).ok()?;
    Some(NewRelation { relates_to_id: parent.clone(), rel_type: rel_type.clone() })
}

/// The text server-side search looks at in an event, if it is of a searched type: the `body` of
/// an `m.room.message`, the `name` of an `m.room.name`, and for `m.room.topic` the `topic`
/// together with the plain-text representation in `m.topic` when it says something else.
fn searchable_text(event_type: &str, is_state: bool, object: &CanonicalJsonObject) -> Option<String> {
    let Some(CanonicalJsonValue::Object(content)) = object.get("content") else {
        return None;
    };
    let text = |key: &str| match content.get(key) {
        Some(CanonicalJsonValue::String(text)) if !text.trim().is_empty() => Some(text.as_str()),
        _ => None,
    };
    match (event_type, is_state) {
        ("m.room.message", false) => text("body").map(str::to_owned),
        ("m.room.name", true) => text("name").map(str::to_owned),
        ("m.room.topic", true) => {
            let plain = match content.get("m.topic") {
                Some(CanonicalJsonValue::Object(topic)) => match topic.get("m.text") {
                    Some(CanonicalJsonValue::Array(representations)) => {
                        representations.iter().find_map(|representation| match representation {
                            CanonicalJsonValue::Object(representation) => {
                                let mimetype = match representation.get("mimetype") {
                                    Some(CanonicalJsonValue::String(mimetype)) => mimetype.as_str(),
                                    None => "text/plain",
                                    Some(_) => return None,
                                };
                                match representation.get("body") {
                                    Some(CanonicalJsonValue::String(body)) if mimetype == "text/plain" => {
                                        Some(body.as_str())
                                    }
                                    _ => None,
                                }
                            }
                            _ => None,
                        })
                    }
                    _ => None,
                },
                _ => None,
            };
            match (text("topic"), plain) {
                (Some(topic), Some(plain)) if plain != topic => Some(format!("{topic}\n{plain}")),
                (Some(topic), _) => Some(topic.to_owned()),
                (None, plain) => plain.map(str::to_owned),
            }
        }
        _ => None,
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

#[cfg(test)]
mod tests {
    use ruma::{UserId, signatures::Ed25519KeyPair};
    use serde_json::json;

    use super::*;
    use crate::{CreateRoom, EventTemplate, build::check_auth};

    async fn rooms() -> (Rooms, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ranvier_store::Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()), 2).await.unwrap();
        let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "t".to_owned()).unwrap();
        (Rooms::new(store, "test.local".try_into().unwrap(), key), dir)
    }

    #[test]
    fn searchable_text_of_each_type() {
        let object = |content: serde_json::Value| match to_canonical_value(json!({ "content": content })) {
            Ok(CanonicalJsonValue::Object(object)) => object,
            other => panic!("{other:?}"),
        };
        let text = |event_type: &str, is_state: bool, content: serde_json::Value| {
            searchable_text(event_type, is_state, &object(content))
        };
        assert_eq!(
            text("m.room.message", false, json!({ "body": "hello", "msgtype": "m.text" })).as_deref(),
            Some("hello")
        );
        assert_eq!(text("m.room.message", true, json!({ "body": "hello" })), None, "a state event of a message type");
        assert_eq!(text("m.room.message", false, json!({ "body": 5 })), None);
        assert_eq!(text("m.room.message", false, json!({ "body": "  " })), None);
        assert_eq!(text("m.room.encrypted", false, json!({ "body": "hello" })), None, "only the spec's keys");
        assert_eq!(text("m.room.name", true, json!({ "name": "Lobby" })).as_deref(), Some("Lobby"));
        assert_eq!(text("m.room.name", false, json!({ "name": "Lobby" })), None);
        assert_eq!(text("m.room.topic", true, json!({ "topic": "Cats" })).as_deref(), Some("Cats"));
        let topic = json!({
            "topic": "Cats",
            "m.topic": { "m.text": [
                { "mimetype": "text/html", "body": "<b>Cats</b> and dogs" },
                { "body": "Cats and dogs" },
            ] },
        });
        assert_eq!(text("m.room.topic", true, topic).as_deref(), Some("Cats\nCats and dogs"));
        let same = json!({ "topic": "Cats", "m.topic": { "m.text": [{ "mimetype": "text/plain", "body": "Cats" }] } });
        assert_eq!(text("m.room.topic", true, same).as_deref(), Some("Cats"));
        let only_rich = json!({ "m.topic": { "m.text": [{ "mimetype": "text/plain", "body": "Dogs" }] } });
        assert_eq!(text("m.room.topic", true, only_rich).as_deref(), Some("Dogs"));
    }

    #[tokio::test]
    async fn events_that_change_nothing_are_stored_apart() {
        let (rooms, _dir) = rooms().await;
        let alice = UserId::parse("@alice:test.local").unwrap();
        let mallory = UserId::parse("@mallory:test.local").unwrap();
        let room_id = rooms.create_room(&alice, CreateRoom::default()).await.unwrap();
        let store = rooms.store().clone();
        let extremities = store.forward_extremities(room_id.as_str()).await.unwrap();
        let state = store.current_state_ids(room_id.as_str()).await.unwrap();

        let mut room = rooms.lock_room(&room_id).await.unwrap().unwrap();
        let dispositions = [
            Disposition::Rejected("sender's membership is not `join`".into()),
            Disposition::SoftFailed,
            Disposition::Outlier,
        ];
        let mut ids = Vec::new();
        for (i, disposition) in dispositions.into_iter().enumerate() {
            let topic = EventTemplate::state("m.room.topic", "", json!({ "topic": format!("forged {i}") }));
            let built = rooms.build_event(&room, &mallory, &topic).unwrap();
            assert!(check_auth(&room, &built.pdu, &built.auth_events).is_err(), "mallory is not a member");
            ids.push(built.pdu.event_id.to_string());
            let options = PersistOptions { disposition, ..Default::default() };
            rooms.persist(&mut room, built, options).await.unwrap();
        }
        drop(room);

        let stored = store.get_events(&ids).await.unwrap();
        assert_eq!(stored.len(), 3);
        let by_id = |id: &str| stored.iter().find(|event| event.event_id == id).unwrap();
        assert!(by_id(&ids[0]).rejected);
        assert!(by_id(&ids[1]).soft_failed);
        assert!(by_id(&ids[2]).outlier);
        assert_eq!(by_id(&ids[2]).state_group, None);
        assert!(by_id(&ids[0]).state_group.is_some(), "a rejected event still records the state before it");
        // None of them reached the timeline, the extremities or the state.
        let timeline = store
            .room_timeline(room_id.as_str(), 0, i64::MAX, ranvier_store::events::Direction::Forward, 100)
            .await
            .unwrap();
        assert!(timeline.iter().all(|event| !ids.contains(&event.event_id)));
        assert_eq!(store.forward_extremities(room_id.as_str()).await.unwrap(), extremities);
        assert_eq!(store.current_state_ids(room_id.as_str()).await.unwrap(), state);
        // And the cache agrees: the next event builds on the old extremity.
        let id = rooms
            .send_event(&room_id, &alice, EventTemplate::message("m.room.message", json!({ "body": "hi" })), None)
            .await
            .unwrap();
        assert_eq!(store.prev_event_ids(id.as_str()).await.unwrap(), vec![extremities[0].0.clone()]);
    }
}
