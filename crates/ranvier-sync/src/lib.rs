//! `/sync`: initial and incremental sync built from the streams, with long-polling on the
//! store's notifier.

use ranvier_rooms::Rooms;
use ranvier_store::Store;

/// The sync service. Cheap to clone.
#[derive(Clone)]
pub struct SyncService {
    store: Store,
    rooms: Rooms,
}

impl SyncService {
    pub fn new(store: Store, rooms: Rooms) -> Self {
        Self { store, rooms }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }
}
