//! Global and per-room account data, each change a position in the account-data stream.

use ranvier_core::{Result, error::Context};

use crate::{Store, StreamKind};

impl Store {
    /// Set account data (`room_id` empty for global) and return its stream position.
    pub async fn set_account_data(&self, user_id: &str, room_id: &str, data_type: &str, content: &str) -> Result<i64> {
        let guard = self.streams().allocate(StreamKind::AccountData);
        let mut txn = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = $4, stream_pos = $5",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(data_type)
        .bind(content)
        .bind(guard.position())
        .execute(&mut *txn)
        .await
        .context("set account data")?;
        txn.commit().await?;
        Ok(guard.position())
    }

    /// One piece of account data, if set.
    pub async fn get_account_data(&self, user_id: &str, room_id: &str, data_type: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3")
            .bind(user_id)
            .bind(room_id)
            .bind(data_type)
            .fetch_optional(self.pool())
            .await
            .context("get account data")
    }

    /// All of a user's account data for one room, up to position `until` (inclusive):
    /// `(data_type, content)` in stream order. A room new to a client is sent with all of it.
    pub async fn room_account_data(&self, user_id: &str, room_id: &str, until: i64) -> Result<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT data_type, content FROM account_data
             WHERE user_id = $1 AND room_id = $2 AND stream_pos <= $3 ORDER BY stream_pos",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(until)
        .fetch_all(self.pool())
        .await
        .context("room account data")
    }

    /// Account data changed after `since` (exclusive) up to `until` (inclusive):
    /// `(room_id, data_type, content)`, with `room_id` empty for global data.
    pub async fn account_data_changes(
        &self,
        user_id: &str,
        since: i64,
        until: i64,
    ) -> Result<Vec<(String, String, String)>> {
        sqlx::query_as(
            "SELECT room_id, data_type, content FROM account_data
             WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos",
        )
        .bind(user_id)
        .bind(since)
        .bind(until)
        .fetch_all(self.pool())
        .await
        .context("account data changes")
    }
}
