//! Dehydrated devices (MSC3814): a device a client leaves on the server, with its keys, so
//! that messages encrypted for the user while all their devices are offline can be read by
//! the next device they set up.
//!
//! The dehydrated device is a real device of the user: its keys are uploaded through the same
//! path as `/keys/upload` (so they show in `/keys/query`, with whatever `dehydrated` flag the
//! client put in them, and its one-time keys can be claimed), and to-device messages are
//! queued for it like for any device. It has no access token: the new device reads its
//! inbox through [`E2ee::dehydrated_device_events`], paging with `next_batch`. It is listed
//! by `GET /devices` like any device of the user.

use std::collections::BTreeMap;

use ranvier_core::{Error, Result};
use ranvier_store::{StreamKind, e2ee::dehydrated::PutDehydrated};
use ruma::{
    DeviceId, OwnedOneTimeKeyId, UserId,
    encryption::{DeviceKeys, OneTimeKey},
    events::AnyToDeviceEvent,
    serde::Raw,
};
use serde_json::{Value, json, value::RawValue};

use crate::{
    E2ee,
    keys::{checked_device_keys, new_keys},
};

/// The most to-device messages one page of a dehydrated device's inbox carries.
pub const EVENTS_LIMIT: usize = 100;

/// What a client uploads to create a dehydrated device.
#[derive(Clone, Copy, Debug)]
pub struct NewDehydratedDevice<'a> {
    pub device_id: &'a DeviceId,
    pub display_name: Option<&'a str>,
    /// The client's opaque data (the pickled device), which must be a JSON object.
    pub device_data: &'a RawValue,
    pub device_keys: &'a Raw<DeviceKeys>,
    pub one_time_keys: &'a BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
    pub fallback_keys: &'a BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>,
}

/// A page of a dehydrated device's to-device inbox.
#[derive(Clone, Debug)]
pub struct DehydratedEvents {
    pub events: Vec<Raw<AnyToDeviceEvent>>,
    /// Where the next page starts; sending it back deletes the messages of this page.
    pub next_batch: String,
}

impl E2ee {
    /// Store `device` as the user's dehydrated device, replacing (and deleting, with its keys
    /// and inbox) the one they had.
    pub async fn put_dehydrated_device(&self, user_id: &UserId, device: NewDehydratedDevice<'_>) -> Result<()> {
        let device_data = match serde_json::from_str::<Value>(device.device_data.get()) {
            Ok(value @ Value::Object(_)) => value.to_string(),
            _ => return Err(Error::bad_json("device_data must be a JSON object")),
        };
        // Check the keys before anything is written, so that a bad upload changes nothing.
        checked_device_keys(user_id, device.device_id, device.device_keys)?;
        new_keys(device.one_time_keys)?;
        new_keys(device.fallback_keys)?;

        let device_id = device.device_id.as_str();
        let outcome =
            self.store().put_dehydrated_device(user_id.as_str(), device_id, device.display_name, &device_data).await?;
        match outcome {
            PutDehydrated::DeviceIdTaken => {
                return Err(Error::invalid_param(format!(
                    "Device {device_id} already exists and is not a dehydrated device"
                )));
            }
            PutDehydrated::Stored { replaced: Some(previous) } => {
                self.device_removed(user_id, previous.as_str().into()).await?;
            }
            PutDehydrated::Stored { replaced: None } => {}
        }
        let uploaded = self
            .upload_keys(
                user_id,
                device.device_id,
                Some(device.device_keys),
                device.one_time_keys,
                device.fallback_keys,
            )
            .await;
        if let Err(e) = uploaded {
            // A one-time key the checks could not foresee (one already stored) failed the
            // upload: a device without its keys is of no use, so it goes again.
            self.delete_dehydrated_device(user_id).await?;
            return Err(e);
        }
        Ok(())
    }

    /// The user's dehydrated device: its id and data.
    pub async fn dehydrated_device(&self, user_id: &UserId) -> Result<(String, Box<RawValue>)> {
        let device = self
            .store()
            .dehydrated_device(user_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("No dehydrated device"))?;
        let data = RawValue::from_string(device.device_data)
            .map_err(|e| Error::internal(format!("stored dehydrated device data is not JSON: {e}")))?;
        Ok((device.device_id, data))
    }

    /// Delete the user's dehydrated device with its keys and inbox; returns its id.
    pub async fn delete_dehydrated_device(&self, user_id: &UserId) -> Result<String> {
        let device_id = self
            .store()
            .delete_dehydrated_device(user_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("No dehydrated device"))?;
        self.device_removed(user_id, device_id.as_str().into()).await?;
        Ok(device_id)
    }

    /// A page of the to-device messages queued for the user's dehydrated device `device_id`,
    /// after `next_batch` (from the previous page; `None` for the first). The messages before
    /// `next_batch` were received by the client and are deleted.
    pub async fn dehydrated_device_events(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        next_batch: Option<&str>,
    ) -> Result<DehydratedEvents> {
        let store = self.store();
        let current =
            store.dehydrated_device(user_id.as_str()).await?.ok_or_else(|| Error::not_found("No dehydrated device"))?;
        if current.device_id != device_id.as_str() {
            return Err(Error::forbidden("Not the user's dehydrated device"));
        }
        let after = match next_batch {
            None => 0,
            Some(token) => token
                .parse::<i64>()
                .ok()
                .filter(|position| *position >= 0)
                .ok_or_else(|| Error::invalid_param("Invalid next_batch"))?,
        };
        if after > 0 {
            store.delete_delivered_to_device(user_id.as_str(), device_id.as_str(), after).await?;
        }
        let up_to = store.streams().current_token().get(StreamKind::ToDevice);
        let mut events = Vec::new();
        let mut position = after;
        if up_to > after {
            let page = store.to_device_inbox(user_id.as_str(), device_id.as_str(), after, up_to, EVENTS_LIMIT).await?;
            position = page.complete_up_to;
            for message in page.messages {
                let Ok(content) = serde_json::from_str::<Value>(&message.content) else {
                    tracing::error!("stored to-device content is not JSON");
                    continue;
                };
                let event = json!({"sender": message.sender, "type": message.event_type, "content": content});
                match serde_json::value::to_raw_value(&event) {
                    Ok(raw) => events.push(Raw::from_json(raw)),
                    Err(e) => tracing::error!(error = %e, "to-device event does not serialise"),
                }
            }
        }
        Ok(DehydratedEvents { events, next_batch: position.to_string() })
    }
}
