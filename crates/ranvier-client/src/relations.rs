//! Event relations: `/relations/{eventId}[/{relType}[/{eventType}]]` and `/threads`.

use axum::extract::State;
use ranvier_http::{ApiResult, Authed, route};
use ranvier_rooms::relations::{RelationsPage, RelationsRequest};
use ranvier_store::events::Direction;
use ruma::{
    OwnedEventId, OwnedRoomId, UInt,
    api::client::{
        relations::{
            get_relating_events, get_relating_events_with_rel_type, get_relating_events_with_rel_type_and_event_type,
        },
        threads::get_threads,
    },
    serde::Raw,
};

use crate::{AppState, membership::raw_json};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_relating_events::v1::Request, _, _, _>(router, relations);
    let router = route::<get_relating_events_with_rel_type::v1::Request, _, _, _>(router, relations_with_rel_type);
    let router = route::<get_relating_events_with_rel_type_and_event_type::v1::Request, _, _, _>(
        router,
        relations_with_rel_type_and_event_type,
    );
    route::<get_threads::v1::Request, _, _, _>(router, threads)
}

/// The query parameters all three `/relations` endpoints share.
struct Query {
    from: Option<String>,
    to: Option<String>,
    limit: Option<UInt>,
    dir: ruma::api::Direction,
    recurse: bool,
}

fn request(query: Query, rel_type: Option<String>, event_type: Option<String>) -> RelationsRequest {
    RelationsRequest {
        rel_type,
        event_type,
        from: query.from,
        to: query.to,
        limit: query.limit.map(|limit| usize::try_from(u64::from(limit)).unwrap_or(usize::MAX)),
        direction: match query.dir {
            ruma::api::Direction::Backward => Direction::Backward,
            ruma::api::Direction::Forward => Direction::Forward,
        },
        recurse: query.recurse,
    }
}

/// The parts of a `/relations` response, for whichever of the three response types.
struct Response<T> {
    chunk: Vec<Raw<T>>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

async fn page<T>(
    state: &AppState,
    room_id: &OwnedRoomId,
    user_id: &ruma::UserId,
    event_id: &OwnedEventId,
    request: RelationsRequest,
) -> ranvier_core::Result<Response<T>> {
    let RelationsPage { chunk, next_batch, prev_batch, recursion_depth } =
        state.rooms.relations(room_id, user_id, event_id, request).await?;
    let chunk = chunk.iter().map(|event| raw_json(event).map(Raw::from_json)).collect::<ranvier_core::Result<_>>()?;
    Ok(Response {
        chunk,
        next_batch,
        prev_batch,
        recursion_depth: recursion_depth.and_then(|depth| UInt::try_from(depth).ok()),
    })
}

async fn relations(
    State(state): State<AppState>,
    req: Authed<get_relating_events::v1::Request>,
) -> ApiResult<get_relating_events::v1::Response> {
    let user_id = req.user_id().to_owned();
    let body = req.body;
    let query = Query { from: body.from, to: body.to, limit: body.limit, dir: body.dir, recurse: body.recurse };
    let page = page(&state, &body.room_id, &user_id, &body.event_id, request(query, None, None)).await?;
    let mut response = get_relating_events::v1::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.recursion_depth = page.recursion_depth;
    Ok(response.into())
}

async fn relations_with_rel_type(
    State(state): State<AppState>,
    req: Authed<get_relating_events_with_rel_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type::v1::Response> {
    let user_id = req.user_id().to_owned();
    let body = req.body;
    let query = Query { from: body.from, to: body.to, limit: body.limit, dir: body.dir, recurse: body.recurse };
    let request = request(query, Some(body.rel_type.to_string()), None);
    let page = page(&state, &body.room_id, &user_id, &body.event_id, request).await?;
    let mut response = get_relating_events_with_rel_type::v1::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.recursion_depth = page.recursion_depth;
    Ok(response.into())
}

async fn relations_with_rel_type_and_event_type(
    State(state): State<AppState>,
    req: Authed<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let user_id = req.user_id().to_owned();
    let body = req.body;
    let query = Query { from: body.from, to: body.to, limit: body.limit, dir: body.dir, recurse: body.recurse };
    let request = request(query, Some(body.rel_type.to_string()), Some(body.event_type.to_string()));
    let page = page(&state, &body.room_id, &user_id, &body.event_id, request).await?;
    let mut response = get_relating_events_with_rel_type_and_event_type::v1::Response::new(page.chunk);
    response.next_batch = page.next_batch;
    response.prev_batch = page.prev_batch;
    response.recursion_depth = page.recursion_depth;
    Ok(response.into())
}

async fn threads(
    State(state): State<AppState>,
    req: Authed<get_threads::v1::Request>,
) -> ApiResult<get_threads::v1::Response> {
    let body = &req.body;
    let participated = match body.include {
        get_threads::v1::IncludeThreads::All => false,
        get_threads::v1::IncludeThreads::Participated => true,
        _ => return Err(ranvier_core::Error::invalid_param("`include` must be `all` or `participated`").into()),
    };
    let limit = body.limit.map(|limit| usize::try_from(u64::from(limit)).unwrap_or(usize::MAX));
    let page = state.rooms.threads(&body.room_id, req.user_id(), participated, body.from.as_deref(), limit).await?;
    let chunk =
        page.chunk.iter().map(|event| raw_json(event).map(Raw::from_json)).collect::<ranvier_core::Result<_>>()?;
    let mut response = get_threads::v1::Response::new(chunk);
    response.next_batch = page.next_batch;
    Ok(response.into())
}
