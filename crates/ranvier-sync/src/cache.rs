//! In-memory caches of the read side.
//!
//! - [`StateCache`]: the full state of state groups. A state group never changes once written,
//!   so entries need no invalidation; the cache is bounded by the number of state entries it
//!   holds and starts afresh when full.
//! - [`SentMembers`]: per device, the member events a lazy-loading client has been sent, so
//!   that incremental syncs do not repeat them. Losing an entry only makes the server repeat a
//!   member event, which the spec allows.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use parking_lot::Mutex;
use ranvier_core::Result;
use ranvier_store::{Store, events::StateIds};

/// Full states of state groups.
pub struct StateCache {
    inner: Mutex<StateCacheInner>,
    max_entries: usize,
}

#[derive(Default)]
struct StateCacheInner {
    groups: HashMap<i64, Arc<StateIds>>,
    entries: usize,
}

impl StateCache {
    pub fn new(max_entries: usize) -> Self {
        Self { inner: Mutex::new(StateCacheInner::default()), max_entries }
    }

    /// The full state of `group`, from the cache or the store.
    pub async fn get(&self, store: &Store, group: i64) -> Result<Arc<StateIds>> {
        if let Some(state) = self.inner.lock().groups.get(&group) {
            return Ok(state.clone());
        }
        let state = Arc::new(store.state_group_state(group).await?);
        let mut inner = self.inner.lock();
        if inner.entries + state.len() > self.max_entries {
            inner.groups.clear();
            inner.entries = 0;
        }
        inner.entries += state.len();
        inner.groups.insert(group, state.clone());
        Ok(state)
    }
}

/// Member event ids sent to each device of lazy-loading clients.
pub struct SentMembers {
    inner: Mutex<HashMap<(String, String), HashSet<String>>>,
    max_devices: usize,
    max_per_device: usize,
}

impl SentMembers {
    pub fn new(max_devices: usize, max_per_device: usize) -> Self {
        Self { inner: Mutex::new(HashMap::new()), max_devices, max_per_device }
    }

    /// Forget what a device was sent (its client starts from scratch with an initial sync).
    pub fn reset(&self, user_id: &str, device_id: &str) {
        self.inner.lock().remove(&(user_id.to_owned(), device_id.to_owned()));
    }

    /// Which of `event_ids` the device has not been sent yet.
    pub fn unsent(&self, user_id: &str, device_id: &str, event_ids: Vec<String>) -> Vec<String> {
        let inner = self.inner.lock();
        match inner.get(&(user_id.to_owned(), device_id.to_owned())) {
            Some(sent) => event_ids.into_iter().filter(|id| !sent.contains(id)).collect(),
            None => event_ids,
        }
    }

    /// Record that the device was sent `event_ids`.
    pub fn record(&self, user_id: &str, device_id: &str, event_ids: impl IntoIterator<Item = String>) {
        let mut inner = self.inner.lock();
        let key = (user_id.to_owned(), device_id.to_owned());
        if !inner.contains_key(&key) && inner.len() >= self.max_devices {
            inner.clear();
        }
        let sent = inner.entry(key).or_default();
        for id in event_ids {
            if sent.len() >= self.max_per_device {
                sent.clear();
            }
            sent.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_members_filters_and_resets() {
        let sent = SentMembers::new(2, 3);
        sent.record("@a:x", "D", ["$1".to_owned(), "$2".to_owned()]);
        assert_eq!(sent.unsent("@a:x", "D", vec!["$1".into(), "$3".into()]), vec!["$3".to_owned()]);
        assert_eq!(sent.unsent("@a:x", "E", vec!["$1".into()]), vec!["$1".to_owned()]);
        sent.reset("@a:x", "D");
        assert_eq!(sent.unsent("@a:x", "D", vec!["$1".into()]), vec!["$1".to_owned()]);
        // Past the per-device bound the set starts afresh rather than growing.
        sent.record("@a:x", "D", ["$1".to_owned(), "$2".to_owned(), "$3".to_owned(), "$4".to_owned()]);
        assert_eq!(sent.unsent("@a:x", "D", vec!["$1".into(), "$4".into()]), vec!["$1".to_owned()]);
    }
}
