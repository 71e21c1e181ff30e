//! Users, devices, access tokens and shared-secret registration nonces.
//!
//! Access tokens are stored as their SHA-256 hash, so a copy of the database cannot be used to
//! impersonate users. Every function that removes tokens returns (or is given) the devices it
//! touched, so that the caller can evict them from its token cache.

use ranvier_core::{Result, error::Context, util::now_ms};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::{Store, flag, uia};

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

/// A device to create together with its first access token.
#[derive(Clone, Copy, Debug)]
pub struct NewDevice<'a> {
    pub device_id: &'a str,
    pub display_name: Option<&'a str>,
    pub access_token: &'a str,
}

/// Everything a registration writes, in one transaction.
#[derive(Clone, Copy, Debug)]
pub struct NewAccount<'a> {
    pub user_id: &'a str,
    pub password_hash: Option<&'a str>,
    pub admin: bool,
    /// The UIA session that authorised the registration. It is closed in the same transaction,
    /// and the registration token it holds (if any) moves from pending to completed.
    pub uia_session: Option<&'a str>,
    /// The first device, unless the client asked for `inhibit_login`.
    pub device: Option<NewDevice<'a>>,
}

/// What [`Store::create_account`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateAccount {
    Created,
    /// The user id is taken (by a live or a deactivated account); nothing was written.
    UserExists,
    /// The authorising UIA session no longer exists (it expired, or a concurrent request used
    /// it); nothing was written.
    SessionGone,
}

/// The hash under which a token is stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How long a shared-secret registration nonce stays usable.
pub const NONCE_LIFETIME_MS: i64 = 60_000;

impl Store {
    /// Create a user without a device; returns `false` if the id is taken.
    pub async fn create_user(&self, user_id: &str, password_hash: Option<&str>, admin: bool) -> Result<bool> {
        let account = NewAccount { user_id, password_hash, admin, uia_session: None, device: None };
        Ok(self.create_account(account).await? == CreateAccount::Created)
    }

    /// Register an account: the user, optionally its first device and token, and the closing of
    /// the UIA session that authorised it, all or nothing.
    pub async fn create_account(&self, account: NewAccount<'_>) -> Result<CreateAccount> {
        let mut txn = self.begin_write().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT user_id FROM users WHERE user_id = $1")
            .bind(account.user_id)
            .fetch_optional(&mut *txn)
            .await
            .context("check user exists")?;
        if exists.is_some() {
            return Ok(CreateAccount::UserExists);
        }
        if let Some(session_id) = account.uia_session
            && !uia::close_session(&mut txn, session_id, true).await?
        {
            return Ok(CreateAccount::SessionGone);
        }
        let now = now_ms();
        // Two registrations racing for the same id both pass the check above on PostgreSQL;
        // the primary key stops the second, which is then reported as taken.
        let inserted = sqlx::query(
            "INSERT INTO users (user_id, password_hash, created_ts, admin) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(account.user_id)
        .bind(account.password_hash)
        .bind(now)
        .bind(account.admin as i64)
        .execute(&mut *txn)
        .await
        .context("insert user")?;
        if inserted.rows_affected() == 0 {
            return Ok(CreateAccount::UserExists);
        }
        if let Some(device) = account.device {
            insert_device_with_token(&mut txn, account.user_id, device, now).await?;
        }
        // A new account is known by its localpart until it chooses a display name.
        let localpart = account.user_id.trim_start_matches('@').split(':').next().unwrap_or_default();
        crate::social::profiles::insert_initial_profile(&mut txn, account.user_id, localpart).await?;
        txn.commit().await?;
        Ok(CreateAccount::Created)
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
        self.change_password(user_id, password_hash, None).await.map(|_| ())
    }

    /// Replace a user's password hash and, with `keep_device`, delete every other device of the
    /// user (and its tokens). Returns the ids of the deleted devices.
    pub async fn change_password(
        &self,
        user_id: &str,
        password_hash: Option<&str>,
        keep_device: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut txn = self.begin_write().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut *txn)
            .await
            .context("set password")?;
        let mut deleted = Vec::new();
        if let Some(keep) = keep_device {
            deleted = sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1 AND device_id <> $2")
                .bind(user_id)
                .bind(keep)
                .fetch_all(&mut *txn)
                .await
                .context("list other devices")?;
            for sql in [
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2",
                "DELETE FROM devices WHERE user_id = $1 AND device_id <> $2",
                "DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id <> $2",
            ] {
                sqlx::query(sql).bind(user_id).bind(keep).execute(&mut *txn).await.context("log out other devices")?;
            }
        }
        txn.commit().await?;
        Ok(deleted)
    }

    /// Mark a user deactivated and remove their password, devices, tokens, UIA sessions and
    /// account data. The user row stays, so that the id can never be registered again.
    pub async fn deactivate_user(&self, user_id: &str) -> Result<()> {
        let mut txn = self.begin_write().await?;
        for sql in [
            "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1",
            "DELETE FROM access_tokens WHERE user_id = $1",
            "DELETE FROM devices WHERE user_id = $1",
            "DELETE FROM dehydrated_devices WHERE user_id = $1",
            "DELETE FROM uia_sessions WHERE user_id = $1",
            "DELETE FROM account_data WHERE user_id = $1",
        ] {
            sqlx::query(sql).bind(user_id).execute(&mut *txn).await.context("deactivate user")?;
        }
        txn.commit().await
    }

