//! Profiles: `GET /profile/{userId}`, and `GET`/`PUT`/`DELETE /profile/{userId}/{keyName}`,
//! which also serve `displayname` and `avatar_url` (ruma's generic field endpoints cover the
//! same paths as the older per-field ones).

use axum::{
    body::Body,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request, State},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ranvier_core::Error;
use ranvier_http::{ApiResult, Authed, Ruma, error_response, route};
use ruma::api::client::profile::{
    ProfileFieldValue, delete_profile_field, get_profile, get_profile_field, set_profile_field,
};
use serde_json::Value;

use crate::{AppState, ratelimit::RateLimitKind};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_profile::v3::Request, _, _, _>(router, profile);
    let router = route::<get_profile_field::v3::Request, _, _, _>(router, get_field);
    let router = route::<set_profile_field::v3::Request, _, _, _>(router, set_field_or_missing_param);
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

/// `PUT /profile/{userId}/{keyName}` whose body lacks `keyName` is `400 M_MISSING_PARAM`, as the
/// spec lists (ruma's parser calls it bad JSON); everything else is the plain handler's.
async fn set_field_or_missing_param(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let limit = state.config.limits.max_request_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return error_response(Error::too_large(format!("Request body exceeds {limit} bytes")));
    };
    let field = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .and_then(|params| params.iter().last().map(|(_, value)| value.to_owned()));
    let request = Request::from_parts(parts, Body::from(bytes.clone()));
    match Authed::from_request(request, &state).await {
        Ok(req) => set_field(&state, req).await.into_response(),
        Err(rejection) => {
            let response = rejection.into_response();
            // Authentication comes first, so a 400 here is about the body.
            let lacks_field = match (serde_json::from_slice::<Value>(&bytes), &field) {
                (Ok(Value::Object(object)), Some(field)) => !object.contains_key(field),
                _ => false,
            };
            if response.status() == StatusCode::BAD_REQUEST && lacks_field {
                return error_response(Error::missing_param(format!(
                    "The body must hold the `{}` field",
                    field.unwrap_or_default()
                )));
            }
            response
        }
    }
}

async fn set_field(
    state: &AppState,
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
