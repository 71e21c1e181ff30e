//! Devices: list, get, rename, delete, bulk delete. Deleting a device (behind UIA) revokes its
//! access tokens and evicts them from the token cache.

use axum::extract::State;
use ranvier_core::{Error, Result};
use ranvier_http::{ApiResult, Authed, route};
use ranvier_store::accounts::DeviceRow;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt, UserId,
    api::client::{
        device::{Device, delete_device, delete_devices, get_device, get_devices, update_device},
        uiaa::AuthData,
    },
};

use crate::{
    AppState, Services,
    auth::{self, UiaRequest},
};

/// The longest device display name accepted.
const MAX_DISPLAY_NAME_CHARS: usize = 100;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_devices::v3::Request, _, _, _>(router, list);
    let router = route::<get_device::v3::Request, _, _, _>(router, get);
    let router = route::<update_device::v3::Request, _, _, _>(router, update);
    let router = route::<delete_device::v3::Request, _, _, _>(router, delete);
    route::<delete_devices::v3::Request, _, _, _>(router, delete_many)
}

/// A stored device as the API shows it.
fn to_device(row: DeviceRow) -> Device {
    let mut device = Device::new(OwnedDeviceId::from(row.device_id));
    device.display_name = row.display_name;
    device.last_seen_ip = row.last_seen_ip;
    device.last_seen_ts = row.last_seen_ts.and_then(|ts| UInt::try_from(ts).ok()).map(MilliSecondsSinceUnixEpoch);
    device
}

fn unknown_device() -> Error {
    Error::not_found("Unknown device")
}

async fn list(
    State(state): State<AppState>,
    req: Authed<get_devices::v3::Request>,
) -> ApiResult<get_devices::v3::Response> {
    let devices = state.store.list_devices(req.user_id().as_str()).await?;
    Ok(get_devices::v3::Response::new(devices.into_iter().map(to_device).collect()).into())
}

async fn get(
    State(state): State<AppState>,
    req: Authed<get_device::v3::Request>,
) -> ApiResult<get_device::v3::Response> {
    let device = state.store.get_device(req.user_id().as_str(), req.body.device_id.as_str()).await?;
    Ok(get_device::v3::Response::new(to_device(device.ok_or_else(unknown_device)?)).into())
}

async fn update(
    State(state): State<AppState>,
    req: Authed<update_device::v3::Request>,
) -> ApiResult<update_device::v3::Response> {
    let user_id = req.user_id().as_str();
    let device_id = req.body.device_id.as_str();
    let found = match &req.body.display_name {
        Some(name) if name.chars().count() > MAX_DISPLAY_NAME_CHARS => {
            return Err(Error::invalid_param(format!(
                "Device display name is longer than {MAX_DISPLAY_NAME_CHARS} characters"
            ))
            .into());
        }
        Some(name) => {
            let found = state.store.set_device_display_name(user_id, device_id, Some(name)).await?;
            if found {
                // Display names are part of the device keys others query.
                state.e2ee.device_list_changed(req.user_id(), device_id.into()).await?;
            }
            found
        }
        // Without a display name nothing changes, but an unknown device is still an error.
        None => state.store.get_device(user_id, device_id).await?.is_some(),
    };
    if !found {
        return Err(unknown_device().into());
    }
    Ok(update_device::v3::Response::new().into())
}

async fn delete(
    State(state): State<AppState>,
    req: Authed<delete_device::v3::Request>,
) -> ApiResult<delete_device::v3::Response> {
    let device_id = req.body.device_id.to_string();
    let operation = format!("DELETE /devices/{device_id}");
    delete_with_uia(&state, req.user_id(), operation, &[device_id], req.body.auth.as_ref()).await?;
    Ok(delete_device::v3::Response::new().into())
}

async fn delete_many(
    State(state): State<AppState>,
    req: Authed<delete_devices::v3::Request>,
) -> ApiResult<delete_devices::v3::Response> {
    let mut device_ids: Vec<String> = req.body.devices.iter().map(ToString::to_string).collect();
    device_ids.sort();
    device_ids.dedup();
    // The session is bound to the exact set of devices, so it cannot delete others.
    let operation = format!("POST /delete_devices {}", serde_json::Value::from(device_ids.clone()));
    delete_with_uia(&state, req.user_id(), operation, &device_ids, req.body.auth.as_ref()).await?;
    Ok(delete_devices::v3::Response::new().into())
}

/// Delete devices once the user has confirmed with their password. Devices that do not exist
/// (any more) are not an error: the spec treats deletion as idempotent.
async fn delete_with_uia(
    services: &Services,
    user_id: &UserId,
    operation: String,
    device_ids: &[String],
    auth: Option<&AuthData>,
) -> Result<()> {
    let passed = auth::user_interactive_auth(services, &UiaRequest::password(user_id, operation), auth).await?;
    let ids: Vec<&str> = device_ids.iter().map(String::as_str).collect();
    services.store.delete_devices(user_id.as_str(), &ids).await?;
    devices_removed(services, user_id, device_ids).await?;
    auth::finish_uia(services, passed).await
}

/// Everything that must follow the deletion of devices (by deletion, logout or a password
/// change): their cached tokens and the pushers they set go, and their end-to-end keys and to-device inboxes go with a
/// device-list change for everyone who shares a room with the user.
pub async fn devices_removed(services: &Services, user_id: &UserId, device_ids: &[String]) -> Result<()> {
    services.auth.forget_devices(user_id, device_ids);
    services.push.devices_removed(user_id, device_ids).await?;
    for device_id in device_ids {
        services.e2ee.device_removed(user_id, device_id.as_str().into()).await?;
    }
    Ok(())
}
