//! Group commit of sent events: the events of one room, prepared and applied to its cache under
//! the room's write lock, wait here for a task that commits everything waiting in one
//! transaction.
//!
//! While one group commits (its writes and the sync to disk), the next sends are prepared
//! under the lock and queue up; the committer then takes them all at once. So sends into a
//! busy room share commits, and the lock is held only for the work in memory.
//!
//! Invariants:
//! - Groups of a room commit one after another, in the order their events were prepared;
//!   stream positions are released and sends answered only after their group commits.
//! - After a failed commit every later event of the room fails too (it was built on events
//!   that never committed), until a holder of the room's lock, once nothing is waiting,
//!   reloads the cache from the database (see [`RoomCommits::settle`]).
//! - Everything but a send settles the room when it takes the lock: it sees only committed
//!   events.

use std::sync::Arc;

use ranvier_core::{Error, Result};
use ruma::{OwnedEventId, OwnedRoomId};
use tokio::sync::{Notify, oneshot};

use crate::{Rooms, persist::PreparedEvent, room_state::RoomState};

/// The error of an event built on events of its room that failed to commit.
pub(crate) fn earlier_commit_failed() -> Error {
    Error::internal("an earlier event of the room failed to commit")
}

/// The answer a send waits for.
pub(crate) type Reply = oneshot::Sender<Result<OwnedEventId>>;

/// One entry of the queue: a prepared event with its send's answer, or an answer alone (a
/// retry of a send still waiting here), given once everything before it has committed.
pub(crate) struct Waiting {
    pub event: Option<PreparedEvent>,
    pub reply: Reply,
    pub answer: OwnedEventId,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A committer task is running.
    committing: bool,
    /// A commit failed; cleared when the room's cache is reloaded.
    failed: bool,
}

/// The commit queue of one room.
#[derive(Default)]
pub(crate) struct RoomCommits {
    queue: parking_lot::Mutex<Queue>,
    /// Woken when the committer stops with nothing left waiting.
    idle: Notify,
}

impl RoomCommits {
    /// Wait until nothing of the room waits to commit.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let queue = self.queue.lock();
                if !queue.committing && queue.waiting.is_empty() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Whether a commit failed since the cache was last loaded.
    pub(crate) fn failed(&self) -> bool {
        self.queue.lock().failed
    }

    /// Called by a holder of the room's write lock: wait until everything waiting has
    /// committed, and after a failed commit drop `room` (the cache), so that it is reloaded
    /// from the database.
    pub(crate) async fn settle(&self, room: Option<&mut RoomState>) {
        self.wait_idle().await;
        let mut queue = self.queue.lock();
        if std::mem::take(&mut queue.failed)
            && let Some(room) = room
        {
            room.forget();
        }
    }
}

impl Rooms {
    /// The commit queue of a room, if it ever had one.
    pub(crate) fn room_commits(&self, room_id: &ruma::RoomId) -> Option<Arc<RoomCommits>> {
        self.inner.commits.lock().get(room_id).cloned()
    }

    /// The commit queue of a room, made on its first send.
    pub(crate) fn room_commits_entry(&self, room_id: &OwnedRoomId) -> Arc<RoomCommits> {
        self.inner.commits.lock().entry(room_id.clone()).or_default().clone()
    }

    /// Queue `waiting` (in order) on `commits`, the queue of `room_id`, starting a committer if
    /// none runs. The caller holds the room's write lock and has applied the event to its
    /// cache.
    pub(crate) fn queue_commit(&self, room_id: &OwnedRoomId, commits: &Arc<RoomCommits>, waiting: Waiting) {
        let start = {
            let mut queue = commits.queue.lock();
            queue.waiting.push(waiting);
            !std::mem::replace(&mut queue.committing, true)
        };
        if start {
            let rooms = self.clone();
            let room_id = room_id.clone();
            let commits = commits.clone();
            tokio::spawn(async move { rooms.run_commits(&room_id, &commits).await });
        }
    }

    /// Commit what waits, group after group, until nothing does.
    async fn run_commits(&self, room_id: &OwnedRoomId, commits: &RoomCommits) {
        loop {
            let (group, failed) = {
                let mut queue = commits.queue.lock();
                if queue.waiting.is_empty() {
                    queue.committing = false;
                    drop(queue);
                    commits.idle.notify_waiters();
                    return;
                }
                (std::mem::take(&mut queue.waiting), queue.failed)
            };
            let rows: Vec<_> =
                group.iter().filter_map(|waiting| waiting.event.as_ref().map(PreparedEvent::event)).collect();
            let written = match failed {
                true => Err(earlier_commit_failed()),
                false if rows.is_empty() => Ok(()),
                false => self.store().persist_events(&rows).await,
            };
            let mut events = Vec::with_capacity(group.len());
            let mut answers = Vec::with_capacity(group.len());
            for Waiting { event, reply, answer } in group {
                events.extend(event);
                answers.push((reply, answer));
            }
            match written {
                Ok(()) => {
                    self.finish_committed(events);
                    for (reply, answer) in answers {
                        let _ = reply.send(Ok(answer));
                    }
                }
                Err(error) => {
                    if !failed {
                        tracing::warn!(%room_id, %error, "committing sent events failed");
                        commits.queue.lock().failed = true;
                    }
                    drop(events);
                    for (reply, _) in answers {
                        let _ = reply.send(Err(Error::internal(format!("send event: {error}"))));
                    }
                }
            }
        }
    }
}
