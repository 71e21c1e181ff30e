//! Room tags, stored as the `m.tag` room account data (`{"tags": {tag: {"order": n}}}`), so
//! that `/sync` delivers them with the rest of the account data.
//!
//! Adding or removing a tag rewrites the whole `m.tag` content; a per-user lock keeps two
//! concurrent changes from losing one another.

use std::hash::{Hash, Hasher};

use ranvier_core::{Error, Result, error::Context};
use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::{Social, without_nul};

/// The account data type holding a room's tags.
pub const TAG_TYPE: &str = "m.tag";
/// The longest tag name, in bytes (as Synapse allows).
pub const MAX_TAG_BYTES: usize = 255;

/// Only the owner may read or change their tags.
fn check_owner(requester: &UserId, owner: &UserId) -> Result<()> {
    if requester != owner {
        return Err(Error::forbidden("Cannot access the tags of another user"));
    }
    Ok(())
}

/// The room id of a tag request, which is a database key.
fn check_room(room_id: &RoomId) -> Result<()> {
    without_nul(room_id.as_str(), || Error::invalid_param("Invalid room id"))
}

impl Social {
    /// A user's tags on a room: the `tags` object, empty when none are set.
    pub async fn tags(&self, requester: &UserId, owner: &UserId, room_id: &RoomId) -> Result<Map<String, Value>> {
        check_owner(requester, owner)?;
        check_room(room_id)?;
        let content = self.store().get_account_data(owner.as_str(), room_id.as_str(), TAG_TYPE).await?;
        Ok(tags_of(content.as_deref()))
    }

    /// Add (or replace) a tag with its `content` (e.g. `{"order": 0.5}`).
    pub async fn set_tag(
        &self,
        requester: &UserId,
        owner: &UserId,
        room_id: &RoomId,
        tag: &str,
        content: Map<String, Value>,
    ) -> Result<()> {
        check_owner(requester, owner)?;
        check_room(room_id)?;
        if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
            return Err(Error::invalid_param(format!("Tags are 1 to {MAX_TAG_BYTES} bytes")));
        }
        self.change_tags(owner, room_id, |tags| {
            tags.insert(tag.to_owned(), Value::Object(content));
            true
        })
        .await
    }

    /// Remove a tag; removing a tag that is not set succeeds.
    pub async fn delete_tag(&self, requester: &UserId, owner: &UserId, room_id: &RoomId, tag: &str) -> Result<()> {
        check_owner(requester, owner)?;
        check_room(room_id)?;
        self.change_tags(owner, room_id, |tags| tags.remove(tag).is_some()).await
    }

    /// Read, change and write back a user's tags on a room under the user's tag lock. `change`
    /// says whether it changed anything (nothing is written otherwise).
    pub(crate) async fn change_tags(
        &self,
        owner: &UserId,
        room_id: &RoomId,
        change: impl FnOnce(&mut Map<String, Value>) -> bool,
    ) -> Result<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        owner.hash(&mut hasher);
        let stripe = (hasher.finish() % self.inner.tag_locks.len() as u64) as usize;
        let _lock = self.inner.tag_locks[stripe].lock().await;
        let current = self.store().get_account_data(owner.as_str(), room_id.as_str(), TAG_TYPE).await?;
        let mut tags = tags_of(current.as_deref());
        if !change(&mut tags) {
            return Ok(());
        }
        let content = serde_json::to_string(&json!({ "tags": tags })).context("serialise tags")?;
        self.store().set_account_data(owner.as_str(), room_id.as_str(), TAG_TYPE, &content).await?;
        Ok(())
    }
}

/// The `tags` object of stored `m.tag` content (empty if absent or malformed).
fn tags_of(content: Option<&str>) -> Map<String, Value> {
    content
        .and_then(|content| serde_json::from_str::<Value>(content).ok())
        .and_then(|mut content| match content.get_mut("tags").map(Value::take) {
            Some(Value::Object(tags)) => Some(tags),
            _ => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_tags_are_read_leniently() {
        assert!(tags_of(None).is_empty());
        assert!(tags_of(Some("not json")).is_empty());
        assert!(tags_of(Some(r#"{"tags": []}"#)).is_empty());
        let tags = tags_of(Some(r#"{"tags": {"m.favourite": {"order": 0.5}}}"#));
        assert_eq!(Value::Object(tags), json!({ "m.favourite": { "order": 0.5 } }));
    }
}
