//! Events, the room DAG, state groups, current state and memberships (the tables of
//! `0001_init.sql` under "Rooms and the event graph").
//!
//! This module holds the *read* side shared by the room service and sync. The write path
//! (persisting an event with its edges, state group, current state and membership in one
//! transaction) lives in [`crate::persist`].

use std::collections::HashMap;

use ranvier_core::{Result, error::Context};
use sqlx::{AnyConnection, Row, any::AnyRow};

use crate::{
    Store, flag,
    txn_filter::{DEVICE_LIMIT, Known},
};

/// A stored PDU and its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the events stream; orders the timeline.
    pub stream_ordering: i64,
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    /// `None` for non-state events.
    pub state_key: Option<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// The PDU as canonical JSON, without `event_id` (redacted in place once redacted).
    pub pdu: String,
    pub outlier: bool,
    pub rejected: bool,
    pub soft_failed: bool,
    /// The redaction event applied to this one, if any.
    pub redacted_by: Option<String>,
    /// The state group holding the room state *before* this event.
    pub state_group: Option<i64>,
}

/// State as a map from `(event_type, state_key)` to event id.
pub type StateIds = HashMap<(String, String), String>;

/// The columns every event query selects, in [`StoredEvent`] order.
pub const EVENT_COLUMNS: &str = "stream_ordering, event_id, room_id, sender, event_type, state_key, depth, \
     origin_server_ts, pdu, outlier, rejected_reason, soft_failed, redacted_by, state_group";

/// Decode a row selected with [`EVENT_COLUMNS`].
pub fn event_from_row(row: &AnyRow) -> Result<StoredEvent> {
    let get = |e: sqlx::Error| ranvier_core::Error::internal(format!("decode event row: {e}"));
    Ok(StoredEvent {
        stream_ordering: row.try_get(0).map_err(get)?,
        event_id: row.try_get(1).map_err(get)?,
        room_id: row.try_get(2).map_err(get)?,
        sender: row.try_get(3).map_err(get)?,
        event_type: row.try_get(4).map_err(get)?,
        state_key: row.try_get(5).map_err(get)?,
        depth: row.try_get(6).map_err(get)?,
        origin_server_ts: row.try_get(7).map_err(get)?,
        pdu: row.try_get(8).map_err(get)?,
        outlier: flag(row.try_get(9).map_err(get)?),
        rejected: row.try_get::<Option<String>, _>(10).map_err(get)?.is_some(),
        soft_failed: flag(row.try_get(11).map_err(get)?),
        redacted_by: row.try_get(12).map_err(get)?,
        state_group: row.try_get(13).map_err(get)?,
    })
}

/// Which way a timeline read walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

impl Store {
    /// One event by id.
    pub async fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>> {
        let cache = self.event_cache();
        if let Some(event) = cache.get(event_id) {
            return Ok(Some(event));
        }
        let generation = cache.generation();
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(event_id)
            .fetch_optional(self.pool())
            .await
            .context("get event")?;
        let event = row.as_ref().map(event_from_row).transpose()?;
        cache.insert_read(generation, event.iter());
        Ok(event)
    }

