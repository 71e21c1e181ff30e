//! Room upgrades (`POST /rooms/{roomId}/upgrade`): a replacement room of the new version with
//! the old room's transferable state, a tombstone in the old room pointing at it, and power
//! levels in the old room that stop further messages and invites.
//!
//! The old room's write lock is held from the permission check to the tombstone, so two
//! upgrades of one room run one after the other and nothing is sent in between. Aliases and
//! the directory entry are moved by the social layer, which calls this.

use ranvier_core::{Error, Result, error::ErrorKind};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::{
    CreateRoom, EventTemplate, MembershipAction, Preset, Rooms, build::authorize, persist::PersistOptions,
    send::user_power,
};

/// The state copied into the replacement room, as the spec recommends.
pub const TRANSFERRED_STATE: [&str; 8] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];

/// The numeric power levels of a power levels content (everything a user might need).
fn highest_required_level(power_levels: &Map<String, Value>) -> i64 {
    let as_level = |value: &Value| value.as_i64().or_else(|| value.as_str().and_then(|s| s.parse().ok()));
    let mut highest = 0;
    for key in ["state_default", "events_default", "ban", "kick", "redact", "invite"] {
        if let Some(level) = power_levels.get(key).and_then(as_level) {
            highest = highest.max(level);
        }
    }
    if let Some(Value::Object(events)) = power_levels.get("events") {
        highest = events.values().filter_map(as_level).fold(highest, i64::max);
    }
    highest
}

