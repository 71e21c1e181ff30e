//! Authentication: access tokens (with an in-memory cache), password hashing, and
//! user-interactive authentication (UIA) sessions.

use std::collections::HashMap;

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
};
use parking_lot::Mutex;
use ranvier_core::{Error, Result, error::ErrorKind};
use ranvier_http::Identity;
use ranvier_store::Store;
use ruma::api::error::UnknownTokenErrorData;

/// Token resolution with a cache in front of the database.
#[derive(Default)]
pub struct Auth {
    /// token hash -> identity. Entries are removed on logout and device deletion.
    cache: Mutex<HashMap<String, Identity>>,
}

impl Auth {
    /// Resolve `token`, failing with `401 M_UNKNOWN_TOKEN`.
    pub async fn authenticate(&self, store: &Store, token: &str) -> Result<Identity> {
        let hash = ranvier_store::accounts::token_hash(token);
        if let Some(identity) = self.cache.lock().get(&hash) {
            return Ok(identity.clone());
        }
        let owner = store.token_owner(token).await?.ok_or_else(unknown_token)?;
        let identity = Identity {
            user_id: owner.user_id.try_into().map_err(|_| Error::internal("stored user id is invalid"))?,
            device_id: owner.device_id.into(),
        };
        self.cache.lock().insert(hash, identity.clone());
        Ok(identity)
    }

    /// Forget cached tokens of `user_id` (all devices, or one).
    pub fn forget(&self, user_id: &ruma::UserId, device_id: Option<&ruma::DeviceId>) {
        self.cache
            .lock()
            .retain(|_, identity| !(identity.user_id == user_id && device_id.is_none_or(|d| identity.device_id == d)));
    }
}

/// `401 M_UNKNOWN_TOKEN`.
pub fn unknown_token() -> Error {
    Error::matrix(ErrorKind::UnknownToken(UnknownTokenErrorData::new()), "Unknown access token")
}

/// Hash a password with argon2id, off the async runtime.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt_bytes: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| Error::internal(format!("password salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| Error::internal(format!("hash password: {e}")))
    })
    .await
    .map_err(|e| Error::internal(format!("hash password task: {e}")))?
}

/// Check a password against a stored argon2 hash, off the async runtime.
pub async fn verify_password(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
    })
    .await
    .map_err(|e| Error::internal(format!("verify password task: {e}")))
}
