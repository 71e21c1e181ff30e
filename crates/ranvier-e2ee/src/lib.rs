//! End-to-end encryption support: the server stores and relays what clients' Olm/Megolm
//! machinery relies on — device keys, one-time and fallback keys, to-device messages,
//! cross-signing keys and signatures, device-list changes, and server-side key backups.
//!
//! # Layout
//! - [`E2ee`]: the service the API crate and sync call. Its functions are spread over:
//!   [`keys`] (`/keys/upload`, `/keys/query`, `/keys/claim`), [`cross_signing`]
//!   (`/keys/device_signing/upload`, `/keys/signatures/upload`), [`device_lists`] (who must
//!   hear of whose device changes, for `/sync` and `/keys/changes`), [`to_device`]
//!   (`/sendToDevice`), [`sync`] (the one call `/sync` makes), [`backup`] (`/room_keys/...`).
//! - [`signing`]: canonical JSON and signature checks (pure).
//!
//! # Wiring (for the callers outside this crate)
//! - `/sync` calls [`E2ee::sync_data`] once per pass with the request's `since` and the
//!   pass's `now`, puts the result in the response, and sets the to-device position of
//!   `next_batch` to [`SyncE2ee::to_device_position`]. A pass that finds nothing new and
//!   answers without computing a response calls [`E2ee::quiet_sync_data`] instead.
//! - Deleting a device and logging out call [`E2ee::device_removed`] for each removed device;
//!   deactivating an account calls [`E2ee::user_deactivated`].
//! - Renaming a device may call [`E2ee::device_list_changed`].
//!
//! **Architecture invariant:** local and remote users take the same paths. What a remote
//! server tells us (device-list updates, keys) will be written through the same store
//! functions, and what local users change is read from the same device-list stream by the
//! federation sender; federation only adds transport.

pub mod backup;
pub mod cross_signing;
pub mod device_lists;
pub mod keys;
pub mod signing;
pub mod sync;
pub mod to_device;

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use ranvier_core::{Error, Result};
use ranvier_store::Store;
use ruma::{DeviceId, OwnedServerName, ServerName, UserId};

pub use sync::SyncE2ee;

/// The E2EE service. Cheap to clone.
#[derive(Clone)]
pub struct E2ee {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    server_name: OwnedServerName,
    /// `(user, device)` → the to-device position up to which delivered messages are known to
    /// be deleted, so that a sync does not look for them again.
    acknowledged: Mutex<HashMap<(String, String), i64>>,
}

/// The acknowledgement cache is cleared when it grows past this many devices.
const ACKNOWLEDGED_CAPACITY: usize = 100_000;

impl E2ee {
    pub fn new(store: Store, server_name: OwnedServerName) -> Self {
        Self { inner: Arc::new(Inner { store, server_name, acknowledged: Mutex::new(HashMap::new()) }) }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn server_name(&self) -> &ServerName {
        &self.inner.server_name
    }

    /// Whether a user belongs to this server.
    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.inner.server_name
    }

    /// A device was deleted (or logged out): forget its keys and to-device inbox. If it had
    /// keys, everyone sharing a room with the user is told that the user's devices changed.
    pub async fn device_removed(&self, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
        self.store().delete_device_e2ee(user_id.as_str(), device_id.as_str()).await?;
        self.inner.acknowledged.lock().remove(&(user_id.to_string(), device_id.to_string()));
        Ok(())
    }

    /// A user was deactivated: forget the keys and to-device inboxes of all their devices
    /// (the device rows may already be gone), telling everyone who shares a room with them.
    /// Cross-signing keys and key backups stay: they hold nothing a deactivated account can
    /// use, and erasing them is a separate decision.
    pub async fn user_deactivated(&self, user_id: &UserId) -> Result<()> {
        for device_id in self.store().e2ee_device_ids(user_id.as_str()).await? {
            self.device_removed(user_id, device_id.as_str().into()).await?;
        }
        Ok(())
    }

    /// Something others see of a device changed (e.g. its display name): tell everyone who
    /// shares a room with the user.
    pub async fn device_list_changed(&self, user_id: &UserId, device_id: &DeviceId) -> Result<()> {
        self.store().record_device_list_change(user_id.as_str(), device_id.as_str()).await
    }
}

/// `400 M_INVALID_SIGNATURE`, which ruma has no kind for.
pub fn invalid_signature(message: impl Into<String>) -> Error {
    custom_error("M_INVALID_SIGNATURE", message)
}

/// A Matrix error whose errcode ruma does not know (sent with status 400).
fn custom_error(errcode: &str, message: impl Into<String>) -> Error {
    match serde_json::from_value::<ruma::api::error::ErrorKind>(serde_json::json!({ "errcode": errcode })) {
        Ok(kind) => Error::matrix(kind, message),
        Err(_) => Error::invalid_param(message),
    }
}
