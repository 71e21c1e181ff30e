//! Membership changes: join, invite, leave, kick, ban, unban all go through
//! [`Rooms::update_membership`]; forgetting a room is bookkeeping on the membership row.

use ranvier_core::{Error, Result};
use ruma::{OwnedEventId, RoomId, UserId};
use serde_json::{Map, Value};

use crate::{EventTemplate, Rooms, build::authorize, persist::PersistOptions, room_state::RoomState};

/// What a membership request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipAction {
    Join,
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
        match action {
            // Joining again changes nothing: answer with the join we have.
            MembershipAction::Join if current == "join" => {
                if let Some(event) = room.auth_event("m.room.member", target.as_str()) {
                    return Ok(event.event_id.clone());
                }
            }
            MembershipAction::Kick if !matches!(current.as_str(), "join" | "invite" | "knock") => {
                return Err(Error::forbidden("The target user is not in the room"));
            }
            MembershipAction::Unban if current != "ban" => {
                return Err(Error::forbidden("The target user is not banned"));
            }
            _ => {}
        }
        let mut content = extra;
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
