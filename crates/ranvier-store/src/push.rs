//! Push: what the push rules decided for each local user and event (`event_push_actions`,
//! written with the event by [`crate::persist`]), the unread counts and notification lists
//! read from it, and pushers with their delivery progress (the tables of `0007_push.sql`).
//!
//! An event counts as read for a user when its position is at or below the user's latest
//! read receipt (`m.read` or `m.read.private`) that is unthreaded or of the event's thread.

use std::collections::HashMap;

use ranvier_core::{Result, error::Context};

use crate::{Store, unread_cache::Lookup};

/// The receipt types that move a user's read position.
const READ_TYPES: &str = "'m.read', 'm.read.private'";

/// One user's push outcome for an event, written in the event's transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPushAction {
    pub user_id: String,
    /// `main` or the thread root's event id.
    pub thread_id: String,
    pub notify: bool,
    pub highlight: bool,
    /// The actions as a JSON array.
    pub actions: String,
}

/// A stored push outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushActionRow {
    pub user_id: String,
    pub room_id: String,
    pub event_id: String,
    pub stream_ordering: i64,
    pub thread_id: String,
    pub notify: bool,
    pub highlight: bool,
    pub actions: String,
    pub ts: i64,
}

/// Unread counts of one thread of a room (`main` for the main timeline).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadCounts {
    pub thread_id: String,
    pub notifications: i64,
    pub highlights: i64,
}

/// A stored pusher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub device_id: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The `data` object as JSON.
    pub data: String,
    pub pushkey_ts: i64,
    pub last_stream_ordering: i64,
    pub failing_since: Option<i64>,
}

type PushActionTuple = (String, String, String, i64, String, i64, i64, String, i64);
type PusherTuple =
    (String, String, String, String, String, String, String, Option<String>, String, String, i64, i64, Option<i64>);

const ACTION_COLUMNS: &str =
    "a.user_id, a.room_id, a.event_id, a.stream_ordering, a.thread_id, a.notify, a.highlight, a.actions, a.ts";
const PUSHER_COLUMNS: &str = "user_id, app_id, pushkey, device_id, kind, app_display_name, device_display_name, \
     profile_tag, lang, data, pushkey_ts, last_stream_ordering, failing_since";

fn action_row(t: PushActionTuple) -> PushActionRow {
    PushActionRow {
        user_id: t.0,
        room_id: t.1,
        event_id: t.2,
        stream_ordering: t.3,
        thread_id: t.4,
        notify: t.5 != 0,
        highlight: t.6 != 0,
        actions: t.7,
        ts: t.8,
    }
}

fn pusher_row(t: PusherTuple) -> PusherRow {
    PusherRow {
        user_id: t.0,
        app_id: t.1,
        pushkey: t.2,
        device_id: t.3,
        kind: t.4,
        app_display_name: t.5,
        device_display_name: t.6,
        profile_tag: t.7,
        lang: t.8,
        data: t.9,
        pushkey_ts: t.10,
        last_stream_ordering: t.11,
        failing_since: t.12,
    }
}

/// Rooms per query of [`Store::unread_counts_in_rooms`], far below both backends' limits on
/// parameters.
const ROOMS_PER_COUNT_QUERY: usize = 500;

