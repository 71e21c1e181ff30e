//! Server-side key backups: versions (with their `auth_data`) and the session keys stored in
//! them.
//!
//! Keys may only be written to a user's current version (the newest one not deleted); the
//! check happens inside the write transaction, so a version deleted or superseded meanwhile is
//! never written to. Which of two keys for one session is kept is the caller's rule, applied
//! inside the same transaction.

use ranvier_core::{Result, error::Context};
use sqlx::AnyConnection;

use crate::{Store, flag};

/// A backup version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    /// `auth_data` as JSON.
    pub auth_data: String,
    /// Counts changes to the version's keys.
    pub etag: i64,
}

/// One backed-up session key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupKey {
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// `session_data` as JSON.
    pub session_data: String,
}

/// A session key to store: `(room_id, session_id, key)`.
pub type NewBackupKey = (String, String, BackupKey);

/// Where a key write found the version it was aimed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupWrite {
    /// Written (or kept); the version's etag and key count afterwards.
    Done { etag: i64, count: i64 },
    /// The version exists but is not the current one.
    NotCurrent { current: i64 },
    /// No such version (never created, or deleted).
    UnknownVersion,
}

/// Which keys of a version a read or delete covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupScope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

impl BackupScope<'_> {
    /// The extra `WHERE` clause and its parameters, numbered from `$3`.
    fn clause(&self) -> (&'static str, Vec<&str>) {
        match *self {
            BackupScope::All => ("", vec![]),
            BackupScope::Room(room_id) => (" AND room_id = $3", vec![room_id]),
            BackupScope::Session(room_id, session_id) => {
                (" AND room_id = $3 AND session_id = $4", vec![room_id, session_id])
            }
        }
    }
}

type VersionTuple = (i64, String, String, i64);

fn to_version((version, algorithm, auth_data, etag): VersionTuple) -> BackupVersion {
    BackupVersion { version, algorithm, auth_data, etag }
}

impl Store {
    /// Create a new backup version, which becomes the current one. Version numbers grow and
    /// are never reused, even after deletion.
    pub async fn create_backup_version(&self, user_id: &str, algorithm: &str, auth_data: &str) -> Result<i64> {
        let mut txn = self.begin_write().await?;
        // A concurrent creation (PostgreSQL) may take the number first: then take the next.
        loop {
            let latest: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM e2e_backup_versions WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&mut *txn)
                    .await
                    .context("read backup versions")?;
            let version = latest.unwrap_or(0) + 1;
            let inserted = sqlx::query(
                "INSERT INTO e2e_backup_versions (user_id, version, algorithm, auth_data, etag, deleted) \
                 VALUES ($1, $2, $3, $4, 0, 0) ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(version)
            .bind(algorithm)
            .bind(auth_data)
            .execute(&mut *txn)
            .await
            .context("create backup version")?;
            if inserted.rows_affected() > 0 {
                txn.commit().await?;
                return Ok(version);
            }
        }
    }

    /// The current backup version of a user, if any.
    pub async fn current_backup_version(&self, user_id: &str) -> Result<Option<BackupVersion>> {
        let mut conn = self.conn().await?;
        current_version(&mut conn, user_id).await
    }