    /// Several events by id, in no particular order, each once; unknown ids are skipped.
    pub async fn get_events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>> {
        let cache = self.event_cache();
        let mut seen = std::collections::HashSet::with_capacity(event_ids.len());
        let unique = event_ids.iter().map(String::as_str).filter(|event_id| seen.insert(*event_id));
        let (mut events, missing) = cache.get_many(unique);
        if missing.is_empty() {
            return Ok(events);
        }
        let generation = cache.generation();
        let cached = events.len();
        // Chunked IN lists keep each statement within both backends' parameter limits.
        for chunk in missing.chunks(200).map(crate::in_list) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(self.pool()).await.context("get events")? {
                events.push(event_from_row(&row)?);
            }
        }
        cache.insert_read(generation, &events[cached..]);
        Ok(events)
    }

    /// Whole events for `event_ids`, in that order (unknown ids skipped), through the cache.
    async fn events_in_order(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>> {
        let mut found: HashMap<String, StoredEvent> =
            self.get_events(event_ids).await?.into_iter().map(|event| (event.event_id.clone(), event)).collect();
        Ok(event_ids.iter().filter_map(|event_id| found.remove(event_id)).collect())
    }

    /// Timeline events of a room (not outliers, rejected or soft-failed) with
    /// `after < stream_ordering <= up_to`, walking in `direction`, at most `limit`.
    pub async fn room_timeline(
        &self,
        room_id: &str,
        after: i64,
        up_to: i64,
        direction: Direction,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let order = match direction {
            Direction::Forward => "ASC",
            Direction::Backward => "DESC",
        };
        // Ids only: the events themselves mostly come from the cache.
        let sql = format!(
            "SELECT event_id FROM events WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 \
             AND outlier = 0 AND rejected_reason IS NULL AND soft_failed = 0 ORDER BY stream_ordering {order} LIMIT $4"
        );
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(after)
            .bind(up_to)
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .context("room timeline")?;
        self.events_in_order(&ids).await
    }

    /// The newest timeline events (as [`Store::room_timeline`] walking backward) of several
    /// rooms at once: for each `(room_id, after, up_to)`, at most `limit` events with
    /// `after < stream_ordering <= up_to`, newest first. One statement per 50 rooms, each
    /// room a `LIMIT`ed subquery on the room's own index range. Rooms without events are
    /// absent from the answer.
    pub async fn rooms_timelines(
        &self,
        ranges: &[(String, i64, i64)],
        limit: i64,
    ) -> Result<HashMap<String, Vec<StoredEvent>>> {
        let mut positions: Vec<(i64, String)> = Vec::new();
        for chunk in ranges.chunks(50) {
            let parts: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = i * 4;
                    format!(
                        "SELECT * FROM (SELECT stream_ordering, event_id FROM events WHERE room_id = ${} \
                         AND stream_ordering > ${} AND stream_ordering <= ${} AND outlier = 0 \
                         AND rejected_reason IS NULL AND soft_failed = 0 ORDER BY stream_ordering DESC LIMIT ${}) AS t{i}",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4
                    )
                })
                .collect();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(parts.join(" UNION ALL ")));
            for (room_id, after, up_to) in chunk {
                query = query.bind(room_id).bind(*after).bind(*up_to).bind(limit);
            }
            for row in query.fetch_all(self.pool()).await.context("rooms timelines")? {
                let get = |e: sqlx::Error| ranvier_core::Error::internal(format!("decode timeline row: {e}"));
                positions.push((row.try_get(0).map_err(get)?, row.try_get(1).map_err(get)?));
            }
        }
        // Newest first, as each room's walk expects.
        positions.sort_unstable_by_key(|(position, _)| std::cmp::Reverse(*position));
        let ids: Vec<String> = positions.into_iter().map(|(_, event_id)| event_id).collect();
        let mut out: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        for event in self.events_in_order(&ids).await? {
            out.entry(event.room_id.clone()).or_default().push(event);
        }
        Ok(out)
    }

    /// The version of a room we know, if any.
    pub async fn room_version(&self, room_id: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT room_version FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(self.pool())
            .await
            .context("room version")
    }

    /// The current state of a room.
    pub async fn current_state_ids(&self, room_id: &str) -> Result<StateIds> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(self.pool())
                .await
                .context("current state")?;
        Ok(rows.into_iter().map(|(t, k, e)| ((t, k), e)).collect())
    }

    /// Every room a user has a membership in: `(room_id, membership, event_id, stream_ordering)`.
    pub async fn rooms_for_user(&self, user_id: &str) -> Result<Vec<(String, String, String, i64)>> {
        sqlx::query_as(
            "SELECT room_id, membership, event_id, stream_ordering FROM room_memberships WHERE user_id = $1 AND forgotten = 0",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("rooms for user")
    }

    /// The full state of a state group, following its delta chain.
    pub async fn state_group_ids(&self, state_group: i64) -> Result<StateIds> {
        let mut conn = self.conn().await?;
        state_group_ids(&mut conn, state_group).await
    }
}

