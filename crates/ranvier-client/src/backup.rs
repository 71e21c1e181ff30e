//! Server-side key backup: `/room_keys/version` (create, read the current or a given version,
//! update `auth_data`, delete) and `/room_keys/keys` for all rooms, one room or one session
//! (store, read, delete).

use std::collections::BTreeMap;

use axum::extract::State;
use ranvier_core::Error;
use ranvier_e2ee::backup::RoomKeys;
use ranvier_http::{ApiResult, Authed, route};
use ranvier_store::e2ee::backup::BackupScope;
use ruma::api::client::backup::{
    RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
    delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version,
    get_backup_info, get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
    update_backup_version,
};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<create_backup_version::v3::Request, _, _, _>(router, create_version);
    let router = route::<get_latest_backup_info::v3::Request, _, _, _>(router, latest_version);
    let router = route::<get_backup_info::v3::Request, _, _, _>(router, get_version);
    let router = route::<update_backup_version::v3::Request, _, _, _>(router, update_version);
    let router = route::<delete_backup_version::v3::Request, _, _, _>(router, delete_version);
    let router = route::<add_backup_keys::v3::Request, _, _, _>(router, put_keys);
    let router = route::<add_backup_keys_for_room::v3::Request, _, _, _>(router, put_room_keys);
    let router = route::<add_backup_keys_for_session::v3::Request, _, _, _>(router, put_session_key);
    let router = route::<get_backup_keys::v3::Request, _, _, _>(router, get_keys);
    let router = route::<get_backup_keys_for_room::v3::Request, _, _, _>(router, get_room_keys);
    let router = route::<get_backup_keys_for_session::v3::Request, _, _, _>(router, get_session_key);
    let router = route::<delete_backup_keys::v3::Request, _, _, _>(router, delete_keys);
    let router = route::<delete_backup_keys_for_room::v3::Request, _, _, _>(router, delete_room_keys);
    route::<delete_backup_keys_for_session::v3::Request, _, _, _>(router, delete_session_key)
}

async fn create_version(
    State(state): State<AppState>,
    req: Authed<create_backup_version::v3::Request>,
) -> ApiResult<create_backup_version::v3::Response> {
    let version = state.e2ee.create_backup(req.user_id(), &req.body.algorithm).await?;
    Ok(create_backup_version::v3::Response::new(version).into())
}

async fn latest_version(
    State(state): State<AppState>,
    req: Authed<get_latest_backup_info::v3::Request>,
) -> ApiResult<get_latest_backup_info::v3::Response> {
    let info = state.e2ee.backup_info(req.user_id(), None).await?;
    Ok(get_latest_backup_info::v3::Response::new(info.algorithm, info.count, info.etag, info.version).into())
}

async fn get_version(
    State(state): State<AppState>,
    req: Authed<get_backup_info::v3::Request>,
) -> ApiResult<get_backup_info::v3::Response> {
    let info = state.e2ee.backup_info(req.user_id(), Some(&req.body.version)).await?;
    Ok(get_backup_info::v3::Response::new(info.algorithm, info.count, info.etag, info.version).into())
}

async fn update_version(
    State(state): State<AppState>,
    req: Authed<update_backup_version::v3::Request>,
) -> ApiResult<update_backup_version::v3::Response> {
    state.e2ee.update_backup(req.user_id(), &req.body.version, &req.body.algorithm).await?;
    Ok(update_backup_version::v3::Response::new().into())
}

async fn delete_version(
    State(state): State<AppState>,
    req: Authed<delete_backup_version::v3::Request>,
) -> ApiResult<delete_backup_version::v3::Response> {
    state.e2ee.delete_backup(req.user_id(), &req.body.version).await?;
    Ok(delete_backup_version::v3::Response::new().into())
}

async fn put_keys(
    State(state): State<AppState>,
    req: Authed<add_backup_keys::v3::Request>,
) -> ApiResult<add_backup_keys::v3::Response> {
    let keys: RoomKeys = req.body.rooms.iter().map(|(room, backup)| (room.clone(), backup.sessions.clone())).collect();
    let done = state.e2ee.put_backup_keys(req.user_id(), &req.body.version, &keys).await?;
    Ok(add_backup_keys::v3::Response::new(done.etag, done.count).into())
}

