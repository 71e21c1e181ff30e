//! Room creation: the create event, the creator's join, power levels, the preset's rules,
//! initial state, name, topic and invites, in the order the spec gives for `/createRoom`.
//!
//! The whole sequence runs under the new room's write lock, so nobody can act in the room
//! before it is set up.

use ranvier_core::{Error, Result, error::ErrorKind, util::now_ms};
use ranvier_store::persist::NewRoom;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::{
    EventTemplate, Rooms, build::authorize, membership::MembershipAction, persist::PersistOptions,
    room_state::RoomState,
};

/// A `/createRoom` preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// What a room is created with.
#[derive(Clone, Debug, Default)]
pub struct CreateRoom {
    pub room_version: Option<RoomVersionId>,
    /// Published in the room directory; also picks the default preset.
    pub is_public: bool,
    pub preset: Option<Preset>,
    /// Extra keys for the create event's content.
    pub creation_content: Option<Map<String, Value>>,
    /// `(event_type, state_key, content)` in request order.
    pub initial_state: Vec<(String, String, Value)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// Top-level keys replacing those of the default power levels.
    pub power_level_content_override: Option<Map<String, Value>>,
    /// A local alias to create for the room and name in `m.room.canonical_alias`
    /// (`room_alias_name`); the caller has checked that it is free.
    pub alias: Option<OwnedRoomAliasId>,
}

