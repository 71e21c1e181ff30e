//! Room upgrades, the social part: after the room service has made the replacement room and
//! tombstoned the old one, the local aliases, the canonical alias and the directory entry move
//! to the new room.

use ranvier_core::Result;
use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value};

use crate::Social;

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
        Ok(new_room)
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
