//! Server notices for administrators: `POST /_synapse/admin/v1/send_server_notice`, in
//! Synapse's shape (`{"user_id", "content", "type"?, "state_key"?}` → `{"event_id"}`).
//!
//! It has no ruma type: the body is read with serde, and the caller must be a server
//! administrator ([`crate::admin::require_admin`]).

use axum::{
    Json,
    body::Bytes,
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::post,
};
use ranvier_core::{Error, Result, error::ErrorKind};
use ranvier_http::error_response;
use ranvier_social::notices::Notice;
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{AppState, admin::require_admin};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router.route("/_synapse/admin/v1/send_server_notice", post(send))
}

/// The body of a notice request.
#[derive(Deserialize)]
struct SendNotice {
    user_id: String,
    content: Map<String, Value>,
    #[serde(rename = "type", default = "message_type")]
    event_type: String,
    #[serde(default)]
    state_key: Option<String>,
}

fn message_type() -> String {
    "m.room.message".to_owned()
}

async fn send(State(state): State<AppState>, request: Request) -> Response {
    match send_notice(&state, request).await {
        Ok(event_id) => Json(json!({ "event_id": event_id })).into_response(),
        Err(error) => error_response(error),
    }
}

async fn send_notice(state: &AppState, request: Request) -> Result<String> {
    let (parts, body) = request.into_parts();
    require_admin(state, &parts).await?;
    let limit = state.config.limits.max_request_bytes;
    let body: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Error::too_large(format!("Request body exceeds {limit} bytes")))?;
    let request: SendNotice = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(Error::matrix(ErrorKind::NotJson, format!("Content not JSON: {e}")));
        }
        Err(e) => return Err(Error::bad_json(format!("Bad server notice request: {e}"))),
    };
    let Some(notices) = &state.notices else {
        return Err(Error::matrix(ErrorKind::Unknown, "Server notices are not enabled on this server"));
    };
    let user_id = UserId::parse(request.user_id.as_str())
        .map_err(|_| Error::invalid_param(format!("`{}` is not a valid user id", request.user_id)))?;
    if request.event_type.is_empty() || request.event_type.contains('\0') {
        return Err(Error::invalid_param("Invalid event type"));
    }
    let notice = Notice { event_type: request.event_type, state_key: request.state_key, content: request.content };
    Ok(notices.send(&user_id, notice).await?.to_string())
}
