//! The write path of the room graph: persisting an event with its DAG edges, auth edges,
//! state group, current state, membership and forward extremities in one transaction.
//!
//! The room service decides everything (state before the event, the new state group, the
//! current-state delta, redactions); this module only writes what it is told, atomically. The
//! same function stores local and remote events, outliers and rejected events.

use ranvier_core::{Result, error::Context};
use sqlx::AnyConnection;

use crate::Store;

/// A state group to create: `prev_group` plus `entries`, or a full snapshot without `prev_group`.
#[derive(Clone, Debug)]
pub struct NewStateGroup {
    pub id: i64,
    pub prev_group: Option<i64>,
    pub chain_length: i64,
    /// `(event_type, state_key, event_id)`.
    pub entries: Vec<(String, String, String)>,
}

/// One change to a room's current state: set `(event_type, state_key)` to an event, or remove it.
#[derive(Clone, Debug)]
pub struct CurrentStateChange {
    pub event_type: String,
    pub state_key: String,
    /// `None` removes the entry (state resolution can drop a key).
    pub event_id: Option<String>,
}

/// A user's new current membership in the room (mirrors an `m.room.member` current-state change).
#[derive(Clone, Debug)]
pub struct MembershipChange {
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
}

/// A room row to create (with the create event).
#[derive(Clone, Debug)]
pub struct NewRoom {
    pub room_version: String,
    pub creator: Option<String>,
    pub is_public: bool,
}

/// The client transaction that produced the event, for idempotent retries.
#[derive(Clone, Debug)]
pub struct TxnKey {
    pub user_id: String,
    pub device_id: String,
    pub txn_id: String,
}

/// Another stored event to rewrite in the same transaction: the target of a redaction.
#[derive(Clone, Debug)]
pub struct Redaction {
    pub target_event_id: String,
    /// The target's PDU after redaction, as canonical JSON.
    pub redacted_pdu: String,
}

/// Everything written for one event.
#[derive(Clone, Debug, Default)]
pub struct PersistEvent {
    /// The events-stream position; the caller holds its guard until this function returns.
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// The PDU as canonical JSON.
    pub pdu: String,
    pub prev_events: Vec<String>,
    pub auth_events: Vec<String>,
    pub outlier: bool,
    pub rejected_reason: Option<String>,
    pub soft_failed: bool,
    /// The state group holding the room state before this event.
    pub state_group: Option<i64>,
    /// State groups to create first (the state after a state event, or a resolved state).
    pub new_state_groups: Vec<NewStateGroup>,
    pub current_state: Vec<CurrentStateChange>,
    pub memberships: Vec<MembershipChange>,
    /// The new value of `rooms.current_state_group`, when current state changed.
    pub current_state_group: Option<i64>,
    /// Whether the event joins the DAG's forward edge: its prev_events stop being extremities
    /// and it becomes one (unless a known event already points at it). False for outliers.
    pub update_extremities: bool,
    pub new_room: Option<NewRoom>,
    pub txn: Option<TxnKey>,
    pub redaction: Option<Redaction>,
}

impl Store {
    /// Persist one event and everything that follows from it, in one transaction.
    pub async fn persist_event(&self, event: &PersistEvent) -> Result<()> {
        let mut txn = self.begin_write().await?;
        persist_event(&mut txn, event).await?;
        txn.commit().await
    }

    /// Mark a user's membership in a room as forgotten (or not).
    pub async fn set_room_forgotten(&self, room_id: &str, user_id: &str, forgotten: bool) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query("UPDATE room_memberships SET forgotten = $1 WHERE room_id = $2 AND user_id = $3")
            .bind(i64::from(forgotten))
            .bind(room_id)
            .bind(user_id)
            .execute(&mut **txn)
            .await
            .context("forget room")?;
        txn.commit().await
    }
}

