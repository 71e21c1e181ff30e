//! End-to-end encryption support: the server stores and relays what clients' Olm/Megolm
//! machinery relies on — device keys, one-time and fallback keys, to-device messages,
//! cross-signing keys and signatures, device-list changes, and server-side key backups.

use ranvier_store::Store;

/// The E2EE service. Cheap to clone.
#[derive(Clone)]
pub struct E2ee {
    store: Store,
}

impl E2ee {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}
