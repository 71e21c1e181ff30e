//! Room aliases: `PUT/GET/DELETE /directory/room/{roomAlias}`, `GET /rooms/{roomId}/aliases`,
//! and resolving `#alias:server` for joins and knocks.
//!
//! Only this server's aliases are stored and resolved; a remote alias will be asked of its
//! server over federation and is unknown here until then.

use ranvier_core::{Error, Result, error::ErrorKind};
use ranvier_store::social::aliases::CreateAlias;
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedServerName, RoomAliasId, RoomId, RoomOrAliasId, ServerName, UserId};
use serde_json::Value;

use crate::{Social, without_nul};

/// `400 M_INVALID_PARAM` unless `alias` belongs to `server`.
pub fn check_local_alias(alias: &RoomAliasId, server: &ServerName) -> Result<()> {
    without_nul(alias.as_str(), || Error::invalid_param("Invalid room alias"))?;
    if alias.server_name() != server {
        return Err(Error::invalid_param(format!("Room alias {alias} does not belong to this server")));
    }
    Ok(())
}

/// The alias `#name:server` of a `/createRoom` `room_alias_name`: `400 M_INVALID_PARAM` for a
/// name with whitespace, `:` or `#`, or one that makes no valid alias.
pub fn alias_from_name(name: &str, server: &ServerName) -> Result<OwnedRoomAliasId> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '#') {
        return Err(Error::invalid_param("Invalid characters in room alias"));
    }
    RoomAliasId::parse(format!("#{name}:{server}")).map_err(|_| Error::invalid_param("Invalid room alias"))
}

