//! Reporting content: `POST /rooms/{roomId}/report/{eventId}`, `/rooms/{roomId}/report` and
//! `/users/{userId}/report`; and the Synapse-compatible admin listings of what was reported
//! (`GET /_synapse/admin/v1/{event,room,user}_reports`, for server administrators).

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Query, State},
    http::request::Parts,
    response::{IntoResponse, Response},
    routing::get,
};
use ranvier_core::{Error, Result, error::ErrorKind};
use ranvier_http::{ApiResult, Authed, error_response, extract::access_token, route};
use ranvier_rooms::report::EventReport;
use ranvier_store::reports::{ReportKind, ReportQuery, ReportRow};
use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};
use serde_json::{Map, Value, json};

use crate::{AppState, ratelimit::RateLimitKind, search::AuthedJson};

/// Reports per page of the admin listings when the request gives no `limit`.
const DEFAULT_ADMIN_LIMIT: i64 = 100;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<report_content::v3::Request, _, _, _>(router, report_event);
    let router = route::<report_room::v3::Request, _, _, _>(router, report_room);
    let router = route::<report_user::v3::Request, _, _, _>(router, report_user);
    router
        .route("/_synapse/admin/v1/event_reports", get(list_event_reports))
        .route("/_synapse/admin/v1/room_reports", get(list_room_reports))
        .route("/_synapse/admin/v1/user_reports", get(list_user_reports))
}

async fn report_event(
    State(state): State<AppState>,
    request: AuthedJson<report_content::v3::Request>,
) -> ApiResult<report_content::v3::Response> {
    let AuthedJson { req, json } = request;
    // Reports share the bucket of sending messages: a flood of either is the same kind of abuse.
    state.ratelimit.check(RateLimitKind::Messages, req.user_id().as_str())?;
    // `score` left the spec in v1.18 and ruma no longer reads it; it is still checked and kept
    // as Synapse does, for older clients.
    let score = match json.get("score") {
        None | Some(Value::Null) => None,
        Some(score) => Some(score.as_i64().ok_or_else(|| Error::bad_json("Param 'score' must be an integer"))?),
    };
    let content = serde_json::to_string(&json).map_err(|e| Error::internal(format!("serialise report: {e}")))?;
    let report = EventReport { reason: req.body.reason.as_deref(), score, content: Some(&content) };
    state.rooms.report_event(req.user_id(), &req.body.room_id, &req.body.event_id, report).await?;
    Ok(report_content::v3::Response::new().into())
}

async fn report_room(
    State(state): State<AppState>,
    req: Authed<report_room::v3::Request>,
) -> ApiResult<report_room::v3::Response> {
    state.ratelimit.check(RateLimitKind::Messages, req.user_id().as_str())?;
    state.rooms.report_room(req.user_id(), &req.body.room_id, &req.body.reason).await?;
    Ok(report_room::v3::Response::new().into())
}

async fn report_user(
    State(state): State<AppState>,
    req: Authed<report_user::v3::Request>,
) -> ApiResult<report_user::v3::Response> {
    state.ratelimit.check(RateLimitKind::Messages, req.user_id().as_str())?;
    state.rooms.report_user(req.user_id(), &req.body.user_id, &req.body.reason).await?;
    Ok(report_user::v3::Response::new().into())
}

/// Fail unless the request carries the access token of a server administrator.
async fn require_admin(state: &AppState, parts: &Parts) -> Result<()> {
    let token = access_token(parts).ok_or_else(|| Error::matrix(ErrorKind::MissingToken, "Missing access token"))?;
    let identity = state.auth.authenticate(&state.store, &token).await?;
    match state.store.get_user(identity.user_id.as_str()).await? {
        Some(user) if user.admin => Ok(()),
        _ => Err(Error::forbidden("You are not a server admin")),
    }
}

/// A non-negative integer query parameter, `400 M_INVALID_PARAM` otherwise.
fn count_param(params: &HashMap<String, String>, name: &str, default: i64) -> Result<i64> {
    match params.get(name) {
        None => Ok(default),
        Some(value) => value
            .parse::<i64>()
            .ok()
            .filter(|value| *value >= 0)
            .ok_or_else(|| Error::invalid_param(format!("The {name} parameter must be a positive integer."))),
    }
}

/// One page of reports of `kind`, with `from` (how many to skip), `limit`, `dir` (`b`, newest
/// first, by default; or `f`), and the `user_id` (reporter) and `room_id` filters.
async fn list(state: &AppState, parts: &Parts, params: &HashMap<String, String>, kind: ReportKind) -> Result<Value> {
    require_admin(state, parts).await?;
    let from = count_param(params, "from", 0)?;
    let limit = count_param(params, "limit", DEFAULT_ADMIN_LIMIT)?;
    let newest_first = match params.get("dir").map(String::as_str) {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(Error::invalid_param("Unknown direction")),
    };
    let query = ReportQuery {
        kind,
        from,
        limit,
        newest_first,
        reporter: params.get("user_id").map(String::as_str),
        room_id: params.get("room_id").map(String::as_str),
    };
    let (rows, total) = state.store.list_reports(&query).await?;
    let next = from + rows.len() as i64;
    let (list_key, next_key) = match kind {
        ReportKind::Event => ("event_reports", "next_token"),
        ReportKind::Room => ("room_reports", "next_batch"),
        ReportKind::User => ("user_reports", "next_token"),
    };
    let mut body = Map::new();
    body.insert(list_key.into(), Value::Array(rows.iter().map(report_json).collect()));
    body.insert("total".into(), json!(total));
    if next < total && !rows.is_empty() {
        body.insert(next_key.into(), json!(next));
    }
    Ok(Value::Object(body))
}

/// A report as the admin listings show it: `user_id` is who reported; `sender` (event
/// reports) whose event it was; `target_user_id` (user reports) who was reported.
fn report_json(row: &ReportRow) -> Value {
    let mut report = json!({
        "id": row.id,
        "received_ts": row.received_ts,
        "user_id": row.reporter,
        "reason": row.reason,
    });
    match row.kind.as_str() {
        "event" => {
            report["room_id"] = json!(row.room_id);
            report["event_id"] = json!(row.event_id);
            report["sender"] = json!(row.target_user_id);
            report["score"] = json!(row.score);
            report["content"] = row
                .content
                .as_deref()
                .and_then(|content| serde_json::from_str(content).ok())
                .unwrap_or_else(|| json!({}));
        }
        "room" => report["room_id"] = json!(row.room_id),
        _ => report["target_user_id"] = json!(row.target_user_id),
    }
    report
}

async fn respond(state: AppState, parts: Parts, kind: ReportKind) -> Response {
    let params = match Query::<HashMap<String, String>>::try_from_uri(&parts.uri) {
        Ok(Query(params)) => params,
        Err(_) => return error_response(Error::invalid_param("Invalid query string")),
    };
    match list(&state, &parts, &params, kind).await {
        Ok(body) => Json(body).into_response(),
        Err(error) => error_response(error),
    }
}

async fn list_event_reports(State(state): State<AppState>, parts: Parts) -> Response {
    respond(state, parts, ReportKind::Event).await
}

async fn list_room_reports(State(state): State<AppState>, parts: Parts) -> Response {
    respond(state, parts, ReportKind::Room).await
}

async fn list_user_reports(State(state): State<AppState>, parts: Parts) -> Response {
    respond(state, parts, ReportKind::User).await
}
