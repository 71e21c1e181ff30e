//! Server notices: messages from the server's administrators to a user, sent by a system user
//! into one room per user.
//!
//! The room is made on first use by the system user (a private room named by the
//! configuration, with `users_default` at -10 so that the user can neither write nor invite),
//! tagged `m.server_notice` in the user's room account data, and the user is invited; they may
//! join, and they cannot reject the invite (`M_CANNOT_LEAVE_SERVER_NOTICE_ROOM`, checked in the
//! rooms' membership path). The room is found again as the room the system user is joined to
//! where the user is invited, joined or has left; a user who left is invited again with the
//! next notice. The system user's account and profile are made on first use too.

use std::hash::{Hash, Hasher};

use ranvier_core::{Error, Result, config::ServerNoticesConfig};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, OnceCell};

use crate::Social;

/// The room tag that marks the server notices room.
pub const SERVER_NOTICE_TAG: &str = "m.server_notice";
/// The power level of every user in a notices room but the system user.
const USERS_DEFAULT: i64 = -10;

/// The server notices service. Built only when notices are enabled.
pub struct ServerNotices {
    social: Social,
    config: ServerNoticesConfig,
    system_user: OwnedUserId,
    /// Set once the system user's account and profile exist.
    ready: OnceCell<()>,
    /// Serialises the finding or making of one user's room.
    locks: Vec<Mutex<()>>,
}

/// A notice to send: an event of any type (state when `state_key` is given).
#[derive(Clone, Debug)]
pub struct Notice {
    pub event_type: String,
    pub state_key: Option<String>,
    pub content: Map<String, Value>,
}

impl Notice {
    /// An `m.room.message` with `msgtype: m.server_notice`.
    pub fn text(body: &str) -> Self {
        let content = json!({ "msgtype": "m.server_notice", "body": body });
        let Value::Object(content) = content else { unreachable!("a JSON object literal") };
        Self { event_type: "m.room.message".into(), state_key: None, content }
    }
}

impl ServerNotices {
    /// The service, or `None` when notices are disabled. Names the system user to the room
    /// service, which then refuses rejections of its invites.
    pub fn new(social: Social, config: &ServerNoticesConfig) -> Result<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        let server_name = social.rooms().server_name().to_owned();
        let system_user = UserId::parse_with_server_name(config.system_user_localpart.to_lowercase(), &server_name)
            .map_err(|e| Error::internal(format!("server_notices.system_user_localpart is not valid: {e}")))?;
        social.rooms().set_server_notices_user(system_user.clone());
        let locks = (0..16).map(|_| Mutex::new(())).collect();
        Ok(Some(Self { social, config: config.clone(), system_user, ready: OnceCell::new(), locks }))
    }

    /// The user that sends notices.
    pub fn system_user(&self) -> &UserId {
        &self.system_user
    }

    /// Send a notice to a local user, making and inviting them to their notices room as
    /// needed; returns the event id.
    ///
    /// `400 M_INVALID_PARAM` for a user of another server, `404 M_NOT_FOUND` for an unknown one.
    pub async fn send(&self, user_id: &UserId, notice: Notice) -> Result<OwnedEventId> {
        if !self.social.is_local(user_id) {
            return Err(Error::invalid_param("Server notices can only be sent to local users"));
        }
        if user_id == self.system_user {
            return Err(Error::invalid_param("The server notices user cannot receive notices"));
        }
        let known = self.social.store().get_user(user_id.as_str()).await?;
        if known.is_none_or(|user| user.deactivated) {
            return Err(Error::not_found("User not found"));
        }
        self.ready.get_or_try_init(|| self.make_system_user()).await?;
        let room_id = {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            user_id.hash(&mut hasher);
            let _lock = self.locks[(hasher.finish() % self.locks.len() as u64) as usize].lock().await;
            self.room_for(user_id).await?
        };
        let content = Value::Object(notice.content);
        let template = match notice.state_key {
            Some(state_key) => ranvier_rooms::EventTemplate::state(notice.event_type, state_key, content),
            None => ranvier_rooms::EventTemplate::message(notice.event_type, content),
        };
        self.social.rooms().send_event(&room_id, &self.system_user, template, None).await
    }

    /// The system user's account (no password: nobody logs in as it) and profile.
    async fn make_system_user(&self) -> Result<()> {
        let store = self.social.store();
        if store.get_user(self.system_user.as_str()).await?.is_none() {
            store.create_user(self.system_user.as_str(), None, false).await?;
        }
        let system = &self.system_user;
        if let Some(name) = &self.config.system_user_display_name {
            self.social.set_profile_field(system, system, "displayname", json!(name)).await?;
        }
        if let Some(avatar) = &self.config.system_user_avatar_url {
            self.social.set_profile_field(system, system, "avatar_url", json!(avatar)).await?;
        }
        Ok(())
    }

    /// The user's notices room, made if there is none; the user is invited unless they are
    /// already invited or joined.
    async fn room_for(&self, user_id: &UserId) -> Result<OwnedRoomId> {
        let store = self.social.store();
        let mut found: Option<(OwnedRoomId, String)> = None;
        for row in store.memberships_of(user_id.as_str()).await? {
            if !matches!(row.membership.as_str(), "invite" | "join" | "leave") {
                continue;
            }
            let system = store.membership(&row.room_id, self.system_user.as_str()).await?;
            if system.is_some_and(|system| system.membership == "join")
                && let Ok(room_id) = RoomId::parse(row.room_id.as_str())
            {
                let better = found.as_ref().is_none_or(|(_, membership)| membership == "leave");
                if better {
                    found = Some((room_id, row.membership));
                }
            }
        }
        let (room_id, membership) = match found {
            Some(found) => found,
            None => (self.make_room(user_id).await?, String::new()),
        };
        if !matches!(membership.as_str(), "invite" | "join") {
            let rooms = self.social.rooms();
            rooms
                .update_membership(&room_id, &self.system_user, user_id, ranvier_rooms::MembershipAction::Invite, None)
                .await?;
        }
        Ok(room_id)
    }

    /// A new notices room for `user_id`, tagged for them.
    async fn make_room(&self, user_id: &UserId) -> Result<OwnedRoomId> {
        let mut power_levels = Map::new();
        power_levels.insert("users_default".into(), json!(USERS_DEFAULT));
        let request = ranvier_rooms::CreateRoom {
            preset: Some(ranvier_rooms::Preset::PrivateChat),
            name: Some(self.config.room_name.clone()).filter(|name| !name.is_empty()),
            power_level_content_override: Some(power_levels),
            ..Default::default()
        };
        let room_id = self.social.rooms().create_room(&self.system_user, request).await?;
        self.social.set_tag(user_id, user_id, &room_id, SERVER_NOTICE_TAG, Map::new()).await?;
        tracing::info!(user = %user_id, room = %room_id, "made a server notices room");
        Ok(room_id)
    }
}
