//! Reports of events, rooms and users (`POST /rooms/{roomId}/report/{eventId}`,
//! `/rooms/{roomId}/report`, `/users/{userId}/report`), kept for the server's administrators.
//!
//! Reports are numbered from 1 in the order they arrive; the number is the report's id in the
//! admin listings.

use ranvier_core::{Result, error::Context};
use sqlx::Row;

use crate::{Backend, Store};

/// What a report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Event,
    Room,
    User,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Event => "event",
            ReportKind::Room => "room",
            ReportKind::User => "user",
        }
    }
}

/// A report to store.
#[derive(Clone, Debug)]
pub struct NewReport<'a> {
    pub kind: ReportKind,
    pub reporter: &'a str,
    pub room_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    /// The reported user, or the sender of the reported event.
    pub target_user_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub score: Option<i64>,
    /// The request body as the client sent it (JSON), for event reports.
    pub content: Option<&'a str>,
    pub received_ts: i64,
}

/// A stored report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRow {
    pub id: i64,
    pub kind: String,
    pub reporter: String,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub target_user_id: Option<String>,
    pub reason: Option<String>,
    pub score: Option<i64>,
    pub content: Option<String>,
    pub received_ts: i64,
}

/// Which reports to list.
#[derive(Clone, Debug)]
pub struct ReportQuery<'a> {
    pub kind: ReportKind,
    /// How many reports (in the listing's order) to skip.
    pub from: i64,
    pub limit: i64,
    pub newest_first: bool,
    /// Only reports by this user.
    pub reporter: Option<&'a str>,
    /// Only reports about this room.
    pub room_id: Option<&'a str>,
}

impl Store {
    /// Store a report and return its id.
    pub async fn add_report(&self, report: &NewReport<'_>) -> Result<i64> {
        let mut txn = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            // Ids are the next number; serialise their allocation (SQLite has one writer).
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('reports'))")
                .execute(&mut *txn)
                .await
                .context("lock report ids")?;
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO reports (id, kind, reporter, room_id, event_id, target_user_id, reason, score, content, \
             received_ts) SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM reports \
             RETURNING id",
        )
        .bind(report.kind.as_str())
        .bind(report.reporter)
        .bind(report.room_id)
        .bind(report.event_id)
        .bind(report.target_user_id)
        .bind(report.reason)
        .bind(report.score)
        .bind(report.content)
        .bind(report.received_ts)
        .fetch_one(&mut *txn)
        .await
        .context("insert report")?;
        txn.commit().await?;
        Ok(id)
    }

    /// A page of reports of one kind, and how many match the query in all.
    pub async fn list_reports(&self, query: &ReportQuery<'_>) -> Result<(Vec<ReportRow>, i64)> {
        let mut filters = String::from("kind = $1");
        let mut values: Vec<&str> = vec![query.kind.as_str()];
        if let Some(reporter) = query.reporter {
            values.push(reporter);
            filters.push_str(&format!(" AND reporter = ${}", values.len()));
        }
        if let Some(room_id) = query.room_id {
            values.push(room_id);
            filters.push_str(&format!(" AND room_id = ${}", values.len()));
        }
        let order = if query.newest_first { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT id, kind, reporter, room_id, event_id, target_user_id, reason, score, content, received_ts \
             FROM reports WHERE {filters} ORDER BY id {order} LIMIT ${} OFFSET ${}",
            values.len() + 1,
            values.len() + 2
        );
        let mut select = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in &values {
            select = select.bind(*value);
        }
        let rows = select
            .bind(query.limit.max(0))
            .bind(query.from.max(0))
            .fetch_all(self.pool())
            .await
            .context("list reports")?;
        let decode = |e: sqlx::Error| ranvier_core::Error::internal(format!("decode report row: {e}"));
        let reports = rows
            .iter()
            .map(|row| {
                Ok(ReportRow {
                    id: row.try_get(0).map_err(decode)?,
                    kind: row.try_get(1).map_err(decode)?,
                    reporter: row.try_get(2).map_err(decode)?,
                    room_id: row.try_get(3).map_err(decode)?,
                    event_id: row.try_get(4).map_err(decode)?,
                    target_user_id: row.try_get(5).map_err(decode)?,
                    reason: row.try_get(6).map_err(decode)?,
                    score: row.try_get(7).map_err(decode)?,
                    content: row.try_get(8).map_err(decode)?,
                    received_ts: row.try_get(9).map_err(decode)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut count =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM reports WHERE {filters}")));
        for value in &values {
            count = count.bind(*value);
        }
        let total: i64 = count.fetch_one(self.pool()).await.context("count reports")?;
        Ok((reports, total))
    }
}
