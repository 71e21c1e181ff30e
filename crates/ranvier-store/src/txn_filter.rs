//! The client transaction ids each device has used, held in memory as hashes, so that a send
//! with a new transaction id (nearly every send) is known to be new without reading
//! `event_txn_ids`.
//!
//! A device's ids are loaded from the database by its first look-up; from then on a hash that
//! is absent means "never used", and one that is present means "maybe used", which the
//! database answers. A wrong "maybe" costs one read; a wrong "never" would send an event twice,
//! so the filter must hold every id the device has stored.
//!
//! Invariants:
//! - Every id is recorded ([`TxnFilter::record`]) before the write that stores it begins,
//!   whether or not its device is loaded. A load therefore misses nothing: an id stored before
//!   the load's read is in its rows, and any other was recorded.
//! - When the hashes outgrow their bound, all are forgotten but those of writes still under
//!   way (which a later load may not find stored yet), and the generation moves on; a load
//!   that began in an earlier generation does not mark its device loaded, since ids recorded
//!   while it ran may have been forgotten.
//! - A device with more stored ids than [`DEVICE_LIMIT`] is never loaded: each of its sends
//!   reads the database, as every send did before.
//! - One process writes the events (see `ARCHITECTURE.md`): ids stored by another process
//!   would not be recorded here.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, RandomState},
};

/// The most hashes held; past it, all are forgotten (about 1.2 MB when full).
const TOTAL_LIMIT: usize = 100_000;

/// The most stored ids of one device that a load takes in.
pub(crate) const DEVICE_LIMIT: usize = 10_000;

/// The most devices remembered as too large to load.
const LARGE_LIMIT: usize = 1_000;

/// What the filter knows of a transaction id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Known {
    /// The device never used it.
    New,
    /// The device may have used it: ask the database.
    Maybe,
    /// The device's ids are not loaded: load them, in this generation.
    Unloaded(u64),
}

/// See the module documentation.
pub(crate) struct TxnFilter {
    keys: RandomState,
    inner: parking_lot::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Hashes of `(user, device, txn)`, recorded or loaded in this generation.
    seen: HashSet<u64>,
    /// Devices, as `(user, device)`, whose stored ids are all in `seen`.
    loaded: HashSet<(String, String)>,
    /// Devices with more than [`DEVICE_LIMIT`] stored ids.
    large: HashSet<(String, String)>,
    /// Hashes recorded for writes still under way, with how many such writes hold each.
    pending: HashMap<u64, usize>,
    generation: u64,
}

impl Inner {
    /// Forget every hash but those of writes under way, and every loaded device, if the
    /// hashes outgrew their bound.
    fn bound(&mut self) {
        if self.seen.len() > TOTAL_LIMIT {
            self.seen = self.pending.keys().copied().collect();
            self.loaded = HashSet::new();
            self.generation += 1;
        }
    }
}

impl Default for TxnFilter {
    fn default() -> Self {
        Self { keys: RandomState::new(), inner: parking_lot::Mutex::default() }
    }
}

impl TxnFilter {
    fn hash(&self, user_id: &str, device_id: &str, txn_id: &str) -> u64 {
        self.keys.hash_one((user_id, device_id, txn_id))
    }

    /// What is known of `txn_id` from `user_id`'s device `device_id`.
    pub(crate) fn check(&self, user_id: &str, device_id: &str, txn_id: &str) -> Known {
        let hash = self.hash(user_id, device_id, txn_id);
        let device = (user_id.to_owned(), device_id.to_owned());
        let inner = self.inner.lock();
        if inner.seen.contains(&hash) || inner.large.contains(&device) {
            Known::Maybe
        } else if inner.loaded.contains(&device) {
            Known::New
        } else {
            Known::Unloaded(inner.generation)
        }
    }

    /// Note the ids `(user, device, txn)` as used, before the write that stores them; the
    /// write is under way until the answer is dropped.
    pub(crate) fn record<'t>(&self, txns: impl IntoIterator<Item = (&'t str, &'t str, &'t str)>) -> Recorded<'_> {
        let hashes: Vec<u64> = txns.into_iter().map(|(user, device, txn)| self.hash(user, device, txn)).collect();
        if !hashes.is_empty() {
            let mut inner = self.inner.lock();
            for hash in &hashes {
                inner.seen.insert(*hash);
                *inner.pending.entry(*hash).or_default() += 1;
            }
            inner.bound();
        }
        Recorded { filter: self, hashes }
    }

    /// Take in the stored ids of a device, read after [`TxnFilter::check`] answered
    /// `Unloaded(generation)`. `complete` is false when the read stopped at [`DEVICE_LIMIT`].
    pub(crate) fn load<'a>(
        &self,
        user_id: &str,
        device_id: &str,
        generation: u64,
        txn_ids: impl IntoIterator<Item = &'a str>,
        complete: bool,
    ) {
        let device = (user_id.to_owned(), device_id.to_owned());
        if !complete {
            let mut inner = self.inner.lock();
            if inner.large.len() >= LARGE_LIMIT {
                inner.large.clear();
            }
            inner.large.insert(device);
            return;
        }
        let hashes: Vec<u64> = txn_ids.into_iter().map(|txn_id| self.hash(user_id, device_id, txn_id)).collect();
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return;
        }
        inner.seen.extend(hashes);
        inner.loaded.insert(device);
        inner.bound();
    }
}

