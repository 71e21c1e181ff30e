//! Event relations (`event_relations`, migration 0006): which events point at which through
//! `m.relates_to`, read for `/relations`, `/threads` and the aggregations bundled with events.
//!
//! Rows are written by the one persist path ([`crate::persist`]) in the event's transaction
//! and deleted there when the child is redacted. Every read names the room: a child counts
//! only for a parent of its own room.

use std::collections::HashMap;

use ranvier_core::{Result, error::Context};
use sqlx::{AssertSqlSafe, Row};

use crate::{
    Store,
    events::{Direction, EVENT_COLUMNS, StoredEvent, event_from_row, prefixed_columns},
};

/// The parents per query in batched reads (both backends' parameter limits are far above).
const IDS_PER_QUERY: usize = 200;

/// What the children of one parent with one `rel_type` add up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationSummary {
    pub parent_id: String,
    pub rel_type: String,
    /// How many children.
    pub count: i64,
    /// The stream position of the newest child.
    pub latest_position: i64,
    /// The stream position of the oldest child.
    pub first_position: i64,
    /// Whether the given user sent any of them.
    pub by_user: bool,
}

/// A page of the children of one event (`/relations`).
#[derive(Clone, Debug)]
pub struct RelationsQuery<'a> {
    pub room_id: &'a str,
    pub parent_id: &'a str,
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// How many relations deep to look: 1 for direct children only. Filters apply at every
    /// level, so a child of a non-matching child is not found.
    pub depth: i64,
    /// Exclusive lower bound of stream positions.
    pub after: i64,
    /// Inclusive upper bound of stream positions.
    pub up_to: i64,
    pub direction: Direction,
    pub limit: i64,
}

/// A thread of a room: its root and the position of its newest reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadRow {
    pub root_id: String,
    pub latest_position: i64,
}

impl Store {
    /// Whether any event of `room_id` relates to another.
    pub async fn room_has_relations(&self, room_id: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM event_relations WHERE room_id = $1 LIMIT 1")
            .bind(room_id)
            .fetch_optional(self.pool())
            .await
            .context("room has relations")?;
        Ok(found.is_some())
    }

