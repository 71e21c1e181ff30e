//! The `/sync` response body, shaped as the spec's `GET /sync` response.
//!
//! Written here rather than with ruma's response type because ruma leaves out empty sections,
//! while clients are friendlier with every section present (as Synapse sends them); events are
//! already client-format JSON, so there is nothing to gain from typed events either.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// The whole response.
#[derive(Debug, Default, Serialize)]
pub struct SyncResponse {
    pub next_batch: String,
    pub rooms: Rooms,
    pub presence: Events,
    pub account_data: Events,
    pub to_device: Events,
    pub device_lists: DeviceLists,
    /// One-time key counts of the syncing device; absent until end-to-end encryption fills it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_one_time_keys_count: Option<BTreeMap<String, u64>>,
    /// Unused fallback key algorithms of the syncing device; absent until end-to-end
    /// encryption fills it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_unused_fallback_key_types: Option<Vec<String>>,
}

impl SyncResponse {
    /// Whether the response carries nothing for the client (a long-poll keeps waiting).
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
            && self.presence.events.is_empty()
            && self.account_data.events.is_empty()
            && self.to_device.events.is_empty()
            && self.device_lists.changed.is_empty()
            && self.device_lists.left.is_empty()
    }
}

/// A list of events, as most sections hold.
#[derive(Debug, Default, Serialize)]
pub struct Events {
    pub events: Vec<Value>,
}

/// Users whose devices changed (`device_lists`).
#[derive(Debug, Default, Serialize)]
pub struct DeviceLists {
    pub changed: Vec<String>,
    pub left: Vec<String>,
}

/// Updates per room, by membership.
#[derive(Debug, Default, Serialize)]
pub struct Rooms {
    pub join: BTreeMap<String, JoinedRoom>,
    pub invite: BTreeMap<String, InvitedRoom>,
    pub leave: BTreeMap<String, LeftRoom>,
    pub knock: BTreeMap<String, KnockedRoom>,
}

impl Rooms {
    pub fn is_empty(&self) -> bool {
        self.join.is_empty() && self.invite.is_empty() && self.leave.is_empty() && self.knock.is_empty()
    }
}

/// A joined room's update.
#[derive(Debug, Default, Serialize)]
pub struct JoinedRoom {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<RoomSummary>,
    pub timeline: Timeline,
    pub state: Events,
    pub account_data: Events,
    pub ephemeral: Events,
    /// Unread counts (of the main timeline alone when counted per thread); set whenever push
    /// is wired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_notifications: Option<UnreadNotifications>,
    /// Unread counts per thread root, when the filter asks for `unread_thread_notifications`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_thread_notifications: Option<BTreeMap<String, UnreadNotifications>>,
}

/// `unread_notifications` of a joined room.
#[derive(Debug, Default, Serialize)]
pub struct UnreadNotifications {
    pub notification_count: u64,
    pub highlight_count: u64,
}

impl JoinedRoom {
    /// Whether an incremental sync has anything to say about this room.
    pub fn is_empty(&self) -> bool {
        self.timeline.events.is_empty()
            && self.state.events.is_empty()
            && self.account_data.events.is_empty()
            && self.ephemeral.events.is_empty()
    }
}

/// A left room's update: the timeline up to the leave.
#[derive(Debug, Default, Serialize)]
pub struct LeftRoom {
    pub timeline: Timeline,
    pub state: Events,
    pub account_data: Events,
}

/// An invite: stripped state only.
#[derive(Debug, Default, Serialize)]
pub struct InvitedRoom {
    pub invite_state: Events,
}

/// A knock: stripped state only.
#[derive(Debug, Default, Serialize)]
pub struct KnockedRoom {
    pub knock_state: Events,
}

/// A room's timeline section.
#[derive(Debug, Default, Serialize)]
pub struct Timeline {
    pub events: Vec<Value>,
    pub limited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
}

/// The room summary (`m.heroes` and member counts).
#[derive(Debug, Default, Serialize)]
pub struct RoomSummary {
    #[serde(rename = "m.heroes")]
    pub heroes: Vec<String>,
    #[serde(rename = "m.joined_member_count")]
    pub joined_member_count: i64,
    #[serde(rename = "m.invited_member_count")]
    pub invited_member_count: i64,
}
