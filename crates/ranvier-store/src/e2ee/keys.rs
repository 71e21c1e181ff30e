//! Device identity keys, one-time keys and fallback keys.
//!
//! One-time keys are claimed with a single `DELETE` per key: whichever claimer deletes the row
//! owns the key, so two claimers never receive the same one even when they race on different
//! connections (on PostgreSQL a loser's `DELETE` finds the row gone and it tries the next key).
//!
//! Every sync response carries the device's key counts, so they are cached per device
//! ([`KeyCountCache`]); the three writers of those tables (upload, claim, device deletion)
//! drop the devices they touched after their commit.

use ranvier_core::{Result, error::Context};
use sqlx::AnyConnection;

use crate::{
    Store, StreamKind,
    e2ee::{raise_to_device_high_water, record_device_list_change},
    keyed_cache::KeyedCache,
};

/// A one-time or fallback key to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    /// The algorithm, e.g. `signed_curve25519`.
    pub algorithm: String,
    /// The key id without the algorithm.
    pub key_id: String,
    /// The key object as canonical JSON.
    pub key_json: String,
}

/// Everything one `/keys/upload` stores, written in one transaction.
#[derive(Clone, Debug, Default)]
pub struct UploadKeys {
    /// The device's identity keys as canonical JSON, if uploaded.
    pub device_keys: Option<String>,
    pub one_time_keys: Vec<NewKey>,
    pub fallback_keys: Vec<NewKey>,
}

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Everything was stored; `device_keys_changed` when the identity keys are new or differ.
    Stored { device_keys_changed: bool },
    /// A one-time key id is already in use with different content; nothing was stored.
    OneTimeKeyConflict { key_id: String, existing: String },
}

/// A device's identity keys as stored, with the device's display name if it is a local device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDeviceKeys {
    pub device_id: String,
    pub key_json: String,
    pub display_name: Option<String>,
    /// Whether a row in `devices` stands behind the keys (always the case for a local device
    /// that was not deleted; never for a remote one).
    pub device_exists: bool,
}

/// A key handed out by [`Store::claim_keys`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKey {
    pub user_id: String,
    pub device_id: String,
    /// `algorithm:key_id`.
    pub full_key_id: String,
    pub key_json: String,
    pub fallback: bool,
}

/// One key wanted by a claimer: `(user_id, device_id, algorithm)`.
pub type ClaimRequest = (String, String, String);

/// How often a claim retries when concurrent claimers keep taking the key it picked.
const CLAIM_ATTEMPTS: usize = 16;

/// A device's one-time key counts per algorithm and its algorithms with an unused fallback
/// key (what [`Store::sync_key_counts`] answers).
pub type KeyCounts = (Vec<(String, i64)>, Vec<String>);

/// How many devices' counts the cache holds before it starts afresh.
pub(crate) const KEY_COUNT_CAPACITY: usize = 100_000;

/// The key counts of devices, by `(user_id, device_id)`.
pub(crate) type KeyCountCache = KeyedCache<(String, String), KeyCounts>;

