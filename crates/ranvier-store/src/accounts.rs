//! Users, devices, access tokens, filters, UIA sessions and registration tokens.
//!
//! Access tokens are stored as their SHA-256 hash, so a copy of the database cannot be used to
//! impersonate users.

use ranvier_core::{Result, error::Context, util::now_ms};
use sha2::{Digest, Sha256};

use crate::{Store, flag};

/// One account.
#[derive(Clone, Debug)]
pub struct UserRow {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub created_ts: i64,
    pub deactivated: bool,
    pub admin: bool,
}

/// One device of a user.
#[derive(Clone, Debug)]
pub struct DeviceRow {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

/// The identity an access token stands for.
#[derive(Clone, Debug)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
}

/// The hash under which a token is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Create a user; returns `false` if the id is taken.
    pub async fn create_user(&self, user_id: &str, password_hash: Option<&str>, admin: bool) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT user_id FROM users WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&mut **txn)
            .await
            .context("check user exists")?;
        if exists.is_some() {
            return Ok(false);
        }
        sqlx::query("INSERT INTO users (user_id, password_hash, created_ts, admin) VALUES ($1, $2, $3, $4)")
            .bind(user_id)
            .bind(password_hash)
            .bind(now_ms())
            .bind(admin as i64)
            .execute(&mut **txn)
            .await
            .context("insert user")?;
        txn.commit().await?;
        Ok(true)
    }

    /// Look a user up by full id.
    pub async fn get_user(&self, user_id: &str) -> Result<Option<UserRow>> {
        let row: Option<(String, Option<String>, i64, i64, i64)> = sqlx::query_as(
            "SELECT user_id, password_hash, created_ts, deactivated, admin FROM users WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await
        .context("get user")?;
        Ok(row.map(|(user_id, password_hash, created_ts, deactivated, admin)| UserRow {
            user_id,
            password_hash,
            created_ts,
            deactivated: flag(deactivated),
            admin: flag(admin),
        }))
    }

    /// Replace a user's password hash.
    pub async fn set_password_hash(&self, user_id: &str, password_hash: Option<&str>) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut **txn)
            .await
            .context("set password")?;
        txn.commit().await
    }

    /// Mark a user deactivated and remove their password, devices and tokens.
    pub async fn deactivate_user(&self, user_id: &str) -> Result<()> {
        let mut txn = self.begin_write().await?;
        for sql in [
            "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1",
            "DELETE FROM access_tokens WHERE user_id = $1",
            "DELETE FROM devices WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(user_id).execute(&mut **txn).await.context("deactivate user")?;
        }
        txn.commit().await
    }

    /// Create (or keep) a device and issue a new access token for it.
    pub async fn create_device_with_token(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token: &str,
    ) -> Result<()> {
        let now = now_ms();
        let mut txn = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(display_name)
        .bind(now)
        .execute(&mut **txn)
        .await
        .context("insert device")?;
        // Logging in again with an existing device id replaces that device's old tokens.
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut **txn)
            .await
            .context("replace device tokens")?;
        sqlx::query("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)")
            .bind(token_hash(token))
            .bind(user_id)
            .bind(device_id)
            .bind(now)
            .execute(&mut **txn)
            .await
            .context("insert access token")?;
        txn.commit().await
    }

    /// Who an access token belongs to, if it is valid.
    pub async fn token_owner(&self, token: &str) -> Result<Option<TokenOwner>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT user_id, device_id FROM access_tokens WHERE token_hash = $1")
                .bind(token_hash(token))
                .fetch_optional(self.pool())
                .await
                .context("look up access token")?;
        Ok(row.map(|(user_id, device_id)| TokenOwner { user_id, device_id }))
    }

    /// Delete one access token (logout).
    pub async fn delete_token(&self, token: &str) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query("DELETE FROM access_tokens WHERE token_hash = $1")
            .bind(token_hash(token))
            .execute(&mut **txn)
            .await
            .context("delete access token")?;
        txn.commit().await
    }

    /// Delete a device and every token issued to it.
    pub async fn delete_device(&self, user_id: &str, device_id: &str) -> Result<()> {
        let mut txn = self.begin_write().await?;
        for sql in [
            "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
        ] {
            sqlx::query(sql).bind(user_id).bind(device_id).execute(&mut **txn).await.context("delete device")?;
        }
        txn.commit().await
    }

    /// Every device of a user.
    pub async fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRow>> {
        let rows: Vec<(String, Option<String>, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("list devices")?;
        Ok(rows
            .into_iter()
            .map(|(device_id, display_name, last_seen_ts, last_seen_ip)| DeviceRow {
                device_id,
                display_name,
                last_seen_ts,
                last_seen_ip,
            })
            .collect())
    }
}
