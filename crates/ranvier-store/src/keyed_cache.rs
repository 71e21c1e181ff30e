//! A small cache of values read from the database, for rows that change only through the
//! store's own write functions: each such writer drops the keys it touched after its commit.
//!
//! A reader that read a value before such a commit must not put it back afterwards. Every
//! invalidation bumps a generation; a reader takes the generation before its query and caches
//! what it read only if the generation has not moved by then. The check and the insert happen
//! under the lock the invalidation takes, so an old value is either refused or removed.
//!
//! Bounded by the number of entries: when full, the cache starts afresh.

use std::{collections::HashMap, hash::Hash};

use parking_lot::Mutex;

/// Values by key, invalidated by the writers of what they were read from.
pub struct KeyedCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
}

struct Inner<K, V> {
    values: HashMap<K, V>,
    generation: u64,
}

impl<K: Eq + Hash, V: Clone> KeyedCache<K, V> {
    /// A cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner { values: HashMap::new(), generation: 0 }), capacity }
    }

    /// The cached value of `key`, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.inner.lock().values.get(key).cloned()
    }

    /// The generation to pass to [`KeyedCache::insert`] for values read from now on.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Cache `value`, read after `generation` was taken, unless an invalidation happened since.
    pub fn insert(&self, generation: u64, key: K, value: V) {
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        if inner.values.len() >= self.capacity {
            inner.values.clear();
        }
        inner.values.insert(key, value);
    }

    /// Forget `keys` (what they were read from changed) and refuse values read before now.
    pub fn invalidate(&self, keys: impl IntoIterator<Item = K>) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        for key in keys {
            inner.values.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_before_an_invalidation_are_refused() {
        let cache: KeyedCache<String, u32> = KeyedCache::new(10);
        let before = cache.generation();
        cache.insert(before, "a".into(), 1);
        assert_eq!(cache.get("a"), Some(1));
        cache.invalidate(["a".to_owned()]);
        assert_eq!(cache.get("a"), None);
        cache.insert(before, "a".into(), 1);
        assert_eq!(cache.get("a"), None, "read before the invalidation");
        cache.insert(cache.generation(), "a".into(), 2);
        assert_eq!(cache.get("a"), Some(2));
    }

    #[test]
    fn starts_afresh_when_full() {
        let cache: KeyedCache<u32, u32> = KeyedCache::new(3);
        for i in 0..5 {
            cache.insert(cache.generation(), i, i);
        }
        assert_eq!(cache.inner.lock().values.len(), 2);
        assert_eq!(cache.get(&4), Some(4));
    }
}