impl Rooms {
    /// Upgrade a room to `new_version` on behalf of `user_id`, returning the replacement room.
    ///
    /// `403 M_FORBIDDEN` without the power to send `m.room.tombstone`; `400
    /// M_UNSUPPORTED_ROOM_VERSION` for a version this server cannot create.
    pub async fn upgrade_room(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        new_version: RoomVersionId,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId> {
        let new_rules =
            new_version.rules().filter(|_| crate::supported_room_versions().contains(&new_version)).ok_or_else(
                || Error::matrix(ErrorKind::UnsupportedRoomVersion, format!("Unsupported room version {new_version}")),
            )?;
        let Some(mut old) = self.lock_room(room_id).await? else {
            return Err(crate::send::not_in_room(user_id, room_id));
        };
        if old.membership(user_id.as_str()) != "join" {
            return Err(crate::send::not_in_room(user_id, room_id));
        }
        // The permission check is the auth check of the tombstone itself (its content does not
        // matter to the rules).
        let probe = EventTemplate::state("m.room.tombstone", "", json!({ "body": "", "replacement_room": room_id }));
        authorize(&old, &self.build_event(&old, user_id, &probe)?)?;

        // What the new room is made of.
        let old_create = old.create_event().map(|event| event.content_value()).unwrap_or_default();
        let mut creation_content = Map::new();
        let mut predecessor = Map::new();
        predecessor.insert("room_id".into(), json!(room_id));
        if let Some((latest, _)) = old.extremities.first() {
            predecessor.insert("event_id".into(), json!(latest));
        }
        creation_content.insert("predecessor".into(), Value::Object(predecessor));
        for key in ["type", "m.federate"] {
            if let Some(value) = old_create.get(key) {
                creation_content.insert(key.into(), value.clone());
            }
        }
        let privileged_creators = new_rules.authorization.explicitly_privilege_room_creators;
        if new_rules.authorization.additional_room_creators && !additional_creators.is_empty() {
            creation_content.insert("additional_creators".into(), json!(additional_creators));
        }
        let mut initial_state = Vec::new();
        let mut join_rule = None;
        for event_type in TRANSFERRED_STATE {
            if let Some(content) = self.current_content(&old, event_type, "").await?
                && content.as_object().is_some_and(|object| !object.is_empty())
            {
                if event_type == "m.room.join_rules" {
                    join_rule = content.get("join_rule").and_then(Value::as_str).map(str::to_owned);
                }
                initial_state.push((event_type.to_owned(), String::new(), content));
            }
        }
        let old_power_levels = self
            .current_content(&old, "m.room.power_levels", "")
            .await?
            .and_then(|content| content.as_object().cloned())
            .unwrap_or_default();
        let mut power_levels = old_power_levels.clone();
        let mut restore = None;
        let users_key = user_id.to_string();
        // Creators of version 12 rooms have power beyond any level and may not be listed.
        if privileged_creators && let Some(Value::Object(users)) = power_levels.get_mut("users") {
            users.remove(&users_key);
            for creator in &additional_creators {
                users.remove(creator.as_str());
            }
        }
        if !privileged_creators {
            let needed = highest_required_level(&power_levels).max(100);
            let listed = power_levels.get("users").and_then(|users| users.get(&users_key)).and_then(Value::as_i64);
            if listed.unwrap_or(0) < needed {
                // Raise the upgrader for the set-up, then put the old levels back; an upgrader
                // with power beyond any level in the old room keeps 100.
                let mut final_levels = power_levels.clone();
                if user_power(&old, user_id) == i64::MAX {
                    set_user_level(&mut final_levels, &users_key, 100);
                }
                set_user_level(&mut power_levels, &users_key, needed);
                restore = Some(final_levels);
            }
        }
        if !power_levels.is_empty() {
            initial_state.push(("m.room.power_levels".to_owned(), String::new(), Value::Object(power_levels)));
        }
        let banned: Vec<OwnedUserId> = old
            .auth
            .iter()
            .filter(|((kind, _), event)| {
                kind == "m.room.member" && event.content_str("membership").as_deref() == Some("ban")
            })
            .filter_map(|((_, state_key), _)| UserId::parse(state_key.as_str()).ok())
            .collect();

        let request = CreateRoom {
            room_version: Some(new_version),
            preset: Some(if join_rule.as_deref() == Some("public") { Preset::PublicChat } else { Preset::PrivateChat }),
            creation_content: Some(creation_content),
            initial_state,
            ..Default::default()
        };
        let new_room = self.create_room(user_id, request).await?;

        // The tombstone, then power levels that stop messages and invites in the old room.
        let tombstone = EventTemplate::state(
            "m.room.tombstone",
            "",
            json!({ "body": "This room has been replaced", "replacement_room": new_room }),
        );
        let built = self.build_event(&old, user_id, &tombstone)?;
        authorize(&old, &built)?;
        self.persist(&mut old, built, PersistOptions::default()).await?;
        if !old_power_levels.is_empty() {
            let users_default = old_power_levels.get("users_default").and_then(Value::as_i64).unwrap_or(0);
            let restricted = (users_default + 1).max(50);
            let mut levels = old_power_levels;
            levels.insert("events_default".into(), json!(restricted));
            levels.insert("invite".into(), json!(restricted));
            let template = EventTemplate::state("m.room.power_levels", "", Value::Object(levels));
            match self.build_event(&old, user_id, &template).and_then(|built| authorize(&old, &built).map(|()| built)) {
                Ok(built) => {
                    self.persist(&mut old, built, PersistOptions::default()).await?;
                }
                Err(error) => tracing::info!(room = %room_id, %error, "old room's power levels left as they were"),
            }
        }
        drop(old);

        for user in banned {
            if let Err(error) = self.update_membership(&new_room, user_id, &user, MembershipAction::Ban, None).await {
                tracing::info!(room = %new_room, user = %user, %error, "ban not carried over to the upgraded room");
            }
        }
        if let Some(levels) = restore {
            let template = EventTemplate::state("m.room.power_levels", "", Value::Object(levels));
            self.send_event(&new_room, user_id, template, None).await?;
        }
        Ok(new_room)
    }
}

/// Set `users[user]` in a power levels content.
fn set_user_level(power_levels: &mut Map<String, Value>, user: &str, level: i64) {
    let users = power_levels.entry("users").or_insert_with(|| json!({}));
    if let Value::Object(users) = users {
        users.insert(user.to_owned(), json!(level));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_level_covers_every_field() {
        let levels = json!({
            "state_default": 50, "events_default": 0, "ban": "75", "kick": 50,
            "events": { "m.room.tombstone": 150, "m.room.name": 50 }, "users": { "@a:x": 1000 },
        });
        assert_eq!(highest_required_level(levels.as_object().unwrap()), 150);
        assert_eq!(highest_required_level(&Map::new()), 0);
        let mut levels = Map::new();
        set_user_level(&mut levels, "@a:x", 100);
        assert_eq!(Value::Object(levels), json!({ "users": { "@a:x": 100 } }));
    }
}
