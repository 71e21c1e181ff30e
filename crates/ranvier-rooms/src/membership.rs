//! Membership changes: join, knock, invite, leave, kick, ban, unban all go through
//! [`Rooms::update_membership`]; forgetting a room is bookkeeping on the membership row.
//!
//! Join, knock and invite events of this server's users carry their profile (`displayname`,
//! `avatar_url`), so joining again after a profile change sends a fresh join. A join to a
//! `restricted` room names a local member who may invite (`join_authorised_via_users_server`)
//! once the joiner is found in one of the rooms the join rule allows.

use ranvier_core::{Error, Result, error::ErrorKind};
use ruma::{OwnedEventId, OwnedUserId, RoomId, UserId, state_res::events::RoomPowerLevelsIntField};
use serde_json::{Map, Value};

use crate::{
    EventTemplate, Rooms,
    build::authorize,
    persist::PersistOptions,
    room_state::RoomState,
    send::{required_level, user_power},
};

/// What a membership request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipAction {
    Join,
    Knock,
    Invite,
    Leave,
    Kick,
    Ban,
    Unban,
}

impl MembershipAction {
    /// The `membership` the event carries.
    fn membership(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Knock => "knock",
            Self::Invite => "invite",
            Self::Leave | Self::Kick | Self::Unban => "leave",
            Self::Ban => "ban",
        }
    }
}

impl Rooms {
    /// Change `target`'s membership in a room on behalf of `sender`, returning the member
    /// event's id. The room version's auth rules decide what is allowed.
    pub async fn update_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        action: MembershipAction,
        reason: Option<String>,
    ) -> Result<OwnedEventId> {
        let Some(mut room) = self.lock_room(room_id).await? else {
            return Err(match action {
                MembershipAction::Join => Error::not_found("No known servers to join this room through"),
                _ => Error::not_found("Unknown room"),
            });
        };
        self.membership_locked(&mut room, sender, target, action, reason, Map::new()).await
    }

    /// [`Self::update_membership`] with the room already locked; `extra` is merged into the
    /// content (`is_direct` for invites from `/createRoom`).
    pub(crate) async fn membership_locked(
        &self,
        room: &mut RoomState,
        sender: &UserId,
        target: &UserId,
        action: MembershipAction,
        reason: Option<String>,
        extra: Map<String, Value>,
    ) -> Result<OwnedEventId> {
        let current = room.membership(target.as_str());
        let mut content = extra;
        if matches!(action, MembershipAction::Join | MembershipAction::Knock | MembershipAction::Invite) {
            self.add_profile(&mut content, target).await?;
        }
        match action {
            // Joining again changes nothing unless the profile changed: answer with the join
            // we have.
            MembershipAction::Join if current == "join" => {
                if let Some(event) = room.auth_event("m.room.member", target.as_str()) {
                    let previous = event.content_value();
                    let same =
                        ["displayname", "avatar_url"].iter().all(|field| previous.get(field) == content.get(*field));
                    if same {
                        return Ok(event.event_id.clone());
                    }
                }
            }
            MembershipAction::Join if current != "invite" => {
                if let Some(authoriser) = restricted_join_authoriser(self, room, target).await? {
                    content.insert("join_authorised_via_users_server".into(), Value::String(authoriser.to_string()));
                }
            }
            // The server notices room's invite cannot be rejected (leaving once joined is fine).
            MembershipAction::Leave
                if current == "invite"
                    && self.server_notices_user().is_some_and(|system| room.membership(system.as_str()) == "join") =>
            {
                return Err(Error::matrix(
                    ErrorKind::CannotLeaveServerNoticeRoom,
                    "You cannot reject the invite to the server notices room",
                ));
            }
            MembershipAction::Kick if !matches!(current.as_str(), "join" | "invite" | "knock") => {
                return Err(Error::forbidden("The target user is not in the room"));
            }
            MembershipAction::Unban if current != "ban" => {
                return Err(Error::forbidden("The target user is not banned"));
            }
            _ => {}
        }
        content.insert("membership".into(), Value::String(action.membership().to_owned()));
        if let Some(reason) = reason {
            content.insert("reason".into(), Value::String(reason));
        }
        let template = EventTemplate::state("m.room.member", target.as_str(), Value::Object(content));
        let built = self.build_event(room, sender, &template)?;
        authorize(room, &built)?;
        let event_id = built.pdu.event_id.clone();
        self.persist(room, built, PersistOptions::default()).await?;
        Ok(event_id)
    }

    /// Add the profile of a local `user_id` to member event content (keys already present win).
    pub(crate) async fn add_profile(&self, content: &mut Map<String, Value>, user_id: &UserId) -> Result<()> {
        if user_id.server_name() != self.server_name() {
            return Ok(());
        }
        let (displayname, avatar_url) = self.store().profile_name_and_avatar(user_id.as_str()).await?;
        for (key, value) in [("displayname", displayname), ("avatar_url", avatar_url)] {
            if let Some(value) = value {
                content.entry(key).or_insert(Value::String(value));
            }
        }
        Ok(())
    }

    /// Forget a room the user has left: it disappears from their room list and sync.
    ///
    /// Fails with `M_UNKNOWN` (the spec's 400) while the user is still in the room.
    pub async fn forget_room(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        let Some(row) = self.store().membership(room_id.as_str(), user_id.as_str()).await? else {
            return Err(Error::not_found(format!("User {user_id} is not in room {room_id}")));
        };
        if matches!(row.membership.as_str(), "join" | "invite" | "knock") {
            return Err(Error::unknown(format!("User {user_id} is in room {room_id}")));
        }
        self.store().set_room_forgotten(room_id.as_str(), user_id.as_str(), true).await
    }
}