    /// A backup version by number, unless it was deleted.
    pub async fn backup_version(&self, user_id: &str, version: i64) -> Result<Option<BackupVersion>> {
        let row: Option<VersionTuple> = sqlx::query_as(
            "SELECT version, algorithm, auth_data, etag FROM e2e_backup_versions \
             WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .fetch_optional(self.pool())
        .await
        .context("read backup version")?;
        Ok(row.map(to_version))
    }

    /// Whether a version number was ever created for the user (deleted or not).
    pub async fn backup_version_existed(&self, user_id: &str, version: i64) -> Result<bool> {
        let row: Option<i64> =
            sqlx::query_scalar("SELECT version FROM e2e_backup_versions WHERE user_id = $1 AND version = $2")
                .bind(user_id)
                .bind(version)
                .fetch_optional(self.pool())
                .await
                .context("read backup version")?;
        Ok(row.is_some())
    }

    /// Replace the `auth_data` of a version that is not deleted. Returns whether it exists.
    pub async fn update_backup_auth_data(&self, user_id: &str, version: i64, auth_data: &str) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE e2e_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .bind(auth_data)
        .execute(&mut *txn)
        .await
        .context("update backup version")?;
        txn.commit().await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Delete a version and its keys. Returns `false` when the version never existed;
    /// deleting a deleted version again is fine.
    pub async fn delete_backup_version(&self, user_id: &str, version: i64) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let updated = sqlx::query("UPDATE e2e_backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *txn)
            .await
            .context("delete backup version")?;
        sqlx::query("DELETE FROM e2e_backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *txn)
            .await
            .context("delete backup keys")?;
        txn.commit().await?;
        Ok(updated.rows_affected() > 0)
    }

    /// The number of keys stored in a version.
    pub async fn backup_key_count(&self, user_id: &str, version: i64) -> Result<i64> {
        let mut conn = self.conn().await?;
        key_count(&mut conn, user_id, version).await
    }

    /// Store keys in the user's current version. For a session that already has a key,
    /// `replaces(existing, new)` decides whether the new one is kept instead. The etag moves
    /// when any key was added or replaced.
    pub async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[NewBackupKey],
        replaces: impl Fn(&BackupKey, &BackupKey) -> bool + Send,
    ) -> Result<BackupWrite> {
        let mut txn = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut txn;
        let Some(current) = current_version(conn, user_id).await? else {
            return Ok(BackupWrite::UnknownVersion);
        };
        if current.version != version {
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM e2e_backup_versions WHERE user_id = $1 AND version = $2 AND deleted = 0",
            )
            .bind(user_id)
            .bind(version)
            .fetch_optional(&mut *conn)
            .await
            .context("read backup version")?;
            return Ok(match exists {
                Some(_) => BackupWrite::NotCurrent { current: current.version },
                None => BackupWrite::UnknownVersion,
            });
        }
        let mut changed = false;
        for (room_id, session_id, key) in keys {
            let existing: Option<(i64, i64, i64, String)> = sqlx::query_as(
                "SELECT first_message_index, forwarded_count, is_verified, session_data FROM e2e_backup_keys \
                 WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id)
            .bind(version)
            .bind(room_id)
            .bind(session_id)
            .fetch_optional(&mut *conn)
            .await
            .context("read backup key")?;
            let existing = existing.map(|(first_message_index, forwarded_count, is_verified, session_data)| {
                BackupKey { first_message_index, forwarded_count, is_verified: flag(is_verified), session_data }
            });
            if existing.as_ref().is_some_and(|existing| !replaces(existing, key)) {
                continue;
            }
            sqlx::query(
                "INSERT INTO e2e_backup_keys (user_id, version, room_id, session_id, first_message_index, \
                 forwarded_count, is_verified, session_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
                 first_message_index = excluded.first_message_index, forwarded_count = excluded.forwarded_count, \
                 is_verified = excluded.is_verified, session_data = excluded.session_data",
            )
            .bind(user_id)
            .bind(version)
            .bind(room_id)
            .bind(session_id)
            .bind(key.first_message_index)
            .bind(key.forwarded_count)
            .bind(i64::from(key.is_verified))
            .bind(&key.session_data)
            .execute(&mut *conn)
            .await
            .context("store backup key")?;
            changed = true;
        }
        let etag = if changed { bump_etag(conn, user_id, version).await? } else { current.etag };
        let count = key_count(conn, user_id, version).await?;
        txn.commit().await?;
        Ok(BackupWrite::Done { etag, count })
    }

    /// The keys of a version within `scope`: `(room_id, session_id, key)`, ordered.
    pub async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> Result<Vec<(String, String, BackupKey)>> {
        let (clause, params) = scope.clause();
        let sql = format!(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data \
             FROM e2e_backup_keys WHERE user_id = $1 AND version = $2{clause} ORDER BY room_id, session_id"
        );
        let mut query = sqlx::query_as::<_, (String, String, i64, i64, i64, String)>(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(version);
        for param in params {
            query = query.bind(param);
        }
        let rows = query.fetch_all(self.pool()).await.context("read backup keys")?;
        Ok(rows
            .into_iter()
            .map(|(room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)| {
                let key =
                    BackupKey { first_message_index, forwarded_count, is_verified: flag(is_verified), session_data };
                (room_id, session_id, key)
            })
            .collect())
    }

    /// Delete the keys of a version within `scope`. `None` when the version does not exist
    /// (or was deleted); otherwise its etag and key count afterwards.
    pub async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: BackupScope<'_>,
    ) -> Result<Option<(i64, i64)>> {
        let mut txn = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut txn;
        let etag: Option<i64> = sqlx::query_scalar(
            "SELECT etag FROM e2e_backup_versions WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .fetch_optional(&mut *conn)
        .await
        .context("read backup version")?;
        let Some(mut etag) = etag else {
            return Ok(None);
        };
        let (clause, params) = scope.clause();
        let sql = format!("DELETE FROM e2e_backup_keys WHERE user_id = $1 AND version = $2{clause}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(version);
        for param in params {
            query = query.bind(param);
        }
        let deleted = query.execute(&mut *conn).await.context("delete backup keys")?.rows_affected();
        if deleted > 0 {
            etag = bump_etag(conn, user_id, version).await?;
        }
        let count = key_count(conn, user_id, version).await?;
        txn.commit().await?;
        Ok(Some((etag, count)))
    }
}

async fn current_version(conn: &mut AnyConnection, user_id: &str) -> Result<Option<BackupVersion>> {
    let row: Option<VersionTuple> = sqlx::query_as(
        "SELECT version, algorithm, auth_data, etag FROM e2e_backup_versions \
         WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await
    .context("read current backup version")?;
    Ok(row.map(to_version))
}

async fn key_count(conn: &mut AnyConnection, user_id: &str, version: i64) -> Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM e2e_backup_keys WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .fetch_one(conn)
        .await
        .context("count backup keys")
}

async fn bump_etag(conn: &mut AnyConnection, user_id: &str, version: i64) -> Result<i64> {
    sqlx::query_scalar(
        "UPDATE e2e_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2 RETURNING etag",
    )
    .bind(user_id)
    .bind(version)
    .fetch_one(conn)
    .await
    .context("bump backup etag")
}
