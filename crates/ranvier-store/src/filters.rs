//! Stored sync filters (`POST /user/{userId}/filter`): each user's filters are numbered from 0
//! and kept as the JSON definition.

use ranvier_core::{Result, error::Context};

use crate::Store;

impl Store {
    /// Store a filter definition for `user_id` and return its new id.
    pub async fn create_filter(&self, user_id: &str, filter_json: &str) -> Result<i64> {
        let mut txn = self.begin_write().await?;
        if self.backend() == crate::Backend::Postgres {
            // Serialise id allocation per user; SQLite already has a single writer.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("filters:{user_id}"))
                .execute(&mut *txn)
                .await
                .context("lock filter ids")?;
        }
        // The next id is computed inside the write transaction; on PostgreSQL two concurrent
        // creations for the same user may pick the same id, and the primary key makes the loser
        // retry below.
        for _ in 0..5 {
            let next: Option<i64> = sqlx::query_scalar("SELECT MAX(filter_id) FROM filters WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&mut *txn)
                .await
                .context("next filter id")?;
            let filter_id = next.map_or(0, |max| max + 1);
            let inserted = sqlx::query(
                "INSERT INTO filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(filter_id)
            .bind(filter_json)
            .execute(&mut *txn)
            .await
            .context("insert filter")?;
            if inserted.rows_affected() == 1 {
                txn.commit().await?;
                return Ok(filter_id);
            }
        }
        Err(ranvier_core::Error::internal("could not allocate a filter id"))
    }

    /// A stored filter's JSON, if `user_id` has one with that id.
    pub async fn get_filter(&self, user_id: &str, filter_id: i64) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT filter_json FROM filters WHERE user_id = $1 AND filter_id = $2")
            .bind(user_id)
            .bind(filter_id)
            .fetch_optional(self.pool())
            .await
            .context("get filter")
    }
}
