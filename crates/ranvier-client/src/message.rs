//! Reading history: `/messages`, `/context`, `/timestamp_to_event`.

use axum::extract::State;
use ranvier_core::{Error, Result};
use ranvier_http::{ApiResult, Authed, route};
use ranvier_store::events::Direction;
use ranvier_sync::history::MessagesRequest;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, UInt,
    api::client::{context::get_context, message::get_message_events, room::get_event_by_timestamp},
    serde::Raw,
};
use serde_json::Value;

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_message_events::v3::Request, _, _, _>(router, messages);
    let router = route::<get_context::v3::Request, _, _, _>(router, context);
    route::<get_event_by_timestamp::v1::Request, _, _, _>(router, timestamp_to_event)
}

/// Client-format JSON into ruma's raw event type.
fn raw<T>(value: &Value) -> Result<Raw<T>> {
    serde_json::value::to_raw_value(value)
        .map(Raw::from_json)
        .map_err(|e| Error::internal(format!("serialise event: {e}")))
}

fn raws<T>(values: &[Value]) -> Result<Vec<Raw<T>>> {
    values.iter().map(raw).collect()
}

fn direction(dir: ruma::api::Direction) -> Direction {
    match dir {
        ruma::api::Direction::Backward => Direction::Backward,
        ruma::api::Direction::Forward => Direction::Forward,
    }
}

fn limit(value: UInt) -> usize {
    usize::try_from(u64::from(value)).unwrap_or(usize::MAX)
}

async fn messages(
    State(state): State<AppState>,
    req: Authed<get_message_events::v3::Request>,
) -> ApiResult<get_message_events::v3::Response> {
    let body = req.body;
    let request = MessagesRequest {
        user_id: req.identity.user_id.to_string(),
        device_id: req.identity.device_id.to_string(),
        room_id: body.room_id.to_string(),
        from: body.from,
        to: body.to,
        direction: direction(body.dir),
        limit: limit(body.limit),
        filter: body.filter,
    };
    let page = state.sync.messages(request).await?;
    let mut response = get_message_events::v3::Response::new();
    response.start = page.start;
    response.end = page.end;
    response.chunk = raws(&page.chunk)?;
    response.state = raws(&page.state)?;
    Ok(response.into())
}

async fn context(
    State(state): State<AppState>,
    req: Authed<get_context::v3::Request>,
) -> ApiResult<get_context::v3::Response> {
    let body = req.body;
    let found = state
        .sync
        .context(
            req.identity.user_id.as_str(),
            req.identity.device_id.as_str(),
            body.room_id.as_str(),
            body.event_id.as_str(),
            limit(body.limit),
            &body.filter,
        )
        .await?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(found.start);
    response.end = Some(found.end);
    response.events_before = raws(&found.events_before)?;
    response.event = Some(raw(&found.event)?);
    response.events_after = raws(&found.events_after)?;
    response.state = raws(&found.state)?;
    Ok(response.into())
}

async fn timestamp_to_event(
    State(state): State<AppState>,
    req: Authed<get_event_by_timestamp::v1::Request>,
) -> ApiResult<get_event_by_timestamp::v1::Response> {
    let body = req.body;
    let forward = body.dir == ruma::api::Direction::Forward;
    let ts = i64::from(body.ts.0);
    let event =
        state.sync.timestamp_to_event(req.identity.user_id.as_str(), body.room_id.as_str(), ts, forward).await?;
    let event_id = OwnedEventId::try_from(event.event_id.as_str())
        .map_err(|e| Error::internal(format!("stored event id {}: {e}", event.event_id)))?;
    let origin_server_ts =
        MilliSecondsSinceUnixEpoch(UInt::try_from(event.origin_server_ts.max(0)).unwrap_or_default());
    Ok(get_event_by_timestamp::v1::Response::new(event_id, origin_server_ts).into())
}
