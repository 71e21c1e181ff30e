//! Stored filters: `POST /user/{userId}/filter` and `GET /user/{userId}/filter/{filterId}`.

use axum::extract::State;
use ranvier_core::Error;
use ranvier_http::{ApiResult, Authed, route};
use ruma::api::client::filter::{create_filter, get_filter};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<create_filter::v3::Request, _, _, _>(router, create);
    route::<get_filter::v3::Request, _, _, _>(router, get)
}

async fn create(
    State(state): State<AppState>,
    req: Authed<create_filter::v3::Request>,
) -> ApiResult<create_filter::v3::Response> {
    if req.body.user_id != *req.user_id() {
        return Err(Error::forbidden("Cannot create filters for other users").into());
    }
    let filter_id = state.sync.create_filter(req.user_id().as_str(), &req.body.filter).await?;
    Ok(create_filter::v3::Response::new(filter_id).into())
}

async fn get(
    State(state): State<AppState>,
    req: Authed<get_filter::v3::Request>,
) -> ApiResult<get_filter::v3::Response> {
    if req.body.user_id != *req.user_id() {
        return Err(Error::forbidden("Cannot get filters for other users").into());
    }
    let filter = state.sync.get_filter(req.user_id().as_str(), &req.body.filter_id).await?;
    Ok(get_filter::v3::Response::new(filter).into())
}
