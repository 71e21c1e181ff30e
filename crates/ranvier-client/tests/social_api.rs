//! In-process API tests of the social layer: profiles, typing, receipts and read markers,
//! presence, tags, room aliases, the room and user directories, knocking, restricted joins and
//! room upgrades. Every scenario runs on SQLite and on PostgreSQL and checks exact statuses
//! and errcodes.
//!
//! `/sync` does not carry ephemeral events yet, so the scenarios read them from
//! `Social::sync_ephemeral`, the function `/sync` will call.

mod support;

use std::time::Duration;

use http::StatusCode;
use ranvier_store::{StreamKind, StreamToken};
use ruma::UserId;
use serde_json::{Value, json};
use support::{Backend, Session, TestApi};

const V3: &str = "/_matrix/client/v3";

both_backends!(profiles, profile_errors);

/// Percent-encode the characters of ids that matter in a path.
fn enc(id: &str) -> String {
    id.replace('%', "%25")
        .replace('!', "%21")
        .replace(':', "%3A")
        .replace('$', "%24")
        .replace('@', "%40")
        .replace('#', "%23")
}

fn user_id(session: &Session) -> &UserId {
    <&UserId>::try_from(session.user_id.as_str()).expect("user id")
}

async fn create_room(api: &TestApi, session: &Session, body: Value) -> String {
    let response = api.post(&format!("{V3}/createRoom"), session.token(), body).await;
    response.assert_status(StatusCode::OK);
    response.body["room_id"].as_str().expect("room_id").to_owned()
}

async fn join(api: &TestApi, session: &Session, room: &str) -> support::Response {
    api.post(&format!("{V3}/join/{}", enc(room)), session.token(), json!({})).await
}

async fn send_text(api: &TestApi, session: &Session, room: &str, text: &str) -> String {
    let path = format!("{V3}/rooms/{}/send/m.room.message/{}", enc(room), ranvier_core::util::random_string(8));
    let response = api.put(&path, session.token(), json!({ "msgtype": "m.text", "body": text })).await;
    response.assert_status(StatusCode::OK);
    response.body["event_id"].as_str().expect("event_id").to_owned()
}

async fn member_content(api: &TestApi, session: &Session, room: &str, member: &str) -> Value {
    let path = format!("{V3}/rooms/{}/state/m.room.member/{}", enc(room), enc(member));
    let response = api.get(&path, session.token()).await;
    response.assert_status(StatusCode::OK);
    response.body
}

fn profile_path(user: &str, field: &str) -> String {
    if field.is_empty() { format!("{V3}/profile/{}", enc(user)) } else { format!("{V3}/profile/{}/{field}", enc(user)) }
}

