//! Local room aliases.

use ranvier_core::{Result, error::Context, util::now_ms};

use crate::Store;

/// What [`Store::create_alias`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateAlias {
    Created,
    /// The alias already points at a room; nothing was written.
    Taken,
}

impl Store {
    /// Point `alias` at `room_id`, unless it is taken.
    pub async fn create_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<CreateAlias> {
        let mut txn = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (alias) DO NOTHING",
        )
        .bind(alias)
        .bind(room_id)
        .bind(creator)
        .bind(now_ms())
        .execute(&mut *txn)
        .await
        .context("create alias")?
        .rows_affected();
        txn.commit().await?;
        Ok(if inserted > 0 { CreateAlias::Created } else { CreateAlias::Taken })
    }

    /// The room an alias points at and who created the alias.
    pub async fn alias(&self, alias: &str) -> Result<Option<(String, String)>> {
        sqlx::query_as("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(self.pool())
            .await
            .context("get alias")
    }

    /// Remove an alias; `false` if it did not exist.
    pub async fn delete_alias(&self, alias: &str) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .execute(&mut *txn)
            .await
            .context("delete alias")?
            .rows_affected();
        txn.commit().await?;
        Ok(deleted > 0)
    }

    /// The local aliases of a room, in alias order.
    pub async fn room_aliases(&self, room_id: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
            .bind(room_id)
            .fetch_all(self.pool())
            .await
            .context("room aliases")
    }

    /// Point every local alias of `from` at `to` (room upgrades); returns the moved aliases.
    pub async fn move_aliases(&self, from: &str, to: &str) -> Result<Vec<String>> {
        let mut txn = self.begin_write().await?;
        let aliases: Vec<String> =
            sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
                .bind(from)
                .fetch_all(&mut *txn)
                .await
                .context("aliases to move")?;
        sqlx::query("UPDATE room_aliases SET room_id = $2 WHERE room_id = $1")
            .bind(from)
            .bind(to)
            .execute(&mut *txn)
            .await
            .context("move aliases")?;
        txn.commit().await?;
        Ok(aliases)
    }
}
