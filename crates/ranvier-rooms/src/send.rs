//! Sending events into a room: messages and state from clients (idempotent per client
//! transaction), and redactions, which also rewrite the redacted event in place.

use ranvier_core::{Error, Result};
use ranvier_store::{events::StoredEvent, persist::TxnKey};
use ruma::{
    EventId, OwnedEventId, RoomId, UserId,
    state_res::events::{RoomCreateEvent, RoomPowerLevelsEvent, RoomPowerLevelsIntField},
};
use serde_json::json;

use crate::{EventTemplate, Rooms, build::authorize, persist::PersistOptions, room_state::RoomState};

/// `403 M_FORBIDDEN`: the user is not in the room (Synapse's wording).
pub fn not_in_room(user_id: &UserId, room_id: &RoomId) -> Error {
    Error::forbidden(format!("User {user_id} not in room {room_id}"))
}

impl Rooms {
    /// Send an event as `sender`. With `txn`, a retry of the same client transaction returns
    /// the first event's id instead of sending again.
    pub async fn send_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<TxnKey>,
    ) -> Result<OwnedEventId> {
        let Some(mut room) = self.lock_room(room_id).await? else {
            return Err(not_in_room(sender, room_id));
        };
        // Checked under the lock, so that a concurrent retry cannot slip in between.
        if let Some(id) = self.sent_in_txn(txn.as_ref()).await? {
            return Ok(id);
        }
        if template.event_type != "m.room.member" && room.membership(sender.as_str()) != "join" {
            return Err(not_in_room(sender, room_id));
        }
        if let Some(existing) = self.unchanged_state(&room, sender, &template).await? {
            return Ok(existing);
        }
        if template.state_key.is_none() {
            self.check_relation(room_id, &template.content).await?;
        }
        let built = self.build_event(&room, sender, &template)?;
        authorize(&room, &built)?;
        // Only once the sender may send it: whether the aliases it names point here.
        if template.event_type == "m.room.canonical_alias" && template.state_key.as_deref() == Some("") {
            let previous = self.current_content(&room, "m.room.canonical_alias", "").await?;
            self.check_canonical_alias(room_id, previous.as_ref(), &template.content).await?;
        }
        let mut options = PersistOptions { txn, ..Default::default() };
        if let Some(target) = built.pdu.redacts.clone() {
            options.redact_target = self.redaction_target(&room, sender, &target).await?;
        }
        let event_id = built.pdu.event_id.clone();
        self.persist(&mut room, built, options).await?;
        Ok(event_id)
    }

    /// Redact `target` as `sender` (`PUT /rooms/{roomId}/redact/{eventId}/{txnId}`).
    pub async fn redact_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &EventId,
        reason: Option<String>,
        txn: Option<TxnKey>,
    ) -> Result<OwnedEventId> {
        let content = match reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        };
        let template = EventTemplate {
            event_type: "m.room.redaction".into(),
            state_key: None,
            content,
            redacts: Some(target.to_owned()),
            timestamp: None,
        };
        self.send_event(room_id, sender, template, txn).await
    }

    /// A state event identical to the current one (same sender and content) is not sent
    /// again: the current event answers, as Synapse does.
    async fn unchanged_state(
        &self,
        room: &RoomState,
        sender: &UserId,
        template: &EventTemplate,
    ) -> Result<Option<OwnedEventId>> {
        let Some(state_key) = &template.state_key else {
            return Ok(None);
        };
        if template.event_type == "m.room.member" {
            return Ok(None);
        }
        let Some(current_id) = room.state.get(&(template.event_type.clone(), state_key.clone())) else {
            return Ok(None);
        };
        let (current_sender, current_content) = match room.auth_event(&template.event_type, state_key) {
            Some(event) => (event.sender.to_string(), event.content_value()),
            None => match self.store().get_event(current_id.as_str()).await? {
                Some(event) => {
                    let pdu: serde_json::Value = serde_json::from_str(&event.pdu).unwrap_or_default();
                    (event.sender, pdu.get("content").cloned().unwrap_or_default())
                }
                None => return Ok(None),
            },
        };
        let unchanged = current_sender == sender.as_str() && current_content == template.content;
        Ok(unchanged.then(|| current_id.clone()))
    }

    /// The content of a current state event of the room, if any.
    pub(crate) async fn current_content(
        &self,
        room: &RoomState,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<serde_json::Value>> {
        if let Some(event) = room.auth_event(event_type, state_key) {
            return Ok(Some(event.content_value()));
        }
        let Some(id) = room.state.get(&(event_type.to_owned(), state_key.to_owned())) else {
            return Ok(None);
        };
        Ok(self.store().get_event(id.as_str()).await?.and_then(|event| {
            let pdu: serde_json::Value = serde_json::from_str(&event.pdu).ok()?;
            pdu.get("content").cloned()
        }))
    }

    async fn sent_in_txn(&self, txn: Option<&TxnKey>) -> Result<Option<OwnedEventId>> {
        let Some(txn) = txn else {
            return Ok(None);
        };
        let id = self.store().txn_event_id(&txn.user_id, &txn.device_id, &txn.txn_id).await?;
        Ok(id.and_then(|id| EventId::parse(&id).ok()))
    }

    /// The event a redaction by `sender` will rewrite, after checking that `sender` may redact
    /// it. `None` when the target is unknown, already redacted or in another room: the
    /// redaction is still stored (a target that arrives later over federation can be redacted
    /// then).
    async fn redaction_target(
        &self,
        room: &RoomState,
        sender: &UserId,
        target: &EventId,
    ) -> Result<Option<StoredEvent>> {
        let Some(event) = self.store().get_event(target.as_str()).await? else {
            return Ok(None);
        };
        if event.room_id != room.room_id.as_str() || event.redacted_by.is_some() {
            return Ok(None);
        }
        if event.sender != sender.as_str() {
            let redact_level = required_level(room, RoomPowerLevelsIntField::Redact);
            if user_power(room, sender) < redact_level {
                return Err(Error::forbidden("You don't have permission to redact events"));
            }
        }
        Ok(Some(event))
    }
}

