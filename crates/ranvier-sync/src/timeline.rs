//! Walking a room's timeline page by page, with a filter and history visibility applied:
//! the one loop behind sync timelines, `/messages` and `/context`.
//!
//! Positions are events-stream positions. A pagination position `p` sits between the events
//! at `p` and `p + 1`: walking backward from `p` starts with the newest event at or before
//! `p`; walking forward from `p` starts with the oldest event after `p`. Every event the walk
//! looks at is consumed exactly once, so consecutive pages neither repeat nor skip events.

use ranvier_core::Result;
use ranvier_rooms::visibility::filter_visible;
use ranvier_store::{
    Store,
    events::{Direction, StoredEvent},
};

/// The most events one walk looks at before it returns what it has; the caller gets a
/// position to continue from.
pub const MAX_SCAN: usize = 1000;

/// What a walk returned.
#[derive(Debug)]
pub struct Page {
    /// The events kept, in walk order (newest first when walking backward).
    pub events: Vec<StoredEvent>,
    /// Where the next page starts (see the module doc).
    pub next: i64,
    /// Whether events remain in the range after `next`.
    pub more: bool,
    /// Whether the walk dropped events (filtered out or not visible) before `next`.
    pub skipped: bool,
}

/// A walk over one room's timeline in `(after, up_to]`.
pub struct Walk<'a, F> {
    pub store: &'a Store,
    pub user_id: &'a str,
    pub room_id: &'a str,
    /// Exclusive lower bound.
    pub after: i64,
    /// Inclusive upper bound.
    pub up_to: i64,
    pub direction: Direction,
    pub limit: usize,
    /// Which events to keep (history visibility is applied on top).
    pub keep: F,
    /// The position of the user's join when the caller knows they are joined to the room as of
    /// `up_to` (or later): every event after it is visible to them, with no lookup.
    pub joined_since: Option<i64>,
}

/// How many events the first statement of a walk asks for: one more than the page needs, so
/// that a full page also tells whether more exist.
pub fn first_batch_size(limit: usize) -> usize {
    (limit + 1).clamp(2, 200)
}

impl<F: Fn(&StoredEvent) -> bool> Walk<'_, F> {
    /// Collect up to `limit` kept, visible events.
    pub async fn run(self) -> Result<Page> {
        self.run_from(None).await
    }

    /// [`Walk::run`], with the answer of the walk's first statement already read (by a
    /// caller that read the first batch of several rooms at once): the
    /// [`first_batch_size`] newest events of the range when walking backward.
    pub async fn run_from(self, mut first: Option<Vec<StoredEvent>>) -> Result<Page> {
        let Walk { store, user_id, room_id, mut after, mut up_to, direction, limit, keep, joined_since } = self;
        let start = match direction {
            Direction::Backward => up_to,
            Direction::Forward => after,
        };
        let mut page = Page { events: Vec::new(), next: start, more: false, skipped: false };
        if limit == 0 || after >= up_to {
            page.more = limit == 0 && after < up_to;
            return Ok(page);
        }
        let mut scanned = 0usize;
        let mut batch_size = first_batch_size(limit);
        loop {
            let batch = match first.take() {
                Some(batch) => batch,
                None => store.room_timeline(room_id, after, up_to, direction, batch_size as i64).await?,
            };
            let exhausted = batch.len() < batch_size;
            let candidates: Vec<StoredEvent> = batch.iter().filter(|event| keep(event)).cloned().collect();
            let visible = match joined_since {
                Some(joined) if candidates.iter().all(|event| event.stream_ordering > joined) => candidates,
                _ => filter_visible(store, user_id, room_id, candidates).await?,
            };
            let mut visible = visible.into_iter().peekable();
            for event in &batch {
                scanned += 1;
                let kept = visible.peek().is_some_and(|v| v.event_id == event.event_id);
                if kept {
                    if page.events.len() == limit {
                        // This is the extra event: it stays for the next page.
                        page.more = true;
                        return Ok(page);
                    }
                    if let Some(kept_event) = visible.next() {
                        page.events.push(kept_event);
                    }
                } else {
                    page.skipped = true;
                }
                page.next = match direction {
                    Direction::Backward => event.stream_ordering - 1,
                    Direction::Forward => event.stream_ordering,
                };
            }
            match direction {
                Direction::Backward => up_to = page.next,
                Direction::Forward => after = page.next,
            }
            if exhausted || after >= up_to {
                return Ok(page);
            }
            if scanned >= MAX_SCAN {
                page.more = true;
                return Ok(page);
            }
            batch_size = (batch_size * 2).min(200);
        }
    }
}