    /// For each of `parent_ids` (events of `room_id`) and each of `rel_types`, the count of
    /// children, the newest child's position, and whether `user_id` sent one. Parents without
    /// children of a type have no entry for it.
    pub async fn relation_summaries(
        &self,
        room_id: &str,
        parent_ids: &[String],
        rel_types: &[&str],
        user_id: &str,
    ) -> Result<Vec<RelationSummary>> {
        let mut out = Vec::new();
        if rel_types.is_empty() {
            return Ok(out);
        }
        for chunk in parent_ids.chunks(IDS_PER_QUERY).map(crate::in_list) {
            let types: Vec<String> = (0..rel_types.len()).map(|i| format!("${}", i + 3)).collect();
            let ids: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3 + rel_types.len())).collect();
            let sql = format!(
                "SELECT relates_to_id, rel_type, COUNT(*), MAX(stream_ordering), \
                 SUM(CASE WHEN sender = $2 THEN 1 ELSE 0 END), MIN(stream_ordering) FROM event_relations \
                 WHERE room_id = $1 AND rel_type IN ({}) AND relates_to_id IN ({}) GROUP BY relates_to_id, rel_type",
                types.join(", "),
                ids.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(room_id).bind(user_id);
            for rel_type in rel_types {
                query = query.bind(*rel_type);
            }
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(self.pool()).await.context("relation summaries")? {
                let get = |e: sqlx::Error| ranvier_core::Error::internal(format!("decode relation summary: {e}"));
                out.push(RelationSummary {
                    parent_id: row.try_get(0).map_err(get)?,
                    rel_type: row.try_get(1).map_err(get)?,
                    count: row.try_get(2).map_err(get)?,
                    latest_position: row.try_get(3).map_err(get)?,
                    by_user: row.try_get::<i64, _>(4).map_err(get)? > 0,
                    first_position: row.try_get(5).map_err(get)?,
                });
            }
        }
        Ok(out)
    }

    /// The children of `parent_ids` in `room_id` with `rel_type`, with their parent's id,
    /// oldest first.
    pub async fn relating_events(
        &self,
        room_id: &str,
        parent_ids: &[String],
        rel_type: &str,
    ) -> Result<Vec<(String, StoredEvent)>> {
        let mut out = Vec::new();
        for chunk in parent_ids.chunks(IDS_PER_QUERY).map(crate::in_list) {
            let ids: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT {}, r.relates_to_id FROM event_relations r JOIN events e ON e.event_id = r.event_id \
                 WHERE r.room_id = $1 AND r.rel_type = $2 AND r.relates_to_id IN ({}) ORDER BY r.stream_ordering",
                prefixed_columns("e"),
                ids.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(room_id).bind(rel_type);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(self.pool()).await.context("relating events")? {
                let parent: String = row
                    .try_get(14)
                    .map_err(|e| ranvier_core::Error::internal(format!("decode relation parent: {e}")))?;
                out.push((parent, event_from_row(&row)?));
            }
        }
        Ok(out)
    }

    /// How many children with `rel_type` each of `parent_ids` in `room_id` has from any of
    /// `senders` (parents without any are left out).
    pub async fn relation_counts_by_senders(
        &self,
        room_id: &str,
        parent_ids: &[String],
        rel_type: &str,
        senders: &[String],
    ) -> Result<HashMap<String, i64>> {
        let mut out: HashMap<String, i64> = HashMap::new();
        if senders.is_empty() {
            return Ok(out);
        }
        for senders in senders.chunks(IDS_PER_QUERY).map(crate::in_list) {
            for chunk in parent_ids.chunks(IDS_PER_QUERY).map(crate::in_list) {
                let ids: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
                let from: Vec<String> = (0..senders.len()).map(|i| format!("${}", i + 3 + chunk.len())).collect();
                let sql = format!(
                    "SELECT relates_to_id, COUNT(*) FROM event_relations WHERE room_id = $1 AND rel_type = $2 \
                     AND relates_to_id IN ({}) AND sender IN ({}) GROUP BY relates_to_id",
                    ids.join(", "),
                    from.join(", ")
                );
                let mut query = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql)).bind(room_id).bind(rel_type);
                for id in chunk {
                    query = query.bind(id);
                }
                for sender in &senders {
                    query = query.bind(*sender);
                }
                for (parent, count) in query.fetch_all(self.pool()).await.context("relation counts by senders")? {
                    *out.entry(parent).or_default() += count;
                }
            }
        }
        Ok(out)
    }

    /// The ids of the children of `parent_ids` in `room_id` with `rel_type`, by parent, oldest
    /// first.
    pub async fn relating_event_ids(
        &self,
        room_id: &str,
        parent_ids: &[String],
        rel_type: &str,
    ) -> Result<HashMap<String, Vec<String>>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for chunk in parent_ids.chunks(IDS_PER_QUERY).map(crate::in_list) {
            let ids: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT relates_to_id, event_id FROM event_relations \
                 WHERE room_id = $1 AND rel_type = $2 AND relates_to_id IN ({}) ORDER BY stream_ordering",
                ids.join(", ")
            );
            let mut query = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql)).bind(room_id).bind(rel_type);
            for id in chunk {
                query = query.bind(id);
            }
            for (parent, child) in query.fetch_all(self.pool()).await.context("relating event ids")? {
                out.entry(parent).or_default().push(child);
            }
        }
        Ok(out)
    }

    /// Timeline events at the given stream positions, in no particular order.
    pub async fn events_at_positions(&self, positions: &[i64]) -> Result<Vec<StoredEvent>> {
        let mut out = Vec::with_capacity(positions.len());
        for chunk in positions.chunks(IDS_PER_QUERY).map(crate::in_list) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql =
                format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for position in chunk {
                query = query.bind(*position);
            }
            for row in query.fetch_all(self.pool()).await.context("events at positions")? {
                out.push(event_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// One page of the children of an event, newest first when walking backward.
    pub async fn relations_page(&self, q: &RelationsQuery<'_>) -> Result<Vec<StoredEvent>> {
        // $1 parent, $2 room, $3 depth, $4 after, $5 up_to, $6 limit, then the filters.
        let mut filters = String::new();
        let mut next = 7;
        let mut filter_values = Vec::new();
        for (column, value) in [("rel_type", q.rel_type), ("event_type", q.event_type)] {
            if let Some(value) = value {
                filters.push_str(&format!(" AND r.{column} = ${next}"));
                next += 1;
                filter_values.push(value);
            }
        }
        let order = match q.direction {
            Direction::Forward => "ASC",
            Direction::Backward => "DESC",
        };
        let sql = format!(
            "WITH RECURSIVE related (event_id, depth) AS ( \
               SELECT r.event_id, 1 FROM event_relations r WHERE r.relates_to_id = $1 AND r.room_id = $2{filters} \
               UNION \
               SELECT r.event_id, related.depth + 1 FROM event_relations r \
               JOIN related ON r.relates_to_id = related.event_id \
               WHERE related.depth < $3 AND r.room_id = $2{filters}) \
             SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN (SELECT event_id FROM related) \
             AND stream_ordering > $4 AND stream_ordering <= $5 \
             AND outlier = 0 AND rejected_reason IS NULL AND soft_failed = 0 \
             ORDER BY stream_ordering {order} LIMIT $6"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(q.parent_id)
            .bind(q.room_id)
            .bind(q.depth)
            .bind(q.after)
            .bind(q.up_to)
            .bind(q.limit);
        for value in filter_values {
            query = query.bind(value);
        }
        let rows = query.fetch_all(self.pool()).await.context("relations page")?;
        rows.iter().map(event_from_row).collect()
    }

    /// The threads of a room whose newest reply is at or before `at_most` (counting only
    /// replies at or before `up_to`), newest activity first, at most `limit`. With `participant`, only
    /// the threads whose root or some reply that user sent.
    pub async fn thread_roots(
        &self,
        room_id: &str,
        up_to: i64,
        at_most: i64,
        participant: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ThreadRow>> {
        let participated = if participant.is_some() {
            " AND (root.sender = $5 OR SUM(CASE WHEN r.sender = $5 THEN 1 ELSE 0 END) > 0)"
        } else {
            ""
        };
        let sql = format!(
            "SELECT r.relates_to_id, MAX(r.stream_ordering) FROM event_relations r \
             JOIN events root ON root.event_id = r.relates_to_id \
             WHERE r.room_id = $1 AND r.rel_type = 'm.thread' AND root.room_id = $1 AND r.stream_ordering <= $2 \
             AND root.outlier = 0 AND root.rejected_reason IS NULL AND root.soft_failed = 0 \
             GROUP BY r.relates_to_id, root.sender \
             HAVING MAX(r.stream_ordering) <= $3{participated} \
             ORDER BY MAX(r.stream_ordering) DESC LIMIT $4"
        );
        let mut query =
            sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql)).bind(room_id).bind(up_to).bind(at_most).bind(limit);
        if let Some(user) = participant {
            query = query.bind(user);
        }
        let rows = query.fetch_all(self.pool()).await.context("thread roots")?;
        Ok(rows.into_iter().map(|(root_id, latest_position)| ThreadRow { root_id, latest_position }).collect())
    }
}
