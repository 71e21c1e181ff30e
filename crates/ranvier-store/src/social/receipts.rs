//! Receipts: one row per (room, receipt type, user, thread), each change a position in the
//! receipts stream.

use ranvier_core::{Result, error::Context};

use crate::{Store, StreamKind};

/// A receipt to store.
#[derive(Clone, Debug)]
pub struct NewReceipt<'a> {
    pub room_id: &'a str,
    pub receipt_type: &'a str,
    pub user_id: &'a str,
    /// `""` for an unthreaded receipt, `"main"` or a thread root's event id otherwise.
    pub thread_id: &'a str,
    pub event_id: &'a str,
    /// The event's position in the events stream.
    pub event_stream_ordering: i64,
    pub ts: i64,
}

/// A stored receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptRow {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

impl Store {
    /// Store a receipt unless the same user already has one of this type and thread on a
    /// later event. Returns the receipts-stream position of the change, or `None` when the
    /// receipt would have moved back and nothing was written.
    pub async fn put_receipt(&self, receipt: &NewReceipt<'_>) -> Result<Option<i64>> {
        let guard = self.streams().allocate(StreamKind::Receipts);
        let unread = self.unread_cache().writing([receipt.room_id]);
        let mut txn = self.begin_write().await?;
        let written = sqlx::query(
            "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, event_stream_ordering, ts, stream_pos)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE
             SET event_id = $5, event_stream_ordering = $6, ts = $7, stream_pos = $8
             WHERE receipts.event_stream_ordering < $6",
        )
        .bind(receipt.room_id)
        .bind(receipt.receipt_type)
        .bind(receipt.user_id)
        .bind(receipt.thread_id)
        .bind(receipt.event_id)
        .bind(receipt.event_stream_ordering)
        .bind(receipt.ts)
        .bind(guard.position())
        .execute(&mut *txn)
        .await
        .context("put receipt")?
        .rows_affected();
        txn.commit().await?;
        unread.receipt_committed(receipt.user_id, receipt.room_id);
        Ok((written > 0).then(|| guard.position()))
    }

    /// The receipts in `room_ids` changed in `(since, until]`, leaving out other users'
    /// private receipts (`private_type`) than `viewer`'s.
    pub async fn receipts_between(
        &self,
        room_ids: &[String],
        since: i64,
        until: i64,
        viewer: &str,
        private_type: &str,
    ) -> Result<Vec<ReceiptRow>> {
        let mut out = Vec::new();
        for chunk in room_ids.chunks(200).map(crate::in_list) {
            let sql = format!(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts
                 WHERE stream_pos > $1 AND stream_pos <= $2 AND (receipt_type <> $3 OR user_id = $4)
                 AND room_id IN ({}) ORDER BY stream_pos",
                super::placeholders(5, chunk.len())
            );
            let mut query =
                sqlx::query_as::<_, (String, String, String, String, String, i64)>(sqlx::AssertSqlSafe(sql))
                    .bind(since)
                    .bind(until)
                    .bind(private_type)
                    .bind(viewer);
            for room_id in chunk {
                query = query.bind(room_id);
            }
            let rows = query.fetch_all(self.pool()).await.context("receipts between")?;
            out.extend(rows.into_iter().map(|(room_id, receipt_type, user_id, thread_id, event_id, ts)| ReceiptRow {
                room_id,
                receipt_type,
                user_id,
                thread_id,
                event_id,
                ts,
            }));
        }
        Ok(out)
    }
}