impl Rooms {
    /// Whether `user_id` is joined to a room and may send state events of `event_type` there
    /// (the power-levels check only); `None` for an unknown room.
    pub async fn may_send_state(&self, room_id: &RoomId, user_id: &UserId, event_type: &str) -> Result<Option<bool>> {
        let Some(room) = self.lock_room(room_id).await? else {
            return Ok(None);
        };
        if room.membership(user_id.as_str()) != "join" {
            return Ok(Some(false));
        }
        Ok(Some(user_power(&room, user_id) >= state_event_level(&room, event_type)))
    }
}

/// The power level needed to send a state event of `event_type`: its entry in `events`, or
/// `state_default` (50 with power levels, 0 without).
pub fn state_event_level(room: &RoomState, event_type: &str) -> i64 {
    let Some(pl) = room.auth_event("m.room.power_levels", "") else {
        return 0;
    };
    let content = pl.content_value();
    let level = |value: &serde_json::Value| match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    content
        .get("events")
        .and_then(|events| events.get(event_type))
        .and_then(level)
        .or_else(|| content.get("state_default").and_then(level))
        .unwrap_or(50)
}

/// A user's power level under the room's current power levels; room creators of version 12+
/// rooms have infinite power, shown as `i64::MAX`.
pub fn user_power(room: &RoomState, user_id: &UserId) -> i64 {
    let rules = &room.rules.authorization;
    let creators = room
        .create_event()
        .and_then(|create| RoomCreateEvent::new(create.clone()).creators(rules).ok())
        .unwrap_or_default();
    if rules.explicitly_privilege_room_creators && creators.contains(user_id) {
        return i64::MAX;
    }
    match room.auth_event("m.room.power_levels", "") {
        Some(pl) => RoomPowerLevelsEvent::new(pl.clone()).user_power_level(user_id, rules).map(i64::from).unwrap_or(0),
        None if creators.contains(user_id) => 100,
        None => 0,
    }
}

/// The level a power-levels field requires, or its default.
pub fn required_level(room: &RoomState, field: RoomPowerLevelsIntField) -> i64 {
    let rules = &room.rules.authorization;
    match room.auth_event("m.room.power_levels", "") {
        Some(pl) => RoomPowerLevelsEvent::new(pl.clone())
            .get_as_int_or_default(field, rules)
            .map(i64::from)
            .unwrap_or_else(|_| i64::from(field.default_value())),
        None => i64::from(field.default_value()),
    }
}
