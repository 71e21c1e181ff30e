//! Profiles: `GET /profile/{userId}`, and `GET`/`PUT`/`DELETE /profile/{userId}/{keyName}`,
//! which also serve `displayname` and `avatar_url` (ruma's generic field endpoints cover the
//! same paths as the older per-field ones).

use axum::extract::State;
use ranvier_core::Error;
use ranvier_http::{ApiResult, Authed, Ruma, route};
use ruma::api::client::profile::{
    ProfileFieldValue, delete_profile_field, get_profile, get_profile_field, set_profile_field,
};

use crate::{AppState, ratelimit::RateLimitKind};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_profile::v3::Request, _, _, _>(router, profile);
    let router = route::<get_profile_field::v3::Request, _, _, _>(router, get_field);
    let router = route::<set_profile_field::v3::Request, _, _, _>(router, set_field);
    route::<delete_profile_field::v3::Request, _, _, _>(router, delete_field)
}

async fn profile(
    State(state): State<AppState>,
    req: Ruma<get_profile::v3::Request>,
) -> ApiResult<get_profile::v3::Response> {
    let fields = state.social.profile(&req.body.user_id).await?;
    Ok(fields.into_iter().collect::<get_profile::v3::Response>().into())
}

async fn get_field(
    State(state): State<AppState>,
    req: Ruma<get_profile_field::v3::Request>,
) -> ApiResult<get_profile_field::v3::Response> {
    let field = req.body.field.to_string();
    let value = state.social.profile_field(&req.body.user_id, &field).await?;
    let value = ProfileFieldValue::new(&field, value)
        .map_err(|e| Error::internal(format!("stored profile field {field} is malformed: {e}")))?;
    Ok(get_profile_field::v3::Response::new(value).into())
}

async fn set_field(
    State(state): State<AppState>,
    req: Authed<set_profile_field::v3::Request>,
) -> ApiResult<set_profile_field::v3::Response> {
    // A display name or avatar change sends an event into every joined room.
    state.ratelimit.check(RateLimitKind::Messages, req.user_id().as_str())?;
    let field = req.body.value.field_name().to_string();
    let value = req.body.value.value().into_owned();
    state.social.set_profile_field(req.user_id(), &req.body.user_id, &field, value).await?;
    Ok(set_profile_field::v3::Response::new().into())
}

async fn delete_field(
    State(state): State<AppState>,
    req: Authed<delete_profile_field::v3::Request>,
) -> ApiResult<delete_profile_field::v3::Response> {
    state.ratelimit.check(RateLimitKind::Messages, req.user_id().as_str())?;
    let field = req.body.field.to_string();
    state.social.delete_profile_field(req.user_id(), &req.body.user_id, &field).await?;
    Ok(delete_profile_field::v3::Response::new().into())
}
