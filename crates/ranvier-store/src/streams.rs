//! Stream positions: every change a client can sync has a position in one of the streams, and
//! a sync token is the tuple of positions.
//!
//! Positions are allocated in memory (seeded from the tables' maxima at startup) and handed out
//! as [`StreamGuard`]s. Writers commit in any order, so a position becomes visible only once
//! every lower position of its stream has finished: [`Streams::current`] is the highest
//! position below which nothing is still in flight. Readers therefore never skip a row that
//! commits late. Finishing a guard wakes everyone waiting in [`Streams::subscribe`].
//!
//! **Invariant:** one process allocates positions. Several processes on one PostgreSQL will
//! need database sequences and LISTEN/NOTIFY here; nothing outside this module assumes either.

use std::{collections::BTreeSet, fmt, str::FromStr, sync::Arc};

use parking_lot::Mutex;
use ranvier_core::{Result, error::Context};
use tokio::sync::watch;

/// The streams a sync token covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Events = 0,
    AccountData = 1,
    Receipts = 2,
    ToDevice = 3,
    DeviceLists = 4,
    Presence = 5,
    Typing = 6,
}

const STREAM_COUNT: usize = 7;

impl StreamKind {
    pub const ALL: [StreamKind; STREAM_COUNT] = [
        StreamKind::Events,
        StreamKind::AccountData,
        StreamKind::Receipts,
        StreamKind::ToDevice,
        StreamKind::DeviceLists,
        StreamKind::Presence,
        StreamKind::Typing,
    ];

    /// The query giving the highest stored position of this stream, if it is persisted.
    fn seed_query(self) -> Option<&'static str> {
        match self {
            StreamKind::Events => Some("SELECT MAX(stream_ordering) FROM events"),
            StreamKind::AccountData => Some("SELECT MAX(stream_pos) FROM account_data"),
            StreamKind::Receipts => Some("SELECT MAX(stream_pos) FROM receipts"),
            StreamKind::Presence => Some("SELECT MAX(stream_pos) FROM presence"),
            // Delivered messages are deleted, so the highest position ever deleted is kept too.
            StreamKind::ToDevice => Some(
                "SELECT MAX(p) FROM (SELECT MAX(stream_pos) AS p FROM to_device_inbox \
                 UNION ALL SELECT position AS p FROM e2e_stream_positions WHERE stream = 'to_device') AS t",
            ),
            StreamKind::DeviceLists => Some("SELECT MAX(stream_pos) FROM device_list_changes"),
            // Streams whose tables arrive with later features start at 0 until they add a
            // query here.
            _ => None,
        }
    }
}

/// A sync token: one position per stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamToken {
    pub positions: [i64; STREAM_COUNT],
}

impl StreamToken {
    pub fn get(&self, kind: StreamKind) -> i64 {
        self.positions[kind as usize]
    }
    pub fn set(&mut self, kind: StreamKind, position: i64) {
        self.positions[kind as usize] = position;
    }
    /// Whether any stream of `self` is ahead of `other`.
    pub fn is_after(&self, other: &StreamToken) -> bool {
        self.positions.iter().zip(other.positions.iter()).any(|(a, b)| a > b)
    }
}

/// Tokens look like `s12_3_0_0_0_0_5`: an `s` then the positions in [`StreamKind`] order.
impl fmt::Display for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("s")?;
        for (i, pos) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str("_")?;
            }
            write!(f, "{pos}")?;
        }
        Ok(())
    }
}

impl FromStr for StreamToken {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let rest = s.strip_prefix('s').ok_or(())?;
        let mut token = StreamToken::default();
        for (i, part) in rest.split('_').enumerate() {
            if i >= STREAM_COUNT {
                return Err(());
            }
            token.positions[i] = part.parse().map_err(|_| ())?;
            if token.positions[i] < 0 {
                return Err(());
            }
        }
        Ok(token)
    }
}