/// The ids of a write under way (see [`TxnFilter::record`]).
pub(crate) struct Recorded<'a> {
    filter: &'a TxnFilter,
    hashes: Vec<u64>,
}

impl Drop for Recorded<'_> {
    fn drop(&mut self) {
        if self.hashes.is_empty() {
            return;
        }
        let mut inner = self.filter.inner.lock();
        for hash in &self.hashes {
            if let Some(count) = inner.pending.get_mut(hash) {
                *count -= 1;
                if *count == 0 {
                    inner.pending.remove(hash);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_device_knows_its_new_ids() {
        let filter = TxnFilter::default();
        let Known::Unloaded(generation) = filter.check("@a:x", "D", "t1") else {
            panic!("a device starts unloaded");
        };
        filter.load("@a:x", "D", generation, ["t0"], true);
        assert_eq!(filter.check("@a:x", "D", "t0"), Known::Maybe, "a stored id");
        assert_eq!(filter.check("@a:x", "D", "t1"), Known::New, "an id never used");
        drop(filter.record([("@a:x", "D", "t1")]));
        assert_eq!(filter.check("@a:x", "D", "t1"), Known::Maybe, "a recorded id");
        assert!(matches!(filter.check("@a:x", "E", "t1"), Known::Unloaded(_)), "another device");
        assert!(matches!(filter.check("@b:x", "D", "t2"), Known::Unloaded(_)), "another user");
    }

    #[test]
    fn an_id_recorded_during_a_load_is_kept() {
        let filter = TxnFilter::default();
        let Known::Unloaded(generation) = filter.check("@a:x", "D", "t1") else {
            panic!("a device starts unloaded");
        };
        // Stored after the load's read, so not among its rows.
        drop(filter.record([("@a:x", "D", "t2")]));
        filter.load("@a:x", "D", generation, ["t1"], true);
        assert_eq!(filter.check("@a:x", "D", "t2"), Known::Maybe);
        assert_eq!(filter.check("@a:x", "D", "t3"), Known::New);
    }

    #[test]
    fn outgrown_hashes_are_forgotten_and_stale_loads_ignored() {
        let filter = TxnFilter::default();
        let Known::Unloaded(before) = filter.check("@a:x", "D", "t") else {
            panic!("a device starts unloaded");
        };
        filter.load("@a:x", "D", before, [], true);
        let Known::Unloaded(stale) = filter.check("@b:x", "D", "t") else {
            panic!("a device starts unloaded");
        };
        // A write under way while the hashes outgrow their bound.
        let under_way = filter.record([("@d:x", "D", "t")]);
        for i in 0..=TOTAL_LIMIT {
            drop(filter.record([("@c:x", "D", i.to_string().as_str())]));
        }
        // Everything was forgotten, the loaded device too, but for the write under way.
        assert!(matches!(filter.check("@a:x", "D", "t"), Known::Unloaded(g) if g == before + 1));
        assert!(matches!(filter.check("@c:x", "D", "0"), Known::Unloaded(_)));
        let Known::Unloaded(now) = filter.check("@d:x", "D", "u") else {
            panic!("forgotten");
        };
        // Loaded before that write is stored: its id is still known.
        filter.load("@d:x", "D", now, [], true);
        assert_eq!(filter.check("@d:x", "D", "t"), Known::Maybe);
        drop(under_way);
        assert!(filter.inner.lock().pending.is_empty(), "nothing is left under way");
        // A load that began before is not trusted.
        filter.load("@b:x", "D", stale, [], true);
        assert!(matches!(filter.check("@b:x", "D", "t"), Known::Unloaded(_)));
    }

    #[test]
    fn a_large_device_always_asks_the_database() {
        let filter = TxnFilter::default();
        let Known::Unloaded(generation) = filter.check("@bridge:x", "D", "t") else {
            panic!("a device starts unloaded");
        };
        filter.load("@bridge:x", "D", generation, ["a", "b"], false);
        assert_eq!(filter.check("@bridge:x", "D", "new"), Known::Maybe);
    }
}
