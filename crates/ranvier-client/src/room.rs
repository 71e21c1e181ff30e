//! Room creation (`POST /createRoom`) and upgrades (`POST /rooms/{roomId}/upgrade`).

use axum::extract::State;
use ranvier_core::{Error, Result};
use ranvier_http::{ApiResult, Authed, route};
use ranvier_rooms::{CreateRoom, Preset};
use ruma::{
    RoomVersionId,
    api::client::room::{Visibility, create_room, upgrade_room},
    serde::Raw,
};
use serde_json::{Map, Value};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<create_room::v3::Request, _, _, _>(router, create_room);
    route::<upgrade_room::v3::Request, _, _, _>(router, upgrade)
}

/// A raw JSON value from the request that must be an object.
fn json_object<T>(raw: &Raw<T>, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(raw.json().get()) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::bad_json(format!("`{what}` must be a JSON object"))),
    }
}

/// `(type, state_key, content)` of an `initial_state` entry.
fn initial_state_event(raw: &Raw<ruma::events::AnyInitialStateEvent>) -> Result<(String, String, Value)> {
    let event = json_object(raw, "initial_state")?;
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_json("initial_state event without `type`"))?;
    let state_key = match event.get("state_key") {
        Some(Value::String(key)) => key.clone(),
        None => String::new(),
        Some(_) => return Err(Error::bad_json("`state_key` must be a string")),
    };
    match event.get("content") {
        Some(content @ Value::Object(_)) => Ok((kind.to_owned(), state_key, content.clone())),
        _ => Err(Error::bad_json("initial_state event without an object `content`")),
    }
}

async fn create_room(
    State(state): State<AppState>,
    req: Authed<create_room::v3::Request>,
) -> ApiResult<create_room::v3::Response> {
    use ruma::api::client::room::create_room::v3::RoomPreset;
    let body = &req.body;
    let preset = match &body.preset {
        None => None,
        Some(RoomPreset::PrivateChat) => Some(Preset::PrivateChat),
        Some(RoomPreset::TrustedPrivateChat) => Some(Preset::TrustedPrivateChat),
        Some(RoomPreset::PublicChat) => Some(Preset::PublicChat),
        Some(other) => return Err(Error::invalid_param(format!("Unknown preset {}", other.as_str())).into()),
    };
    let room_version = match &body.room_version {
        Some(version) => version.clone(),
        None => RoomVersionId::try_from(state.config.default_room_version.as_str())
            .map_err(|_| Error::internal("default_room_version is not a room version"))?,
    };
    let initial_state = body.initial_state.iter().map(initial_state_event).collect::<Result<Vec<_>>>()?;
    // A taken or invalid alias fails the request before the room exists.
    let alias = match &body.room_alias_name {
        Some(name) => {
            let alias = ranvier_social::aliases::alias_from_name(name, &state.server_name)?;
            state.social.check_alias_free(&alias).await?;
            Some(alias)
        }
        None => None,
    };
    let request = CreateRoom {
        room_version: Some(room_version),
        is_public: body.visibility == Visibility::Public,
        preset,
        creation_content: body.creation_content.as_ref().map(|raw| json_object(raw, "creation_content")).transpose()?,
        initial_state,
        name: body.name.clone(),
        topic: body.topic.clone(),
        invite: body.invite.clone(),
        is_direct: body.is_direct,
        power_level_content_override: body
            .power_level_content_override
            .as_ref()
            .map(|raw| json_object(raw, "power_level_content_override"))
            .transpose()?,
        alias,
    };
    let room_id = state.rooms.create_room(req.user_id(), request).await?;
    Ok(create_room::v3::Response::new(room_id).into())
}

async fn upgrade(
    State(state): State<AppState>,
    req: Authed<upgrade_room::v3::Request>,
) -> ApiResult<upgrade_room::v3::Response> {
    let body = req.body;
    let additional_creators = body.additional_creators;
    let new_room =
        state.social.upgrade_room(&body.room_id, &req.identity.user_id, body.new_version, additional_creators).await?;
    Ok(upgrade_room::v3::Response::new(new_room).into())
}