#[derive(Default)]
struct StreamState {
    next: i64,
    in_flight: BTreeSet<i64>,
}

impl StreamState {
    fn current(&self) -> i64 {
        match self.in_flight.first() {
            Some(lowest) => lowest - 1,
            None => self.next - 1,
        }
    }
}

/// Allocation and visibility of stream positions, plus the change notifier. Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    inner: Arc<StreamsInner>,
}

struct StreamsInner {
    states: [Mutex<StreamState>; STREAM_COUNT],
    changed: watch::Sender<u64>,
}

impl Streams {
    /// Seed every stream from the highest position stored.
    pub async fn load(pool: &crate::readers::Readers) -> Result<Self> {
        let states: [Mutex<StreamState>; STREAM_COUNT] = Default::default();
        for kind in StreamKind::ALL {
            let max = match kind.seed_query() {
                Some(query) => sqlx::query_scalar::<_, Option<i64>>(query)
                    .fetch_one(pool)
                    .await
                    .context("load stream position")?
                    .unwrap_or(0),
                None => 0,
            };
            states[kind as usize].lock().next = max + 1;
        }
        let (changed, _) = watch::channel(0);
        Ok(Self { inner: Arc::new(StreamsInner { states, changed }) })
    }

    /// Reserve the next position of `kind`. Keep the guard until the row is committed.
    pub fn allocate(&self, kind: StreamKind) -> StreamGuard {
        let mut state = self.inner.states[kind as usize].lock();
        let position = state.next;
        state.next += 1;
        state.in_flight.insert(position);
        StreamGuard { streams: self.clone(), kind, position }
    }

    /// The highest position of `kind` that readers may see.
    pub fn current(&self, kind: StreamKind) -> i64 {
        self.inner.states[kind as usize].lock().current()
    }

    /// The current token across all streams.
    pub fn current_token(&self) -> StreamToken {
        let mut token = StreamToken::default();
        for kind in StreamKind::ALL {
            token.set(kind, self.current(kind));
        }
        token
    }

    /// A receiver that changes whenever any stream advances.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Wake every subscriber (for in-memory streams such as typing).
    pub fn notify(&self) {
        self.inner.changed.send_modify(|generation| *generation += 1);
    }
}

/// A reserved stream position; dropping it marks the position finished and wakes subscribers.
pub struct StreamGuard {
    streams: Streams,
    kind: StreamKind,
    position: i64,
}

impl StreamGuard {
    pub fn position(&self) -> i64 {
        self.position
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.streams.inner.states[self.kind as usize].lock().in_flight.remove(&self.position);
        self.streams.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let mut token = StreamToken::default();
        token.set(StreamKind::Events, 42);
        token.set(StreamKind::Typing, 7);
        let text = token.to_string();
        assert_eq!(text, "s42_0_0_0_0_0_7");
        assert_eq!(text.parse::<StreamToken>(), Ok(token));
        // Older, shorter tokens parse with the missing streams at zero.
        assert_eq!("s5".parse::<StreamToken>().unwrap().get(StreamKind::Events), 5);
        assert!("x5".parse::<StreamToken>().is_err());
        assert!("s-1".parse::<StreamToken>().is_err());
        assert!("s1_2_3_4_5_6_7_8".parse::<StreamToken>().is_err());
    }

    #[test]
    fn position_visible_only_when_lower_ones_finish() {
        let (changed, _) = watch::channel(0);
        let streams = Streams { inner: Arc::new(StreamsInner { states: Default::default(), changed }) };
        streams.inner.states[0].lock().next = 1;
        let first = streams.allocate(StreamKind::Events);
        let second = streams.allocate(StreamKind::Events);
        assert_eq!((first.position(), second.position()), (1, 2));
        assert_eq!(streams.current(StreamKind::Events), 0);
        drop(second);
        assert_eq!(streams.current(StreamKind::Events), 0, "1 is still in flight");
        drop(first);
        assert_eq!(streams.current(StreamKind::Events), 2);
    }
}