async fn put_room_keys(
    State(state): State<AppState>,
    req: Authed<add_backup_keys_for_room::v3::Request>,
) -> ApiResult<add_backup_keys_for_room::v3::Response> {
    let keys: RoomKeys = BTreeMap::from([(req.body.room_id.clone(), req.body.sessions.clone())]);
    let done = state.e2ee.put_backup_keys(req.user_id(), &req.body.version, &keys).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(done.etag, done.count).into())
}

async fn put_session_key(
    State(state): State<AppState>,
    req: Authed<add_backup_keys_for_session::v3::Request>,
) -> ApiResult<add_backup_keys_for_session::v3::Response> {
    let body = &req.body;
    let session = BTreeMap::from([(body.session_id.clone(), body.session_data.clone())]);
    let keys: RoomKeys = BTreeMap::from([(body.room_id.clone(), session)]);
    let done = state.e2ee.put_backup_keys(req.user_id(), &body.version, &keys).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(done.etag, done.count).into())
}

async fn get_keys(
    State(state): State<AppState>,
    req: Authed<get_backup_keys::v3::Request>,
) -> ApiResult<get_backup_keys::v3::Response> {
    let keys = state.e2ee.get_backup_keys(req.user_id(), &req.body.version, BackupScope::All).await?;
    let rooms = keys.into_iter().map(|(room, sessions)| (room, RoomKeyBackup::new(sessions))).collect();
    Ok(get_backup_keys::v3::Response::new(rooms).into())
}

async fn get_room_keys(
    State(state): State<AppState>,
    req: Authed<get_backup_keys_for_room::v3::Request>,
) -> ApiResult<get_backup_keys_for_room::v3::Response> {
    let scope = BackupScope::Room(req.body.room_id.as_str());
    let mut keys = state.e2ee.get_backup_keys(req.user_id(), &req.body.version, scope).await?;
    let sessions = keys.remove(&req.body.room_id).unwrap_or_default();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions).into())
}

async fn get_session_key(
    State(state): State<AppState>,
    req: Authed<get_backup_keys_for_session::v3::Request>,
) -> ApiResult<get_backup_keys_for_session::v3::Response> {
    let body = &req.body;
    let scope = BackupScope::Session(body.room_id.as_str(), &body.session_id);
    let mut keys = state.e2ee.get_backup_keys(req.user_id(), &body.version, scope).await?;
    let key = keys
        .remove(&body.room_id)
        .and_then(|mut sessions| sessions.remove(&body.session_id))
        .ok_or_else(|| Error::not_found("Key not found."))?;
    Ok(get_backup_keys_for_session::v3::Response::new(key).into())
}

async fn delete_keys(
    State(state): State<AppState>,
    req: Authed<delete_backup_keys::v3::Request>,
) -> ApiResult<delete_backup_keys::v3::Response> {
    let done = state.e2ee.delete_backup_keys(req.user_id(), &req.body.version, BackupScope::All).await?;
    Ok(delete_backup_keys::v3::Response::new(done.etag, done.count).into())
}

async fn delete_room_keys(
    State(state): State<AppState>,
    req: Authed<delete_backup_keys_for_room::v3::Request>,
) -> ApiResult<delete_backup_keys_for_room::v3::Response> {
    let scope = BackupScope::Room(req.body.room_id.as_str());
    let done = state.e2ee.delete_backup_keys(req.user_id(), &req.body.version, scope).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(done.etag, done.count).into())
}

async fn delete_session_key(
    State(state): State<AppState>,
    req: Authed<delete_backup_keys_for_session::v3::Request>,
) -> ApiResult<delete_backup_keys_for_session::v3::Response> {
    let body = &req.body;
    let scope = BackupScope::Session(body.room_id.as_str(), &body.session_id);
    let done = state.e2ee.delete_backup_keys(req.user_id(), &body.version, scope).await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(done.etag, done.count).into())
}
