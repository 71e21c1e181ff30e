//! Helpers shared by the social scenarios: paths, room set-up, and reading what `/sync` would
//! report.

use http::StatusCode;
use ranvier_social::Ephemeral;
use ranvier_store::StreamToken;
use ruma::UserId;
use serde_json::{Value, json};

use crate::support::{self, Session, TestApi};

pub const V3: &str = "/_matrix/client/v3";

/// Percent-encode the characters of ids that matter in a path.
pub fn enc(id: &str) -> String {
    id.replace('%', "%25")
        .replace('!', "%21")
        .replace(':', "%3A")
        .replace('$', "%24")
        .replace('@', "%40")
        .replace('#', "%23")
}

pub fn user_id(session: &Session) -> &UserId {
    <&UserId>::try_from(session.user_id.as_str()).expect("user id")
}

pub async fn create_room(api: &TestApi, session: &Session, body: Value) -> String {
    let response = api.post(&format!("{V3}/createRoom"), session.token(), body).await;
    response.assert_status(StatusCode::OK);
    response.body["room_id"].as_str().expect("room_id").to_owned()
}

pub async fn join(api: &TestApi, session: &Session, room: &str) -> support::Response {
    api.post(&format!("{V3}/join/{}", enc(room)), session.token(), json!({})).await
}

pub async fn send_text(api: &TestApi, session: &Session, room: &str, text: &str) -> String {
    let path = format!("{V3}/rooms/{}/send/m.room.message/{}", enc(room), ranvier_core::util::random_string(8));
    let response = api.put(&path, session.token(), json!({ "msgtype": "m.text", "body": text })).await;
    response.assert_status(StatusCode::OK);
    response.body["event_id"].as_str().expect("event_id").to_owned()
}

pub async fn member_content(api: &TestApi, session: &Session, room: &str, member: &str) -> Value {
    let path = format!("{V3}/rooms/{}/state/m.room.member/{}", enc(room), enc(member));
    let response = api.get(&path, session.token()).await;
    response.assert_status(StatusCode::OK);
    response.body
}

/// The current sync token.
pub fn token(api: &TestApi) -> StreamToken {
    api.state.store.streams().current_token()
}

/// What `/sync` will report of the social layer for `session` between `since` and now.
pub async fn ephemeral(api: &TestApi, session: &Session, rooms: &[&str], since: &StreamToken, full: bool) -> Ephemeral {
    let rooms: Vec<String> = rooms.iter().map(|room| (*room).to_owned()).collect();
    api.state.social.sync_ephemeral(user_id(session), &rooms, since, &token(api), full).await.expect("sync_ephemeral")
}

/// The events of one type in a room's ephemeral section.
pub fn room_events(ephemeral: &Ephemeral, room: &str, event_type: &str) -> Vec<Value> {
    ephemeral
        .rooms
        .get(room)
        .map(|events| events.iter().filter(|event| event["type"] == event_type).cloned().collect())
        .unwrap_or_default()
}

pub fn profile_path(user: &str, field: &str) -> String {
    if field.is_empty() { format!("{V3}/profile/{}", enc(user)) } else { format!("{V3}/profile/{}/{field}", enc(user)) }
}

pub fn alias_path(alias: &str) -> String {
    format!("{V3}/directory/room/{}", enc(alias))
}

pub fn presence_path(user: &str) -> String {
    format!("{V3}/presence/{}/status", enc(user))
}

/// The `m.presence` event of `user` in an ephemeral update, if any.
pub fn presence_of<'a>(ephemeral: &'a Ephemeral, user: &str) -> Option<&'a Value> {
    ephemeral.presence.iter().find(|event| event["sender"] == user)
}

pub async fn state_content(api: &TestApi, session: &Session, room: &str, event_type: &str) -> support::Response {
    api.get(&format!("{V3}/rooms/{}/state/{event_type}", enc(room)), session.token()).await
}

pub async fn membership(api: &TestApi, room: &str, user: &Session) -> Option<String> {
    api.store().membership(room, &user.user_id).await.expect("membership").map(|row| row.membership)
}