    /// Create (or keep) a device and issue a new access token for it. An existing device keeps
    /// its display name, and its old tokens are revoked.
    pub async fn create_device_with_token(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token: &str,
    ) -> Result<()> {
        let mut txn = self.begin_write().await?;
        let device = NewDevice { device_id, display_name, access_token: token };
        insert_device_with_token(&mut txn, user_id, device, now_ms()).await?;
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

    /// Delete one access token.
    pub async fn delete_token(&self, token: &str) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query("DELETE FROM access_tokens WHERE token_hash = $1")
            .bind(token_hash(token))
            .execute(&mut *txn)
            .await
            .context("delete access token")?;
        txn.commit().await
    }

    /// Delete a device and every token issued to it.
    pub async fn delete_device(&self, user_id: &str, device_id: &str) -> Result<()> {
        self.delete_devices(user_id, &[device_id]).await.map(|_| ())
    }

    /// Delete some devices of a user with their tokens; returns the ids that existed.
    pub async fn delete_devices(&self, user_id: &str, device_ids: &[&str]) -> Result<Vec<String>> {
        let mut txn = self.begin_write().await?;
        let mut deleted = Vec::new();
        for device_id in device_ids {
            sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .execute(&mut *txn)
                .await
                .context("delete device tokens")?;
            // A deleted dehydrated device is no longer the user's dehydrated device.
            sqlx::query("DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .execute(&mut *txn)
                .await
                .context("forget dehydrated device")?;
            let removed = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .execute(&mut *txn)
                .await
                .context("delete device")?;
            if removed.rows_affected() > 0 {
                deleted.push((*device_id).to_owned());
            }
        }
        txn.commit().await?;
        Ok(deleted)
    }

    /// Every device of a user.
    pub async fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRow>> {
        let rows: Vec<DeviceTuple> = sqlx::query_as(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("list devices")?;
        Ok(rows.into_iter().map(device_row).collect())
    }

    /// One device of a user.
    pub async fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRow>> {
        let row: Option<DeviceTuple> = sqlx::query_as(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(self.pool())
        .await
        .context("get device")?;
        Ok(row.map(device_row))
    }

    /// Rename a device; returns `false` if the user has no such device.
    pub async fn set_device_display_name(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let updated = sqlx::query("UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3")
            .bind(display_name)
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *txn)
            .await
            .context("rename device")?;
        txn.commit().await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Record a fresh shared-secret registration nonce, dropping expired ones.
    pub async fn create_registration_nonce(&self, nonce: &str) -> Result<()> {
        let now = now_ms();
        let mut txn = self.begin_write().await?;
        sqlx::query("DELETE FROM shared_secret_nonces WHERE created_ts <= $1")
            .bind(now - NONCE_LIFETIME_MS)
            .execute(&mut *txn)
            .await
            .context("expire nonces")?;
        sqlx::query("INSERT INTO shared_secret_nonces (nonce, created_ts) VALUES ($1, $2)")
            .bind(nonce)
            .bind(now)
            .execute(&mut *txn)
            .await
            .context("insert nonce")?;
        txn.commit().await
    }

    /// Use up a nonce; returns `false` if it is unknown, already used or expired.
    pub async fn take_registration_nonce(&self, nonce: &str) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let taken = sqlx::query("DELETE FROM shared_secret_nonces WHERE nonce = $1 AND created_ts > $2")
            .bind(nonce)
            .bind(now_ms() - NONCE_LIFETIME_MS)
            .execute(&mut *txn)
            .await
            .context("take nonce")?;
        txn.commit().await?;
        Ok(taken.rows_affected() > 0)
    }
}

/// A `devices` row as selected: id, display name, last seen timestamp and address.
type DeviceTuple = (String, Option<String>, Option<i64>, Option<String>);

fn device_row((device_id, display_name, last_seen_ts, last_seen_ip): DeviceTuple) -> DeviceRow {
    DeviceRow { device_id, display_name, last_seen_ts, last_seen_ip }
}

/// Insert (or keep) a device and give it a new token, revoking its old ones.
async fn insert_device_with_token(
    conn: &mut AnyConnection,
    user_id: &str,
    device: NewDevice<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = $4",
    )
    .bind(user_id)
    .bind(device.device_id)
    .bind(device.display_name)
    .bind(now)
    .execute(&mut *conn)
    .await
    .context("insert device")?;
    // Logging in again with an existing device id replaces that device's old tokens.
    sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device.device_id)
        .execute(&mut *conn)
        .await
        .context("replace device tokens")?;
    sqlx::query("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)")
        .bind(token_hash(device.access_token))
        .bind(user_id)
        .bind(device.device_id)
        .bind(now)
        .execute(&mut *conn)
        .await
        .context("insert access token")?;
    Ok(())
}
