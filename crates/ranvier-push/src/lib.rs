//! Push notifications: push rules, what they decide for every event, unread notification
//! counts, the notifications list, and pushers that deliver notifications to push gateways.
//!
//! # Layout
//! - [`rules`]: each user's push rules (the server defaults from ruma merged with what the
//!   user changed), kept as the `m.push_rules` global account data so that `/sync` delivers
//!   them, and cached in memory for evaluation; the `/pushrules` operations.
//! - [`evaluate`]: the [`ranvier_rooms::hooks::EventHook`] that runs the rules for every local
//!   joined member (and an invited local user) on each accepted timeline event; the outcome is
//!   written in the event's own transaction. Recipients who ignore the sender get none.
//! - [`ignored`]: the recipients' ignore lists, cached for evaluation.
//! - [`counts`]: unread notification and highlight counts per room and per thread (as read
//!   receipts leave them), and `GET /notifications`.
//! - [`pushers`]: `GET /pushers` and `POST /pushers/set`.
//! - [`sender`]: one background task per pusher that posts notifications to the push gateway
//!   in the Push Gateway API format, with retries and backoff.
//!
//! **Architecture invariant:** a notification is decided once, when its event is persisted,
//! and stored with it; counts, the notifications list and pushers all read that outcome.
//! Nothing on the event write path waits for a push gateway.

pub mod counts;
pub mod evaluate;
pub mod ignored;
pub mod pushers;
pub mod rules;
pub mod sender;

use std::sync::Arc;

use ranvier_core::config::PushConfig;
use ranvier_rooms::Rooms;
use ranvier_store::Store;
use ruma::{OwnedServerName, ServerName, UserId};

/// The push service. Cheap to clone.
#[derive(Clone)]
pub struct Push {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    rooms: Rooms,
    server_name: OwnedServerName,
    config: PushConfig,
    rules: rules::RuleCache,
    ignored: ignored::IgnoreCache,
    senders: sender::Senders,
}

impl Push {
    /// The push service over `store`. Call [`Push::attach`] to have it evaluate events, and
    /// [`Push::start`] (inside the runtime) to deliver to existing pushers.
    pub fn new(store: Store, rooms: Rooms, server_name: OwnedServerName, config: PushConfig) -> Self {
        let senders = sender::Senders::new(&config);
        Self {
            inner: Arc::new(Inner {
                store,
                rooms,
                server_name,
                config,
                rules: rules::RuleCache::default(),
                ignored: ignored::IgnoreCache::default(),
                senders,
            }),
        }
    }

    /// Make the rooms' persist path run the push rules on every accepted timeline event.
    pub fn attach(&self) {
        self.inner.rooms.set_event_hook(Arc::new(evaluate::Evaluator::new(self.clone())));
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn rooms(&self) -> &Rooms {
        &self.inner.rooms
    }

    pub fn config(&self) -> &PushConfig {
        &self.inner.config
    }

    /// Whether `user_id` is a user of this server.
    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name()
    }

    pub fn server_name(&self) -> &ServerName {
        &self.inner.server_name
    }
}
