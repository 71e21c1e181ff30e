//! The read side of rooms: `/sync` (initial and incremental, long-polling on the store's
//! notifier), stored filters, and history reads (`/messages`, `/context`,
//! `/timestamp_to_event`).
//!
//! # Layout
//! - [`SyncService`]: the service the API crate calls; [`SyncService::sync`] runs the
//!   long-poll around one sync pass ([`sync`]).
//! - [`sync`]: which rooms to report and what to say about each.
//! - [`history`]: `/messages`, `/context` and `/timestamp_to_event`.
//! - [`search`]: server-side search (`/search`) over the store's full-text index.
//! - [`timeline`]: the one paginating walk over a room's events, with filters and history
//!   visibility, behind all of the above.
//! - [`filter`]: applying filter definitions (pure); [`format`]: events on their way out;
//!   [`response`]: the `/sync` body; [`cache`]: state groups and lazy-loaded members.
//!
//! **Architecture invariant:** every event handed to a client passes through
//! [`ranvier_rooms::visibility::filter_visible`] (inside [`timeline::Walk`] or directly).

pub mod cache;
pub mod changes;
pub mod filter;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod format;
pub mod history;
pub mod response;
pub mod search;
pub mod sync;
pub mod timeline;

#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use ranvier_core::{Error, Result, error::ErrorKind};
use ranvier_rooms::Rooms;
use std::collections::HashSet;

use ranvier_store::{Store, StreamKind, StreamToken};
use ruma::api::client::filter::FilterDefinition;

pub use response::SyncResponse;
pub use sync::SyncRequest;

/// The sync service. Cheap to clone.
#[derive(Clone)]
pub struct SyncService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    rooms: Rooms,
    state_cache: cache::StateCache,
    sent_members: cache::SentMembers,
    recent: changes::RecentEvents,
    /// End-to-end encryption data (to-device, device lists, key counts), when wired.
    e2ee: Option<ranvier_e2ee::E2ee>,
    /// Typing, receipts and presence, when wired.
    social: Option<ranvier_social::Social>,
    /// Unread notification counts and the default push rules, when wired.
    push: Option<ranvier_push::Push>,
    /// Permits for the passes that may run at once ([`passes_at_once`]).
    passes: tokio::sync::Semaphore,
}

/// How many sync passes may run at once: two per core. A pass is CPU work and reads on
/// SQLite's per-core connections, so more at once answer no sooner, and each holds its
/// working memory (the rooms it reads, the events it formats) until it ends. When an event
/// wakes a hundred waiting syncs, letting all their passes run interleaved grew the heap by
/// about 2 MB more than this bound does, memory glibc then kept.
fn passes_at_once() -> usize {
    2 * ranvier_core::util::cores()
}

impl SyncService {
    /// A sync service over rooms alone (timelines, state, account data).
    pub fn new(store: Store, rooms: Rooms) -> Self {
        Self::build(store, rooms, None, None)
    }

    /// A sync service whose responses also carry end-to-end encryption data (to-device,
    /// device lists, key counts) and the social layer (typing, receipts, presence, unread
    /// counts).
    pub fn wired(store: Store, rooms: Rooms, e2ee: ranvier_e2ee::E2ee, social: ranvier_social::Social) -> Self {
        Self::build(store, rooms, Some(e2ee), Some(social))
    }

