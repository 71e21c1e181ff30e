//! Room tags: `GET /user/{userId}/rooms/{roomId}/tags` and `PUT`/`DELETE .../tags/{tag}`,
//! kept in the `m.tag` room account data.

use axum::extract::State;
use ranvier_core::error::Context;
use ranvier_http::{ApiResult, Authed, route};
use ruma::api::client::tag::{create_tag, delete_tag, get_tags};
use serde_json::Value;

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_tags::v3::Request, _, _, _>(router, get);
    let router = route::<create_tag::v3::Request, _, _, _>(router, put);
    route::<delete_tag::v3::Request, _, _, _>(router, delete)
}

async fn get(State(state): State<AppState>, req: Authed<get_tags::v3::Request>) -> ApiResult<get_tags::v3::Response> {
    let body = &req.body;
    let tags = state.social.tags(req.user_id(), &body.user_id, &body.room_id).await?;
    // Tags stored by clients may carry extra keys; the typed response keeps what the spec
    // defines and leaves out entries that are not objects.
    let tags = serde_json::from_value(Value::Object(tags)).unwrap_or_default();
    Ok(get_tags::v3::Response::new(tags).into())
}

async fn put(
    State(state): State<AppState>,
    req: Authed<create_tag::v3::Request>,
) -> ApiResult<create_tag::v3::Response> {
    let body = &req.body;
    let content = match serde_json::to_value(&body.tag_info).context("serialise tag")? {
        Value::Object(content) => content,
        _ => Default::default(),
    };
    state.social.set_tag(req.user_id(), &body.user_id, &body.room_id, &body.tag, content).await?;
    Ok(create_tag::v3::Response::new().into())
}

async fn delete(
    State(state): State<AppState>,
    req: Authed<delete_tag::v3::Request>,
) -> ApiResult<delete_tag::v3::Response> {
    let body = &req.body;
    state.social.delete_tag(req.user_id(), &body.user_id, &body.room_id, &body.tag).await?;
    Ok(delete_tag::v3::Response::new().into())
}
