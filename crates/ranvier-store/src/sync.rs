//! Queries for the read side (`/sync`, `/messages`, `/context`, history visibility) beyond the
//! shared event reads of [`crate::events`].
//!
//! Each query is shaped so that its cost follows what changed, not the size of the server:
//! [`Store::rooms_with_new_events`] walks only the events after a position, and
//! [`Store::state_group_state`] resolves a delta chain in one statement.

use std::collections::HashMap;

use ranvier_core::{Result, error::Context};
use sqlx::AssertSqlSafe;

use crate::{
    Store,
    events::{EVENT_COLUMNS, StateIds, StoredEvent, event_from_row},
};

/// The clause that keeps only events that belong in a timeline.
const TIMELINE_EVENT: &str = "outlier = 0 AND rejected_reason IS NULL AND soft_failed = 0";

/// How many users' memberships the cache holds before it starts afresh.
pub(crate) const MEMBERSHIP_CACHE_CAPACITY: usize = 20_000;

/// Users' (not forgotten) memberships, by user id (see [`Store::memberships_of`]).
pub(crate) type MembershipCache = crate::keyed_cache::KeyedCache<String, std::sync::Arc<Vec<MembershipRow>>>;

/// Where a timeline event sits in the events stream (see [`Store::event_positions_between`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPosition {
    pub stream_ordering: i64,
    pub room_id: String,
    pub event_id: String,
    /// The state key of a member event (whose membership it changes).
    pub target: Option<String>,
}

/// A user's current membership in one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipRow {
    pub room_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
}