impl Store {
    /// Store a device's uploaded keys. Identity keys that differ from the stored ones replace
    /// them, drop the signatures made of the old ones and count as a device-list change. A
    /// one-time key that is already stored unchanged is ignored; a fallback key replaces the
    /// previous one of its algorithm (and is unused again) unless it is the same key.
    pub async fn upload_keys(&self, user_id: &str, device_id: &str, upload: &UploadKeys) -> Result<UploadOutcome> {
        let mut txn = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut txn;
        let mut device_keys_changed = false;
        let mut position = None;
        if let Some(key_json) = &upload.device_keys {
            let old: Option<String> =
                sqlx::query_scalar("SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2")
                    .bind(user_id)
                    .bind(device_id)
                    .fetch_optional(&mut *conn)
                    .await
                    .context("read device keys")?;
            if old.as_deref() != Some(key_json.as_str()) {
                sqlx::query(
                    "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(key_json)
                .execute(&mut *conn)
                .await
                .context("store device keys")?;
                if old.is_some() {
                    // Signatures of the old keys do not sign the new ones.
                    sqlx::query("DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2")
                        .bind(user_id)
                        .bind(device_id)
                        .execute(&mut *conn)
                        .await
                        .context("drop signatures of replaced device keys")?;
                }
                let guard = self.streams().allocate(StreamKind::DeviceLists);
                record_device_list_change(conn, guard.position(), user_id, device_id, None).await?;
                position = Some(guard);
                device_keys_changed = true;
            }
        }
        if !upload.one_time_keys.is_empty() {
            let order: i64 = sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(upload_order) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2",
            )
            .bind(user_id)
            .bind(device_id)
            .fetch_one(&mut *conn)
            .await
            .context("read one-time key order")?
            .unwrap_or(0)
                + 1;
            for key in &upload.one_time_keys {
                let inserted = sqlx::query(
                    "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, upload_order) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(&key.algorithm)
                .bind(&key.key_id)
                .bind(&key.key_json)
                .bind(order)
                .execute(&mut *conn)
                .await
                .context("store one-time key")?;
                if inserted.rows_affected() == 0 {
                    let existing: Option<String> = sqlx::query_scalar(
                        "SELECT key_json FROM e2e_one_time_keys \
                         WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
                    )
                    .bind(user_id)
                    .bind(device_id)
                    .bind(&key.algorithm)
                    .bind(&key.key_id)
                    .fetch_optional(&mut *conn)
                    .await
                    .context("read one-time key")?;
                    if let Some(existing) = existing
                        && existing != key.key_json
                    {
                        // Dropping the transaction rolls everything back.
                        return Ok(UploadOutcome::OneTimeKeyConflict {
                            key_id: format!("{}:{}", key.algorithm, key.key_id),
                            existing,
                        });
                    }
                }
            }
        }
        for key in &upload.fallback_keys {
            sqlx::query(
                "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) \
                 VALUES ($1, $2, $3, $4, $5, 0) \
                 ON CONFLICT (user_id, device_id, algorithm) DO UPDATE \
                 SET key_id = excluded.key_id, key_json = excluded.key_json, used = 0 \
                 WHERE e2e_fallback_keys.key_id <> excluded.key_id OR e2e_fallback_keys.key_json <> excluded.key_json",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(&key.algorithm)
            .bind(&key.key_id)
            .bind(&key.key_json)
            .execute(&mut *conn)
            .await
            .context("store fallback key")?;
        }
        txn.commit().await?;
        self.key_count_cache().invalidate([(user_id.to_owned(), device_id.to_owned())]);
        drop(position);
        Ok(UploadOutcome::Stored { device_keys_changed })
    }

    /// The number of unclaimed one-time keys of a device, per algorithm.
    pub async fn one_time_key_counts(&self, user_id: &str, device_id: &str) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 \
             GROUP BY algorithm ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await
        .context("count one-time keys")
    }

    /// The algorithms for which a device has a fallback key that has not been claimed.
    pub async fn unused_fallback_key_algorithms(&self, user_id: &str, device_id: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 \
             ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await
        .context("unused fallback keys")
    }

    /// Both key counts a sync response carries, in one round trip: the one-time keys per
    /// algorithm (as [`Self::one_time_key_counts`]) and the algorithms with an unclaimed
    /// fallback key (as [`Self::unused_fallback_key_algorithms`]).
    /// Cached per device.
    pub async fn sync_key_counts(&self, user_id: &str, device_id: &str) -> Result<KeyCounts> {
        let cache = self.key_count_cache();
        let key = (user_id.to_owned(), device_id.to_owned());
        if let Some(counts) = cache.get(&key) {
            return Ok(counts);
        }
        let generation = cache.generation();
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT 0, algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 \
             GROUP BY algorithm \
             UNION ALL \
             SELECT 1, algorithm, 0 FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 \
             ORDER BY 1, 2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(self.pool())
        .await
        .context("count device keys")?;
        let mut one_time = Vec::new();
        let mut fallback = Vec::new();
        for (kind, algorithm, count) in rows {
            if kind == 0 {
                one_time.push((algorithm, count));
            } else {
                fallback.push(algorithm);
            }
        }
        let counts = (one_time, fallback);
        cache.insert(generation, key, counts.clone());
        Ok(counts)
    }

    /// The identity keys of a user's devices: of `device_ids`, or of all devices when empty.
    pub async fn device_keys(&self, user_id: &str, device_ids: &[String]) -> Result<Vec<StoredDeviceKeys>> {
        let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT k.device_id, k.key_json, d.display_name, d.device_id FROM e2e_device_keys k \
             LEFT JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id \
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("read device keys")?;
        Ok(rows
            .into_iter()
            .filter(|(device_id, _, _, _)| device_ids.is_empty() || device_ids.contains(device_id))
            .map(|(device_id, key_json, display_name, device)| StoredDeviceKeys {
                device_id,
                key_json,
                display_name,
                device_exists: device.is_some(),
            })
            .collect())
    }

    /// Claim one key for each request: the oldest unclaimed one-time key of the algorithm,
    /// which is deleted, or else the device's fallback key of the algorithm, which is marked
    /// used and stays. Requests that find neither are left out.
    pub async fn claim_keys(&self, requests: &[ClaimRequest]) -> Result<Vec<ClaimedKey>> {
        let mut claimed = Vec::new();
        if requests.is_empty() {
            return Ok(claimed);
        }
        let mut txn = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut txn;
        for (user_id, device_id, algorithm) in requests {
            if let Some((key_id, key_json)) = claim_one_time_key(conn, user_id, device_id, algorithm).await? {
                claimed.push(ClaimedKey {
                    user_id: user_id.clone(),
                    device_id: device_id.clone(),
                    full_key_id: format!("{algorithm}:{key_id}"),
                    key_json,
                    fallback: false,
                });
                continue;
            }
            let fallback: Option<(String, String)> = sqlx::query_as(
                "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(algorithm)
            .fetch_optional(&mut *conn)
            .await
            .context("read fallback key")?;
            if let Some((key_id, key_json)) = fallback {
                sqlx::query(
                    "UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(algorithm)
                .execute(&mut *conn)
                .await
                .context("mark fallback key used")?;
                claimed.push(ClaimedKey {
                    user_id: user_id.clone(),
                    device_id: device_id.clone(),
                    full_key_id: format!("{algorithm}:{key_id}"),
                    key_json,
                    fallback: true,
                });
            }
        }
        txn.commit().await?;
        self.key_count_cache()
            .invalidate(requests.iter().map(|(user_id, device_id, _)| (user_id.clone(), device_id.clone())));
        Ok(claimed)
    }
}

impl Store {
    /// The devices of a user that have any end-to-end encryption data (keys or an inbox),
    /// whether or not the device itself still exists.
    pub async fn e2ee_device_ids(&self, user_id: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT device_id FROM e2e_device_keys WHERE user_id = $1 \
             UNION SELECT device_id FROM e2e_one_time_keys WHERE user_id = $1 \
             UNION SELECT device_id FROM e2e_fallback_keys WHERE user_id = $1 \
             UNION SELECT device_id FROM to_device_inbox WHERE user_id = $1 \
             ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("devices with e2ee data")
    }

    /// Forget everything end-to-end encryption holds for a device: its identity, one-time and
    /// fallback keys, the signatures of its keys, its to-device inbox and transaction ids.
    /// Returns whether it had identity keys; their removal is then a device-list change,
    /// recorded here.
    pub async fn delete_device_e2ee(&self, user_id: &str, device_id: &str) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut txn;
        let had_keys = sqlx::query("DELETE FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *conn)
            .await
            .context("delete device keys")?
            .rows_affected()
            > 0;
        for sql in [
            "DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2",
            "DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2",
        ] {
            sqlx::query(sql).bind(user_id).bind(device_id).execute(&mut *conn).await.context("delete device data")?;
        }
        let highest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM to_device_inbox WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .fetch_one(&mut *conn)
                .await
                .context("read device inbox")?;
        if let Some(highest) = highest {
            sqlx::query("DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2")
                .bind(user_id)
                .bind(device_id)
                .execute(&mut *conn)
                .await
                .context("delete device inbox")?;
            raise_to_device_high_water(conn, highest).await?;
        }
        let guard = if had_keys {
            let guard = self.streams().allocate(StreamKind::DeviceLists);
            record_device_list_change(conn, guard.position(), user_id, device_id, None).await?;
            Some(guard)
        } else {
            None
        };
        txn.commit().await?;
        self.key_count_cache().invalidate([(user_id.to_owned(), device_id.to_owned())]);
        drop(guard);
        Ok(had_keys)
    }
}

/// Take the oldest one-time key of `algorithm` from a device, if any is left.
async fn claim_one_time_key(
    conn: &mut AnyConnection,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<(String, String)>> {
    for _ in 0..CLAIM_ATTEMPTS {
        let candidate: Option<String> = sqlx::query_scalar(
            "SELECT key_id FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
             ORDER BY upload_order, key_id LIMIT 1",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&mut *conn)
        .await
        .context("pick one-time key")?;
        let Some(key_id) = candidate else {
            return Ok(None);
        };
        let taken: Option<String> = sqlx::query_scalar(
            "DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4 \
             RETURNING key_json",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .bind(&key_id)
        .fetch_optional(&mut *conn)
        .await
        .context("claim one-time key")?;
        if let Some(key_json) = taken {
            return Ok(Some((key_id, key_json)));
        }
        // Another claimer took it first; pick again.
    }
    Ok(None)
}
