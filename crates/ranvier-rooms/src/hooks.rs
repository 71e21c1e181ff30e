//! The hook other services attach to the persist path: for every accepted timeline event,
//! [`EventHook::push_actions`] decides what the event means to local users (the push rules'
//! outcome), and those rows are written in the event's own transaction, so that whoever sees
//! the event also sees its notification counts. [`EventHook::committed`] runs once the event
//! is committed and its stream position released (for work that happens after, such as
//! waking pushers).
//!
//! The hook runs under the room's write lock on every send: it must be cheap (no network,
//! and database reads only when a cache misses).

use std::{future::Future, pin::Pin};

use ranvier_store::push::NewPushAction;
use ruma::CanonicalJsonObject;

use crate::{pdu::Pdu, room_state::RoomState};

/// An accepted timeline event about to be persisted.
#[derive(Clone, Copy)]
pub struct NewTimelineEvent<'a> {
    /// The room as it is before the event (members, power levels).
    pub room: &'a RoomState,
    pub pdu: &'a Pdu,
    /// The PDU as it will be stored.
    pub object: &'a CanonicalJsonObject,
    pub stream_ordering: i64,
}

/// A boxed future of the hook.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the persist path calls for each accepted timeline event.
pub trait EventHook: Send + Sync + 'static {
    /// The push outcomes to write with the event. Failures are the hook's to log: an event is
    /// never refused because its notifications could not be worked out.
    fn push_actions<'a>(&'a self, event: NewTimelineEvent<'a>) -> HookFuture<'a, Vec<NewPushAction>>;

    /// The event at `stream_ordering` in `room_id` committed with `actions`.
    fn committed(&self, room_id: &str, stream_ordering: i64, actions: &[NewPushAction]);
}
