//! Account data, global and per room: `GET`/`PUT /user/{userId}/account_data/{type}` and
//! `/user/{userId}/rooms/{roomId}/account_data/{type}`. `m.ignored_user_list` is checked
//! before it is stored ([`ranvier_social::ignore`]). Each write is a position in the
//! account-data stream, which `/sync` reads.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ranvier_core::{Error, Result, error::Context};
use ranvier_http::{ApiResult, Authed, error_response, matrix_error, route};
use ruma::{
    UserId,
    api::client::config::{
        get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_global_account_data::v3::Request, _, _, _>(router, get_global);
    let router = route::<set_global_account_data::v3::Request, _, _, _>(router, set_global);
    let router = route::<get_room_account_data::v3::Request, _, _, _>(router, get_room);
    route::<set_room_account_data::v3::Request, _, _, _>(router, set_room)
}

/// The key under which global account data is stored (room account data uses the room id).
const GLOBAL: &str = "";

/// Only the owner may read or write their account data.
fn check_owner(requester: &UserId, owner: &UserId) -> Result<()> {
    if requester != owner {
        return Err(Error::forbidden("Cannot access account data of another user"));
    }
    Ok(())
}

/// The content a client sent, which must be a JSON object.
fn object_content(json: &RawValue) -> Result<&str> {
    match serde_json::from_str::<serde_json::Value>(json.get()) {
        Ok(serde_json::Value::Object(_)) => Ok(json.get()),
        _ => Err(Error::bad_json("Account data content must be a JSON object")),
    }
}

/// `405 M_BAD_JSON`: the type is maintained by the server through its own endpoint.
fn server_controlled(data_type: &str, endpoint: &str) -> Response {
    let message = format!("Cannot set {data_type} through this API; use {endpoint}");
    matrix_error(StatusCode::METHOD_NOT_ALLOWED, ruma::api::error::ErrorKind::BadJson, message)
}

/// Stored content back into a response body.
fn stored<T>(content: Option<String>) -> Result<Raw<T>> {
    let content = content.ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(Raw::from_json(RawValue::from_string(content).context("stored account data is not JSON")?))
}

async fn get_global(
    State(state): State<AppState>,
    req: Authed<get_global_account_data::v3::Request>,
) -> ApiResult<get_global_account_data::v3::Response> {
    check_owner(req.user_id(), &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    let mut content = state.store.get_account_data(req.user_id().as_str(), GLOBAL, &data_type).await?;
    if content.is_none() && data_type == ranvier_push::rules::PUSH_RULES {
        // A user who never changed their push rules has the server defaults.
        content = Some(state.push.rules_content(req.user_id()).await?.to_string());
    }
    Ok(get_global_account_data::v3::Response::new(stored(content)?).into())
}

async fn set_global(State(state): State<AppState>, req: Authed<set_global_account_data::v3::Request>) -> Response {
    if let Err(error) = check_owner(req.user_id(), &req.body.user_id) {
        return error_response(error);
    }
    let data_type = req.body.event_type.to_string();
    if data_type == "m.push_rules" {
        return server_controlled(&data_type, "/pushrules");
    }
    let result: ApiResult<set_global_account_data::v3::Response> = async {
        let content = object_content(req.body.data.json())?;
        if data_type == ranvier_social::ignore::IGNORED_USER_LIST {
            let value: serde_json::Value = serde_json::from_str(content).context("parse account data")?;
            ranvier_social::ignore::check_ignored_user_list(req.user_id(), &value)?;
        }
        state.store.set_account_data(req.user_id().as_str(), GLOBAL, &data_type, content).await?;
        if data_type == ranvier_social::ignore::IGNORED_USER_LIST {
            state.push.ignore_list_changed(req.user_id());
        }
        Ok(set_global_account_data::v3::Response::new().into())
    }
    .await;
    result.into_response()
}

async fn get_room(
    State(state): State<AppState>,
    req: Authed<get_room_account_data::v3::Request>,
) -> ApiResult<get_room_account_data::v3::Response> {
    check_owner(req.user_id(), &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    let content = state.store.get_account_data(req.user_id().as_str(), req.body.room_id.as_str(), &data_type).await?;
    Ok(get_room_account_data::v3::Response::new(stored(content)?).into())
}

async fn set_room(State(state): State<AppState>, req: Authed<set_room_account_data::v3::Request>) -> Response {
    if let Err(error) = check_owner(req.user_id(), &req.body.user_id) {
        return error_response(error);
    }
    let data_type = req.body.event_type.to_string();
    if data_type == "m.fully_read" {
        return server_controlled(&data_type, "/rooms/{roomId}/read_markers");
    }
    let result: ApiResult<set_room_account_data::v3::Response> = async {
        let content = object_content(req.body.data.json())?;
        state.store.set_account_data(req.user_id().as_str(), req.body.room_id.as_str(), &data_type, content).await?;
        Ok(set_room_account_data::v3::Response::new().into())
    }
    .await;
    result.into_response()
}
