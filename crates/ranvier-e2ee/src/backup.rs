//! Server-side key backups: `/room_keys/version` and `/room_keys/keys`.
//!
//! Versions are numbers per user, given to clients as strings; a string that is not one of
//! our numbers is simply an unknown version (`404 M_NOT_FOUND`). Keys may only be written to
//! the current version (`403 M_WRONG_ROOM_KEYS_VERSION` with `current_version` otherwise),
//! and a session's key is only replaced by a better one ([`replaces`]).

use std::collections::BTreeMap;

use ranvier_core::{Error, Result, error::ErrorKind};
use ranvier_store::e2ee::backup::{BackupKey, BackupScope, BackupWrite, NewBackupKey};
use ruma::{
    OwnedRoomId, UInt, UserId,
    api::{
        client::backup::{BackupAlgorithm, KeyBackupData},
        error::WrongRoomKeysVersionErrorData,
    },
    serde::Raw,
};
use serde::Deserialize;
use serde_json::{Map, Value, json, value::RawValue};

use crate::E2ee;

/// A backup version as the API shows it.
#[derive(Debug)]
pub struct BackupInfo {
    /// `algorithm` and `auth_data`.
    pub algorithm: Raw<BackupAlgorithm>,
    pub count: UInt,
    pub etag: String,
    pub version: String,
}

/// The etag and key count a key write or delete answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupCount {
    pub etag: String,
    pub count: UInt,
}

/// Backed-up keys, per room and session.
pub type RoomKeys = BTreeMap<OwnedRoomId, BTreeMap<String, Raw<KeyBackupData>>>;

/// The spec's rule for two keys of one session: keep the verified one; else the one with the
/// lower `first_message_index`; else the one with the lower `forwarded_count`. The existing
/// key stays when they are equal on all three.
pub fn replaces(existing: &BackupKey, new: &BackupKey) -> bool {
    if existing.is_verified != new.is_verified {
        return new.is_verified;
    }
    if existing.first_message_index != new.first_message_index {
        return new.first_message_index < existing.first_message_index;
    }
    new.forwarded_count < existing.forwarded_count
}

/// `algorithm` and `auth_data` of a version.
#[derive(Deserialize)]
struct AlgorithmBody {
    algorithm: String,
    auth_data: Map<String, Value>,
    #[serde(default)]
    version: Option<String>,
}

/// One session's uploaded key data. `session_data` is kept as sent: its shape depends on the
/// backup algorithm.
#[derive(Deserialize)]
struct KeyBody {
    first_message_index: u64,
    forwarded_count: u64,
    is_verified: bool,
    session_data: Map<String, Value>,
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// A version string as our number, or `M_NOT_FOUND`.
fn version_number(version: &str) -> Result<i64> {
    version.parse::<i64>().ok().filter(|v| *v > 0 && v.to_string() == version).ok_or_else(unknown_version)
}

fn parse_algorithm(raw: &Raw<BackupAlgorithm>) -> Result<AlgorithmBody> {
    serde_json::from_str(raw.json().get())
        .map_err(|e| Error::bad_json(format!("A backup needs `algorithm` and an `auth_data` object: {e}")))
}

fn count(count: i64) -> UInt {
    UInt::try_from(count).unwrap_or_default()
}

impl E2ee {
    /// `POST /room_keys/version`: a new version, which becomes the current one.
    pub async fn create_backup(&self, user_id: &UserId, algorithm: &Raw<BackupAlgorithm>) -> Result<String> {
        let body = parse_algorithm(algorithm)?;
        let auth_data = Value::Object(body.auth_data).to_string();
        let version = self.store().create_backup_version(user_id.as_str(), &body.algorithm, &auth_data).await?;
        Ok(version.to_string())
    }

    /// `GET /room_keys/version[/{version}]`: a version (the current one when `None`).
    pub async fn backup_info(&self, user_id: &UserId, version: Option<&str>) -> Result<BackupInfo> {
        let stored = match version {
            None => self
                .store()
                .current_backup_version(user_id.as_str())
                .await?
                .ok_or_else(|| Error::not_found("No current backup version"))?,
            Some(version) => self
                .store()
                .backup_version(user_id.as_str(), version_number(version)?)
                .await?
                .ok_or_else(unknown_version)?,
        };
        let auth_data: Value = serde_json::from_str(&stored.auth_data)
            .map_err(|e| Error::internal(format!("stored backup auth_data: {e}")))?;
        let algorithm =
            serde_json::value::to_raw_value(&json!({ "algorithm": stored.algorithm, "auth_data": auth_data }))
                .map(Raw::from_json)
                .map_err(|e| Error::internal(format!("serialise backup algorithm: {e}")))?;
        let keys = self.store().backup_key_count(user_id.as_str(), stored.version).await?;
        Ok(BackupInfo {
            algorithm,
            count: count(keys),
            etag: stored.etag.to_string(),
            version: stored.version.to_string(),
        })
    }

    /// `PUT /room_keys/version/{version}`: replace a version's `auth_data`. The algorithm must
    /// stay the same, and a `version` in the body must be the one in the path.
    pub async fn update_backup(&self, user_id: &UserId, version: &str, algorithm: &Raw<BackupAlgorithm>) -> Result<()> {
        let body = parse_algorithm(algorithm)?;
        let number = version_number(version)?;
        if body.version.as_deref().is_some_and(|v| v != version) {
            return Err(Error::invalid_param("The version in the body does not match the version in the path"));
        }
        let stored = self.store().backup_version(user_id.as_str(), number).await?.ok_or_else(unknown_version)?;
        if stored.algorithm != body.algorithm {
            return Err(Error::invalid_param("Algorithm does not match"));
        }
        let auth_data = Value::Object(body.auth_data).to_string();
        if !self.store().update_backup_auth_data(user_id.as_str(), number, &auth_data).await? {
            return Err(unknown_version());
        }
        Ok(())
    }