impl Social {
    /// Whether `user_id` is a server admin.
    async fn is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.is_local(user_id) && self.store().get_user(user_id.as_str()).await?.is_some_and(|user| user.admin))
    }

    /// `400 M_ROOM_IN_USE` if a local alias is taken (checked before a room is created with it).
    pub async fn check_alias_free(&self, alias: &RoomAliasId) -> Result<()> {
        check_local_alias(alias, self.rooms().server_name())?;
        if self.store().alias(alias.as_str()).await?.is_some() {
            return Err(Error::matrix(ErrorKind::RoomInUse, "Room alias already taken"));
        }
        Ok(())
    }

    /// Point a new local alias at a room. The requester must be joined to the room (or be an
    /// admin). A taken alias is `M_ROOM_IN_USE`, which the API answers with `409`.
    pub async fn create_alias(&self, requester: &UserId, alias: &RoomAliasId, room_id: &RoomId) -> Result<()> {
        check_local_alias(alias, self.rooms().server_name())?;
        without_nul(room_id.as_str(), || Error::not_found("Room not found"))?;
        if self.store().room(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found("Room not found"));
        }
        let joined = self
            .store()
            .membership(room_id.as_str(), requester.as_str())
            .await?
            .is_some_and(|row| row.membership == "join");
        if !joined && !self.is_admin(requester).await? {
            return Err(Error::forbidden(format!("User {requester} not in room {room_id}")));
        }
        match self.store().create_alias(alias.as_str(), room_id.as_str(), requester.as_str()).await? {
            CreateAlias::Created => Ok(()),
            CreateAlias::Taken => {
                Err(Error::matrix(ErrorKind::RoomInUse, format!("Room alias {alias} already exists")))
            }
        }
    }

    /// The room an alias points at and servers that can help join it (this one first);
    /// `404 M_NOT_FOUND` if unknown.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let not_found = || Error::not_found(format!("Room alias {alias} not found"));
        if alias.server_name() != self.rooms().server_name() || alias.as_str().contains('\0') {
            return Err(not_found());
        }
        let (room_id, _) = self.store().alias(alias.as_str()).await?.ok_or_else(not_found)?;
        let room_id =
            RoomId::parse(room_id).map_err(|_| Error::internal("stored alias points at an invalid room id"))?;
        let mut servers = vec![self.rooms().server_name().to_owned()];
        for (member, _) in self.store().room_members_with(room_id.as_str(), "join").await? {
            if let Ok(member) = UserId::parse(member)
                && !servers.iter().any(|server| server == member.server_name())
            {
                servers.push(member.server_name().to_owned());
            }
        }
        Ok((room_id, servers))
    }

    /// The room a room id or alias names (`/join/{roomIdOrAlias}`, `/knock/{roomIdOrAlias}`).
    pub async fn resolve_room(&self, room: &RoomOrAliasId) -> Result<OwnedRoomId> {
        match <&RoomId>::try_from(room) {
            Ok(room_id) if room_id.as_str().contains('\0') => Err(Error::not_found("Unknown room")),
            Ok(room_id) => Ok(room_id.to_owned()),
            Err(alias) => Ok(self.resolve_alias(alias).await?.0),
        }
    }

    /// Remove a local alias: its creator, a server admin, or a member allowed to change the
    /// room's canonical alias may. The alias is also taken out of the room's
    /// `m.room.canonical_alias` when it is named there.
    pub async fn delete_alias(&self, requester: &UserId, alias: &RoomAliasId) -> Result<()> {
        let not_found = || Error::not_found(format!("Room alias {alias} not found"));
        if alias.server_name() != self.rooms().server_name() || alias.as_str().contains('\0') {
            return Err(not_found());
        }
        let (room_id, creator) = self.store().alias(alias.as_str()).await?.ok_or_else(not_found)?;
        let room_id =
            RoomId::parse(room_id).map_err(|_| Error::internal("stored alias points at an invalid room id"))?;
        let allowed = creator == requester.as_str()
            || self.is_admin(requester).await?
            || self.rooms().may_send_state(&room_id, requester, "m.room.canonical_alias").await? == Some(true);
        if !allowed {
            return Err(Error::forbidden("You don't have permission to delete the alias"));
        }
        if !self.store().delete_alias(alias.as_str()).await? {
            return Err(not_found());
        }
        self.remove_from_canonical_alias(&room_id, requester, alias).await;
        Ok(())
    }

    /// Take `alias` out of a room's canonical alias event, as `sender`. Best effort: the alias
    /// is gone either way, and a sender without the power simply leaves the event as it is.
    pub(crate) async fn remove_from_canonical_alias(&self, room_id: &RoomId, sender: &UserId, alias: &RoomAliasId) {
        let result: Result<()> = async {
            let Some(event) = self.store().current_state_event(room_id.as_str(), "m.room.canonical_alias", "").await?
            else {
                return Ok(());
            };
            let pdu: Value = serde_json::from_str(&event.pdu).unwrap_or_default();
            let Some(Value::Object(mut content)) = pdu.get("content").cloned() else {
                return Ok(());
            };
            let mut changed = false;
            if content.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
                content.remove("alias");
                changed = true;
            }
            if let Some(Value::Array(alt)) = content.get_mut("alt_aliases") {
                let before = alt.len();
                alt.retain(|item| item.as_str() != Some(alias.as_str()));
                changed |= alt.len() != before;
            }
            if changed {
                let template =
                    ranvier_rooms::EventTemplate::state("m.room.canonical_alias", "", Value::Object(content));
                self.rooms().send_event(room_id, sender, template, None).await?;
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            tracing::info!(room = %room_id, %alias, %error, "deleted alias stays in the canonical alias event");
        }
    }

    /// The local aliases of a room, for a member (or anyone, in a `world_readable` room);
    /// `403 M_FORBIDDEN` otherwise.
    pub async fn room_aliases(&self, requester: &UserId, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>> {
        without_nul(room_id.as_str(), || Error::forbidden(format!("User {requester} not in room {room_id}")))?;
        let joined = self
            .store()
            .membership(room_id.as_str(), requester.as_str())
            .await?
            .is_some_and(|row| row.membership == "join");
        if !joined {
            let world_readable = self
                .store()
                .current_state_event(room_id.as_str(), "m.room.history_visibility", "")
                .await?
                .and_then(|event| serde_json::from_str::<Value>(&event.pdu).ok())
                .is_some_and(|pdu| pdu.pointer("/content/history_visibility") == Some(&Value::from("world_readable")));
            if !world_readable && !self.is_admin(requester).await? {
                return Err(Error::forbidden(format!("User {requester} not in room {room_id}")));
            }
        }
        Ok(self
            .store()
            .room_aliases(room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|alias| RoomAliasId::parse(alias).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_and_servers() {
        let server = <&ServerName>::try_from("example.org").unwrap();
        assert_eq!(alias_from_name("room", server).unwrap().as_str(), "#room:example.org");
        for bad in ["", "a b", "a:b", "#a", "tab\there"] {
            assert_eq!(alias_from_name(bad, server).unwrap_err().kind(), Some(&ErrorKind::InvalidParam), "{bad:?}");
        }
        let long = "a".repeat(300);
        assert_eq!(alias_from_name(&long, server).unwrap_err().kind(), Some(&ErrorKind::InvalidParam));
        let local = RoomAliasId::parse("#x:example.org").unwrap();
        let remote = RoomAliasId::parse("#x:other.org").unwrap();
        assert!(check_local_alias(&local, server).is_ok());
        assert_eq!(check_local_alias(&remote, server).unwrap_err().kind(), Some(&ErrorKind::InvalidParam));
    }
}