/// The query over the unread action rows `a` of user `$1` in the rooms that `rooms` (a
/// `SELECT` or `VALUES` of one column, each room once) lists: `SELECT {select} … WHERE
/// {filter} {tail}`.
///
/// A row is unread when it comes after the user's latest read receipt that is unthreaded or
/// of the row's thread, or, without such a receipt, after the user's current membership event
/// (so that what came before a join, such as the invite, does not count), as Synapse does.
/// The marks that decide this are read once per room (`k`, materialized so that neither
/// backend folds them back into a lookup per row): rows of the main thread compare with them
/// directly, and only rows of other threads look up their thread's receipt. The scan of the
/// index starts at the lowest mark any row of the room can have (the unthreaded receipt if
/// there is one, which every row's mark is at least; else the lower of the earliest receipt
/// and the membership), so the rows already read, however many, are not visited.
fn unread_query(rooms: &str, select: &str, filter: &str, tail: &str) -> String {
    let receipts = format!(
        "FROM receipts r WHERE r.user_id = $1 AND r.room_id = rooms.room_id AND r.receipt_type IN ({READ_TYPES})"
    );
    format!(
        "WITH rooms(room_id) AS ({rooms}), marks AS MATERIALIZED (SELECT rooms.room_id, \
         (SELECT MAX(r.event_stream_ordering) {receipts} AND r.thread_id = '') AS unthreaded, \
         (SELECT MAX(r.event_stream_ordering) {receipts} AND r.thread_id IN ('', 'main')) AS main, \
         (SELECT MIN(r.event_stream_ordering) {receipts}) AS lowest, \
         COALESCE((SELECT m.stream_ordering FROM room_memberships m WHERE m.room_id = rooms.room_id \
         AND m.user_id = $1), 0) AS joined FROM rooms) \
         SELECT {select} FROM marks k JOIN event_push_actions a ON a.user_id = $1 AND a.room_id = k.room_id \
         WHERE a.stream_ordering > COALESCE(k.unthreaded, CASE WHEN k.lowest < k.joined THEN k.lowest ELSE k.joined END) \
         AND CASE WHEN a.thread_id = 'main' THEN a.stream_ordering > COALESCE(k.main, k.joined) \
         ELSE a.stream_ordering > COALESCE((SELECT MAX(r.event_stream_ordering) FROM receipts r \
         WHERE r.user_id = $1 AND r.room_id = a.room_id AND r.thread_id IN ('', a.thread_id) \
         AND r.receipt_type IN ({READ_TYPES})), k.joined) END AND {filter} {tail}"
    )
}

impl Store {
    /// The unread counts of `user_id` in a room per thread, counting events up to `up_to`.
    /// Threads with nothing unread are left out.
    pub async fn unread_counts(&self, user_id: &str, room_id: &str, up_to: i64) -> Result<Vec<ThreadCounts>> {
        let rows = self.unread_counts_in_rooms(user_id, &[room_id.to_owned()], up_to).await?;
        Ok(rows.into_iter().map(|(_, counts)| counts).collect())
    }

