//! The one call `/sync` makes: [`E2ee::sync_data`], giving a device its to-device messages,
//! the device-list changes it must hear of, and its key counts.
//!
//! # How `/sync` uses it
//! - Call it once per sync pass with the token the client sent as `since` (`None` for an
//!   initial sync) and the pass's upper token (`now`).
//! - Put `to_device_events` in `to_device.events`, `device_lists_changed`/`_left` in
//!   `device_lists`, `one_time_keys_count` in `device_one_time_keys_count` and
//!   `unused_fallback_key_types` in `device_unused_fallback_key_types` (always present).
//! - Set the to-device position of `next_batch` to [`SyncE2ee::to_device_position`]: when a
//!   device has more messages than one response carries, the rest come with the next sync.
//! - A pass that finds nothing new (and answers without computing a response) calls
//!   [`E2ee::quiet_sync_data`] instead, so that the acknowledgement still happens and the
//!   key counts are still there.
//! - A response is worth returning early from a long-poll when `to_device_events`,
//!   `device_lists_changed` or `device_lists_left` is non-empty; the key counts are always
//!   there and are not news on their own.
//!
//! Delivery is exactly once: messages up to the `since` token's to-device position are
//! deleted when the device syncs with it, because the client only sends a token after it has
//! processed the response that carried it. Messages wait in the database for devices that
//! are offline, across restarts.
//!
//! Cost when nothing changed: two small indexed reads (the key counts); the inbox and the
//! device lists are only read when their streams (or the events stream) moved, and delivered
//! messages are only looked for once per new `since` position.

use std::collections::BTreeMap;

use ranvier_core::Result;
use ranvier_store::{StreamKind, StreamToken};
use serde_json::{Value, json};

use crate::{ACKNOWLEDGED_CAPACITY, E2ee, keys::SIGNED_CURVE25519};

/// The most to-device messages one sync response carries.
pub const TO_DEVICE_LIMIT: usize = 100;

/// The end-to-end encryption part of one `/sync` response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncE2ee {
    /// `to_device.events`: `{"sender", "type", "content"}` objects, in order.
    pub to_device_events: Vec<Value>,
    /// The to-device position `next_batch` must carry.
    pub to_device_position: i64,
    /// `device_lists.changed` (empty on an initial sync).
    pub device_lists_changed: Vec<String>,
    /// `device_lists.left` (empty on an initial sync).
    pub device_lists_left: Vec<String>,
    /// `device_one_time_keys_count` (always has `signed_curve25519`).
    pub one_time_keys_count: BTreeMap<String, u64>,
    /// `device_unused_fallback_key_types`.
    pub unused_fallback_key_types: Vec<String>,
}

impl SyncE2ee {
    /// Whether this carries news for the client (key counts alone are not news).
    pub fn has_news(&self) -> bool {
        !self.to_device_events.is_empty() || !self.device_lists_changed.is_empty() || !self.device_lists_left.is_empty()
    }
}

impl E2ee {
    /// The end-to-end encryption data of one sync of `user_id`'s `device_id` from `since`
    /// (`None`: an initial sync) to `until`. See the module docs for how to use it.
    pub async fn sync_data(
        &self,
        user_id: &str,
        device_id: &str,
        since: Option<&StreamToken>,
        until: &StreamToken,
    ) -> Result<SyncE2ee> {
        self.sync_data_with(user_id, device_id, since, until, true).await
    }

    /// [`Self::sync_data`] for a caller that may know that no member event lies in the window
    /// of events (`member_events` false), which spares the read of membership changes.
    pub async fn sync_data_with(
        &self,
        user_id: &str,
        device_id: &str,
        since: Option<&StreamToken>,
        until: &StreamToken,
        member_events: bool,
    ) -> Result<SyncE2ee> {
        let store = self.store();
        let mut data = SyncE2ee::default();

        // To-device: what the client acknowledged by sending `since` goes; the rest is sent.
        let acknowledged = since.map_or(0, |token| token.get(StreamKind::ToDevice));
        if acknowledged > 0 {
            self.forget_delivered(user_id, device_id, acknowledged).await?;
        }
        let up_to = until.get(StreamKind::ToDevice);
        data.to_device_position = up_to.max(acknowledged);
        if up_to > acknowledged {
            let page = store.to_device_inbox(user_id, device_id, acknowledged, up_to, TO_DEVICE_LIMIT).await?;
            data.to_device_position = page.complete_up_to;
            for message in page.messages {
                match serde_json::from_str::<Value>(&message.content) {
                    Ok(content) => data.to_device_events.push(json!({
                        "sender": message.sender,
                        "type": message.event_type,
                        "content": content,
                    })),
                    Err(e) => tracing::error!(error = %e, "stored to-device content is not JSON"),
                }
            }
        }

        if let Some(since) = since {
            let update = self.device_list_changes_with(user_id, since, until, member_events).await?;
            data.device_lists_changed = update.changed;
            data.device_lists_left = update.left;
        }

        self.fill_key_counts(user_id, device_id, &mut data).await?;
        Ok(data)
    }

    /// The end-to-end encryption data of a sync pass that found nothing new for the device
    /// (no stream it cares about moved past `since`): the to-device messages the client
    /// acknowledged by sending `since` are forgotten all the same, and the key counts, which
    /// clients expect in every response, are filled in. The to-device position is `since`'s.
    pub async fn quiet_sync_data(
        &self,
        user_id: &str,
        device_id: &str,
        since: Option<&StreamToken>,
    ) -> Result<SyncE2ee> {
        let mut data = SyncE2ee::default();
        let acknowledged = since.map_or(0, |token| token.get(StreamKind::ToDevice));
        if acknowledged > 0 {
            self.forget_delivered(user_id, device_id, acknowledged).await?;
        }
        data.to_device_position = acknowledged;
        self.fill_key_counts(user_id, device_id, &mut data).await?;
        Ok(data)
    }

    /// Fill in a device's one-time key counts (always with `signed_curve25519`) and unused
    /// fallback key types.
    async fn fill_key_counts(&self, user_id: &str, device_id: &str, data: &mut SyncE2ee) -> Result<()> {
        let store = self.store();
        data.one_time_keys_count.insert(SIGNED_CURVE25519.to_owned(), 0);
        let (one_time, fallback) = store.sync_key_counts(user_id, device_id).await?;
        for (algorithm, count) in one_time {
            data.one_time_keys_count.insert(algorithm, u64::try_from(count).unwrap_or_default());
        }
        data.unused_fallback_key_types = fallback;
        Ok(())
    }

    /// Delete a device's messages up to `position` unless that was already done.
    async fn forget_delivered(&self, user_id: &str, device_id: &str, position: i64) -> Result<()> {
        let key = (user_id.to_owned(), device_id.to_owned());
        if self.inner.acknowledged.lock().get(&key).is_some_and(|done| *done >= position) {
            return Ok(());
        }
        self.store().delete_delivered_to_device(user_id, device_id, position).await?;
        let mut acknowledged = self.inner.acknowledged.lock();
        if acknowledged.len() >= ACKNOWLEDGED_CAPACITY {
            acknowledged.clear();
        }
        let done = acknowledged.entry(key).or_insert(position);
        *done = (*done).max(position);
        Ok(())
    }
}