/// The rooms a `restricted` or `knock_restricted` join rule lets members of join from, or
/// `None` when the room's join rule is another one.
fn restricted_allow_list(room: &RoomState) -> Option<(String, Vec<String>)> {
    let rules = room.auth_event("m.room.join_rules", "")?.content_value();
    let join_rule = rules.get("join_rule")?.as_str()?;
    let supported = match join_rule {
        "restricted" => room.rules.authorization.restricted_join_rule,
        "knock_restricted" => room.rules.authorization.knock_restricted_join_rule,
        _ => false,
    };
    if !supported {
        return None;
    }
    Some((join_rule.to_owned(), allowed_room_ids(&rules)))
}

/// The rooms named by the `m.room_membership` entries of a join rules content's `allow` list.
pub fn allowed_room_ids(join_rules: &Value) -> Vec<String> {
    join_rules
        .get("allow")
        .and_then(Value::as_array)
        .map(|allow| {
            allow
                .iter()
                .filter(|entry| entry.get("type").and_then(Value::as_str) == Some("m.room_membership"))
                .filter_map(|entry| entry.get("room_id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// For a join to a restricted room by someone who was not invited: the local member who
/// authorises it, after checking that `target` is joined to one of the allowed rooms.
/// `None` when the room is not restricted.
///
/// `403 M_FORBIDDEN` when `target` is in none of the allowed rooms; `400
/// M_UNABLE_TO_GRANT_JOIN` when no local member may invite.
async fn restricted_join_authoriser(rooms: &Rooms, room: &RoomState, target: &UserId) -> Result<Option<OwnedUserId>> {
    let Some((join_rule, allowed)) = restricted_allow_list(room) else {
        return Ok(None);
    };
    let mut member_of_allowed = false;
    for room_id in &allowed {
        if rooms.store().membership(room_id, target.as_str()).await?.is_some_and(|row| row.membership == "join") {
            member_of_allowed = true;
            break;
        }
    }
    if !member_of_allowed {
        let message = if join_rule == "knock_restricted" {
            "You do not belong to any of the rooms this room admits members of; knock instead"
        } else {
            "You do not belong to any of the rooms this room admits members of"
        };
        return Err(Error::forbidden(message));
    }
    let invite_level = required_level(room, RoomPowerLevelsIntField::Invite);
    let authoriser = room
        .auth
        .iter()
        .filter(|((kind, _), event)| {
            kind == "m.room.member" && event.content_str("membership").as_deref() == Some("join")
        })
        .filter_map(|((_, state_key), _)| UserId::parse(state_key.as_str()).ok())
        .filter(|user| user.server_name() == rooms.server_name())
        .map(|user| (user_power(room, &user), user))
        .filter(|(power, _)| *power >= invite_level)
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
        .map(|(_, user)| user);
    match authoriser {
        Some(user) => Ok(Some(user)),
        None => Err(Error::matrix(ErrorKind::UnableToGrantJoin, "No member of this server can let you join this room")),
    }
}
