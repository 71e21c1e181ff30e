//! Room aliases: `PUT`/`GET`/`DELETE /directory/room/{roomAlias}` and
//! `GET /rooms/{roomId}/aliases`.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ranvier_core::{Error, error::ErrorKind};
use ranvier_http::{ApiResult, Authed, ErrorResponse, Ruma, matrix_error, route};
use ruma::api::client::{
    alias::{create_alias, delete_alias, get_alias},
    room::aliases,
};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<create_alias::v3::Request, _, _, _>(router, create);
    let router = route::<get_alias::v3::Request, _, _, _>(router, get);
    let router = route::<delete_alias::v3::Request, _, _, _>(router, delete);
    route::<aliases::v3::Request, _, _, _>(router, room_aliases)
}

/// A taken alias is `409` with `M_UNKNOWN`, as the spec shows; other errors map as usual.
async fn create(State(state): State<AppState>, req: Authed<create_alias::v3::Request>) -> Response {
    let body = &req.body;
    match state.social.create_alias(req.user_id(), &body.room_alias, &body.room_id).await {
        Ok(()) => ranvier_http::RumaResponse(create_alias::v3::Response::new()).into_response(),
        Err(Error::Matrix { kind: ErrorKind::RoomInUse, message }) => {
            matrix_error(StatusCode::CONFLICT, ErrorKind::Unknown, message)
        }
        Err(error) => ErrorResponse(error).into_response(),
    }
}

async fn get(State(state): State<AppState>, req: Ruma<get_alias::v3::Request>) -> ApiResult<get_alias::v3::Response> {
    let (room_id, servers) = state.social.resolve_alias(&req.body.room_alias).await?;
    Ok(get_alias::v3::Response::new(room_id, servers).into())
}

async fn delete(
    State(state): State<AppState>,
    req: Authed<delete_alias::v3::Request>,
) -> ApiResult<delete_alias::v3::Response> {
    state.social.delete_alias(req.user_id(), &req.body.room_alias).await?;
    Ok(delete_alias::v3::Response::new().into())
}

async fn room_aliases(
    State(state): State<AppState>,
    req: Authed<aliases::v3::Request>,
) -> ApiResult<aliases::v3::Response> {
    let aliases = state.social.room_aliases(req.user_id(), &req.body.room_id).await?;
    Ok(aliases::v3::Response::new(aliases).into())
}
