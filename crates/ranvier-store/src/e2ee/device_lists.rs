//! The device-list stream, and the membership reads that decide who hears of a change.
//!
//! `device_list_changes` holds one row per change of a user's devices or cross-signing keys,
//! local or remote alike: a remote server's device-list update will be recorded by the same
//! writers. Who *sees* a change is decided when reading, from current room memberships, so a
//! change costs one row however many rooms the user is in.

use std::collections::HashSet;

use ranvier_core::{Result, error::Context};
use serde::Deserialize;
use sqlx::AssertSqlSafe;

use crate::{Store, StreamKind, e2ee::record_device_list_change};

/// A change of someone's membership in a room, from the events stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberChange {
    pub stream_ordering: i64,
    pub room_id: String,
    /// The member (the event's state key).
    pub user_id: String,
    pub membership: String,
    /// The membership the event replaced, if the write path recorded it.
    pub prev_membership: Option<String>,
}

/// A device-list change visible to some viewer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VisibleChange {
    pub user_id: String,
    /// The change was addressed to the viewer alone (it is shown whether or not they share a
    /// room with `user_id`).
    pub addressed: bool,
}

/// The parts of a stored member event that matter here.
#[derive(Deserialize)]
struct MemberPdu {
    content: MemberContent,
    #[serde(default)]
    unsigned: Option<MemberUnsigned>,
}

#[derive(Deserialize)]
struct MemberContent {
    membership: String,
}

#[derive(Deserialize)]
struct MemberUnsigned {
    #[serde(default)]
    prev_content: Option<PrevContent>,
}

#[derive(Deserialize)]
struct PrevContent {
    #[serde(default)]
    membership: Option<String>,
}

impl Store {
    /// Record a device-list change of `user_id` on its own (e.g. a renamed device).
    pub async fn record_device_list_change(&self, user_id: &str, device_id: &str) -> Result<()> {
        let mut txn = self.begin_write().await?;
        let guard = self.streams().allocate(StreamKind::DeviceLists);
        record_device_list_change(&mut txn, guard.position(), user_id, device_id, None).await?;
        txn.commit().await?;
        drop(guard);
        Ok(())
    }

    /// The users with device-list changes at positions `after < pos <= up_to` that `viewer`
    /// may hear of: those for everyone, and those addressed to the viewer.
    pub async fn device_list_changes_for(&self, viewer: &str, after: i64, up_to: i64) -> Result<Vec<VisibleChange>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT user_id, audience FROM device_list_changes \
             WHERE stream_pos > $2 AND stream_pos <= $3 AND (audience = '' OR audience = $1)",
        )
        .bind(viewer)
        .bind(after)
        .bind(up_to)
        .fetch_all(self.pool())
        .await
        .context("device list changes")?;
        let mut changes: Vec<VisibleChange> = rows
            .into_iter()
            .map(|(user_id, audience)| VisibleChange { user_id, addressed: !audience.is_empty() })
            .collect();
        changes.sort();
        changes.dedup();
        Ok(changes)
    }

    /// Which of `candidates` are joined to a room that `user_id` is joined to.
    pub async fn users_sharing_a_room(&self, user_id: &str, candidates: &[String]) -> Result<HashSet<String>> {
        let mut sharing = HashSet::new();
        for chunk in candidates.chunks(200).map(crate::in_list) {
            let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT DISTINCT other.user_id FROM room_memberships mine \
                 JOIN room_memberships other ON other.room_id = mine.room_id \
                 WHERE mine.user_id = $1 AND mine.membership = 'join' AND other.membership = 'join' \
                 AND other.user_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(user_id);
            for candidate in chunk {
                query = query.bind(candidate);
            }
            sharing.extend(query.fetch_all(self.pool()).await.context("users sharing a room")?);
        }
        Ok(sharing)
    }

    /// Everyone joined to some room that `user_id` is joined to, `user_id` included if joined
    /// anywhere.
    pub async fn users_sharing_any_room(&self, user_id: &str) -> Result<HashSet<String>> {
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT other.user_id FROM room_memberships mine \
             JOIN room_memberships other ON other.room_id = mine.room_id \
             WHERE mine.user_id = $1 AND mine.membership = 'join' AND other.membership = 'join'",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("users sharing any room")?;
        Ok(users.into_iter().collect())
    }

    /// The users currently joined to a room.
    pub async fn joined_member_ids(&self, room_id: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT user_id FROM room_memberships WHERE room_id = $1 AND membership = 'join'")
            .bind(room_id)
            .fetch_all(self.pool())
            .await
            .context("joined members")
    }

    /// The rooms `user_id` is currently joined to.
    pub async fn joined_room_ids(&self, user_id: &str) -> Result<HashSet<String>> {
        let rooms: Vec<String> =
            sqlx::query_scalar("SELECT room_id FROM room_memberships WHERE user_id = $1 AND membership = 'join'")
                .bind(user_id)
                .fetch_all(self.pool())
                .await
                .context("joined rooms")?;
        Ok(rooms.into_iter().collect())
    }

    /// Membership changes at events-stream positions `after < pos <= up_to` in every room
    /// `user_id` has (or had) a membership in, oldest first. The scan follows the events in
    /// the window, so it costs what happened since `after`.
    pub async fn member_changes_for(&self, user_id: &str, after: i64, up_to: i64) -> Result<Vec<MemberChange>> {
        let rows: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
            "SELECT stream_ordering, room_id, state_key, pdu FROM events \
             WHERE stream_ordering > $2 AND stream_ordering <= $3 AND event_type = 'm.room.member' \
             AND outlier = 0 AND rejected_reason IS NULL AND soft_failed = 0 \
             AND room_id IN (SELECT room_id FROM room_memberships WHERE user_id = $1) \
             ORDER BY stream_ordering",
        )
        .bind(user_id)
        .bind(after)
        .bind(up_to)
        .fetch_all(self.pool())
        .await
        .context("member changes")?;
        let mut changes = Vec::with_capacity(rows.len());
        for (stream_ordering, room_id, state_key, pdu) in rows {
            let Some(member) = state_key else { continue };
            // A member event whose content cannot be read (redacted content keeps
            // `membership`, so this is a corrupt row) changes nothing worth reporting.
            let Ok(parsed) = serde_json::from_str::<MemberPdu>(&pdu) else {
                tracing::warn!(room_id, stream_ordering, "member event without a readable membership");
                continue;
            };
            let prev_membership = parsed.unsigned.and_then(|u| u.prev_content).and_then(|p| p.membership);
            changes.push(MemberChange {
                stream_ordering,
                room_id,
                user_id: member,
                membership: parsed.content.membership,
                prev_membership,
            });
        }
        Ok(changes)
    }
}
