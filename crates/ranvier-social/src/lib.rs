//! The social layer: profiles, typing notifications, receipts and read markers, presence, room
//! tags, room aliases, the public room directory and the user directory — what makes a server
//! feel alive in a client.
//!
//! # Layout
//! - [`Social`]: the service. Cheap to clone; its background tasks (typing expiry, presence
//!   timeouts) stop when the last clone is dropped.
//! - [`profile`]: profile fields, and their propagation into member events.
//! - [`typing`]: who is typing where, in memory, with timeouts.
//! - [`receipts`]: receipts and read markers (unread counts are `ranvier-push`'s).
//! - [`presence`]: the presence state machine (pure) and the in-memory tracker.
//! - [`ephemeral`]: what `/sync` reports of all the above, in one call.
//! - [`tags`]: room tags, kept in the `m.tag` room account data.
//! - [`aliases`]: room aliases and `m.room.canonical_alias` checks.
//! - [`directory`]: the public room directory; [`user_directory`]: user search.
//! - [`ignore`]: the ignored-users list, checked on write and read by every timeline read.
//! - [`notices`]: server notices, sent by a system user into one room per user.
//! - [`hierarchy`]: the space hierarchy (`/hierarchy`), a walk over `m.space.child` events.
//! - [`upgrade`]: room upgrades (the room work is in `ranvier-rooms`; aliases and the
//!   directory entry move here).
//!
//! # Architecture invariants
//! - Typing and presence live in memory; a change takes a position in its stream and wakes
//!   `/sync` through `Streams::notify`, and nothing is computed for a user until their `/sync`
//!   asks.
//! - Local and remote users go through the same functions: federation will call
//!   [`Social::set_typing`], [`Social::put_receipt`] and [`Social::apply_presence`] for remote
//!   users exactly as the client API does for local ones.

pub mod aliases;
pub mod directory;
pub mod ephemeral;
pub mod hierarchy;
pub mod ignore;
pub mod notices;
pub mod presence;
pub mod profile;
pub mod receipts;
pub mod tags;
pub mod typing;
pub mod upgrade;
pub mod user_directory;

use std::sync::Arc;

use ranvier_core::{Error, Result, config::PresenceConfig};
use ranvier_rooms::Rooms;
use ranvier_store::Store;
use ruma::UserId;

pub use ephemeral::Ephemeral;

/// Text that reaches a database column must not contain NUL, which JSON and percent-encoding
/// allow but PostgreSQL text does not: such input is refused with `error` rather than left to
/// fail in the database.
pub(crate) fn without_nul(text: &str, error: impl FnOnce() -> Error) -> Result<()> {
    if text.contains('\0') { Err(error()) } else { Ok(()) }
}
pub use presence::SyncPresence;

/// The social service. Cheap to clone.
#[derive(Clone)]
pub struct Social {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    rooms: Rooms,
    typing: typing::Typing,
    presence: presence::Tracker,
    public_rooms: directory::PublicRoomCache,
    /// Serialises the read-modify-write of a user's `m.tag` account data.
    tag_locks: Vec<tokio::sync::Mutex<()>>,
}

impl Social {
    /// The service over `store` and `rooms`. Inside a tokio runtime this also starts the
    /// background tasks that expire typing notifications and time presence out.
    pub fn new(store: Store, rooms: Rooms, presence: PresenceConfig) -> Self {
        let inner = Arc::new(Inner {
            store,
            rooms,
            typing: typing::Typing::default(),
            presence: presence::Tracker::new(presence),
            public_rooms: directory::PublicRoomCache::default(),
            tag_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(typing::expiry_task(Arc::downgrade(&inner)));
            tokio::spawn(presence::sweeper_task(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn rooms(&self) -> &Rooms {
        &self.inner.rooms
    }

    /// Whether `user_id` belongs to this server.
    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.inner.rooms.server_name()
    }
}
