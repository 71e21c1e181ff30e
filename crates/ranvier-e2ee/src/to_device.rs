//! `/sendToDevice`: queue messages in the recipients' to-device inboxes.
//!
//! Messages for local users are stored for their devices (`*` meaning every device the user
//! has at that moment). Messages for remote users need federation, which does not exist yet:
//! they are dropped with a log line, and federation will hand them to its outbound queue here.

use ranvier_core::{Error, Result};
use ranvier_store::e2ee::to_device::{DeviceTarget, OutgoingToDevice, ToDeviceSend};
use ruma::{
    DeviceId, UserId, api::client::to_device::send_event_to_device::v3::Messages, to_device::DeviceIdOrAllDevices,
};
use serde_json::value::RawValue;

use crate::E2ee;

impl E2ee {
    /// Send `messages` of `event_type` from `sender`'s `sender_device`. A transaction id that
    /// this device used before (within a day) makes the call a no-op, so retries are safe.
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        event_type: &str,
        txn_id: &str,
        messages: &Messages,
    ) -> Result<()> {
        let mut outgoing = Vec::new();
        for (user_id, targets) in messages {
            for (target, content) in targets {
                let content = checked_content(content.json())?;
                if !self.is_local(user_id) {
                    tracing::debug!(%user_id, "to-device message for a remote user dropped: no federation yet");
                    continue;
                }
                let target = match target {
                    DeviceIdOrAllDevices::AllDevices => DeviceTarget::All,
                    DeviceIdOrAllDevices::DeviceId(device_id) => DeviceTarget::Device(device_id.to_string()),
                };
                outgoing.push(OutgoingToDevice { user_id: user_id.to_string(), target, content });
            }
        }
        let send = ToDeviceSend {
            sender: sender.as_str(),
            sender_device: sender_device.as_str(),
            txn_id,
            event_type,
            messages: &outgoing,
        };
        self.store().send_to_device(send).await?;
        Ok(())
    }
}

/// A message's content, which must be a JSON object.
fn checked_content(content: &RawValue) -> Result<String> {
    match serde_json::from_str::<serde_json::Value>(content.get()) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value.to_string()),
        _ => Err(Error::bad_json("To-device message content must be a JSON object")),
    }
}
