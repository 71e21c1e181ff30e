//! Typing notifications: `PUT /rooms/{roomId}/typing/{userId}`.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{FromRequest, Request, State},
    response::{IntoResponse, Response},
};
use ranvier_core::Error;
use ranvier_http::{ApiResult, Authed, error_response, route};
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};
use serde_json::Value;

use crate::AppState;

/// How long a user shows as typing when the client names no `timeout` (which the spec allows
/// and ruma's parser does not).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    route::<create_typing_event::v3::Request, _, _, _>(router, typing_with_default_timeout)
}

/// Fill in the default `timeout` of a `{"typing": true}` body, then handle it as usual.
async fn typing_with_default_timeout(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limit = state.config.limits.max_request_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return error_response(Error::too_large(format!("Request body exceeds {limit} bytes")));
    };
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut object)) if object.get("typing") == Some(&Value::Bool(true)) => {
            object.entry("timeout").or_insert(Value::from(DEFAULT_TIMEOUT.as_millis() as u64));
            Value::Object(object).to_string().into_bytes().into()
        }
        // Anything else goes to the parser as it came, to be judged there.
        _ => bytes,
    };
    match Authed::from_request(Request::from_parts(parts, Body::from(bytes)), &state).await {
        Ok(req) => typing(&state, req).await.into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

async fn typing(
    state: &AppState,
    req: Authed<create_typing_event::v3::Request>,
) -> ApiResult<create_typing_event::v3::Response> {
    if req.body.user_id != req.identity.user_id {
        return Err(Error::forbidden("Cannot set another user's typing state").into());
    }
    let timeout = match req.body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    state.social.set_typing(&req.body.room_id, req.user_id(), timeout).await?;
    Ok(create_typing_event::v3::Response::new().into())
}
