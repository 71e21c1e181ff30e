//! Events in a room: `/send`, `/state` (PUT and GET), `/redact`, `/event/{eventId}`.

use axum::{
    extract::State,
    routing::{MethodFilter, on},
};
use ranvier_core::Error;
use ranvier_http::{ApiResult, Authed, route};
use ranvier_rooms::{
    EventTemplate,
    format::{FormatOptions, client_event},
};
use ranvier_store::persist::TxnKey;
use ruma::{
    api::client::{
        message::send_message_event,
        redact::redact_event,
        room::get_room_event,
        state::{get_state_event_for_key, get_state_events, send_state_event},
    },
    serde::Raw,
};
use serde_json::Value;

use crate::{AppState, membership::raw_json, ratelimit::RateLimitKind};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<send_message_event::v3::Request, _, _, _>(router, send_message);
    let router = route::<send_state_event::v3::Request, _, _, _>(router, send_state);
    let router = route::<get_state_event_for_key::v3::Request, _, _, _>(router, get_state_event);
    let router = route::<get_state_events::v3::Request, _, _, _>(router, get_state);
    let router = route::<redact_event::v3::Request, _, _, _>(router, redact);
    let mut router = route::<get_room_event::v3::Request, _, _, _>(router, get_event);
    // axum does not match an empty `{state_key}` segment, so the empty state key also needs
    // `.../state/{eventType}` and `.../state/{eventType}/`; ruma parses two path arguments as
    // an empty state key.
    for version in ["r0", "v3"] {
        for suffix in ["", "/"] {
            let path = format!("/_matrix/client/{version}/rooms/{{room_id}}/state/{{event_type}}{suffix}");
            router = router.route(&path, on(MethodFilter::PUT, send_state).on(MethodFilter::GET, get_state_event));
        }
    }
    router
}

/// The request body as a JSON object.
fn content_object(json: &str) -> ranvier_core::Result<Value> {
    match serde_json::from_str(json) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(Error::bad_json("Content must be a JSON object")),
    }
}

async fn send_message(
    State(state): State<AppState>,
    req: Authed<send_message_event::v3::Request>,
) -> ApiResult<send_message_event::v3::Response> {
    let body = &req.body;
    state.ratelimit.check(RateLimitKind::Messages, req.user_id().as_str())?;
    let template = EventTemplate::message(body.event_type.to_string(), content_object(body.body.json().get())?);
    let txn = TxnKey {
        user_id: req.user_id().to_string(),
        device_id: req.device_id().to_string(),
        txn_id: body.txn_id.to_string(),
    };
    let event_id = state.rooms.send_event(&body.room_id, req.user_id(), template, Some(txn)).await?;
    // Sending is activity: an idle user is back. The message is sent whatever happens here.
    if let Err(error) = state.social.note_activity(req.user_id()).await {
        tracing::warn!(user = %req.user_id(), %error, "could not record activity for presence");
    }
    Ok(send_message_event::v3::Response::new(event_id).into())
}

async fn send_state(
    State(state): State<AppState>,
    req: Authed<send_state_event::v3::Request>,
) -> ApiResult<send_state_event::v3::Response> {
    let body = &req.body;
    state.ratelimit.check(RateLimitKind::Messages, req.user_id().as_str())?;
    let template = EventTemplate::state(
        body.event_type.to_string(),
        body.state_key.clone(),
        content_object(body.body.json().get())?,
    );
    let event_id = state.rooms.send_event(&body.room_id, req.user_id(), template, None).await?;
    Ok(send_state_event::v3::Response::new(event_id).into())
}

async fn get_state_event(
    State(state): State<AppState>,
    req: Authed<get_state_event_for_key::v3::Request>,
) -> ApiResult<get_state_event_for_key::v3::Response> {
    use get_state_event_for_key::v3::StateEventFormat;
    let body = &req.body;
    let event =
        state.rooms.state_event(&body.room_id, req.user_id(), &body.event_type.to_string(), &body.state_key).await?;
    let formatted = client_event(&event, FormatOptions::default());
    let value = match body.format {
        StateEventFormat::Event => formatted,
        _ => formatted.get("content").cloned().unwrap_or_else(|| Value::Object(Default::default())),
    };
    Ok(get_state_event_for_key::v3::Response::new(raw_json(&value)?).into())
}

async fn get_state(
    State(state): State<AppState>,
    req: Authed<get_state_events::v3::Request>,
) -> ApiResult<get_state_events::v3::Response> {
    let events = state.rooms.room_state(&req.body.room_id, req.user_id()).await?;
    let room_state = events
        .iter()
        .map(|event| raw_json(&client_event(event, FormatOptions::default())).map(Raw::from_json))
        .collect::<ranvier_core::Result<Vec<_>>>()?;
    Ok(get_state_events::v3::Response::new(room_state).into())
}

async fn redact(
    State(state): State<AppState>,
    req: Authed<redact_event::v3::Request>,
) -> ApiResult<redact_event::v3::Response> {
    let body = &req.body;
    state.ratelimit.check(RateLimitKind::Messages, req.user_id().as_str())?;
    let txn = TxnKey {
        user_id: req.user_id().to_string(),
        device_id: req.device_id().to_string(),
        txn_id: body.txn_id.to_string(),
    };
    let event_id =
        state.rooms.redact_event(&body.room_id, req.user_id(), &body.event_id, body.reason.clone(), Some(txn)).await?;
    Ok(redact_event::v3::Response::new(event_id).into())
}

async fn get_event(
    State(state): State<AppState>,
    req: Authed<get_room_event::v3::Request>,
) -> ApiResult<get_room_event::v3::Response> {
    let value = state.rooms.client_room_event(&req.body.room_id, req.user_id(), &req.body.event_id).await?;
    Ok(get_room_event::v3::Response::new(Raw::from_json(raw_json(&value)?)).into())
}
