//! Presence: `GET`/`PUT /presence/{userId}/status`.

use std::time::Duration;

use axum::extract::State;
use ranvier_core::Error;
use ranvier_http::{ApiResult, Authed, route};
use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};
use serde_json::Value;

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_presence::v3::Request, _, _, _>(router, get);
    route::<set_presence::v3::Request, _, _, _>(router, set)
}

async fn get(
    State(state): State<AppState>,
    req: Authed<get_presence::v3::Request>,
) -> ApiResult<get_presence::v3::Response> {
    let content = state.social.presence_of(req.user_id(), &req.body.user_id).await?;
    let presence = content.get("presence").and_then(Value::as_str).unwrap_or("offline");
    let mut response = get_presence::v3::Response::new(PresenceState::from(presence));
    response.status_msg = content.get("status_msg").and_then(Value::as_str).map(str::to_owned);
    response.currently_active = content.get("currently_active").and_then(Value::as_bool);
    response.last_active_ago = content.get("last_active_ago").and_then(Value::as_u64).map(Duration::from_millis);
    Ok(response.into())
}

async fn set(
    State(state): State<AppState>,
    req: Authed<set_presence::v3::Request>,
) -> ApiResult<set_presence::v3::Response> {
    let body = &req.body;
    if body.status_msg.as_ref().is_some_and(|message| message.len() > 4096) {
        return Err(Error::invalid_param("Status messages are at most 4096 bytes").into());
    }
    state.social.set_presence(req.user_id(), &body.user_id, &body.presence, body.status_msg.clone()).await?;
    Ok(set_presence::v3::Response::new().into())
}
