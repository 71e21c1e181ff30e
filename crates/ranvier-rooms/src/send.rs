//! Sending events into a room: messages and state from clients (idempotent per client
//! transaction), and redactions, which also rewrite the redacted event in place.

use ranvier_core::{Error, Result};
use ranvier_store::{events::StoredEvent, persist::TxnKey};
use ruma::{
    EventId, OwnedEventId, RoomId, UserId,
    state_res::events::{RoomCreateEvent, RoomPowerLevelsEvent, RoomPowerLevelsIntField},
};
use serde_json::json;
use tokio::sync::oneshot;

use crate::{
    EventTemplate, LockedRoom, Rooms,
    build::authorize,
    commit::{Reply, Waiting, earlier_commit_failed},
    persist::{PersistOptions, PreparedEvent},
    room_state::RoomState,
};

/// `403 M_FORBIDDEN`: the user is not in the room (Synapse's wording).
pub fn not_in_room(user_id: &UserId, room_id: &RoomId) -> Error {
    Error::forbidden(format!("User {user_id} not in room {room_id}"))
}

/// A send waiting in its room's queue.
pub(crate) struct QueuedSend {
    sender: ruma::OwnedUserId,
    template: EventTemplate,
    txn: Option<TxnKey>,
    reply: Reply,
}

/// What one send of a batch comes to.
enum Prepared {
    /// Nothing new to write: the event that answers.
    Existing(OwnedEventId),
    New(OwnedEventId, Box<PreparedEvent>),
}

impl Rooms {
    /// Send an event as `sender`. With `txn`, a retry of the same client transaction returns
    /// the first event's id instead of sending again.
    ///
    /// Sends to one room are handled in batches: each send joins the room's queue and starts a
    /// task that takes the room's write lock and prepares everything queued by then; the
    /// events then commit in groups (see [`crate::commit`]). The work runs in tasks of its
    /// own, so a client that goes away cannot cut a batch short.
    pub async fn send_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<TxnKey>,
    ) -> Result<OwnedEventId> {
        // Looked up before queueing, beside other sends; a first attempt still in flight is
        // found in the room's recent transactions instead (see `send_batch`).
        if let Some(id) = self.sent_in_txn(txn.as_ref()).await? {
            return Ok(id);
        }
        let (reply, result) = oneshot::channel();
        let send = QueuedSend { sender: sender.to_owned(), template, txn, reply };
        self.inner.send_queues.lock().entry(room_id.to_owned()).or_default().push(send);
        let rooms = self.clone();
        let room_id = room_id.to_owned();
        tokio::spawn(async move { rooms.send_queued(&room_id).await });
        result.await.unwrap_or_else(|_| Err(Error::internal("the event's batch ended without an answer")))
    }

    /// Take the room's write lock and send what its queue holds (nothing, when an earlier
    /// task took it all).
    async fn send_queued(&self, room_id: &RoomId) {
        let room = self.lock_room_for_send(room_id).await;
        let queued = self.inner.send_queues.lock().remove(room_id).unwrap_or_default();
        match room {
            Ok(Some(room)) => self.send_batch(room, queued).await,
            Ok(None) => {
                for send in queued {
                    let _ = send.reply.send(Err(not_in_room(&send.sender, room_id)));
                }
            }
            Err(error) => {
                for send in queued {
                    let _ = send.reply.send(Err(Error::internal(format!("load room {room_id}: {error}"))));
                }
            }
        }
    }

    /// Send `queued` (in order) into the locked `room`: each event is prepared against the
    /// room's cache, applied to it and queued for a group commit (see [`crate::commit`]), so
    /// that the lock is held only for the work in memory. A state event, a redaction or a
    /// relation first waits for what came before it to commit, because its checks read earlier
    /// events from the database.
    async fn send_batch(&self, mut room: LockedRoom, queued: Vec<QueuedSend>) {
        if queued.is_empty() {
            return;
        }
        let commits = self.room_commits_entry(&room.room_id);
        for send in queued {
            let alone = send.template.state_key.is_some()
                || send.template.redacts.is_some()
                || send.template.content.get("m.relates_to").is_some();
            if alone {
                commits.wait_idle().await;
                if commits.failed() {
                    let _ = send.reply.send(Err(earlier_commit_failed()));
                    continue;
                }
            }
            let key = send.txn.as_ref().map(|txn| (txn.user_id.clone(), txn.device_id.clone(), txn.txn_id.clone()));
            if let Some(event_id) = key.as_ref().and_then(|key| room.recent_txns.get(key)) {
                // A retry of a recent send: it answers once everything queued before it (the
                // first attempt among it) has committed.
                let waiting = Waiting { event: None, reply: send.reply, answer: event_id.clone() };
                self.queue_commit(&room.room_id, &commits, waiting);
                continue;
            }
            match self.prepare_send(&room, &send.sender, send.template, send.txn).await {
                Ok(Prepared::Existing(event_id)) => {
                    let _ = send.reply.send(Ok(event_id));
                }
                Ok(Prepared::New(event_id, prepared)) => {
                    self.apply_prepared(&mut room, &prepared);
                    if let Some(key) = key {
                        room.recent_txns.insert(key, event_id.clone());
                    }
                    let waiting = Waiting { event: Some(*prepared), reply: send.reply, answer: event_id };
                    self.queue_commit(&room.room_id, &commits, waiting);
                }
                Err(error) => {
                    let _ = send.reply.send(Err(error));
                }
            }
        }
    }

    /// The checks of one send against the room as it is, and the event it writes (or the event
    /// an earlier send of the same client transaction, or an identical current state event,
    /// already wrote).
    async fn prepare_send(
        &self,
        room: &RoomState,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<TxnKey>,
    ) -> Result<Prepared> {
        if template.event_type != "m.room.member" && room.membership(sender.as_str()) != "join" {
            return Err(not_in_room(sender, &room.room_id));
        }
        if let Some(existing) = self.unchanged_state(room, sender, &template).await? {
            return Ok(Prepared::Existing(existing));
        }
        if template.state_key.is_none() {
            self.check_relation(&room.room_id, &template.content).await?;
        }
        let built = self.build_event(room, sender, &template)?;
        authorize(room, &built)?;
        // Only once the sender may send it: whether the aliases it names point here.
        if template.event_type == "m.room.canonical_alias" && template.state_key.as_deref() == Some("") {
            let previous = self.current_content(room, "m.room.canonical_alias", "").await?;
            self.check_canonical_alias(&room.room_id, previous.as_ref(), &template.content).await?;
        }
        let mut options = PersistOptions { txn, ..Default::default() };
        if let Some(target) = built.pdu.redacts.clone() {
            options.redact_target = self.redaction_target(room, sender, &target).await?;
        }
        let event_id = built.pdu.event_id.clone();
        let prepared = self.prepare(room, built, options).await?;
        Ok(Prepared::New(event_id, Box::new(prepared)))
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