/// [`Store::persist_event`] inside a caller's transaction.
pub async fn persist_event(conn: &mut AnyConnection, event: &PersistEvent) -> Result<()> {
    if let Some(room) = &event.new_room {
        sqlx::query(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public, current_state_group) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&event.room_id)
        .bind(&room.room_version)
        .bind(room.creator.as_deref())
        .bind(event.origin_server_ts)
        .bind(i64::from(room.is_public))
        .execute(&mut *conn)
        .await
        .context("insert room")?;
    }

    sqlx::query(
        "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, state_key, depth, \
         origin_server_ts, pdu, outlier, rejected_reason, soft_failed, redacted_by, state_group) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, $13)",
    )
    .bind(event.stream_ordering)
    .bind(&event.event_id)
    .bind(&event.room_id)
    .bind(&event.sender)
    .bind(&event.event_type)
    .bind(event.state_key.as_deref())
    .bind(event.depth)
    .bind(event.origin_server_ts)
    .bind(&event.pdu)
    .bind(i64::from(event.outlier))
    .bind(event.rejected_reason.as_deref())
    .bind(i64::from(event.soft_failed))
    .bind(event.state_group)
    .execute(&mut *conn)
    .await
    .context("insert event")?;

    insert_pairs(&mut *conn, "event_edges (event_id, prev_event_id)", &event.event_id, &event.prev_events)
        .await
        .context("insert event edges")?;
    insert_pairs(&mut *conn, "event_auth (event_id, auth_event_id)", &event.event_id, &event.auth_events)
        .await
        .context("insert auth edges")?;

    if event.update_extremities {
        if !event.prev_events.is_empty() {
            let placeholders: Vec<String> = (0..event.prev_events.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "DELETE FROM forward_extremities WHERE room_id = $1 AND event_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&event.room_id);
            for prev in &event.prev_events {
                query = query.bind(prev);
            }
            query.execute(&mut *conn).await.context("remove forward extremities")?;
        }
        // An event that arrives after its children (possible over federation) is not an
        // extremity: something already builds on it.
        let referenced: Option<String> =
            sqlx::query_scalar("SELECT event_id FROM event_edges WHERE prev_event_id = $1 LIMIT 1")
                .bind(&event.event_id)
                .fetch_optional(&mut *conn)
                .await
                .context("check event children")?;
        if referenced.is_none() {
            sqlx::query("INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&event.room_id)
                .bind(&event.event_id)
                .execute(&mut *conn)
                .await
                .context("add forward extremity")?;
        }
    }

    for group in &event.new_state_groups {
        sqlx::query("INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES ($1, $2, $3, $4)")
            .bind(group.id)
            .bind(&event.room_id)
            .bind(group.prev_group)
            .bind(group.chain_length)
            .execute(&mut *conn)
            .await
            .context("insert state group")?;
        for (event_type, state_key, event_id) in &group.entries {
            sqlx::query(
                "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(group.id)
            .bind(event_type)
            .bind(state_key)
            .bind(event_id)
            .execute(&mut *conn)
            .await
            .context("insert state group entry")?;
        }
    }

    for change in &event.current_state {
        match &change.event_id {
            Some(event_id) => {
                sqlx::query(
                    "INSERT INTO current_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id",
                )
                .bind(&event.room_id)
                .bind(&change.event_type)
                .bind(&change.state_key)
                .bind(event_id)
                .execute(&mut *conn)
                .await
                .context("update current state")?;
            }
            None => {
                sqlx::query("DELETE FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3")
                    .bind(&event.room_id)
                    .bind(&change.event_type)
                    .bind(&change.state_key)
                    .execute(&mut *conn)
                    .await
                    .context("remove current state")?;
            }
        }
    }
    if let Some(group) = event.current_state_group {
        sqlx::query("UPDATE rooms SET current_state_group = $1 WHERE room_id = $2")
            .bind(group)
            .bind(&event.room_id)
            .execute(&mut *conn)
            .await
            .context("update current state group")?;
    }

    for change in &event.memberships {
        sqlx::query(
            "INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream_ordering, forgotten) \
             VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT (room_id, user_id) DO UPDATE SET \
             membership = excluded.membership, event_id = excluded.event_id, \
             stream_ordering = excluded.stream_ordering, forgotten = 0",
        )
        .bind(&event.room_id)
        .bind(&change.user_id)
        .bind(&change.membership)
        .bind(&change.event_id)
        .bind(event.stream_ordering)
        .execute(&mut *conn)
        .await
        .context("update membership")?;
    }

    if let Some(txn_key) = &event.txn {
        sqlx::query("INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, $4)")
            .bind(&txn_key.user_id)
            .bind(&txn_key.device_id)
            .bind(&txn_key.txn_id)
            .bind(&event.event_id)
            .execute(&mut *conn)
            .await
            .context("record transaction id")?;
    }

    if let Some(redaction) = &event.redaction {
        sqlx::query("UPDATE events SET pdu = $1, redacted_by = $2 WHERE event_id = $3")
            .bind(&redaction.redacted_pdu)
            .bind(&event.event_id)
            .bind(&redaction.target_event_id)
            .execute(&mut *conn)
            .await
            .context("redact event")?;
    }
    Ok(())
}

/// Insert `(first, second)` rows for each of `seconds` into `table_and_columns` in one
/// statement, ignoring rows that already exist. PDUs cite at most 20 prev and 10 auth events,
/// well within both backends' parameter limits.
async fn insert_pairs(
    conn: &mut AnyConnection,
    table_and_columns: &str,
    first: &str,
    seconds: &[String],
) -> Result<(), sqlx::Error> {
    if seconds.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..seconds.len()).map(|i| format!("($1, ${})", i + 2)).collect();
    let sql = format!("INSERT INTO {table_and_columns} VALUES {} ON CONFLICT DO NOTHING", rows.join(", "));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(first);
    for second in seconds {
        query = query.bind(second);
    }
    query.execute(conn).await.map(|_| ())
}
