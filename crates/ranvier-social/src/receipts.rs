//! Receipts (`m.read`, `m.read.private`, threaded or not) and the fully-read marker. Unread
//! counts, which receipts reset, are `ranvier-push`'s.
//!
//! A receipt is stored with the position of its event, and never moves back: a receipt for an
//! older event than the one already acknowledged is accepted and ignored, as Synapse does.
//! `m.read.private` receipts are shown to their owner only. The fully-read marker is the
//! `m.fully_read` room account data, so sync delivers it with the rest of the account data.

use std::collections::HashMap;

use ranvier_core::{Error, Result, util::now_ms};
use ranvier_store::{events::StoredEvent, social::receipts::NewReceipt};
use ruma::{EventId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::{Social, without_nul};

/// The public read receipt.
pub const READ: &str = "m.read";
/// The read receipt only its owner sees.
pub const READ_PRIVATE: &str = "m.read.private";
/// The fully-read marker (room account data, not a receipt).
pub const FULLY_READ: &str = "m.fully_read";

/// Which thread a receipt is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Thread {
    /// Applies to the whole room.
    Unthreaded,
    /// The main timeline (`"main"`).
    Main,
    /// The thread with this root event.
    Root(String),
}

impl Thread {
    /// The stored form: `""`, `"main"` or the root's event id.
    fn as_stored(&self) -> &str {
        match self {
            Thread::Unthreaded => "",
            Thread::Main => "main",
            Thread::Root(root) => root,
        }
    }

    /// Parse a client's `thread_id`: `main` or an event id (`400 M_INVALID_PARAM` otherwise).
    pub fn parse(thread_id: Option<&str>) -> Result<Thread> {
        match thread_id {
            None => Ok(Thread::Unthreaded),
            Some("main") => Ok(Thread::Main),
            Some(id) if EventId::parse(id).is_ok() && !id.contains('\0') => Ok(Thread::Root(id.to_owned())),
            Some(_) => Err(Error::invalid_param("`thread_id` must be `main` or an event id")),
        }
    }
}

impl Social {
    /// A joined member's event in the room (`403` if `user_id` is not joined, `404` if the
    /// event is not in the room).
    async fn event_for_receipt(&self, room_id: &RoomId, user_id: &UserId, event_id: &EventId) -> Result<StoredEvent> {
        without_nul(room_id.as_str(), || Error::forbidden(format!("User {user_id} not in room")))?;
        without_nul(event_id.as_str(), || Error::not_found("Could not find event"))?;
        let joined = self
            .store()
            .membership(room_id.as_str(), user_id.as_str())
            .await?
            .is_some_and(|row| row.membership == "join");
        if !joined {
            return Err(Error::forbidden(format!("User {user_id} not in room {room_id}")));
        }
        let event = self.store().get_event(event_id.as_str()).await?;
        match event {
            Some(event) if event.room_id == room_id.as_str() && !event.rejected && !event.outlier => Ok(event),
            _ => Err(Error::not_found("Could not find event")),
        }
    }

    /// Store a receipt of `user_id` (`POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`,
    /// and receipts from other servers). `receipt_type` is `m.read` or `m.read.private`.
    pub async fn put_receipt(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        receipt_type: &str,
        event_id: &EventId,
        thread: Thread,
    ) -> Result<()> {
        if receipt_type != READ && receipt_type != READ_PRIVATE {
            return Err(Error::invalid_param(format!("Unknown receipt type {receipt_type}")));
        }
        let event = self.event_for_receipt(room_id, user_id, event_id).await?;
        let receipt = NewReceipt {
            room_id: room_id.as_str(),
            receipt_type,
            user_id: user_id.as_str(),
            thread_id: thread.as_stored(),
            event_id: event_id.as_str(),
            event_stream_ordering: event.stream_ordering,
            ts: now_ms(),
        };
        self.store().put_receipt(&receipt).await?;
        if self.is_local(user_id) {
            self.note_activity(user_id).await?;
        }
        Ok(())
    }

    /// Move the fully-read marker of `user_id` in a room to `event_id` (never back).
    pub async fn set_fully_read(&self, room_id: &RoomId, user_id: &UserId, event_id: &EventId) -> Result<()> {
        let event = self.event_for_receipt(room_id, user_id, event_id).await?;
        let current = self.store().get_account_data(user_id.as_str(), room_id.as_str(), FULLY_READ).await?;
        let current_id = current
            .and_then(|content| serde_json::from_str::<Value>(&content).ok())
            .and_then(|content| content.get("event_id").and_then(Value::as_str).map(str::to_owned));
        if let Some(current_id) = current_id
            && let Some(current) = self.store().get_event(&current_id).await?
            && current.room_id == room_id.as_str()
            && current.stream_ordering >= event.stream_ordering
        {
            return Ok(());
        }
        let content = json!({ "event_id": event_id }).to_string();
        self.store().set_account_data(user_id.as_str(), room_id.as_str(), FULLY_READ, &content).await?;
        Ok(())
    }

    /// `POST /rooms/{roomId}/read_markers`: the fully-read marker and the read receipts, each
    /// optional.
    pub async fn set_read_markers(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        fully_read: Option<&EventId>,
        read: Option<&EventId>,
        read_private: Option<&EventId>,
    ) -> Result<()> {
        if let Some(event_id) = fully_read {
            self.set_fully_read(room_id, user_id, event_id).await?;
        }
        if let Some(event_id) = read {
            self.put_receipt(room_id, user_id, READ, event_id, Thread::Unthreaded).await?;
        }
        if let Some(event_id) = read_private {
            self.put_receipt(room_id, user_id, READ_PRIVATE, event_id, Thread::Unthreaded).await?;
        }
        Ok(())
    }

    /// One `m.receipt` event per room among `room_ids` with receipts changed in
    /// `(since, until]`, as `viewer` may see them.
    pub(crate) async fn receipt_events(
        &self,
        viewer: &UserId,
        room_ids: &[String],
        since: i64,
        until: i64,
    ) -> Result<Vec<(String, Value)>> {
        let rows = self.store().receipts_between(room_ids, since, until, viewer.as_str(), READ_PRIVATE).await?;
        let mut by_room: HashMap<String, Map<String, Value>> = HashMap::new();
        for row in rows {
            let mut receipt = Map::new();
            receipt.insert("ts".into(), json!(row.ts));
            if !row.thread_id.is_empty() {
                receipt.insert("thread_id".into(), json!(row.thread_id));
            }
            let content = by_room.entry(row.room_id).or_default();
            let per_event = content.entry(row.event_id).or_insert_with(|| json!({}));
            let per_type = &mut per_event[row.receipt_type.as_str()];
            if per_type.is_null() {
                *per_type = json!({});
            }
            per_type[row.user_id.as_str()] = Value::Object(receipt);
        }
        let mut events: Vec<(String, Value)> = by_room
            .into_iter()
            .map(|(room_id, content)| (room_id, json!({ "type": "m.receipt", "content": content })))
            .collect();
        events.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_ids() {
        assert_eq!(Thread::parse(None).unwrap(), Thread::Unthreaded);
        assert_eq!(Thread::parse(Some("main")).unwrap(), Thread::Main);
        assert_eq!(Thread::parse(Some("$root")).unwrap(), Thread::Root("$root".into()));
        for bad in ["", "Main", "root"] {
            assert!(Thread::parse(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(Thread::Main.as_stored(), "main");
        assert_eq!(Thread::Unthreaded.as_stored(), "");
    }
}
