//! The media repository: uploads, downloads, thumbnails, URL previews, and the content
//! scanning hook every file passes before anyone can download it.

use ranvier_store::Store;

/// The media service. Cheap to clone.
#[derive(Clone)]
pub struct Media {
    store: Store,
}

impl Media {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}
