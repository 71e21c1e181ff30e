//! The social layer: profiles, typing notifications, receipts and read markers, presence, and
//! the user directory — what makes a server feel alive in a client.

use ranvier_rooms::Rooms;
use ranvier_store::Store;

/// The social service. Cheap to clone.
#[derive(Clone)]
pub struct Social {
    store: Store,
    rooms: Rooms,
}

impl Social {
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