impl Store {
    /// The full state of a state group, following its delta chain in a single statement.
    pub async fn state_group_state(&self, state_group: i64) -> Result<StateIds> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "WITH RECURSIVE chain(id, depth) AS (
                 SELECT id, CAST(0 AS BIGINT) FROM state_groups WHERE id = $1
                 UNION ALL
                 SELECT sg.prev_group, chain.depth + 1 FROM state_groups sg JOIN chain ON sg.id = chain.id
                 WHERE sg.prev_group IS NOT NULL
             )
             SELECT e.event_type, e.state_key, e.event_id, chain.depth
             FROM chain JOIN state_group_entries e ON e.state_group = chain.id",
        )
        .bind(state_group)
        .fetch_all(self.pool())
        .await
        .context("state group state")?;
        // The nearest group in the chain (smallest depth) wins for each key.
        let mut best: HashMap<(String, String), (i64, String)> = HashMap::with_capacity(rows.len());
        for (event_type, state_key, event_id, depth) in rows {
            match best.entry((event_type, state_key)) {
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    if depth < slot.get().0 {
                        slot.insert((depth, event_id));
                    }
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert((depth, event_id));
                }
            }
        }
        Ok(best.into_iter().map(|(key, (_, event_id))| (key, event_id)).collect())
    }

    /// For each of `state_groups`, the entries among `keys` (`(event_type, state_key)` pairs),
    /// resolved along each group's delta chain. Used where only a few keys matter (history
    /// visibility needs two), so that no full state is loaded.
    pub async fn state_group_keys(
        &self,
        state_groups: &[i64],
        keys: &[(String, String)],
    ) -> Result<HashMap<i64, StateIds>> {
        let mut out: HashMap<i64, StateIds> = state_groups.iter().map(|group| (*group, StateIds::new())).collect();
        if keys.is_empty() {
            return Ok(out);
        }
        for chunk in state_groups.chunks(100).map(crate::in_list) {
            let mut params = 0usize;
            let mut next = || {
                params += 1;
                format!("${params}")
            };
            let group_list: Vec<String> = chunk.iter().map(|_| next()).collect();
            let key_clauses: Vec<String> =
                keys.iter().map(|_| format!("(e.event_type = {} AND e.state_key = {})", next(), next())).collect();
            let sql = format!(
                "WITH RECURSIVE chain(start_id, id, depth) AS (
                     SELECT id, id, CAST(0 AS BIGINT) FROM state_groups WHERE id IN ({})
                     UNION ALL
                     SELECT chain.start_id, sg.prev_group, chain.depth + 1
                     FROM state_groups sg JOIN chain ON sg.id = chain.id WHERE sg.prev_group IS NOT NULL
                 )
                 SELECT chain.start_id, chain.depth, e.event_type, e.state_key, e.event_id
                 FROM chain JOIN state_group_entries e ON e.state_group = chain.id
                 WHERE {}",
                group_list.join(", "),
                key_clauses.join(" OR ")
            );
            let mut query = sqlx::query_as::<_, (i64, i64, String, String, String)>(AssertSqlSafe(sql));
            for group in chunk {
                query = query.bind(*group);
            }
            for (event_type, state_key) in keys {
                query = query.bind(event_type).bind(state_key);
            }
            let rows = query.fetch_all(self.pool()).await.context("state group keys")?;
            let mut best: HashMap<(i64, String, String), (i64, String)> = HashMap::new();
            for (start, depth, event_type, state_key, event_id) in rows {
                let slot = best.entry((start, event_type, state_key)).or_insert((i64::MAX, String::new()));
                if depth < slot.0 {
                    *slot = (depth, event_id);
                }
            }
            for ((start, event_type, state_key), (_, event_id)) in best {
                out.entry(start).or_default().insert((event_type, state_key), event_id);
            }
        }
        Ok(out)
    }

    /// The rooms among `user_id`'s memberships that have timeline events with
    /// `since < stream_ordering <= until`, with the newest such position of each.
    ///
    /// The scan starts from the events stream position, so an incremental sync costs what
    /// arrived since `since`, however many rooms the user is in.
    pub async fn rooms_with_new_events(&self, user_id: &str, since: i64, until: i64) -> Result<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT room_id, MAX(stream_ordering) FROM events
             WHERE stream_ordering > $2 AND stream_ordering <= $3 AND {TIMELINE_EVENT}
               AND room_id IN (SELECT room_id FROM room_memberships WHERE user_id = $1 AND forgotten = 0)
             GROUP BY room_id"
        )))
        .bind(user_id)
        .bind(since)
        .bind(until)
        .fetch_all(self.pool())
        .await
        .context("rooms with new events")?;
        Ok(rows.into_iter().collect())
    }

    /// Every room `user_id` has a (not forgotten) membership in. Cached per user (every
    /// long-polling `/sync` starts with it); the event writes that change a membership and
    /// [`Store::set_room_forgotten`] drop the users they touched.
    pub async fn memberships_of(&self, user_id: &str) -> Result<Vec<MembershipRow>> {
        let cache = self.membership_cache();
        if let Some(rows) = cache.get(user_id) {
            return Ok(rows.as_ref().clone());
        }
        let generation = cache.generation();
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT room_id, membership, event_id, stream_ordering FROM room_memberships
             WHERE user_id = $1 AND forgotten = 0",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("memberships of user")?;
        let rows: Vec<MembershipRow> = rows
            .into_iter()
            .map(|(room_id, membership, event_id, stream_ordering)| MembershipRow {
                room_id,
                membership,
                event_id,
                stream_ordering,
            })
            .collect();
        cache.insert(generation, user_id.to_owned(), std::sync::Arc::new(rows.clone()));
        Ok(rows)
    }

    /// A user's current membership in one room, if any.
    pub async fn membership_in(&self, room_id: &str, user_id: &str) -> Result<Option<MembershipRow>> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT membership, event_id, stream_ordering FROM room_memberships WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await
        .context("membership in room")?;
        Ok(row.map(|(membership, event_id, stream_ordering)| MembershipRow {
            room_id: room_id.to_owned(),
            membership,
            event_id,
            stream_ordering,
        }))
    }

    /// The newest timeline event of a room at or before `position`.
    pub async fn latest_event_at(&self, room_id: &str, position: i64) -> Result<Option<StoredEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering <= $2 AND {TIMELINE_EVENT}
             ORDER BY stream_ordering DESC LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(position)
            .fetch_optional(self.pool())
            .await
            .context("latest event at position")?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// The `m.room.member` events whose state key is `user_id` in a room, oldest first:
    /// `(stream_ordering, pdu)`. Used to tell whether a user joined after a given event.
    pub async fn member_event_history(&self, room_id: &str, user_id: &str) -> Result<Vec<(i64, String)>> {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT stream_ordering, pdu FROM events
             WHERE room_id = $1 AND event_type = 'm.room.member' AND state_key = $2 AND {TIMELINE_EVENT}
             ORDER BY stream_ordering"
        )))
        .bind(room_id)
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("member event history")
    }

    /// How many users have each membership in a room.
    pub async fn membership_counts(&self, room_id: &str) -> Result<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT membership, COUNT(*) FROM room_memberships WHERE room_id = $1 GROUP BY membership")
                .bind(room_id)
                .fetch_all(self.pool())
                .await
                .context("membership counts")?;
        Ok(rows.into_iter().collect())
    }

    /// Up to `limit` joined or invited members of a room other than `user_id`, by user id.
    pub async fn room_heroes(&self, room_id: &str, user_id: &str, limit: i64) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT user_id FROM room_memberships
             WHERE room_id = $1 AND user_id <> $2 AND membership IN ('join', 'invite')
             ORDER BY user_id LIMIT $3",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("room heroes")
    }

    /// The timeline event closest to `ts`: the first at or after it (`forward`) or the last at
    /// or before it.
    pub async fn event_near_timestamp(&self, room_id: &str, ts: i64, forward: bool) -> Result<Option<StoredEvent>> {
        let (cmp, order) = if forward { (">=", "ASC") } else { ("<=", "DESC") };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts {cmp} $2 AND {TIMELINE_EVENT}
             ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(ts)
            .fetch_optional(self.pool())
            .await
            .context("event near timestamp")?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// The client transaction ids under which `user_id`'s `device_id` sent any of `event_ids`.
    pub async fn transaction_ids(
        &self,
        user_id: &str,
        device_id: &str,
        event_ids: &[String],
    ) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for chunk in event_ids.chunks(200).map(crate::in_list) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            // Selected by event id alone, so that the event-id index is the one used; the owner
            // is checked on the few rows found.
            let sql = format!(
                "SELECT event_id, txn_id, user_id, device_id FROM event_txn_ids WHERE event_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as::<_, (String, String, String, String)>(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for (event_id, txn_id, owner, device) in query.fetch_all(self.pool()).await.context("transaction ids")? {
                if owner == user_id && device == device_id {
                    out.insert(event_id, txn_id);
                }
            }
        }
        Ok(out)
    }

    /// [`Store::membership_counts`] and [`Store::room_heroes`] for many rooms at once (initial
    /// syncs need a summary for every room): per room, the member counts by membership and up
    /// to `limit` joined or invited members other than `user_id`.
    pub async fn room_summaries(
        &self,
        room_ids: &[String],
        user_id: &str,
        limit: i64,
    ) -> Result<HashMap<String, (HashMap<String, i64>, Vec<String>)>> {
        let mut out: HashMap<String, (HashMap<String, i64>, Vec<String>)> = HashMap::new();
        for chunk in room_ids.chunks(200).map(crate::in_list) {
            let placeholders = |first: usize| -> String {
                (first..first + chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
            };
            let counts_sql = format!(
                "SELECT room_id, membership, COUNT(*) FROM room_memberships WHERE room_id IN ({})
                 GROUP BY room_id, membership",
                placeholders(1)
            );
            let mut counts = sqlx::query_as::<_, (String, String, i64)>(AssertSqlSafe(counts_sql));
            for room in &chunk {
                counts = counts.bind(*room);
            }
            for (room_id, membership, count) in counts.fetch_all(self.pool()).await.context("room member counts")? {
                out.entry(room_id).or_default().0.insert(membership, count);
            }
            let heroes_sql = format!(
                "SELECT room_id, user_id FROM (
                     SELECT room_id, user_id, ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY user_id) AS n
                     FROM room_memberships
                     WHERE room_id IN ({}) AND user_id <> $1 AND membership IN ('join', 'invite')
                 ) ranked WHERE n <= $2 ORDER BY room_id, user_id",
                placeholders(3)
            );
            let mut heroes = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(heroes_sql)).bind(user_id).bind(limit);
            for room in &chunk {
                heroes = heroes.bind(*room);
            }
            for (room_id, hero) in heroes.fetch_all(self.pool()).await.context("room heroes")? {
                out.entry(room_id).or_default().1.push(hero);
            }
        }
        Ok(out)
    }

    /// Every timeline event with `after < stream_ordering <= up_to`, in stream order. Read
    /// once per stream advance and shared by every waiting `/sync`.
    pub async fn event_positions_between(&self, after: i64, up_to: i64) -> Result<Vec<EventPosition>> {
        let rows: Vec<(i64, String, String, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT stream_ordering, room_id, event_id, CASE WHEN event_type = 'm.room.member' THEN state_key END
             FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2 AND {TIMELINE_EVENT}
             ORDER BY stream_ordering"
        )))
        .bind(after)
        .bind(up_to)
        .fetch_all(self.pool())
        .await
        .context("event positions")?;
        Ok(rows
            .into_iter()
            .map(|(stream_ordering, room_id, event_id, target)| EventPosition {
                stream_ordering,
                room_id,
                event_id,
                target,
            })
            .collect())
    }
}
