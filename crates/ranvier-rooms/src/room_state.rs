//! The in-memory view of one room that the write path keeps: current state ids, the current
//! auth-relevant events (create, power levels, join rules, members, third-party invites), the
//! forward extremities and the current state group.
//!
//! A `RoomState` lives inside the room's write lock, so whoever holds the lock may read and
//! change it; it is updated only after the write it reflects has committed. It is loaded from
//! the store the first time a room is written to, and never holds full state per event.

use std::{collections::HashMap, sync::Arc};

use ranvier_core::{Error, Result};
use ranvier_store::Store;
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, RoomVersionId, events::StateEventType, room_version_rules::RoomVersionRules,
};

use crate::pdu::Pdu;

/// `(event_type, state_key)`.
pub type StateKey = (String, String);

/// Start a new full snapshot once a state group's delta chain is longer than this.
pub const MAX_STATE_CHAIN: i64 = 50;

/// The state event types the authorization rules read.
pub const AUTH_TYPES: [&str; 5] =
    ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.member", "m.room.third_party_invite"];

/// Whether events of `event_type` are kept in the auth cache.
pub fn is_auth_type(event_type: &str) -> bool {
    AUTH_TYPES.contains(&event_type)
}

/// What the write path knows about a room.
pub struct RoomState {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    /// The current state.
    pub state: HashMap<StateKey, OwnedEventId>,
    /// The current state events of the [`AUTH_TYPES`], without their edges
    /// ([`Pdu::state_entry`]): a room keeps one per member.
    pub auth: HashMap<StateKey, Arc<Pdu>>,
    /// Forward extremities with their depths.
    pub extremities: Vec<(OwnedEventId, i64)>,
    /// The state group equal to the current state (`None` before the create event).
    pub state_group: Option<i64>,
    /// The delta-chain length of `state_group`.
    pub chain_length: i64,
    /// The client transactions of the latest sends into the room (see [`RecentTxns`]).
    pub(crate) recent_txns: RecentTxns,
}

/// A client transaction: `(user, device, transaction id)`.
pub(crate) type TxnId = (String, String, String);

/// The client transactions of the room's latest sends, newest last, with their events.
///
/// A send looks its transaction up in the database before it queues for the room (so that
/// the lookups of concurrent sends run side by side); a retry whose first attempt had not
/// committed by then finds it here instead, under the room's lock.
#[derive(Default)]
pub(crate) struct RecentTxns {
    events: HashMap<TxnId, OwnedEventId>,
    order: std::collections::VecDeque<TxnId>,
}

impl RecentTxns {
    /// How many transactions are remembered: far more than can be waiting for the lock.
    const CAPACITY: usize = 1024;

    pub(crate) fn get(&self, txn: &TxnId) -> Option<&OwnedEventId> {
        self.events.get(txn)
    }

    pub(crate) fn insert(&mut self, txn: TxnId, event_id: OwnedEventId) {
        if self.events.insert(txn.clone(), event_id).is_none() {
            self.order.push_back(txn);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.events.remove(&oldest);
            }
        }
    }
}

impl RoomState {
    /// An empty room about to receive its create event.
    pub fn new(room_id: OwnedRoomId, version: RoomVersionId) -> Result<Self> {
        let rules = version.rules().ok_or_else(|| {
            Error::matrix(ranvier_core::error::ErrorKind::UnsupportedRoomVersion, "Unsupported room version")
        })?;
        Ok(Self {
            room_id,
            version,
            rules,
            state: HashMap::new(),
            auth: HashMap::new(),
            extremities: Vec::new(),
            state_group: None,
            chain_length: 0,
            recent_txns: RecentTxns::default(),
        })
    }

    /// Load a room from the store; `None` if the room is unknown.
    pub async fn load(store: &Store, room_id: OwnedRoomId) -> Result<Option<Self>> {
        let Some(row) = store.room(room_id.as_str()).await? else {
            return Ok(None);
        };
        let version = RoomVersionId::try_from(row.room_version.as_str())
            .map_err(|_| Error::internal(format!("room {room_id} has an invalid version")))?;
        let mut room = Self::new(room_id, version)?;
        room.state = store
            .current_state_ids(room.room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|(key, id)| EventId::parse(&id).ok().map(|id| (key, id)))
            .collect();
        for event in store.current_state_events(room.room_id.as_str(), Some(&AUTH_TYPES)).await? {
            let pdu = Pdu::from_stored(&event)?.state_entry();
            let key = (event.event_type.clone(), event.state_key.clone().unwrap_or_default());
            room.auth.insert(key, Arc::new(pdu));
        }
        room.extremities = store
            .forward_extremities(room.room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|(id, depth)| EventId::parse(&id).ok().map(|id| (id, depth)))
            .collect();
        room.state_group = row.current_state_group;
        if let Some(group) = row.current_state_group {
            room.chain_length = store.state_group_chain_length(group).await?.unwrap_or(0);
        }
        Ok(Some(room))
    }

