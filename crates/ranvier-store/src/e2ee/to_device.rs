//! The to-device inbox: messages wait here, with a position in the to-device stream, until
//! their device syncs with a token past them.
//!
//! A send is recorded under its transaction id in the same transaction as its messages, so a
//! retried request is delivered once. Transaction ids are kept for a day.

use ranvier_core::{Result, error::Context, util::now_ms};
use sqlx::AnyConnection;

use crate::{Store, StreamKind, e2ee::raise_to_device_high_water};

/// How long a to-device transaction id is remembered.
const TXN_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// Which devices of a user a message is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceTarget {
    Device(String),
    /// `*`: every device the user has when the message is sent.
    All,
}

/// One message of a send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingToDevice {
    pub user_id: String,
    pub target: DeviceTarget,
    /// The event content as JSON.
    pub content: String,
}

/// A to-device send: who sends it, under which transaction id, and the messages.
#[derive(Clone, Copy, Debug)]
pub struct ToDeviceSend<'a> {
    pub sender: &'a str,
    pub sender_device: &'a str,
    pub txn_id: &'a str,
    pub event_type: &'a str,
    pub messages: &'a [OutgoingToDevice],
}

/// What a send did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The messages were queued for this many devices.
    Queued(usize),
    /// The transaction id was used before: nothing was queued again.
    Duplicate,
}

/// A message waiting in a device's inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxMessage {
    pub stream_pos: i64,
    pub sender: String,
    pub event_type: String,
    /// The event content as JSON.
    pub content: String,
}

/// A page of a device's inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxPage {
    pub messages: Vec<InboxMessage>,
    /// The page holds every message up to this position (the page's `up_to` unless the limit
    /// cut it short); the next page starts after it.
    pub complete_up_to: i64,
}

impl Store {
    /// Queue a send's messages for their local devices. Messages for devices that do not
    /// exist are dropped, as they could never be delivered.
    pub async fn send_to_device(&self, send: ToDeviceSend<'_>) -> Result<SendOutcome> {
        let mut txn = self.begin_write().await?;
        let conn: &mut AnyConnection = &mut txn;
        let now = now_ms();
        sqlx::query("DELETE FROM to_device_txns WHERE created_ts < $1")
            .bind(now - TXN_RETENTION_MS)
            .execute(&mut *conn)
            .await
            .context("expire to-device transaction ids")?;
        let recorded = sqlx::query(
            "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(send.sender)
        .bind(send.sender_device)
        .bind(send.txn_id)
        .bind(now)
        .execute(&mut *conn)
        .await
        .context("record to-device transaction id")?;
        if recorded.rows_affected() == 0 {
            return Ok(SendOutcome::Duplicate);
        }
        let mut deliveries: Vec<(String, String, &str)> = Vec::new();
        for message in send.messages {
            let devices: Vec<String> = match &message.target {
                DeviceTarget::All => sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1")
                    .bind(&message.user_id)
                    .fetch_all(&mut *conn)
                    .await
                    .context("list devices for to-device")?,
                DeviceTarget::Device(device_id) => {
                    sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1 AND device_id = $2")
                        .bind(&message.user_id)
                        .bind(device_id)
                        .fetch_all(&mut *conn)
                        .await
                        .context("find device for to-device")?
                }
            };
            for device_id in devices {
                deliveries.push((message.user_id.clone(), device_id, message.content.as_str()));
            }
        }
        let guard = (!deliveries.is_empty()).then(|| self.streams().allocate(StreamKind::ToDevice));
        if let Some(guard) = &guard {
            for (seq, (user_id, device_id, content)) in deliveries.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO to_device_inbox (user_id, device_id, stream_pos, seq, sender, event_type, content) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(guard.position())
                .bind(seq as i64)
                .bind(send.sender)
                .bind(send.event_type)
                .bind(*content)
                .execute(&mut *conn)
                .await
                .context("queue to-device message")?;
            }
        }
        txn.commit().await?;
        drop(guard);
        Ok(SendOutcome::Queued(deliveries.len()))
    }

    /// Up to `limit` messages of a device's inbox at positions `after < pos <= up_to`, in
    /// order. Messages of one send are never split: if the limit falls inside a send, that
    /// send is left for the next call (unless it is the first, which is then returned whole).
    /// The page says up to which position it is complete.
    pub async fn to_device_inbox(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        up_to: i64,
        limit: usize,
    ) -> Result<InboxPage> {
        let fetch = |after: i64, up_to: i64, limit: i64| async move {
            let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
                "SELECT stream_pos, sender, event_type, content FROM to_device_inbox \
                 WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4 \
                 ORDER BY stream_pos, seq LIMIT $5",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(after)
            .bind(up_to)
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .context("read to-device inbox")?;
            Ok::<_, ranvier_core::Error>(
                rows.into_iter()
                    .map(|(stream_pos, sender, event_type, content)| InboxMessage {
                        stream_pos,
                        sender,
                        event_type,
                        content,
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let limit = limit.max(1);
        let mut messages = fetch(after, up_to, limit as i64 + 1).await?;
        if messages.len() <= limit {
            return Ok(InboxPage { messages, complete_up_to: up_to });
        }
        let cut = messages[limit].stream_pos;
        messages.truncate(limit);
        let last = messages[limit - 1].stream_pos;
        if last != cut {
            // The page ends between two sends.
            return Ok(InboxPage { messages, complete_up_to: last });
        }
        if messages[0].stream_pos == last {
            // One send fills the page: return all of it.
            let messages = fetch(after, last, i64::MAX).await?;
            return Ok(InboxPage { messages, complete_up_to: last });
        }
        // Stop before the send the limit cut into.
        messages.retain(|message| message.stream_pos < last);
        let complete_up_to = messages.last().map_or(after, |message| message.stream_pos);
        Ok(InboxPage { messages, complete_up_to })
    }

    /// Delete a device's messages at positions up to `up_to`: the device has synced past
    /// them. Costs a read, and no write, when there is nothing to delete.
    pub async fn delete_delivered_to_device(&self, user_id: &str, device_id: &str, up_to: i64) -> Result<u64> {
        let highest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(stream_pos) FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(up_to)
        .fetch_one(self.pool())
        .await
        .context("find delivered to-device messages")?;
        let Some(highest) = highest else {
            return Ok(0);
        };
        let mut txn = self.begin_write().await?;
        let deleted =
            sqlx::query("DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3")
                .bind(user_id)
                .bind(device_id)
                .bind(highest)
                .execute(&mut *txn)
                .await
                .context("delete delivered to-device messages")?
                .rows_affected();
        raise_to_device_high_water(&mut txn, highest).await?;
        txn.commit().await?;
        Ok(deleted)
    }
}
