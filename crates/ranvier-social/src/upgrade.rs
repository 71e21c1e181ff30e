//! Room upgrades, the social part: after the room service has made the replacement room and
//! tombstoned the old one, the local aliases, the canonical alias and the directory entry move
//! to the new room, and every local member's tags on the room and `m.direct` entries for it
//! are carried over to the replacement.

use ranvier_core::{Result, error::Context};
use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value};

use crate::Social;

/// The account data type listing a user's direct chats.
pub const DIRECT_TYPE: &str = "m.direct";

impl Social {
    /// Upgrade a room (`POST /rooms/{roomId}/upgrade`) and move its aliases and directory
    /// listing to the replacement, which is returned.
    pub async fn upgrade_room(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        new_version: RoomVersionId,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId> {
        let new_room = self.rooms().upgrade_room(room_id, user_id, new_version, additional_creators).await?;
        let moved = self.store().move_aliases(room_id.as_str(), new_room.as_str()).await?;
        if !moved.is_empty() {
            self.move_canonical_alias(room_id, &new_room, user_id, &moved).await;
        }
        if self.store().room(room_id.as_str()).await?.is_some_and(|room| room.is_public) {
            self.store().set_room_published(room_id.as_str(), false).await?;
            self.store().set_room_published(new_room.as_str(), true).await?;
        }
        for (member, _) in self.store().room_members_with(room_id.as_str(), "join").await? {
            let Ok(member) = UserId::parse(member.as_str()) else { continue };
            if self.is_local(&member) {
                self.copy_room_account_data(&member, room_id, &new_room).await?;
            }
        }
        Ok(new_room)
    }

    /// Carry a user's view of an upgraded room over to its replacement, as Synapse does: the
    /// room's tags, and the replacement added beside the old room in every `m.direct` entry
    /// that lists it.
    async fn copy_room_account_data(&self, user_id: &UserId, old: &RoomId, new: &RoomId) -> Result<()> {
        let tags = self.tags(user_id, user_id, old).await?;
        if !tags.is_empty() {
            self.change_tags(user_id, new, |new_tags| {
                for (tag, content) in tags {
                    new_tags.entry(tag).or_insert(content);
                }
                true
            })
            .await?;
        }
        let Some(direct) = self.store().get_account_data(user_id.as_str(), "", DIRECT_TYPE).await? else {
            return Ok(());
        };
        let Ok(Value::Object(mut direct)) = serde_json::from_str::<Value>(&direct) else {
            return Ok(());
        };
        let mut changed = false;
        for rooms in direct.values_mut() {
            if let Value::Array(rooms) = rooms
                && rooms.iter().any(|room| room.as_str() == Some(old.as_str()))
                && !rooms.iter().any(|room| room.as_str() == Some(new.as_str()))
            {
                rooms.push(Value::String(new.to_string()));
                changed = true;
            }
        }
        if changed {
            let content = serde_json::to_string(&direct).context("serialise m.direct")?;
            self.store().set_account_data(user_id.as_str(), "", DIRECT_TYPE, &content).await?;
        }
        Ok(())
    }

    /// Name the moved aliases in the new room's canonical alias event and take them out of the
    /// old one's. Best effort: the aliases have moved either way.
    async fn move_canonical_alias(&self, old: &RoomId, new: &RoomId, sender: &UserId, moved: &[String]) {
        let old_content = match self.store().current_state_event(old.as_str(), "m.room.canonical_alias", "").await {
            Ok(Some(event)) => serde_json::from_str::<Value>(&event.pdu)
                .ok()
                .and_then(|pdu| pdu.get("content").and_then(Value::as_object).cloned())
                .unwrap_or_default(),
            _ => return,
        };
        let keep = |alias: &str| moved.iter().any(|moved| moved == alias);
        let mut new_content = Map::new();
        if let Some(alias) = old_content.get("alias").and_then(Value::as_str).filter(|alias| keep(alias)) {
            new_content.insert("alias".into(), Value::String(alias.to_owned()));
        }
        let alt: Vec<Value> = old_content
            .get("alt_aliases")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter(|item| item.as_str().is_some_and(keep)).cloned().collect())
            .unwrap_or_default();
        if !alt.is_empty() {
            new_content.insert("alt_aliases".into(), Value::Array(alt));
        }
        if new_content.is_empty() {
            return;
        }
        let template = ranvier_rooms::EventTemplate::state("m.room.canonical_alias", "", Value::Object(new_content));
        if let Err(error) = self.rooms().send_event(new, sender, template, None).await {
            tracing::info!(room = %new, %error, "canonical alias not carried over to the upgraded room");
        }
        for alias in moved {
            if let Ok(alias) = RoomAliasId::parse(alias.as_str()) {
                self.remove_from_canonical_alias(old, sender, &alias).await;
            }
        }
    }
}