    /// [`Self::unread_counts`] for several rooms in one query (a few hundred rooms per query):
    /// `(room_id, counts)` rows ordered by room and thread, rooms with nothing unread left out.
    /// Rooms whose counts the unread cache holds are not read again (see
    /// [`crate::unread_cache`]).
    pub async fn unread_counts_in_rooms(
        &self,
        user_id: &str,
        room_ids: &[String],
        up_to: i64,
    ) -> Result<Vec<(String, ThreadCounts)>> {
        let cache = self.unread_cache();
        let mut out = Vec::new();
        // Each room once: its rows would otherwise be counted once per mention.
        let mut room_ids = room_ids.to_vec();
        room_ids.sort_unstable();
        room_ids.dedup();
        let mut loads = Vec::new();
        let mut misses = Vec::new();
        for room_id in room_ids {
            match cache.lookup(user_id, &room_id, up_to) {
                Lookup::Hit(threads) => out.extend(threads.into_iter().map(|counts| (room_id.clone(), counts))),
                Lookup::Load(epoch) => {
                    loads.push((room_id.clone(), epoch));
                    misses.push(room_id);
                }
                Lookup::Uncached => misses.push(room_id),
            }
        }
        let read = match self.read_unread_counts(user_id, &misses, up_to).await {
            Ok(read) => read,
            Err(error) => {
                for (room_id, epoch) in &loads {
                    cache.abandon(user_id, room_id, *epoch);
                }
                return Err(error);
            }
        };
        if !loads.is_empty() {
            let mut by_room: HashMap<&str, Vec<ThreadCounts>> = HashMap::new();
            for (room_id, counts) in &read {
                by_room.entry(room_id.as_str()).or_default().push(counts.clone());
            }
            for (room_id, epoch) in &loads {
                let threads = by_room.get(room_id.as_str()).map_or(&[][..], Vec::as_slice);
                cache.loaded(user_id, room_id, *epoch, up_to, threads);
            }
        }
        out.extend(read);
        out.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.thread_id.cmp(&y.thread_id)));
        Ok(out)
    }

    /// [`Self::unread_counts_in_rooms`] read from the database, for distinct `room_ids`.
    async fn read_unread_counts(
        &self,
        user_id: &str,
        room_ids: &[String],
        up_to: i64,
    ) -> Result<Vec<(String, ThreadCounts)>> {
        let mut out = Vec::new();
        for chunk in room_ids.chunks(ROOMS_PER_COUNT_QUERY) {
            let rooms: Vec<String> = (0..chunk.len()).map(|i| format!("(${})", i + 3)).collect();
            let sql = unread_query(
                &format!("VALUES {}", rooms.join(", ")),
                "a.room_id, a.thread_id, CAST(SUM(a.notify) AS BIGINT), CAST(SUM(a.highlight) AS BIGINT)",
                "a.stream_ordering <= $2",
                "GROUP BY a.room_id, a.thread_id ORDER BY a.room_id, a.thread_id",
            );
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id).bind(up_to);
            for room_id in chunk {
                query = query.bind(room_id);
            }
            let rows: Vec<(String, String, i64, i64)> =
                query.fetch_all(self.pool()).await.context("unread counts of rooms")?;
            out.extend(rows.into_iter().map(|(room_id, thread_id, notifications, highlights)| {
                (room_id, ThreadCounts { thread_id, notifications, highlights })
            }));
        }
        Ok(out)
    }

    /// How many of the rooms `user_id` is joined to have unread notifications, and how many
    /// unread notifications they have in all.
    pub async fn unread_totals(&self, user_id: &str) -> Result<(i64, i64)> {
        let sql = unread_query(
            "SELECT room_id FROM room_memberships WHERE user_id = $1 AND membership = 'join'",
            "COUNT(DISTINCT a.room_id), COUNT(*)",
            "a.notify = 1",
            "",
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_one(self.pool()).await.context("unread totals")
    }

    /// The notifications of `user_id`, newest first, before position `before` (exclusive),
    /// at most `limit`; only highlights if `only_highlight`.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: Option<i64>,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<PushActionRow>> {
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM event_push_actions a WHERE a.user_id = $1 AND a.stream_ordering < $2 \
             AND (a.notify = 1 OR a.highlight = 1) AND ($3 = 0 OR a.highlight = 1) \
             ORDER BY a.stream_ordering DESC LIMIT $4"
        );
        let rows: Vec<PushActionTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(only_highlight))
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .context("notifications")?;
        Ok(rows.into_iter().map(action_row).collect())
    }

    /// The events-stream positions `user_id` has read up to in a room, per thread (`""` for
    /// the unthreaded receipt).
    pub async fn read_positions(&self, user_id: &str, room_id: &str) -> Result<Vec<(String, i64)>> {
        let sql = format!(
            "SELECT thread_id, MAX(event_stream_ordering) FROM receipts WHERE user_id = $1 AND room_id = $2 \
             AND receipt_type IN ({READ_TYPES}) GROUP BY thread_id"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(room_id)
            .fetch_all(self.pool())
            .await
            .context("read positions")
    }

    /// The notifying push outcomes of `user_id` in `(after, up_to]`, oldest first, at most
    /// `limit` (what a pusher delivers next).
    pub async fn push_actions_after(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
        limit: i64,
    ) -> Result<Vec<PushActionRow>> {
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM event_push_actions a WHERE a.user_id = $1 AND a.stream_ordering > $2 \
             AND a.stream_ordering <= $3 AND a.notify = 1 ORDER BY a.stream_ordering LIMIT $4"
        );
        let rows: Vec<PushActionTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(after)
            .bind(up_to)
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .context("push actions after")?;
        Ok(rows.into_iter().map(action_row).collect())
    }

    /// Create or replace a pusher (keyed by user, app id and pushkey). Unless `append`, the
    /// same app id and pushkey of other users are removed.
    pub async fn set_pusher(&self, pusher: &PusherRow, append: bool) -> Result<()> {
        let mut txn = self.begin_write().await?;
        if !append {
            sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
                .bind(&pusher.app_id)
                .bind(&pusher.pushkey)
                .bind(&pusher.user_id)
                .execute(&mut *txn)
                .await
                .context("remove other users' pushers")?;
        }
        let sql = format!(
            "INSERT INTO pushers ({PUSHER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET device_id = excluded.device_id, \
             kind = excluded.kind, app_display_name = excluded.app_display_name, \
             device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, \
             lang = excluded.lang, data = excluded.data"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&pusher.user_id)
            .bind(&pusher.app_id)
            .bind(&pusher.pushkey)
            .bind(&pusher.device_id)
            .bind(&pusher.kind)
            .bind(&pusher.app_display_name)
            .bind(&pusher.device_display_name)
            .bind(pusher.profile_tag.as_deref())
            .bind(&pusher.lang)
            .bind(&pusher.data)
            .bind(pusher.pushkey_ts)
            .bind(pusher.last_stream_ordering)
            .bind(pusher.failing_since)
            .execute(&mut *txn)
            .await
            .context("set pusher")?;
        txn.commit().await
    }

    /// Delete one pusher; returns whether it existed.
    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
            .bind(user_id)
            .bind(app_id)
            .bind(pushkey)
            .execute(&mut *txn)
            .await
            .context("delete pusher")?
            .rows_affected();
        txn.commit().await?;
        Ok(deleted > 0)
    }

    /// Delete the pushers created by some devices of a user; returns them.
    pub async fn delete_pushers_of_devices(&self, user_id: &str, device_ids: &[&str]) -> Result<Vec<PusherRow>> {
        let mut removed = Vec::new();
        for pusher in self.pushers_of(user_id).await? {
            if device_ids.contains(&pusher.device_id.as_str())
                && self.delete_pusher(user_id, &pusher.app_id, &pusher.pushkey).await?
            {
                removed.push(pusher);
            }
        }
        Ok(removed)
    }

    /// The pushers of a user.
    pub async fn pushers_of(&self, user_id: &str) -> Result<Vec<PusherRow>> {
        let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey");
        let rows: Vec<PusherTuple> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_all(self.pool()).await.context("pushers")?;
        Ok(rows.into_iter().map(pusher_row).collect())
    }

    /// One pusher.
    pub async fn get_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<Option<PusherRow>> {
        let sql = format!("SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3");
        let row: Option<PusherTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .bind(app_id)
            .bind(pushkey)
            .fetch_optional(self.pool())
            .await
            .context("get pusher")?;
        Ok(row.map(pusher_row))
    }

    /// The users who have at least one pusher.
    pub async fn users_with_pushers(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT DISTINCT user_id FROM pushers ORDER BY user_id")
            .fetch_all(self.pool())
            .await
            .context("users with pushers")
    }

    /// Record a pusher's delivery progress: delivered up to `last_stream_ordering`, failing
    /// since `failing_since` (or not failing).
    pub async fn update_pusher_progress(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
        last_stream_ordering: i64,
        failing_since: Option<i64>,
    ) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query(
            "UPDATE pushers SET last_stream_ordering = $1, failing_since = $2 \
             WHERE user_id = $3 AND app_id = $4 AND pushkey = $5",
        )
        .bind(last_stream_ordering)
        .bind(failing_since)
        .bind(user_id)
        .bind(app_id)
        .bind(pushkey)
        .execute(&mut *txn)
        .await
        .context("update pusher progress")?;
        txn.commit().await
    }
}