    /// `DELETE /room_keys/version/{version}`: delete a version and its keys. Deleting a
    /// version that was already deleted succeeds.
    pub async fn delete_backup(&self, user_id: &UserId, version: &str) -> Result<()> {
        let number = version_number(version)?;
        if !self.store().delete_backup_version(user_id.as_str(), number).await? {
            return Err(unknown_version());
        }
        Ok(())
    }

    /// `PUT /room_keys/keys[/{roomId}[/{sessionId}]]`: store keys in the current version.
    pub async fn put_backup_keys(&self, user_id: &UserId, version: &str, keys: &RoomKeys) -> Result<BackupCount> {
        let number = version_number(version)?;
        let mut new_keys: Vec<NewBackupKey> = Vec::new();
        for (room_id, sessions) in keys {
            for (session_id, data) in sessions {
                let body: KeyBody = serde_json::from_str(data.json().get())
                    .map_err(|e| Error::bad_json(format!("Invalid key data for session {session_id}: {e}")))?;
                let key = BackupKey {
                    first_message_index: i64::try_from(body.first_message_index)
                        .map_err(|_| Error::bad_json("first_message_index is too large"))?,
                    forwarded_count: i64::try_from(body.forwarded_count)
                        .map_err(|_| Error::bad_json("forwarded_count is too large"))?,
                    is_verified: body.is_verified,
                    session_data: Value::Object(body.session_data).to_string(),
                };
                new_keys.push((room_id.to_string(), session_id.clone(), key));
            }
        }
        match self.store().put_backup_keys(user_id.as_str(), number, &new_keys, replaces).await? {
            BackupWrite::Done { etag, count: keys } => Ok(BackupCount { etag: etag.to_string(), count: count(keys) }),
            BackupWrite::NotCurrent { current } => Err(Error::matrix(
                ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(current.to_string())),
                "Wrong backup version.",
            )),
            BackupWrite::UnknownVersion => Err(unknown_version()),
        }
    }

    /// `GET /room_keys/keys[/{roomId}[/{sessionId}]]`: the keys of a version within `scope`.
    pub async fn get_backup_keys(&self, user_id: &UserId, version: &str, scope: BackupScope<'_>) -> Result<RoomKeys> {
        let number = version_number(version)?;
        if self.store().backup_version(user_id.as_str(), number).await?.is_none() {
            return Err(unknown_version());
        }
        let mut rooms: RoomKeys = BTreeMap::new();
        for (room_id, session_id, key) in self.store().backup_keys(user_id.as_str(), number, scope).await? {
            let Ok(room_id) = OwnedRoomId::try_from(room_id) else { continue };
            let session_data: Value = serde_json::from_str(&key.session_data)
                .map_err(|e| Error::internal(format!("stored backup session data: {e}")))?;
            let data = json!({
                "first_message_index": key.first_message_index,
                "forwarded_count": key.forwarded_count,
                "is_verified": key.is_verified,
                "session_data": session_data,
            });
            let raw = RawValue::from_string(data.to_string())
                .map_err(|e| Error::internal(format!("serialise backup key: {e}")))?;
            rooms.entry(room_id).or_default().insert(session_id, Raw::from_json(raw));
        }
        Ok(rooms)
    }

    /// `DELETE /room_keys/keys[/{roomId}[/{sessionId}]]`: delete keys of a version.
    pub async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: &str,
        scope: BackupScope<'_>,
    ) -> Result<BackupCount> {
        let number = version_number(version)?;
        match self.store().delete_backup_keys(user_id.as_str(), number, scope).await? {
            Some((etag, keys)) => Ok(BackupCount { etag: etag.to_string(), count: count(keys) }),
            None => Err(unknown_version()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(is_verified: bool, first_message_index: i64, forwarded_count: i64) -> BackupKey {
        BackupKey { first_message_index, forwarded_count, is_verified, session_data: String::new() }
    }

    #[test]
    fn verified_keys_win_first() {
        assert!(replaces(&key(false, 0, 0), &key(true, 9, 9)));
        assert!(!replaces(&key(true, 9, 9), &key(false, 0, 0)));
    }

    #[test]
    fn then_the_lower_first_message_index() {
        assert!(replaces(&key(true, 5, 0), &key(true, 4, 9)));
        assert!(!replaces(&key(true, 4, 9), &key(true, 5, 0)));
        assert!(replaces(&key(false, 5, 0), &key(false, 4, 9)));
    }

    #[test]
    fn then_the_lower_forwarded_count() {
        assert!(replaces(&key(false, 3, 2), &key(false, 3, 1)));
        assert!(!replaces(&key(false, 3, 1), &key(false, 3, 2)));
    }

    #[test]
    fn an_equal_key_keeps_the_existing_one() {
        assert!(!replaces(&key(true, 3, 1), &key(true, 3, 1)));
    }

    #[test]
    fn versions_are_our_numbers_only() {
        assert_eq!(version_number("12").unwrap(), 12);
        for bad in ["", "0", "-1", "012", "1.0", "abc", "99999999999999999999"] {
            assert_eq!(version_number(bad).unwrap_err().kind(), Some(&ErrorKind::NotFound), "{bad:?}");
        }
    }
}