/// [`Store::state_group_ids`] on a given connection (usable inside a transaction).
pub async fn state_group_ids(conn: &mut AnyConnection, state_group: i64) -> Result<StateIds> {
    // Walk to the root collecting the chain, then apply deltas oldest first.
    let mut chain = vec![state_group];
    let mut current = state_group;
    loop {
        let prev: Option<Option<i64>> = sqlx::query_scalar("SELECT prev_group FROM state_groups WHERE id = $1")
            .bind(current)
            .fetch_optional(&mut *conn)
            .await
            .context("state group chain")?;
        match prev {
            Some(Some(prev)) => {
                chain.push(prev);
                current = prev;
            }
            Some(None) => break,
            None => {
                return Err(ranvier_core::Error::internal(format!("state group {current} is missing")));
            }
        }
    }
    let mut state = StateIds::new();
    for group in chain.into_iter().rev() {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT event_type, state_key, event_id FROM state_group_entries WHERE state_group = $1")
                .bind(group)
                .fetch_all(&mut *conn)
                .await
                .context("state group entries")?;
        for (event_type, state_key, event_id) in rows {
            state.insert((event_type, state_key), event_id);
        }
    }
    Ok(state)
}

/// A row of `rooms`.
#[derive(Clone, Debug)]
pub struct RoomRow {
    pub room_id: String,
    pub room_version: String,
    pub creator: Option<String>,
    pub is_public: bool,
    /// The state group equal to the room's current state.
    pub current_state_group: Option<i64>,
}

/// A user's current membership in a room.
#[derive(Clone, Debug)]
pub struct MembershipRow {
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
    pub forgotten: bool,
}

impl Store {
    /// The `rooms` row of a room, if we know it.
    pub async fn room(&self, room_id: &str) -> Result<Option<RoomRow>> {
        type Row = (String, String, Option<String>, i64, Option<i64>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT room_id, room_version, creator, is_public, current_state_group FROM rooms WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(self.pool())
        .await
        .context("get room")?;
        Ok(row.map(|(room_id, room_version, creator, is_public, current_state_group)| RoomRow {
            room_id,
            room_version,
            creator,
            is_public: flag(is_public),
            current_state_group,
        }))
    }

    /// The forward extremities of a room with their depths.
    pub async fn forward_extremities(&self, room_id: &str) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(
            "SELECT f.event_id, e.depth FROM forward_extremities f JOIN events e ON e.event_id = f.event_id \
             WHERE f.room_id = $1 ORDER BY e.depth DESC, e.stream_ordering DESC",
        )
        .bind(room_id)
        .fetch_all(self.pool())
        .await
        .context("forward extremities")
    }

