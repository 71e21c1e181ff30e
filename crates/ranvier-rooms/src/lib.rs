//! The room graph: building, hashing and signing PDUs, the room version's auth rules, state
//! at each event, and the one path that persists events.
//!
//! # Layout
//! - [`keys`]: the server's ed25519 signing key (generated on first start).
//! - [`pdu`]: the parsed PDU and its `ruma::state_res::Event` implementation.
//! - [`room_state`]: the per-room cache kept inside the room's write lock.
//! - [`build`]: turning an [`EventTemplate`] into a signed PDU, and the auth check.
//! - [`persist`]: the single write path (state groups, current state, memberships);
//!   [`hooks`]: what other services attach to it (push rules' outcomes, in the same transaction).
//! - [`create`], [`membership`], [`send`], [`upgrade`]: the write operations the client API calls;
//!   [`canonical_alias`]: the alias checks of `m.room.canonical_alias`.
//! - [`read`]: state, members, mutual rooms and event reads with their access checks.
//! - [`relations`]: bundled aggregations (edits, threads, references), `/relations` and
//!   `/threads`.
//! - [`report`]: reports of events, rooms and users for the administrators.
//! - [`format`]: stored events into the client format; [`visibility`]: history visibility.
//!
//! # Architecture invariants
//! - Every event reaches the database through the persist path ([`persist`]): prepared under
//!   the room's write lock, and written there or, for sends, by the room's group commit.
//! - A room's [`room_state::RoomState`] runs ahead of the database only by sent events waiting
//!   for their group commit ([`commit`]); every lock but a send's waits for them, and after a
//!   failed commit the cache is dropped and reloaded from the database.

pub mod build;
pub mod canonical_alias;
mod commit;
pub mod create;
pub mod format;
pub mod hooks;
pub mod ignore;
pub mod keys;
pub mod membership;
pub mod pdu;
pub mod persist;
pub mod read;
pub mod relations;
pub mod report;
pub mod room_state;
pub mod send;
pub mod upgrade;
pub mod visibility;

use std::{collections::HashMap, sync::Arc};

use ranvier_core::Result;
use ranvier_store::Store;
use ruma::{OwnedRoomId, OwnedServerName, RoomId, signatures::Ed25519KeyPair};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

pub use build::EventTemplate;
pub use create::{CreateRoom, Preset};
pub use membership::MembershipAction;
use room_state::RoomState;

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

/// A room's write lock, holding its cache once loaded.
type RoomLock = Arc<Mutex<Option<RoomState>>>;

struct RoomsInner {
    store: Store,
    server_name: OwnedServerName,
    signing_key: Ed25519KeyPair,
    /// One write lock per room, created on first use.
    locks: parking_lot::Mutex<HashMap<OwnedRoomId, RoomLock>>,
    /// The user that sends server notices, when they are enabled: an invite to a room it is
    /// joined to cannot be rejected.
    server_notices_user: std::sync::OnceLock<ruma::OwnedUserId>,
    /// Which rooms hold any event relation (see [`relations::RelationRooms`]).
    relation_rooms: relations::RelationRooms,
    /// Sends waiting for their room's write lock (see [`Rooms::send_event`]).
    send_queues: parking_lot::Mutex<HashMap<OwnedRoomId, Vec<send::QueuedSend>>>,
    /// Sent events waiting for their group commit, per room (see [`commit`]).
    commits: parking_lot::Mutex<HashMap<OwnedRoomId, Arc<commit::RoomCommits>>>,
    /// Called by the persist path for every accepted timeline event, once wired.
    event_hook: std::sync::OnceLock<Arc<dyn hooks::EventHook>>,
}

/// The held write lock of a room whose cache is loaded.
pub(crate) type LockedRoom = OwnedMappedMutexGuard<Option<RoomState>, RoomState>;

impl Rooms {
    pub fn new(store: Store, server_name: OwnedServerName, signing_key: Ed25519KeyPair) -> Self {
        let server_notices_user = Default::default();
        Self {
            inner: Arc::new(RoomsInner {
                store,
                server_name,
                signing_key,
                locks: Default::default(),
                server_notices_user,
                relation_rooms: Default::default(),
                send_queues: Default::default(),
                commits: Default::default(),
                event_hook: Default::default(),
            }),
        }
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

    /// Name the user that sends server notices (once, at startup).
    pub fn set_server_notices_user(&self, user_id: ruma::OwnedUserId) {
        let _ = self.inner.server_notices_user.set(user_id);
    }

    /// The user that sends server notices, if they are enabled.
    pub fn server_notices_user(&self) -> Option<&ruma::UserId> {
        self.inner.server_notices_user.get().map(|user| &**user)
    }

    /// Attach the hook the persist path calls for every accepted timeline event (once; later
    /// calls are ignored).
    pub fn set_event_hook(&self, hook: Arc<dyn hooks::EventHook>) {
        let _ = self.inner.event_hook.set(hook);
    }

    pub(crate) fn event_hook(&self) -> Option<&Arc<dyn hooks::EventHook>> {
        self.inner.event_hook.get()
    }

    fn lock_entry(&self, room_id: &RoomId) -> RoomLock {
        self.inner.locks.lock().entry(room_id.to_owned()).or_default().clone()
    }

    /// Take a room's write lock and load its cache, once every sent event of the room has
    /// committed; `None` if the room is unknown.
    pub(crate) async fn lock_room(&self, room_id: &RoomId) -> Result<Option<LockedRoom>> {
        self.lock_room_settled(room_id, true).await
    }

    /// [`Rooms::lock_room`] for sending: sent events may still be waiting to commit (the
    /// cache already holds them), unless a commit failed.
    pub(crate) async fn lock_room_for_send(&self, room_id: &RoomId) -> Result<Option<LockedRoom>> {
        self.lock_room_settled(room_id, false).await
    }

    async fn lock_room_settled(&self, room_id: &RoomId, settle: bool) -> Result<Option<LockedRoom>> {
        let lock = self.lock_entry(room_id);
        let mut guard = lock.clone().lock_owned().await;
        if let Some(commits) = self.room_commits(room_id)
            && (settle || commits.failed())
        {
            commits.settle(guard.as_mut()).await;
        }
        // A cache without a state group is a room whose create event never committed (the
        // creation failed) or a cache dropped after a failed commit (`RoomCommits::settle`):
        // the database, not the cache, says what the room holds.
        if guard.as_ref().is_none_or(|room| room.state_group.is_none()) {
            *guard = RoomState::load(self.store(), room_id.to_owned()).await?;
        }
        match OwnedMutexGuard::try_map(guard, Option::as_mut) {
            Ok(locked) => Ok(Some(locked)),
            Err(guard) => {
                // Requests naming unknown rooms must not grow the lock map: drop the entry
                // unless another task holds it too (the map and `lock` are two references).
                drop(guard);
                let mut locks = self.inner.locks.lock();
                if Arc::strong_count(&lock) == 2 {
                    locks.remove(room_id);
                }
                Ok(None)
            }
        }
    }

    /// Take the write lock of a room that does not exist yet and start its cache; `None` if a
    /// room with that id already exists (two identical version 12 create events made in the
    /// same millisecond have the same id).
    pub(crate) async fn lock_new_room(&self, room: RoomState) -> Result<Option<LockedRoom>> {
        let mut guard = self.lock_entry(&room.room_id).lock_owned().await;
        if guard.is_some() || self.store().room(room.room_id.as_str()).await?.is_some() {
            return Ok(None);
        }
        *guard = Some(room);
        Ok(OwnedMutexGuard::try_map(guard, Option::as_mut).ok())
    }
}
