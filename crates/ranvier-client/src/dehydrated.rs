//! Dehydrated devices (MSC3814), under `/_matrix/client/unstable/org.matrix.msc3814.v1/`:
//! `PUT`/`GET`/`DELETE /dehydrated_device` and `POST /dehydrated_device/{deviceId}/events`.

use axum::extract::State;
use ranvier_e2ee::dehydrated::NewDehydratedDevice;
use ranvier_http::{ApiResult, Authed, route};
use ruma::{
    api::client::dehydrated_device::{
        delete_dehydrated_device, get_dehydrated_device, get_events, put_dehydrated_device,
    },
    serde::Raw,
};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<put_dehydrated_device::unstable::Request, _, _, _>(router, put);
    let router = route::<get_dehydrated_device::unstable::Request, _, _, _>(router, get);
    let router = route::<delete_dehydrated_device::unstable::Request, _, _, _>(router, delete);
    route::<get_events::unstable::Request, _, _, _>(router, events)
}

async fn put(
    State(state): State<AppState>,
    req: Authed<put_dehydrated_device::unstable::Request>,
) -> ApiResult<put_dehydrated_device::unstable::Response> {
    let body = &req.body;
    let device = NewDehydratedDevice {
        device_id: &body.device_id,
        display_name: body.initial_device_display_name.as_deref(),
        device_data: body.device_data.json(),
        device_keys: &body.device_keys,
        one_time_keys: &body.one_time_keys,
        fallback_keys: &body.fallback_keys,
    };
    state.e2ee.put_dehydrated_device(req.user_id(), device).await?;
    Ok(put_dehydrated_device::unstable::Response::new(body.device_id.clone()).into())
}

async fn get(
    State(state): State<AppState>,
    req: Authed<get_dehydrated_device::unstable::Request>,
) -> ApiResult<get_dehydrated_device::unstable::Response> {
    let (device_id, device_data) = state.e2ee.dehydrated_device(req.user_id()).await?;
    Ok(get_dehydrated_device::unstable::Response::new(device_id.into(), Raw::from_json(device_data)).into())
}

async fn delete(
    State(state): State<AppState>,
    req: Authed<delete_dehydrated_device::unstable::Request>,
) -> ApiResult<delete_dehydrated_device::unstable::Response> {
    let device_id = state.e2ee.delete_dehydrated_device(req.user_id()).await?;
    Ok(delete_dehydrated_device::unstable::Response::new(device_id.into()).into())
}

async fn events(
    State(state): State<AppState>,
    req: Authed<get_events::unstable::Request>,
) -> ApiResult<get_events::unstable::Response> {
    let body = &req.body;
    let page = state.e2ee.dehydrated_device_events(req.user_id(), &body.device_id, body.next_batch.as_deref()).await?;
    let mut response = get_events::unstable::Response::new(page.events);
    response.next_batch = Some(page.next_batch);
    Ok(response.into())
}
