//! Server-side search (`POST /search`) and mutual rooms (MSC2666: `GET /mutual_rooms`, stable
//! in v1.19, and its unstable path).
//!
//! The search body is built by [`ranvier_sync::search`] as JSON in the shape clients read
//! (every list present), not by ruma's response type, which leaves empty lists out.

use axum::{
    Json,
    body::Body,
    extract::{FromRequest, Request, State},
    response::{IntoResponse, Response},
};
use ranvier_core::{Error, error::ErrorKind};
use ranvier_http::{
    ApiResult, AuthState, Authed, ErrorResponse, error_response,
    extract::{RequiresAccessToken, access_token},
    route,
};
use ranvier_sync::search::SearchRequest;
use ruma::{
    UInt,
    api::{
        IncomingRequest,
        client::{membership::get_mutual_rooms, search::search_events},
    },
};
use serde_json::{Value, json};

use crate::AppState;

/// Rooms per page of `mutual_rooms`.
pub const MUTUAL_ROOMS_PAGE: usize = 50;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<search_events::v3::Request, _, _, _>(router, search);
    let router = route::<get_mutual_rooms::v1::Request, _, _, _>(router, mutual_rooms);
    route::<get_mutual_rooms::unstable::Request, _, _, _>(router, mutual_rooms_unstable)
}

/// An authenticated request parsed by ruma, together with its body as plain JSON: for the few
/// checks ruma's types cannot express (whether a field that has a default was sent at all, or
/// the type of a field they ignore). The body is not JSON: `Value::Null`.
pub(crate) struct AuthedJson<T> {
    pub req: Authed<T>,
    pub json: Value,
}

impl<T> FromRequest<AppState> for AuthedJson<T>
where
    T: IncomingRequest + Send,
    T::Authentication: RequiresAccessToken,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        // An anonymous request learns only that it needs a token, as with `Authed`.
        if access_token(&parts).is_none() {
            return Err(error_response(Error::matrix(ErrorKind::MissingToken, "Missing access token")));
        }
        let limit = state.max_body_bytes();
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| error_response(Error::too_large(format!("Request body exceeds {limit} bytes"))))?;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let req = Authed::<T>::from_request(Request::from_parts(parts, Body::from(bytes)), state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self { req, json })
    }
}

async fn search(
    State(state): State<AppState>,
    request: AuthedJson<search_events::v3::Request>,
) -> Result<Json<Value>, ErrorResponse> {
    let AuthedJson { req, json } = request;
    let Some(criteria) = req.body.search_categories.room_events else {
        return Err(Error::bad_json("Missing `search_categories.room_events`").into());
    };
    let context_requested =
        json.pointer("/search_categories/room_events/event_context").is_some_and(|context| !context.is_null());
    let request = SearchRequest {
        user_id: req.identity.user_id.to_string(),
        device_id: req.identity.device_id.to_string(),
        next_batch: req.body.next_batch,
        criteria,
        context_requested,
    };
    let room_events = state.sync.search(request).await?;
    Ok(Json(json!({ "search_categories": { "room_events": room_events } })))
}

async fn mutual_rooms(
    State(state): State<AppState>,
    req: Authed<get_mutual_rooms::v1::Request>,
) -> ApiResult<get_mutual_rooms::v1::Response> {
    let page =
        state.rooms.mutual_rooms(req.user_id(), &req.body.user_id, req.body.from.as_deref(), MUTUAL_ROOMS_PAGE).await?;
    let mut response =
        get_mutual_rooms::v1::Response::new(UInt::try_from(page.count).unwrap_or(UInt::MAX), page.joined);
    response.next_batch = page.next_batch;
    Ok(response.into())
}

async fn mutual_rooms_unstable(
    State(state): State<AppState>,
    req: Authed<get_mutual_rooms::unstable::Request>,
) -> ApiResult<get_mutual_rooms::unstable::Response> {
    let page =
        state.rooms.mutual_rooms(req.user_id(), &req.body.user_id, req.body.from.as_deref(), MUTUAL_ROOMS_PAGE).await?;
    let mut response = get_mutual_rooms::unstable::Response::new(page.joined);
    response.next_batch = page.next_batch;
    Ok(response.into())
}
