//! `PUT /sendToDevice/{eventType}/{txnId}`: queue messages for devices, idempotently per
//! device and transaction id.

use axum::extract::State;
use ranvier_http::{ApiResult, Authed, route};
use ruma::api::client::to_device::send_event_to_device;

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    route::<send_event_to_device::v3::Request, _, _, _>(router, send)
}

async fn send(
    State(state): State<AppState>,
    req: Authed<send_event_to_device::v3::Request>,
) -> ApiResult<send_event_to_device::v3::Response> {
    let body = &req.body;
    let event_type = body.event_type.to_string();
    state
        .e2ee
        .send_to_device(req.user_id(), req.device_id(), &event_type, body.txn_id.as_str(), &body.messages)
        .await?;
    Ok(send_event_to_device::v3::Response::new().into())
}
