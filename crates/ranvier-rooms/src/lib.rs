//! The room graph: building, hashing and signing PDUs, the room version's auth rules, state
//! at each event, and the one path that persists events.
//!
//! # Layout
//! - [`keys`]: the server's ed25519 signing key (generated on first start).
//! - [`Rooms`]: the service the API crates call to create rooms, change membership, send
//!   events and read timelines and state.

pub mod format;
pub mod keys;
pub mod visibility;

use std::sync::Arc;

use ranvier_store::Store;
use ruma::{OwnedServerName, signatures::Ed25519KeyPair};

/// The room versions this server can create and join.
pub fn supported_room_versions() -> Vec<ruma::RoomVersionId> {
    use ruma::RoomVersionId::*;
    vec![V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12]
}

/// The room service. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<RoomsInner>,
}

struct RoomsInner {
    store: Store,
    server_name: OwnedServerName,
    signing_key: Ed25519KeyPair,
}

impl Rooms {
    pub fn new(store: Store, server_name: OwnedServerName, signing_key: Ed25519KeyPair) -> Self {
        Self { inner: Arc::new(RoomsInner { store, server_name, signing_key }) }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.inner.server_name
    }

    pub fn signing_key(&self) -> &Ed25519KeyPair {
        &self.inner.signing_key
    }
}