    fn build(
        store: Store,
        rooms: Rooms,
        e2ee: Option<ranvier_e2ee::E2ee>,
        social: Option<ranvier_social::Social>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                e2ee,
                social,
                push: None,
                rooms,
                // About a million state entries (on the order of 100 MB) at most.
                state_cache: cache::StateCache::new(1_000_000),
                sent_members: cache::SentMembers::new(10_000, 20_000),
                recent: changes::RecentEvents::new(store.streams().current(StreamKind::Events)),
                passes: tokio::sync::Semaphore::new(passes_at_once()),
                store,
            }),
        }
    }

    /// Also report unread notification counts (and the push rules of users who never changed
    /// them). Call right after construction, before the service is cloned.
    pub fn with_push(mut self, push: ranvier_push::Push) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.push = Some(push),
            None => tracing::error!("SyncService::with_push called on a shared service; push is not wired"),
        }
        self
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn rooms(&self) -> &Rooms {
        &self.inner.rooms
    }

    /// Parse a `since` or pagination token.
    pub fn parse_token(token: &str) -> Result<StreamToken> {
        token.parse().map_err(|()| Error::invalid_param(format!("Invalid token `{token}`")))
    }

    /// The filter a `/sync` request names: a stored filter's id, or an inline definition
    /// (which the request parser already read; text starting with `{` that is still here did
    /// not parse).
    pub async fn stored_or_inline_filter(&self, user_id: &str, filter_id: &str) -> Result<FilterDefinition> {
        if filter_id.trim_start().starts_with('{') {
            return Err(match serde_json::from_str::<serde_json::Value>(filter_id) {
                Ok(_) => Error::bad_json("Invalid filter definition"),
                Err(_) => Error::matrix(ErrorKind::NotJson, "Filter is not valid JSON"),
            });
        }
        self.get_filter(user_id, filter_id).await
    }

    /// A stored filter of `user_id` by id: `M_NOT_FOUND` if there is none.
    pub async fn get_filter(&self, user_id: &str, filter_id: &str) -> Result<FilterDefinition> {
        let not_found = || Error::not_found("No such filter");
        let id: i64 = filter_id.parse().map_err(|_| not_found())?;
        let json = self.store().get_filter(user_id, id).await?.ok_or_else(not_found)?;
        serde_json::from_str(&json).map_err(|e| Error::internal(format!("stored filter {id} of {user_id}: {e}")))
    }

    /// Store a filter and return its id.
    pub async fn create_filter(&self, user_id: &str, filter: &FilterDefinition) -> Result<String> {
        filter::validate(filter)?;
        let json = serde_json::to_string(filter).map_err(|e| Error::internal(format!("serialise filter: {e}")))?;
        Ok(self.store().create_filter(user_id, &json).await?.to_string())
    }

    /// `/sync`: answer at once if there is something new for the user (or this is an initial
    /// or full-state sync); otherwise wait until there is, or until the timeout.
    ///
    /// The wait is on the store's change notifier, never a poll. A pass that finds nothing for
    /// this user moves the starting point up to where it looked, so the next wake-up only
    /// looks at what is newer still.
    ///
    /// The passes run as boxed futures: a future holds room for the largest state of every
    /// future it awaits inline, and a waiting sync (one per connected client) would otherwise
    /// hold a whole pass's worth while it waits. At most [`passes_at_once`] passes run at
    /// once; the others wait their turn.
    pub async fn sync(&self, request: SyncRequest) -> Result<SyncResponse> {
        let mut changes = self.store().streams().subscribe();
        let deadline = tokio::time::Instant::now() + request.timeout;
        let mut since = request.since;
        // The user's memberships, read once on the first wake-up that needs them, with the
        // events position they are at least as new as.
        let mut known_memberships: Option<KnownMemberships> = None;
        loop {
            changes.borrow_and_update();
            let now = self.store().streams().current_token();
            let has_news = match since {
                Some(since) => now.is_after(&since),
                None => true,
            };
            // When only timeline events arrived, the shared log of recent events says whether
            // any of them concern this user before a pass is run, and which rooms have them.
            let mut hint = None;
            if has_news
                && !request.full_state
                && let Some(known) = since
                && only_events_moved(&known, &now)
            {
                let memberships = match &known_memberships {
                    Some(memberships) => memberships,
                    None => {
                        let position = now.get(StreamKind::Events);
                        let rows = Box::pin(self.store().memberships_of(&request.user_id)).await?;
                        known_memberships.insert(KnownMemberships::new(position, rows))
                    }
                };
                let window = Box::pin(self.inner.recent.window(
                    self.store(),
                    &request.user_id,
                    &memberships.rooms,
                    known.get(StreamKind::Events),
                    now.get(StreamKind::Events),
                ))
                .await?;
                if let Some(window) = window {
                    let touched = window.own_membership.is_some()
                        || window.rooms.keys().any(|room_id| memberships.joined.contains(room_id));
                    if !touched {
                        since = Some(now);
                        if !request.timeout.is_zero()
                            && let Ok(Ok(())) = tokio::time::timeout_at(deadline, changes.changed()).await
                        {
                            continue;
                        }
                        return Box::pin(self.quiet_response(&request, now)).await;
                    }
                    // The memberships read earlier still hold when no event since changed them.
                    if window.own_membership.is_none_or(|position| position <= memberships.position) {
                        hint = Some(sync::Hint {
                            memberships: memberships.rows.clone(),
                            new_events: window.rooms,
                            member_events: window.member_events,
                            newest: window.newest,
                        });
                    } else {
                        known_memberships = None;
                    }
                }
            }
            if has_news || request.full_state {
                let response = {
                    // The semaphore is never closed.
                    let _pass = self.inner.passes.acquire().await.map_err(Error::internal)?;
                    Box::pin(self.compute(&request, since, now, hint)).await?
                };
                if since.is_none() || request.full_state || !response.is_empty() || request.timeout.is_zero() {
                    return Ok(response);
                }
                since = Some(now);
            } else if request.timeout.is_zero() {
                return Box::pin(self.quiet_response(&request, now)).await;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                // The deadline passed (or the store is shutting down): nothing new.
                _ => return Box::pin(self.quiet_response(&request, since.unwrap_or(now))).await,
            }
        }
    }

    /// The answer of a pass that found nothing new, with `next_batch` at `token` (no stream
    /// the user cares about moved between the request's `since` and `token`). End-to-end
    /// encryption still has its say: the to-device messages the client acknowledged by
    /// sending `since` are deleted, and the key counts clients expect in every response are
    /// filled in.
    async fn quiet_response(&self, request: &SyncRequest, token: StreamToken) -> Result<SyncResponse> {
        let mut response = SyncResponse { next_batch: token.to_string(), ..Default::default() };
        if let Some(e2ee) = &self.inner.e2ee {
            let data = e2ee.quiet_sync_data(&request.user_id, &request.device_id, request.since.as_ref()).await?;
            response.device_one_time_keys_count = Some(data.one_time_keys_count);
            response.device_unused_fallback_key_types = Some(data.unused_fallback_key_types);
        }
        Ok(response)
    }
}

/// A user's memberships as read at (or after) an events position.
struct KnownMemberships {
    position: i64,
    rows: Vec<ranvier_store::sync::MembershipRow>,
    /// Every room of `rows`.
    rooms: HashSet<String>,
    /// The rooms of `rows` the user is joined to.
    joined: HashSet<String>,
}

impl KnownMemberships {
    fn new(position: i64, rows: Vec<ranvier_store::sync::MembershipRow>) -> Self {
        let rooms = rows.iter().map(|row| row.room_id.clone()).collect();
        let joined = rows.iter().filter(|row| row.membership == "join").map(|row| row.room_id.clone()).collect();
        Self { position, rows, rooms, joined }
    }
}

/// Whether `now` differs from `since` in the events stream alone.
fn only_events_moved(since: &StreamToken, now: &StreamToken) -> bool {
    StreamKind::ALL.iter().all(|kind| *kind == StreamKind::Events || since.get(*kind) == now.get(*kind))
}

/// Cap a client's requested long-poll timeout by the server's limit.
pub fn effective_timeout(requested: Option<Duration>, max_ms: u64) -> Duration {
    requested.unwrap_or(Duration::ZERO).min(Duration::from_millis(max_ms))
}
