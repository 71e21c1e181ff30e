//! The public room directory (`rooms.is_public`) and what the directories show of a room: a
//! few current state events and the joined member count, read for many rooms at once.

use std::collections::HashMap;

use ranvier_core::{Result, error::Context};

use crate::{
    Store,
    events::{StoredEvent, event_from_row},
};

impl Store {
    /// The rooms published in the room directory.
    pub async fn published_rooms(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT room_id FROM rooms WHERE is_public = 1")
            .fetch_all(self.pool())
            .await
            .context("published rooms")
    }

    /// Publish or unpublish a room; `false` if the room is unknown.
    pub async fn set_room_published(&self, room_id: &str, published: bool) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let updated = sqlx::query("UPDATE rooms SET is_public = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(published as i64)
            .execute(&mut *txn)
            .await
            .context("publish room")?
            .rows_affected();
        txn.commit().await?;
        Ok(updated > 0)
    }

    /// The current state events of the given types (state key `""`) in each of `room_ids`.
    pub async fn current_state_of_rooms(
        &self,
        room_ids: &[String],
        event_types: &[&str],
    ) -> Result<HashMap<String, Vec<StoredEvent>>> {
        let mut out: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        let columns = crate::events::EVENT_COLUMNS
            .split(',')
            .map(|column| format!("e.{}", column.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        for chunk in room_ids.chunks(200).map(crate::in_list) {
            let sql = format!(
                "SELECT {columns} FROM current_state c JOIN events e ON e.event_id = c.event_id
                 WHERE c.state_key = '' AND c.room_id IN ({}) AND c.event_type IN ({})",
                super::placeholders(1, chunk.len()),
                super::placeholders(chunk.len() + 1, event_types.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for room_id in chunk {
                query = query.bind(room_id);
            }
            for event_type in event_types {
                query = query.bind(*event_type);
            }
            for row in query.fetch_all(self.pool()).await.context("state of rooms")? {
                let event = event_from_row(&row)?;
                out.entry(event.room_id.clone()).or_default().push(event);
            }
        }
        Ok(out)
    }

    /// The joined member count of each of `room_ids` (rooms without members are absent).
    pub async fn joined_counts(&self, room_ids: &[String]) -> Result<HashMap<String, i64>> {
        let mut out = HashMap::new();
        for chunk in room_ids.chunks(200).map(crate::in_list) {
            let sql = format!(
                "SELECT room_id, COUNT(*) FROM room_memberships WHERE membership = 'join' AND room_id IN ({})
                 GROUP BY room_id",
                super::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
            for room_id in chunk {
                query = query.bind(room_id);
            }
            out.extend(query.fetch_all(self.pool()).await.context("joined counts")?);
        }
        Ok(out)
    }

    /// Rooms whose current state of one of `event_types` (state key `""`) changed by an event
    /// after `after`, with the highest such position seen (to resume from).
    pub async fn rooms_with_state_changes(&self, event_types: &[&str], after: i64) -> Result<(Vec<String>, i64)> {
        let sql = format!(
            "SELECT room_id, stream_ordering FROM events WHERE stream_ordering > $1 AND state_key = ''
             AND outlier = 0 AND rejected_reason IS NULL AND event_type IN ({})",
            super::placeholders(2, event_types.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql)).bind(after);
        for event_type in event_types {
            query = query.bind(*event_type);
        }
        let rows = query.fetch_all(self.pool()).await.context("rooms with state changes")?;
        let highest = rows.iter().map(|(_, position)| *position).max().unwrap_or(after);
        let mut rooms: Vec<String> = rows.into_iter().map(|(room_id, _)| room_id).collect();
        rooms.sort();
        rooms.dedup();
        Ok((rooms, highest))
    }

    /// Every room we hold current state for.
    pub async fn all_room_ids(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT room_id FROM rooms").fetch_all(self.pool()).await.context("all rooms")
    }
}
