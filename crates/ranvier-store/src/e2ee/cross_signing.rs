//! Cross-signing keys and the signatures uploaded for device and cross-signing keys.
//!
//! A user has at most one key of each type (`master`, `self_signing`, `user_signing`).
//! Replacing a key drops the signatures made *of* it and *by* it: they belong to a key that is
//! no longer the user's.

use ranvier_core::{Result, error::Context};
use sqlx::AnyConnection;

use crate::{Store, StreamKind, e2ee::record_device_list_change};

/// The three kinds of cross-signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrossSigningKeyType {
    Master,
    SelfSigning,
    UserSigning,
}

impl CrossSigningKeyType {
    pub const ALL: [CrossSigningKeyType; 3] = [Self::Master, Self::SelfSigning, Self::UserSigning];

    /// The name stored in `key_type`, which is also the key's `usage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::SelfSigning => "self_signing",
            Self::UserSigning => "user_signing",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// A stored cross-signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrossSigningKeyRow {
    pub key_type: CrossSigningKeyType,
    /// The unpadded base64 public key (the key id without `ed25519:`).
    pub public_key: String,
    /// The key object as uploaded (canonical JSON), with the signatures it was uploaded with.
    pub key_json: String,
}

/// A signature to store: `signer_key_id` (`ed25519:...`) of the uploading user signed the key
/// `target_key_id` (a device id or a cross-signing public key) of `target_user_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSignature {
    pub target_user_id: String,
    pub target_key_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

/// A stored signature of one of a user's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSignature {
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

impl Store {
    /// A user's cross-signing keys.
    pub async fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<CrossSigningKeyRow>> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT key_type, public_key, key_json FROM e2e_cross_signing_keys WHERE user_id = $1 ORDER BY key_type",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("read cross-signing keys")?;
        Ok(rows
            .into_iter()
            .filter_map(|(key_type, public_key, key_json)| {
                Some(CrossSigningKeyRow { key_type: CrossSigningKeyType::parse(&key_type)?, public_key, key_json })
            })
            .collect())
    }

    /// Store cross-signing keys of a user, replacing those of the same types. Keys identical
    /// to the stored ones change nothing. A change is a device-list change: for everyone
    /// sharing a room with the user, except when only the user-signing key changed, which only
    /// the user sees. Returns whether anything changed.
    pub async fn set_cross_signing_keys(&self, user_id: &str, keys: &[CrossSigningKeyRow]) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut txn;
        let mut changed_public = false;
        let mut changed_private = false;
        for key in keys {
            let kind = key.key_type.as_str();
            let old: Option<(String, String)> = sqlx::query_as(
                "SELECT public_key, key_json FROM e2e_cross_signing_keys WHERE user_id = $1 AND key_type = $2",
            )
            .bind(user_id)
            .bind(kind)
            .fetch_optional(&mut *conn)
            .await
            .context("read cross-signing key")?;
            if old.as_ref().is_some_and(|(public_key, json)| *public_key == key.public_key && *json == key.key_json) {
                continue;
            }
            sqlx::query(
                "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json",
            )
            .bind(user_id)
            .bind(kind)
            .bind(&key.public_key)
            .bind(&key.key_json)
            .execute(&mut *conn)
            .await
            .context("store cross-signing key")?;
            if let Some((old_public, _)) = old
                && old_public != key.public_key
            {
                forget_key_signatures(conn, user_id, &old_public).await?;
            }
            match key.key_type {
                CrossSigningKeyType::UserSigning => changed_private = true,
                _ => changed_public = true,
            }
        }
        let guard = if changed_public || changed_private {
            let guard = self.streams().allocate(StreamKind::DeviceLists);
            let audience = if changed_public { None } else { Some(user_id) };
            record_device_list_change(conn, guard.position(), user_id, "", audience).await?;
            Some(guard)
        } else {
            None
        };
        txn.commit().await?;
        drop(guard);
        Ok(changed_public || changed_private)
    }

    /// Store signatures made by `signer_user_id` (already verified by the caller), replacing
    /// earlier signatures by the same key of the same target. Signatures of the signer's own
    /// keys are a device-list change for everyone sharing a room with them; signatures of
    /// another user's key are news only to the signer (whose user-signing key only they see).
    pub async fn add_signatures(&self, signer_user_id: &str, signatures: &[NewSignature]) -> Result<()> {
        if signatures.is_empty() {
            return Ok(());
        }
        let mut txn = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut txn;
        for signature in signatures {
            sqlx::query(
                "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) \
                 DO UPDATE SET signature = excluded.signature",
            )
            .bind(&signature.target_user_id)
            .bind(&signature.target_key_id)
            .bind(signer_user_id)
            .bind(&signature.signer_key_id)
            .bind(&signature.signature)
            .execute(&mut *conn)
            .await
            .context("store signature")?;
        }
        let guard = self.streams().allocate(StreamKind::DeviceLists);
        let mut targets: Vec<(&str, &str)> =
            signatures.iter().map(|s| (s.target_user_id.as_str(), s.target_key_id.as_str())).collect();
        targets.sort_unstable();
        targets.dedup();
        for (target_user_id, target_key_id) in targets {
            if target_user_id == signer_user_id {
                record_device_list_change(conn, guard.position(), target_user_id, target_key_id, None).await?;
            } else {
                record_device_list_change(conn, guard.position(), target_user_id, "", Some(signer_user_id)).await?;
            }
        }
        txn.commit().await?;
        drop(guard);
        Ok(())
    }

    /// The stored signatures of some of a user's keys (device ids or cross-signing public keys).
    pub async fn signatures_of(&self, target_user_id: &str, target_key_ids: &[String]) -> Result<Vec<StoredSignature>> {
        if target_key_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT target_key_id, signer_user_id, signer_key_id, signature FROM e2e_signatures \
             WHERE target_user_id = $1 ORDER BY target_key_id, signer_user_id, signer_key_id",
        )
        .bind(target_user_id)
        .fetch_all(self.pool())
        .await
        .context("read signatures")?;
        Ok(rows
            .into_iter()
            .filter(|(target_key_id, _, _, _)| target_key_ids.contains(target_key_id))
            .map(|(target_key_id, signer_user_id, signer_key_id, signature)| StoredSignature {
                target_key_id,
                signer_user_id,
                signer_key_id,
                signature,
            })
            .collect())
    }
}

/// Drop the signatures of a user's replaced cross-signing key and those it made.
async fn forget_key_signatures(conn: &mut AnyConnection, user_id: &str, public_key: &str) -> Result<()> {
    sqlx::query("DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2")
        .bind(user_id)
        .bind(public_key)
        .execute(&mut *conn)
        .await
        .context("drop signatures of replaced key")?;
    sqlx::query("DELETE FROM e2e_signatures WHERE signer_user_id = $1 AND signer_key_id = $2")
        .bind(user_id)
        .bind(format!("ed25519:{public_key}"))
        .execute(&mut *conn)
        .await
        .context("drop signatures by replaced key")?;
    Ok(())
}