    /// The delta-chain length of a state group, if it exists.
    pub async fn state_group_chain_length(&self, state_group: i64) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT chain_length FROM state_groups WHERE id = $1")
            .bind(state_group)
            .fetch_optional(self.pool())
            .await
            .context("state group chain length")
    }

    /// The current state event of `(event_type, state_key)` in a room.
    pub async fn current_state_event(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<StoredEvent>> {
        let sql = format!(
            "SELECT {} FROM current_state c JOIN events e ON e.event_id = c.event_id \
             WHERE c.room_id = $1 AND c.event_type = $2 AND c.state_key = $3",
            prefixed_columns("e")
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(event_type)
            .bind(state_key)
            .fetch_optional(self.pool())
            .await
            .context("current state event")?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// The current state events of a room, optionally only those of the given types.
    pub async fn current_state_events(&self, room_id: &str, types: Option<&[&str]>) -> Result<Vec<StoredEvent>> {
        let mut sql = format!(
            "SELECT {} FROM current_state c JOIN events e ON e.event_id = c.event_id WHERE c.room_id = $1",
            prefixed_columns("e")
        );
        if let Some(types) = types {
            let placeholders: Vec<String> = (0..types.len()).map(|i| format!("${}", i + 2)).collect();
            sql.push_str(&format!(" AND c.event_type IN ({})", placeholders.join(", ")));
        }
        sql.push_str(" ORDER BY e.stream_ordering");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id);
        for event_type in types.unwrap_or(&[]) {
            query = query.bind(*event_type);
        }
        let rows = query.fetch_all(self.pool()).await.context("current state events")?;
        rows.iter().map(event_from_row).collect()
    }

    /// A user's current membership in a room.
    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<MembershipRow>> {
        let row: Option<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT membership, event_id, stream_ordering, forgotten FROM room_memberships \
             WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await
        .context("get membership")?;
        Ok(row.map(|(membership, event_id, stream_ordering, forgotten)| MembershipRow {
            membership,
            event_id,
            stream_ordering,
            forgotten: flag(forgotten),
        }))
    }

    /// The users of a room with the given membership: `(user_id, event_id)`.
    pub async fn room_members_with(&self, room_id: &str, membership: &str) -> Result<Vec<(String, String)>> {
        sqlx::query_as("SELECT user_id, event_id FROM room_memberships WHERE room_id = $1 AND membership = $2")
            .bind(room_id)
            .bind(membership)
            .fetch_all(self.pool())
            .await
            .context("room members")
    }

    /// The event a client transaction produced, if it was already sent. A transaction id the
    /// device never used is usually known to be new without a read (see [`crate::txn_filter`]).
    pub async fn txn_event_id(&self, user_id: &str, device_id: &str, txn_id: &str) -> Result<Option<String>> {
        match self.txn_filter().check(user_id, device_id, txn_id) {
            Known::New => return Ok(None),
            Known::Maybe => {}
            Known::Unloaded(generation) => {
                // One read loads the device's ids and answers this look-up.
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT txn_id, event_id FROM event_txn_ids WHERE user_id = $1 AND device_id = $2 LIMIT $3",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(i64::try_from(DEVICE_LIMIT + 1).unwrap_or(i64::MAX))
                .fetch_all(self.pool())
                .await
                .context("get transaction ids")?;
                let complete = rows.len() <= DEVICE_LIMIT;
                self.txn_filter().load(
                    user_id,
                    device_id,
                    generation,
                    rows.iter().map(|(txn, _)| txn.as_str()),
                    complete,
                );
                if complete {
                    return Ok(rows.into_iter().find(|(txn, _)| txn == txn_id).map(|(_, event_id)| event_id));
                }
            }
        }
        sqlx::query_scalar("SELECT event_id FROM event_txn_ids WHERE user_id = $1 AND device_id = $2 AND txn_id = $3")
            .bind(user_id)
            .bind(device_id)
            .bind(txn_id)
            .fetch_optional(self.pool())
            .await
            .context("get transaction id")
    }

    /// The events a given event points at as `prev_events`.
    pub async fn prev_event_ids(&self, event_id: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT prev_event_id FROM event_edges WHERE event_id = $1")
            .bind(event_id)
            .fetch_all(self.pool())
            .await
            .context("prev events")
    }

    /// The `auth_events` of a given event.
    pub async fn auth_event_ids(&self, event_id: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT auth_event_id FROM event_auth WHERE event_id = $1")
            .bind(event_id)
            .fetch_all(self.pool())
            .await
            .context("auth events")
    }
}

impl Store {
    /// The rooms both users are joined to (MSC2666), in room id order after `after`, at most
    /// `limit` of them; and how many there are in all.
    pub async fn mutual_joined_rooms(
        &self,
        user_id: &str,
        other_user_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<String>, i64)> {
        const FROM: &str = "FROM room_memberships a JOIN room_memberships b ON b.room_id = a.room_id \
             AND b.user_id = $2 AND b.membership = 'join' WHERE a.user_id = $1 AND a.membership = 'join'";
        let rooms: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT a.room_id {FROM} AND a.room_id > $3 ORDER BY a.room_id LIMIT $4"
        )))
        .bind(user_id)
        .bind(other_user_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("mutual rooms")?;
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) {FROM}")))
            .bind(user_id)
            .bind(other_user_id)
            .fetch_one(self.pool())
            .await
            .context("count mutual rooms")?;
        Ok((rooms, count))
    }
}

/// [`EVENT_COLUMNS`] qualified with a table alias, for joins.
pub(crate) fn prefixed_columns(alias: &str) -> String {
    EVENT_COLUMNS.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}
