//! Reporting content (`/rooms/{roomId}/report/{eventId}`, `/rooms/{roomId}/report`,
//! `/users/{userId}/report`): checks as the spec and Synapse make them, then one row for the
//! administrators.
//!
//! - An event can be reported only by a user joined to its room who may see it; anything
//!   else (unknown, elsewhere, hidden by history visibility, redacted) is `404 M_NOT_FOUND`,
//!   the same answer whatever the reason.
//! - A room can be reported by anyone, joined or not, if the server knows it.
//! - A user report is accepted (`200`) for any user id, and stored only for local accounts
//!   that exist, so that it tells nothing about which accounts exist.

use ranvier_core::{Error, Result, util::now_ms};
use ranvier_store::reports::{NewReport, ReportKind};
use ruma::{EventId, RoomId, UserId};

use crate::Rooms;

/// The longest user report reason accepted, in characters (Synapse's limit).
pub const MAX_USER_REPORT_REASON: usize = 1000;

/// An event report as the client sent it.
#[derive(Clone, Debug, Default)]
pub struct EventReport<'a> {
    pub reason: Option<&'a str>,
    pub score: Option<i64>,
    /// The request body, stored with the report.
    pub content: Option<&'a str>,
}

impl Rooms {
    /// Report an event of `room_id`; `404` unless `reporter` is joined and may see it.
    pub async fn report_event(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        report: EventReport<'_>,
    ) -> Result<()> {
        let not_found = || Error::not_found("Unable to report event: it does not exist or you aren't able to see it.");
        let joined = self.store().membership(room_id.as_str(), reporter.as_str()).await?;
        if joined.is_none_or(|row| row.membership != "join") {
            return Err(not_found());
        }
        let event = match self.room_event(room_id, reporter, event_id).await {
            Ok(event) => event,
            Err(Error::Matrix { .. }) => return Err(not_found()),
            Err(error) => return Err(error),
        };
        if event.redacted_by.is_some() || event.outlier || event.soft_failed {
            return Err(not_found());
        }
        self.store()
            .add_report(&NewReport {
                kind: ReportKind::Event,
                reporter: reporter.as_str(),
                room_id: Some(room_id.as_str()),
                event_id: Some(event_id.as_str()),
                target_user_id: Some(&event.sender),
                reason: report.reason,
                score: report.score,
                content: report.content,
                received_ts: now_ms(),
            })
            .await?;
        tracing::info!(%reporter, %room_id, %event_id, "event reported");
        Ok(())
    }

    /// Report a room the server knows; `404` otherwise.
    pub async fn report_room(&self, reporter: &UserId, room_id: &RoomId, reason: &str) -> Result<()> {
        if self.store().room(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found("Room does not exist"));
        }
        self.store()
            .add_report(&NewReport {
                kind: ReportKind::Room,
                reporter: reporter.as_str(),
                room_id: Some(room_id.as_str()),
                event_id: None,
                target_user_id: None,
                reason: Some(reason),
                score: None,
                content: None,
                received_ts: now_ms(),
            })
            .await?;
        tracing::info!(%reporter, %room_id, "room reported");
        Ok(())
    }

    /// Report a user. A reason longer than [`MAX_USER_REPORT_REASON`] is `400 M_BAD_JSON`;
    /// reports of remote or unknown users succeed without being stored.
    pub async fn report_user(&self, reporter: &UserId, user_id: &UserId, reason: &str) -> Result<()> {
        if reason.chars().count() > MAX_USER_REPORT_REASON {
            return Err(Error::bad_json(format!("Reason must be at most {MAX_USER_REPORT_REASON} characters")));
        }
        if user_id.server_name() != self.server_name() || self.store().get_user(user_id.as_str()).await?.is_none() {
            return Ok(());
        }
        self.store()
            .add_report(&NewReport {
                kind: ReportKind::User,
                reporter: reporter.as_str(),
                room_id: None,
                event_id: None,
                target_user_id: Some(user_id.as_str()),
                reason: Some(reason),
                score: None,
                content: None,
                received_ts: now_ms(),
            })
            .await?;
        tracing::info!(%reporter, reported = %user_id, "user reported");
        Ok(())
    }
}
