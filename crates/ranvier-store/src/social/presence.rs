//! The last persisted presence of each user. Only changes of state or status message are
//! written; the presence service keeps everything else in memory.

use ranvier_core::{Result, error::Context};

use crate::Store;

/// A user's persisted presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceRow {
    pub user_id: String,
    /// `online`, `unavailable` or `offline`.
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
    /// The presence-stream position of the change.
    pub stream_pos: i64,
}

impl Store {
    /// Write several presence changes in one transaction. A row older than the stored one
    /// (by stream position) is skipped, so concurrent writers may commit in any order.
    pub async fn put_presence(&self, rows: &[PresenceRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut txn = self.begin_write().await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (user_id) DO UPDATE SET state = $2, status_msg = $3, last_active_ts = $4, stream_pos = $5
                 WHERE presence.stream_pos < $5",
            )
            .bind(&row.user_id)
            .bind(&row.state)
            .bind(&row.status_msg)
            .bind(row.last_active_ts)
            .bind(row.stream_pos)
            .execute(&mut *txn)
            .await
            .context("put presence")?;
        }
        txn.commit().await
    }

    /// Every persisted presence (loaded at startup).
    pub async fn all_presence(&self) -> Result<Vec<PresenceRow>> {
        let rows: Vec<(String, String, Option<String>, i64, i64)> =
            sqlx::query_as("SELECT user_id, state, status_msg, last_active_ts, stream_pos FROM presence")
                .fetch_all(self.pool())
                .await
                .context("load presence")?;
        Ok(rows
            .into_iter()
            .map(|(user_id, state, status_msg, last_active_ts, stream_pos)| PresenceRow {
                user_id,
                state,
                status_msg,
                last_active_ts,
                stream_pos,
            })
            .collect())
    }
}