async fn profiles(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let (a, b) = (alice.user_id.as_str(), bob.user_id.as_str());

    // A new account is known by its localpart; its profile is public.
    let profile = api.get(&profile_path(a, ""), None).await;
    profile.assert_status(StatusCode::OK);
    assert_eq!(profile.body, json!({ "displayname": "alice" }));
    let name = api.get(&profile_path(a, "displayname"), None).await;
    assert_eq!((name.status, &name.body), (StatusCode::OK, &json!({ "displayname": "alice" })));
    api.get(&profile_path(a, "avatar_url"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&profile_path("@nobody:example.org", ""), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&profile_path("@nobody:example.org", "displayname"), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&profile_path("@alice:elsewhere.org", ""), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Member events carry the profile: the creator's join, and an invite the invitee's.
    let room = create_room(&api, &alice, json!({ "invite": [b] })).await;
    assert_eq!(member_content(&api, &alice, &room, a).await["displayname"], "alice");
    let invite = member_content(&api, &alice, &room, b).await;
    assert_eq!((invite["membership"].as_str(), invite["displayname"].as_str()), (Some("invite"), Some("bob")));
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);
    assert_eq!(member_content(&api, &alice, &room, b).await["displayname"], "bob");

    // A new display name and avatar reach the member event of every joined room.
    let put = api.put(&profile_path(a, "displayname"), alice.token(), json!({ "displayname": "Alice W." })).await;
    put.assert_status(StatusCode::OK);
    assert_eq!(put.body, json!({}));
    let avatar = json!({ "avatar_url": "mxc://example.org/abc" });
    api.put(&profile_path(a, "avatar_url"), alice.token(), avatar).await.assert_status(StatusCode::OK);
    let member = member_content(&api, &bob, &room, a).await;
    assert_eq!(
        (member["membership"].as_str(), member["displayname"].as_str(), member["avatar_url"].as_str()),
        (Some("join"), Some("Alice W."), Some("mxc://example.org/abc"))
    );
    // Setting the same value again sends nothing new.
    let member_ids = || async {
        let members = api.get(&format!("{V3}/rooms/{}/members", enc(&room)), alice.token()).await.body;
        members["chunk"].as_array().expect("chunk").iter().map(|event| event["event_id"].clone()).collect::<Vec<_>>()
    };
    let before = member_ids().await;
    api.put(&profile_path(a, "displayname"), alice.token(), json!({ "displayname": "Alice W." }))
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(before, member_ids().await);

    // Extended fields.
    let tz = json!({ "m.tz": "Europe/Paris" });
    api.put(&profile_path(a, "m.tz"), alice.token(), tz.clone()).await.assert_status(StatusCode::OK);
    let pronouns = json!({ "org.example.pronouns": { "en": ["she", "her"] } });
    api.put(&profile_path(a, "org.example.pronouns"), alice.token(), pronouns.clone())
        .await
        .assert_status(StatusCode::OK);
    let field = api.get(&profile_path(a, "org.example.pronouns"), None).await;
    assert_eq!((field.status, &field.body), (StatusCode::OK, &pronouns));
    assert_eq!(api.get(&profile_path(a, "m.tz"), None).await.body, tz);
    let profile = api.get(&profile_path(a, ""), bob.token()).await;
    assert_eq!(
        profile.body,
        json!({
            "displayname": "Alice W.",
            "avatar_url": "mxc://example.org/abc",
            "m.tz": "Europe/Paris",
            "org.example.pronouns": { "en": ["she", "her"] },
        })
    );

    // Deleting: the field goes, deleting again is fine, and the member event loses the name.
    let delete = |field: &str, who: &Session| {
        let path = profile_path(a, field);
        let token = who.access_token.clone();
        let api = &api;
        async move { api.send("DELETE", &path, Some(&token), None, None).await }
    };
    delete("org.example.pronouns", &alice).await.assert_status(StatusCode::OK);
    api.get(&profile_path(a, "org.example.pronouns"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    delete("org.example.pronouns", &alice).await.assert_status(StatusCode::OK);
    delete("displayname", &alice).await.assert_status(StatusCode::OK);
    let member = member_content(&api, &bob, &room, a).await;
    assert_eq!(member.get("displayname"), None, "{member}");
    assert_eq!(member["avatar_url"], "mxc://example.org/abc");
    // An empty avatar URL clears it, as clients send.
    api.put(&profile_path(a, "avatar_url"), alice.token(), json!({ "avatar_url": "" }))
        .await
        .assert_status(StatusCode::OK);
    api.get(&profile_path(a, "avatar_url"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(member_content(&api, &bob, &room, a).await, json!({ "membership": "join" }));
}

async fn profile_errors(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let a = alice.user_id.as_str();

    // Only one's own profile.
    let put = api.put(&profile_path(a, "displayname"), bob.token(), json!({ "displayname": "Mallory" })).await;
    put.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let custom = json!({ "org.example.x": 1 });
    api.put(&profile_path(a, "org.example.x"), bob.token(), custom)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.send("DELETE", &profile_path(a, "displayname"), bob.token(), None, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(api.get(&profile_path(a, "displayname"), None).await.body["displayname"], "alice");
    // Writing needs a token.
    api.put(&profile_path(a, "displayname"), None, json!({ "displayname": "x" }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

    // Field names: the spec's grammar and length.
    api.put(&profile_path(a, "Custom"), alice.token(), json!({ "Custom": 1 }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&profile_path(a, "nodots"), alice.token(), json!({ "nodots": 1 }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let long = format!("org.{}", "a".repeat(260));
    let mut body = serde_json::Map::new();
    body.insert(long.clone(), json!(1));
    api.put(&profile_path(a, &long), alice.token(), Value::Object(body))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_KEY_TOO_LARGE");

    // Values: display names are strings of a sane length, avatars are mxc URIs, and the whole
    // profile stays under 64 KiB.
    api.put(&profile_path(a, "displayname"), alice.token(), json!({ "displayname": 42 }))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    api.put(&profile_path(a, "displayname"), alice.token(), json!({ "displayname": "x".repeat(300) }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
    api.put(&profile_path(a, "avatar_url"), alice.token(), json!({ "avatar_url": "https://example.org/a.png" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&profile_path(a, "displayname"), alice.token(), json!({ "other": "x" }))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    let big = json!({ "org.example.big": "x".repeat(40_000) });
    api.put(&profile_path(a, "org.example.big"), alice.token(), big).await.assert_status(StatusCode::OK);
    let bigger = json!({ "org.example.bigger": "y".repeat(30_000) });
    api.put(&profile_path(a, "org.example.bigger"), alice.token(), bigger)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_PROFILE_TOO_LARGE");
    api.get(&profile_path(a, "org.example.bigger"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
}
