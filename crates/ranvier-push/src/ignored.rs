//! The ignore lists push evaluation reads: an event from a user the recipient ignores gives
//! that recipient no push actions (so no notification, no count, nothing pushed), as Synapse's
//! bulk evaluator does; state events too, which are still delivered to them but never notify.
//!
//! Evaluation runs under the room's write lock, so the lists are cached in memory. Writes of
//! `m.ignored_user_list` call [`Push::ignore_list_changed`]; a generation counter keeps a read
//! that raced with a write from caching the old list.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use ranvier_core::Result;
use ruma::{OwnedUserId, UserId};

use crate::Push;

/// How many users' lists the cache keeps before it starts over.
const CACHE_USERS: usize = 50_000;

/// The cached ignore lists.
#[derive(Default)]
pub(crate) struct IgnoreCache {
    lists: parking_lot::Mutex<HashMap<OwnedUserId, Arc<HashSet<String>>>>,
    generation: AtomicU64,
}

impl Push {
    /// The users `user_id` ignores (from the cache, else read and cached).
    pub async fn ignored_by(&self, user_id: &UserId) -> Result<Arc<HashSet<String>>> {
        let cache = &self.inner.ignored;
        if let Some(list) = cache.lists.lock().get(user_id) {
            return Ok(list.clone());
        }
        let generation = cache.generation.load(Ordering::Acquire);
        let list = Arc::new(ranvier_rooms::ignore::ignored_users(self.store(), user_id.as_str()).await?);
        let mut lists = cache.lists.lock();
        if cache.generation.load(Ordering::Acquire) == generation {
            if lists.len() >= CACHE_USERS {
                lists.clear();
            }
            lists.insert(user_id.to_owned(), list.clone());
        }
        Ok(list)
    }

    /// `user_id`'s `m.ignored_user_list` was written (or deleted): read it again next time.
    pub fn ignore_list_changed(&self, user_id: &UserId) {
        let cache = &self.inner.ignored;
        let mut lists = cache.lists.lock();
        cache.generation.fetch_add(1, Ordering::AcqRel);
        lists.remove(user_id);
    }
}