    /// The current auth-relevant state event of `(event_type, state_key)`.
    pub fn auth_event(&self, event_type: &str, state_key: &str) -> Option<&Arc<Pdu>> {
        self.auth.get(&(event_type.to_owned(), state_key.to_owned()))
    }

    /// The create event.
    pub fn create_event(&self) -> Option<&Arc<Pdu>> {
        self.auth_event("m.room.create", "")
    }

    /// A user's current membership (`leave` when there is none).
    pub fn membership(&self, user_id: &str) -> String {
        self.auth_event("m.room.member", user_id)
            .and_then(|event| event.content_str("membership"))
            .unwrap_or_else(|| "leave".to_owned())
    }

    /// A state lookup for the state-dependent auth rules over the current state.
    pub fn fetch_state(&self, event_type: &StateEventType, state_key: &str) -> Option<Arc<Pdu>> {
        self.auth.get(&(event_type.to_string(), state_key.to_owned())).cloned()
    }

    /// A cached auth event by id (linear: used for the few ids of one event's auth_events).
    pub fn auth_event_by_id(&self, event_id: &EventId) -> Option<Arc<Pdu>> {
        self.auth.values().find(|event| event.event_id == event_id).cloned()
    }

    /// Record a committed event: extremities, and state if it is an accepted state event.
    pub fn apply(&mut self, pdu: &Arc<Pdu>, new_state_group: Option<(i64, i64)>) {
        self.extremities.retain(|(id, _)| !pdu.prev_events.contains(id));
        self.extremities.push((pdu.event_id.clone(), pdu.depth));
        self.extremities.sort_by_key(|(_, depth)| std::cmp::Reverse(*depth));
        if let Some(state_key) = &pdu.state_key {
            let key = (pdu.event_type.to_string(), state_key.clone());
            if is_auth_type(&key.0) {
                self.auth.insert(key.clone(), Arc::new(pdu.state_entry()));
            }
            self.state.insert(key, pdu.event_id.clone());
        }
        if let Some((group, chain_length)) = new_state_group {
            self.state_group = Some(group);
            self.chain_length = chain_length;
        }
    }

    /// Mark the cache as out of date (it holds events that never committed): the next lock
    /// of the room reloads it from the database, as it does a room whose creation failed.
    pub fn forget(&mut self) {
        self.state_group = None;
    }

    /// Replace a cached auth event by its redacted form.
    pub fn apply_redaction(&mut self, redacted: Pdu) {
        if let Some(entry) = self.auth.values_mut().find(|event| event.event_id == redacted.event_id) {
            *entry = Arc::new(redacted.state_entry());
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{CanonicalJsonObject, RoomId};
    use serde_json::json;

    use super::*;

    fn member_event(id: &str, user: &str, membership: &str) -> Arc<Pdu> {
        let object: CanonicalJsonObject = serde_json::from_value(json!({
            "type": "m.room.member",
            "state_key": user,
            "sender": user,
            "room_id": "!room:example.org",
            "origin_server_ts": 1,
            "depth": 3,
            "content": { "membership": membership },
            "prev_events": ["$prev"],
            "auth_events": ["$create", "$levels", "$rules"],
        }))
        .unwrap();
        Arc::new(Pdu::from_json(EventId::parse(id).unwrap(), &object).unwrap())
    }

    #[test]
    fn applied_state_is_kept_without_its_edges() {
        let room_id = RoomId::parse("!room:example.org").unwrap();
        let mut room = RoomState::new(room_id, RoomVersionId::V10).unwrap();
        let join = member_event("$join", "@alice:example.org", "join");
        room.apply(&join, Some((7, 1)));

        let kept = room.auth_event("m.room.member", "@alice:example.org").unwrap();
        assert_eq!(kept.event_id, join.event_id);
        assert_eq!(kept.content.get(), join.content.get());
        assert!(kept.prev_events.is_empty() && kept.auth_events.is_empty());
        assert_eq!(room.membership("@alice:example.org"), "join");
        // The applied event itself keeps its edges, and it is a forward extremity.
        assert_eq!(join.prev_events.len(), 1);
        assert_eq!(room.extremities, [(join.event_id.clone(), 3)]);
        assert_eq!(room.state_group, Some(7));

        let mut redacted = Pdu::clone(&join);
        redacted.content = serde_json::value::to_raw_value(&json!({ "membership": "join" })).unwrap();
        room.apply_redaction(redacted);
        let kept = room.auth_event("m.room.member", "@alice:example.org").unwrap();
        assert!(kept.prev_events.is_empty() && kept.auth_events.is_empty());
    }
}