/// The default `m.room.power_levels` content for a new room.
fn default_power_levels(
    creator: &UserId,
    preset: Preset,
    invitees: &[OwnedUserId],
    creators_are_privileged: bool,
) -> Map<String, Value> {
    let mut users = Map::new();
    if !creators_are_privileged {
        users.insert(creator.to_string(), json!(100));
        if preset == Preset::TrustedPrivateChat {
            for invitee in invitees {
                users.insert(invitee.to_string(), json!(100));
            }
        }
    }
    // From version 12 the tombstone level must be above state_default, so that only room
    // creators (and admins raised on purpose) can upgrade the room.
    let tombstone = if creators_are_privileged { 150 } else { 100 };
    let invite = if preset == Preset::PublicChat { 50 } else { 0 };
    let content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": tombstone,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": invite,
    });
    match content {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl Rooms {
    /// Create a room as `creator`, returning its id.
    pub async fn create_room(&self, creator: &UserId, request: CreateRoom) -> Result<OwnedRoomId> {
        let version = request.room_version.clone().unwrap_or(RoomVersionId::V12);
        let rules =
            version.rules().filter(|_| crate::supported_room_versions().contains(&version)).ok_or_else(|| {
                Error::matrix(ErrorKind::UnsupportedRoomVersion, format!("Unsupported room version {version}"))
            })?;
        let privileged_creators = rules.authorization.explicitly_privilege_room_creators;
        let preset = request.preset.unwrap_or(if request.is_public { Preset::PublicChat } else { Preset::PrivateChat });

        // The create event.
        let mut create_content = request.creation_content.clone().unwrap_or_default();
        create_content.insert("room_version".into(), Value::String(version.to_string()));
        if rules.authorization.use_room_create_sender {
            create_content.remove("creator");
        } else {
            create_content.insert("creator".into(), Value::String(creator.to_string()));
        }
        if preset == Preset::TrustedPrivateChat && rules.authorization.additional_room_creators {
            let mut additional: Vec<Value> = match create_content.get("additional_creators") {
                Some(Value::Array(list)) => list.clone(),
                _ => Vec::new(),
            };
            for invitee in &request.invite {
                let value = Value::String(invitee.to_string());
                if !additional.contains(&value) && invitee != creator {
                    additional.push(value);
                }
            }
            if !additional.is_empty() {
                create_content.insert("additional_creators".into(), Value::Array(additional));
            }
        }
        // A version 12 room id comes from the create event's hash; the event is built under a
        // provisional id that it does not carry. Should the id be taken (the same user creating
        // identical rooms within a millisecond), a later timestamp gives a new hash.
        let create_content = Value::Object(create_content);
        let mut timestamp = now_ms();
        let (built, mut locked) = loop {
            let room = RoomState::new(RoomId::new_v1(self.server_name()), version.clone())?;
            let mut template = EventTemplate::state("m.room.create", "", create_content.clone());
            template.timestamp = Some(timestamp);
            let built = self.build_event(&room, creator, &template)?;
            let room = RoomState { room_id: built.room_id.clone(), ..room };
            if let Some(locked) = self.lock_new_room(room).await? {
                break (built, locked);
            }
            timestamp += 1;
        };
        let room_id = built.room_id.clone();
        authorize(&locked, &built).map_err(|e| invalid_request(e, "m.room.create"))?;
        let new_room = NewRoom {
            room_version: version.to_string(),
            creator: Some(creator.to_string()),
            is_public: request.is_public,
        };
        self.persist(&mut locked, built, PersistOptions { new_room: Some(new_room), ..Default::default() }).await?;

        // Then the rest, each one checked against the state the previous ones made.
        let mut events = Vec::new();
        let mut join = Map::new();
        join.insert("membership".into(), Value::String("join".into()));
        self.add_profile(&mut join, creator).await?;
        events.push(EventTemplate::state("m.room.member", creator.as_str(), Value::Object(join)));

        let initial_pl = request
            .initial_state
            .iter()
            .find(|(kind, key, _)| kind == "m.room.power_levels" && key.is_empty())
            .and_then(|(_, _, content)| content.as_object().cloned());
        let mut power_levels =
            initial_pl.unwrap_or_else(|| default_power_levels(creator, preset, &request.invite, privileged_creators));
        if let Some(overrides) = &request.power_level_content_override {
            for (key, value) in overrides {
                power_levels.insert(key.clone(), value.clone());
            }
        }
        events.push(EventTemplate::state("m.room.power_levels", "", Value::Object(power_levels)));
        // The alias is stored now that the room exists; the canonical alias event names it.
        if let Some(alias) = &request.alias {
            let created = self.store().create_alias(alias.as_str(), room_id.as_str(), creator.as_str()).await?;
            if created == ranvier_store::social::aliases::CreateAlias::Taken {
                return Err(Error::matrix(ErrorKind::RoomInUse, "Room alias already taken"));
            }
            events.push(EventTemplate::state("m.room.canonical_alias", "", json!({ "alias": alias })));
        }

        let in_initial = |kind: &str| request.initial_state.iter().any(|(k, key, _)| k == kind && key.is_empty());
        let (join_rule, guest_access) = match preset {
            Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", Some("can_join")),
            Preset::PublicChat => ("public", None),
        };
        if !in_initial("m.room.join_rules") {
            events.push(EventTemplate::state("m.room.join_rules", "", json!({ "join_rule": join_rule })));
        }
        if !in_initial("m.room.history_visibility") {
            events.push(EventTemplate::state(
                "m.room.history_visibility",
                "",
                json!({ "history_visibility": "shared" }),
            ));
        }
        if let Some(guest_access) = guest_access
            && !in_initial("m.room.guest_access")
        {
            events.push(EventTemplate::state("m.room.guest_access", "", json!({ "guest_access": guest_access })));
        }
        for (kind, key, content) in &request.initial_state {
            let replaced = (kind == "m.room.power_levels" && key.is_empty())
                || (kind == "m.room.name" && request.name.is_some())
                || (kind == "m.room.topic" && request.topic.is_some());
            if !replaced {
                events.push(EventTemplate::state(kind.clone(), key.clone(), content.clone()));
            }
        }
        if let Some(name) = &request.name {
            events.push(EventTemplate::state("m.room.name", "", json!({ "name": name })));
        }
        if let Some(topic) = &request.topic {
            events.push(EventTemplate::state(
                "m.room.topic",
                "",
                json!({ "topic": topic, "m.topic": { "m.text": [{ "body": topic, "mimetype": "text/plain" }] } }),
            ));
        }
        for template in events {
            let kind = template.event_type.clone();
            if kind == "m.room.canonical_alias" && template.state_key.as_deref() == Some("") {
                let previous = self.current_content(&locked, "m.room.canonical_alias", "").await?;
                self.check_canonical_alias(&room_id, previous.as_ref(), &template.content).await?;
            }
            let built = self.build_event(&locked, creator, &template)?;
            authorize(&locked, &built).map_err(|e| invalid_request(e, &kind))?;
            self.persist(&mut locked, built, PersistOptions::default()).await?;
        }
        for invitee in &request.invite {
            let mut extra = Map::new();
            if request.is_direct {
                extra.insert("is_direct".into(), Value::Bool(true));
            }
            self.membership_locked(&mut locked, creator, invitee, MembershipAction::Invite, None, extra).await?;
        }
        Ok(room_id)
    }
}

/// An initial event the auth rules refuse: the request asked for something impossible.
fn invalid_request(error: Error, kind: &str) -> Error {
    match error {
        Error::Matrix { kind: ErrorKind::Forbidden, message } => {
            Error::matrix(ErrorKind::Forbidden, format!("Cannot send {kind} while creating the room: {message}"))
        }
        other => other,
    }
}
