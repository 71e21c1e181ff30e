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
use ranvier_social::Ephemeral;
use ranvier_store::{StreamKind, StreamToken};
use ruma::UserId;
use serde_json::{Value, json};
use support::{Backend, Session, TestApi};

const V3: &str = "/_matrix/client/v3";

both_backends!(
    profiles,
    profile_errors,
    typing,
    receipts_and_read_markers,
    unread_counts,
    tags,
    aliases,
    canonical_alias_and_create_with_alias,
    public_room_directory,
    presence,
    presence_timeouts,
    presence_disabled,
    user_directory,
    knocking,
    restricted_joins,
    room_upgrades,
    nul_characters,
);

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

/// The current sync token.
fn token(api: &TestApi) -> StreamToken {
    api.state.store.streams().current_token()
}

/// What `/sync` will report of the social layer for `session` between `since` and now.
async fn ephemeral(api: &TestApi, session: &Session, rooms: &[&str], since: &StreamToken, full: bool) -> Ephemeral {
    let rooms: Vec<String> = rooms.iter().map(|room| (*room).to_owned()).collect();
    api.state.social.sync_ephemeral(user_id(session), &rooms, since, &token(api), full).await.expect("sync_ephemeral")
}

/// The events of one type in a room's ephemeral section.
fn room_events(ephemeral: &Ephemeral, room: &str, event_type: &str) -> Vec<Value> {
    ephemeral
        .rooms
        .get(room)
        .map(|events| events.iter().filter(|event| event["type"] == event_type).cloned().collect())
        .unwrap_or_default()
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

async fn typing(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let room = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    let quiet = create_room(&api, &alice, json!({})).await;
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);
    let typing_path = |who: &Session| format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&who.user_id));
    let rooms = [room.as_str(), quiet.as_str()];

    let start = token(&api);
    let mut changes = api.state.store.streams().subscribe();
    changes.borrow_and_update();
    let put = api.put(&typing_path(&alice), alice.token(), json!({ "typing": true, "timeout": 30000 })).await;
    assert_eq!((put.status, &put.body), (StatusCode::OK, &json!({})));
    assert!(changes.has_changed().unwrap(), "a typing change wakes /sync");
    assert!(token(&api).get(StreamKind::Typing) > start.get(StreamKind::Typing));
    let seen = ephemeral(&api, &bob, &rooms, &start, false).await;
    assert_eq!(
        room_events(&seen, &room, "m.typing"),
        vec![json!({ "type": "m.typing", "content": { "user_ids": [alice.user_id] } })]
    );
    assert!(!seen.rooms.contains_key(&quiet), "rooms without typing are not reported");
    // Nothing new since then: nothing to report.
    let after_alice = token(&api);
    assert!(ephemeral(&api, &bob, &rooms, &after_alice, false).await.rooms.is_empty());
    // A first sync sees who is typing now.
    let full = ephemeral(&api, &bob, &rooms, &StreamToken::default(), true).await;
    assert_eq!(room_events(&full, &room, "m.typing")[0]["content"]["user_ids"], json!([alice.user_id]));

    // Both typing, then alice stops.
    api.put(&typing_path(&bob), bob.token(), json!({ "typing": true, "timeout": 30000 }))
        .await
        .assert_status(StatusCode::OK);
    let both = ephemeral(&api, &alice, &rooms, &after_alice, false).await;
    let mut expected = vec![alice.user_id.clone(), bob.user_id.clone()];
    expected.sort();
    assert_eq!(room_events(&both, &room, "m.typing")[0]["content"]["user_ids"], json!(expected));
    let before_stop = token(&api);
    api.put(&typing_path(&alice), alice.token(), json!({ "typing": false })).await.assert_status(StatusCode::OK);
    let stopped = ephemeral(&api, &bob, &rooms, &before_stop, false).await;
    assert_eq!(room_events(&stopped, &room, "m.typing")[0]["content"]["user_ids"], json!([bob.user_id]));

    // Typing times out on its own, and the stream moves so that clients hear of it.
    let before_expiry = token(&api);
    api.put(&typing_path(&alice), alice.token(), json!({ "typing": true, "timeout": 100 }))
        .await
        .assert_status(StatusCode::OK);
    api.put(&typing_path(&bob), bob.token(), json!({ "typing": false })).await.assert_status(StatusCode::OK);
    let typing_now = token(&api).get(StreamKind::Typing);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(token(&api).get(StreamKind::Typing) > typing_now, "the expiry took a position");
    let expired = ephemeral(&api, &bob, &rooms, &before_expiry, false).await;
    assert_eq!(room_events(&expired, &room, "m.typing")[0]["content"]["user_ids"], json!([]));

    // Without a timeout, typing lasts a default while.
    let before_default = token(&api);
    api.put(&typing_path(&bob), bob.token(), json!({ "typing": true })).await.assert_status(StatusCode::OK);
    let default = ephemeral(&api, &alice, &rooms, &before_default, false).await;
    assert_eq!(room_events(&default, &room, "m.typing")[0]["content"]["user_ids"], json!([bob.user_id]));

    // Only for oneself, only in a joined room, with a valid body.
    api.put(&typing_path(&bob), alice.token(), json!({ "typing": true, "timeout": 1000 }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&typing_path(&carol), carol.token(), json!({ "typing": true, "timeout": 1000 }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&typing_path(&alice), alice.token(), json!({ "timeout": 1000 }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
    api.put(&typing_path(&alice), alice.token(), json!({ "typing": "yes" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
    api.send_raw("PUT", &typing_path(&alice), alice.token(), Some("{".to_owned()), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_NOT_JSON");
    api.put(&typing_path(&alice), None, json!({ "typing": false }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let unknown = format!("{V3}/rooms/{}/typing/{}", enc("!nowhere:example.org"), enc(&alice.user_id));
    api.put(&unknown, alice.token(), json!({ "typing": true, "timeout": 1000 }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn receipts_and_read_markers(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let room = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    let other = create_room(&api, &carol, json!({ "preset": "public_chat" })).await;
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);
    let first = send_text(&api, &alice, &room, "one").await;
    let second = send_text(&api, &alice, &room, "two").await;
    let elsewhere = send_text(&api, &carol, &other, "elsewhere").await;
    let receipt_path = |kind: &str, event: &str| format!("{V3}/rooms/{}/receipt/{kind}/{}", enc(&room), enc(event));
    let rooms = [room.as_str()];

    let start = token(&api);
    let post = api.post(&receipt_path("m.read", &second), bob.token(), json!({})).await;
    assert_eq!((post.status, &post.body), (StatusCode::OK, &json!({})));
    assert!(token(&api).get(StreamKind::Receipts) > start.get(StreamKind::Receipts));
    let seen = ephemeral(&api, &alice, &rooms, &start, false).await;
    let receipts = room_events(&seen, &room, "m.receipt");
    assert_eq!(receipts.len(), 1);
    let ts = &receipts[0]["content"][&second]["m.read"][&bob.user_id]["ts"];
    assert!(ts.as_i64().is_some_and(|ts| ts > 0), "{receipts:?}");
    assert_eq!(receipts[0]["content"].as_object().map(|content| content.len()), Some(1));

    // Private receipts are for their owner only.
    let before_private = token(&api);
    api.post(&receipt_path("m.read.private", &second), bob.token(), json!({})).await.assert_status(StatusCode::OK);
    assert!(ephemeral(&api, &alice, &rooms, &before_private, false).await.rooms.is_empty());
    let own = ephemeral(&api, &bob, &rooms, &before_private, false).await;
    assert!(room_events(&own, &room, "m.receipt")[0]["content"][&second]["m.read.private"][&bob.user_id].is_object());

    // Threaded receipts carry their thread.
    let before_thread = token(&api);
    api.post(&receipt_path("m.read", &first), bob.token(), json!({ "thread_id": "main" }))
        .await
        .assert_status(StatusCode::OK);
    let threaded = ephemeral(&api, &alice, &rooms, &before_thread, false).await;
    assert_eq!(
        room_events(&threaded, &room, "m.receipt")[0]["content"][&first]["m.read"][&bob.user_id]["thread_id"],
        "main"
    );

    // A receipt never moves back: the unthreaded one stays on the second message.
    api.post(&receipt_path("m.read", &first), bob.token(), json!({})).await.assert_status(StatusCode::OK);
    let full = ephemeral(&api, &alice, &rooms, &StreamToken::default(), true).await;
    let content = &room_events(&full, &room, "m.receipt")[0]["content"];
    assert!(content[&second]["m.read"][&bob.user_id].is_object(), "{content}");
    assert!(
        content[&first]["m.read"][&bob.user_id].get("thread_id").is_some(),
        "only the threaded one is on the first: {content}"
    );
    assert!(content[&second].get("m.read.private").is_none(), "{content}");

    // Errors: not a member, an event of another room or none at all, a bad type or thread.
    api.post(&receipt_path("m.read", &second), carol.token(), json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&receipt_path("m.read", &elsewhere), bob.token(), json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.post(&receipt_path("m.read", "$nothing"), bob.token(), json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.post(&receipt_path("m.unknown", &second), bob.token(), json!({}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.post(&receipt_path("m.read", &second), bob.token(), json!({ "thread_id": "" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.post(&receipt_path("m.read", &second), bob.token(), json!({ "thread_id": 4 }))
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    api.post(&receipt_path("m.fully_read", &second), bob.token(), json!({ "thread_id": "main" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // The fully-read marker is room account data, through either endpoint, and never moves back.
    let marker_path = format!("{V3}/user/{}/rooms/{}/account_data/m.fully_read", enc(&bob.user_id), enc(&room));
    api.get(&marker_path, bob.token()).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.post(&receipt_path("m.fully_read", &first), bob.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&marker_path, bob.token()).await.body, json!({ "event_id": first }));
    let markers = format!("{V3}/rooms/{}/read_markers", enc(&room));
    let body = json!({ "m.fully_read": second, "m.read": second, "m.read.private": second });
    let set = api.post(&markers, bob.token(), body).await;
    assert_eq!((set.status, &set.body), (StatusCode::OK, &json!({})));
    assert_eq!(api.get(&marker_path, bob.token()).await.body, json!({ "event_id": second }));
    api.post(&markers, bob.token(), json!({ "m.fully_read": first })).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&marker_path, bob.token()).await.body, json!({ "event_id": second }));
    api.post(&markers, carol.token(), json!({ "m.fully_read": first }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&markers, bob.token(), json!({ "m.read": elsewhere }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Clients cannot set the marker as plain account data.
    api.put(&marker_path, bob.token(), json!({ "event_id": first }))
        .await
        .assert_status(StatusCode::METHOD_NOT_ALLOWED);
}

async fn unread_counts(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let room = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    let room_id = <&ruma::RoomId>::try_from(room.as_str()).expect("room id");
    let unread = |who: &Session| {
        let social = api.state.social.clone();
        let user = user_id(who).to_owned();
        let room_id = room_id.to_owned();
        async move { social.unread_notification_count(&user, &room_id).await.expect("unread count") }
    };
    // Before joining, and what was said before joining, count nothing.
    send_text(&api, &alice, &room, "before bob").await;
    assert_eq!(unread(&bob).await, 0);
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);
    assert_eq!(unread(&bob).await, 0);
    for text in ["one", "two", "three"] {
        send_text(&api, &alice, &room, text).await;
    }
    assert_eq!(unread(&bob).await, 3);
    assert_eq!(unread(&alice).await, 0, "one's own messages are read");
    // State events and edits do not count.
    let topic = format!("{V3}/rooms/{}/state/m.room.topic", enc(&room));
    api.put(&topic, alice.token(), json!({ "topic": "t" })).await.assert_status(StatusCode::OK);
    let edit_path = format!("{V3}/rooms/{}/send/m.room.message/edit1", enc(&room));
    let edit = json!({ "msgtype": "m.text", "body": "* three", "m.relates_to": { "rel_type": "m.replace", "event_id": "$x" } });
    api.put(&edit_path, alice.token(), edit).await.assert_status(StatusCode::OK);
    assert_eq!(unread(&bob).await, 3);
    // Sending a message reads everything before it.
    send_text(&api, &bob, &room, "reply").await;
    assert_eq!(unread(&bob).await, 0);
    let fourth = send_text(&api, &alice, &room, "four").await;
    send_text(&api, &alice, &room, "five").await;
    assert_eq!(unread(&bob).await, 2);
    // A receipt (public or private) reads up to its event.
    let receipt = format!("{V3}/rooms/{}/receipt/m.read.private/{}", enc(&room), enc(&fourth));
    api.post(&receipt, bob.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(unread(&bob).await, 1);
}

async fn tags(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let room = create_room(&api, &alice, json!({})).await;
    let tags_path = format!("{V3}/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    let tag_path = |tag: &str| format!("{tags_path}/{tag}");

    let empty = api.get(&tags_path, alice.token()).await;
    assert_eq!((empty.status, &empty.body), (StatusCode::OK, &json!({ "tags": {} })));
    let before = token(&api);
    let put = api.put(&tag_path("m.favourite"), alice.token(), json!({ "order": 0.5 })).await;
    assert_eq!((put.status, &put.body), (StatusCode::OK, &json!({})));
    api.put(&tag_path("u.work"), alice.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(
        api.get(&tags_path, alice.token()).await.body,
        json!({ "tags": { "m.favourite": { "order": 0.5 }, "u.work": {} } })
    );
    // Stored as the m.tag room account data, in the account-data stream that /sync reads.
    assert!(token(&api).get(StreamKind::AccountData) > before.get(StreamKind::AccountData));
    let changes = api
        .store()
        .account_data_changes(
            &alice.user_id,
            before.get(StreamKind::AccountData),
            token(&api).get(StreamKind::AccountData),
        )
        .await
        .expect("account data changes");
    let (changed_room, data_type, content) = changes.last().expect("a change");
    assert_eq!((changed_room.as_str(), data_type.as_str()), (room.as_str(), "m.tag"));
    assert_eq!(
        serde_json::from_str::<Value>(content).unwrap(),
        json!({ "tags": { "m.favourite": { "order": 0.5 }, "u.work": {} } })
    );
    let data_path = format!("{V3}/user/{}/rooms/{}/account_data/m.tag", enc(&alice.user_id), enc(&room));
    assert_eq!(api.get(&data_path, alice.token()).await.body["tags"]["u.work"], json!({}));

    api.send("DELETE", &tag_path("m.favourite"), alice.token(), None, None).await.assert_status(StatusCode::OK);
    api.send("DELETE", &tag_path("m.favourite"), alice.token(), None, None).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&tags_path, alice.token()).await.body, json!({ "tags": { "u.work": {} } }));

    // Concurrent changes do not lose one another.
    let body = json!({ "order": 0.1 });
    let paths: Vec<String> = (0..4).map(|i| tag_path(&format!("u.t{i}"))).collect();
    let (a, b, c, d) = tokio::join!(
        api.put(&paths[0], alice.token(), body.clone()),
        api.put(&paths[1], alice.token(), body.clone()),
        api.put(&paths[2], alice.token(), body.clone()),
        api.put(&paths[3], alice.token(), body.clone()),
    );
    for response in [a, b, c, d] {
        response.assert_status(StatusCode::OK);
    }
    let tags = api.get(&tags_path, alice.token()).await.body;
    assert_eq!(tags["tags"].as_object().map(|tags| tags.len()), Some(5), "{tags}");

    // Only one's own tags.
    api.get(&tags_path, bob.token()).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&tag_path("u.x"), bob.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.send("DELETE", &tag_path("u.work"), bob.token(), None, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&tag_path("u.bad"), alice.token(), json!({ "order": "high" })).await.assert_status(StatusCode::BAD_REQUEST);
}

fn alias_path(alias: &str) -> String {
    format!("{V3}/directory/room/{}", enc(alias))
}

async fn aliases(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let room = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    let alias = "#lounge:example.org";

    let put = api.put(&alias_path(alias), alice.token(), json!({ "room_id": room })).await;
    assert_eq!((put.status, &put.body), (StatusCode::OK, &json!({})));
    let get = api.get(&alias_path(alias), None).await;
    assert_eq!((get.status, &get.body), (StatusCode::OK, &json!({ "room_id": room, "servers": ["example.org"] })));

    // Taken, foreign, malformed, for an unknown room, or by a non-member.
    api.put(&alias_path(alias), alice.token(), json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::CONFLICT, "M_UNKNOWN");
    api.put(&alias_path("#lounge:other.org"), alice.token(), json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&alias_path("lounge"), alice.token(), json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&alias_path("#x:example.org"), alice.token(), json!({ "room_id": "!nowhere:example.org" }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.put(&alias_path("#x:example.org"), bob.token(), json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&alias_path("#x:example.org"), None, json!({ "room_id": room }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    api.get(&alias_path("#missing:example.org"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&alias_path("#lounge:other.org"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.get(&alias_path("lounge"), None).await.assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Joining by alias.
    let joined = join(&api, &bob, alias).await;
    assert_eq!((joined.status, &joined.body["room_id"]), (StatusCode::OK, &json!(room)));
    join(&api, &bob, "#missing:example.org").await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // The room's aliases, for members only (the room's history is not world readable).
    let aliases_path = format!("{V3}/rooms/{}/aliases", enc(&room));
    let listed = api.get(&aliases_path, bob.token()).await;
    assert_eq!((listed.status, &listed.body), (StatusCode::OK, &json!({ "aliases": [alias] })));
    api.get(&aliases_path, carol.token()).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Deleting: bob (power 0) may delete his own alias but not alice's; alice, with the power to
    // change the canonical alias, may delete bob's.
    let bobs = "#bobs:example.org";
    api.put(&alias_path(bobs), bob.token(), json!({ "room_id": room })).await.assert_status(StatusCode::OK);
    api.delete(&alias_path(alias), bob.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.delete(&alias_path(alias), carol.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let deleted = api.delete(&alias_path(bobs), alice.token(), json!({})).await;
    assert_eq!((deleted.status, &deleted.body), (StatusCode::OK, &json!({})));
    api.get(&alias_path(bobs), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.delete(&alias_path(bobs), alice.token(), json!({})).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.put(&alias_path(bobs), bob.token(), json!({ "room_id": room })).await.assert_status(StatusCode::OK);
    api.delete(&alias_path(bobs), bob.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&aliases_path, bob.token()).await.body, json!({ "aliases": [alias] }));
}

async fn canonical_alias_and_create_with_alias(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let room = create_room(&api, &alice, json!({ "room_alias_name": "fancy", "preset": "public_chat" })).await;
    let fancy = "#fancy:example.org";
    assert_eq!(api.get(&alias_path(fancy), None).await.body["room_id"], json!(room));
    let canonical = format!("{V3}/rooms/{}/state/m.room.canonical_alias", enc(&room));
    assert_eq!(api.get(&canonical, alice.token()).await.body, json!({ "alias": fancy }));

    // A taken or malformed alias name fails before any room is made.
    let create = format!("{V3}/createRoom");
    api.post(&create, alice.token(), json!({ "room_alias_name": "fancy" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_ROOM_IN_USE");
    api.post(&create, alice.token(), json!({ "room_alias_name": "two words" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.post(&create, alice.token(), json!({ "room_alias_name": "a:b" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Canonical aliases must point at the room.
    let other = create_room(&api, &alice, json!({ "room_alias_name": "other" })).await;
    let second = "#second:example.org";
    api.put(&alias_path(second), alice.token(), json!({ "room_id": room })).await.assert_status(StatusCode::OK);
    let both = json!({ "alias": fancy, "alt_aliases": [second] });
    api.put(&canonical, alice.token(), both.clone()).await.assert_status(StatusCode::OK);
    api.put(&canonical, alice.token(), json!({ "alias": "#other:example.org" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    api.put(&canonical, alice.token(), json!({ "alias": fancy, "alt_aliases": [second, "#none:example.org"] }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    api.put(&canonical, alice.token(), json!({ "alias": "#remote:other.org" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    api.put(&canonical, alice.token(), json!({ "alias": "not an alias" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&canonical, alice.token(), json!({ "alt_aliases": "#fancy:example.org" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // Permission comes first: a member without the power gets 403 whatever the alias.
    let bob = api.register("bob", "pw").await;
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);
    api.put(&canonical, bob.token(), json!({ "alias": "#none:example.org" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Initial state is checked too: an alias of another room cannot be named.
    let initial = json!({ "initial_state": [{ "type": "m.room.canonical_alias", "content": { "alias": fancy } }] });
    api.post(&create, alice.token(), initial).await.assert_error(StatusCode::BAD_REQUEST, "M_BAD_ALIAS");
    assert_eq!(api.get(&canonical, alice.token()).await.body, both);

    // Deleting an alias takes it out of the canonical alias event.
    api.delete(&alias_path(second), alice.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&canonical, alice.token()).await.body, json!({ "alias": fancy, "alt_aliases": [] }));
    api.delete(&alias_path(fancy), alice.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&canonical, alice.token()).await.body, json!({ "alt_aliases": [] }));
    let other_canonical = format!("{V3}/rooms/{}/state/m.room.canonical_alias", enc(&other));
    assert_eq!(api.get(&other_canonical, alice.token()).await.body, json!({ "alias": "#other:example.org" }));
}

async fn public_room_directory(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let rust = create_room(
        &api,
        &alice,
        json!({ "visibility": "public", "name": "Rust", "topic": "All about ownership", "room_alias_name": "rust" }),
    )
    .await;
    let cooking = create_room(&api, &alice, json!({ "visibility": "public", "name": "Cooking" })).await;
    let chess = create_room(&api, &alice, json!({ "visibility": "public", "name": "Chess" })).await;
    let private = create_room(&api, &alice, json!({ "name": "Private" })).await;
    join(&api, &bob, &cooking).await.assert_status(StatusCode::OK);
    let list_path = |room: &str| format!("{V3}/directory/list/room/{}", enc(room));

    assert_eq!(api.get(&list_path(&rust), None).await.body, json!({ "visibility": "public" }));
    assert_eq!(api.get(&list_path(&private), None).await.body, json!({ "visibility": "private" }));
    api.get(&list_path("!nowhere:example.org"), None).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // The list: most members first, then by room id; the whole summary of each room.
    let listed = api.get(&format!("{V3}/publicRooms"), None).await;
    listed.assert_status(StatusCode::OK);
    let chunk = listed.body["chunk"].as_array().expect("chunk").clone();
    let ids: Vec<&str> = chunk.iter().map(|room| room["room_id"].as_str().unwrap_or_default()).collect();
    let mut rest = vec![rust.as_str(), chess.as_str()];
    rest.sort();
    assert_eq!(ids, [vec![cooking.as_str()], rest].concat());
    assert_eq!(listed.body["total_room_count_estimate"], 3);
    let entry = chunk.iter().find(|room| room["room_id"] == json!(rust)).expect("rust listed");
    assert_eq!(entry["name"], "Rust");
    assert_eq!(entry["topic"], "All about ownership");
    assert_eq!(entry["canonical_alias"], "#rust:example.org");
    assert_eq!(entry["num_joined_members"], 1);
    assert_eq!((entry["world_readable"].as_bool(), entry["guest_can_join"].as_bool()), (Some(false), Some(false)));
    assert_eq!(chunk[0]["num_joined_members"], 2);

    // Pages.
    let first = api.get(&format!("{V3}/publicRooms?limit=2"), None).await.body;
    assert_eq!(first["chunk"].as_array().map(Vec::len), Some(2));
    assert!(first.get("prev_batch").is_none());
    let next = first["next_batch"].as_str().expect("next_batch");
    let second = api.get(&format!("{V3}/publicRooms?limit=2&since={next}"), None).await.body;
    assert_eq!(second["chunk"].as_array().map(Vec::len), Some(1));
    assert!(second.get("next_batch").is_none());
    let prev = second["prev_batch"].as_str().expect("prev_batch");
    let back = api.get(&format!("{V3}/publicRooms?limit=2&since={prev}"), None).await.body;
    assert_eq!(back["chunk"], first["chunk"]);
    api.get(&format!("{V3}/publicRooms?since=garbage"), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.get(&format!("{V3}/publicRooms?server=other.org"), None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // The filtered list needs a token and searches names, topics and aliases.
    let search = |term: &str| json!({ "filter": { "generic_search_term": term } });
    api.post(&format!("{V3}/publicRooms"), None, search("rust"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let found = api.post(&format!("{V3}/publicRooms"), bob.token(), search("OWNERSHIP")).await;
    found.assert_status(StatusCode::OK);
    assert_eq!(found.body["chunk"].as_array().map(Vec::len), Some(1));
    assert_eq!(found.body["chunk"][0]["room_id"], json!(rust));
    let by_alias = api.post(&format!("{V3}/publicRooms"), bob.token(), search("#rust:")).await.body;
    assert_eq!(by_alias["chunk"][0]["room_id"], json!(rust));
    let none = api.post(&format!("{V3}/publicRooms"), bob.token(), search("python")).await.body;
    assert_eq!(none["chunk"], json!([]));
    let spaces = api
        .post(&format!("{V3}/publicRooms"), bob.token(), json!({ "filter": { "room_types": ["m.space"] } }))
        .await
        .body;
    assert_eq!(spaces["chunk"], json!([]));

    // Publishing needs the power to change the canonical alias; an invite-only room is not
    // listed even when published.
    api.put(&list_path(&chess), bob.token(), json!({ "visibility": "private" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&list_path(&cooking), bob.token(), json!({ "visibility": "private" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&list_path("!nowhere:example.org"), alice.token(), json!({ "visibility": "public" }))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let unpublish = api.put(&list_path(&chess), alice.token(), json!({ "visibility": "private" })).await;
    assert_eq!((unpublish.status, &unpublish.body), (StatusCode::OK, &json!({})));
    api.put(&list_path(&private), alice.token(), json!({ "visibility": "public" })).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(&list_path(&private), None).await.body, json!({ "visibility": "public" }));
    let listed = api.get(&format!("{V3}/publicRooms"), None).await.body;
    let ids: Vec<&str> =
        listed["chunk"].as_array().expect("chunk").iter().filter_map(|room| room["room_id"].as_str()).collect();
    assert_eq!(ids, vec![cooking.as_str(), rust.as_str()]);
}

fn presence_path(user: &str) -> String {
    format!("{V3}/presence/{}/status", enc(user))
}

/// The `m.presence` event of `user` in an ephemeral update, if any.
fn presence_of<'a>(ephemeral: &'a Ephemeral, user: &str) -> Option<&'a Value> {
    ephemeral.presence.iter().find(|event| event["sender"] == user)
}

async fn presence(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let room = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);
    let (a, b) = (alice.user_id.as_str(), bob.user_id.as_str());

    // Nobody has said anything yet: offline.
    let unknown = api.get(&presence_path(a), bob.token()).await;
    assert_eq!((unknown.status, &unknown.body), (StatusCode::OK, &json!({ "presence": "offline" })));

    let start = token(&api);
    let put = api.put(&presence_path(a), alice.token(), json!({ "presence": "online", "status_msg": "Hello" })).await;
    assert_eq!((put.status, &put.body), (StatusCode::OK, &json!({})));
    assert!(token(&api).get(StreamKind::Presence) > start.get(StreamKind::Presence));
    let seen = api.get(&presence_path(a), bob.token()).await;
    seen.assert_status(StatusCode::OK);
    assert_eq!(
        (seen.body["presence"].as_str(), seen.body["status_msg"].as_str(), seen.body["currently_active"].as_bool()),
        (Some("online"), Some("Hello"), Some(true))
    );
    assert!(seen.body["last_active_ago"].as_u64().is_some_and(|ago| ago < 10_000), "{}", seen.body);

    // Who may see and set what.
    api.get(&presence_path(a), carol.token()).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.get(&presence_path(a), alice.token()).await.assert_status(StatusCode::OK);
    api.get(&presence_path("@nobody:example.org"), alice.token())
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.put(&presence_path(a), bob.token(), json!({ "presence": "offline" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(&presence_path(a), alice.token(), json!({ "presence": "dancing" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put(&presence_path(a), alice.token(), json!({})).await.assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
    api.get(&presence_path(a), None).await.assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");

    // Sync: to those who share a room, and to oneself; not to strangers.
    let to_bob = ephemeral(&api, &bob, &[&room], &start, false).await;
    let event = presence_of(&to_bob, a).expect("bob sees alice");
    assert_eq!((event["type"].as_str(), event["content"]["status_msg"].as_str()), (Some("m.presence"), Some("Hello")));
    assert!(presence_of(&ephemeral(&api, &alice, &[&room], &start, false).await, a).is_some());
    assert!(ephemeral(&api, &carol, &[], &start, false).await.presence.is_empty());
    let after_put = token(&api);
    assert!(ephemeral(&api, &bob, &[&room], &after_put, false).await.presence.is_empty(), "nothing new");

    // A sync brings its user online; others hear of it once.
    let syncing = api.state.social.set_presence_from_sync(user_id(&bob), None).await.expect("sync presence");
    let update = ephemeral(&api, &alice, &[&room], &after_put, false).await;
    assert_eq!(presence_of(&update, b).map(|event| event["content"]["presence"].clone()), Some(json!("online")));
    assert!(presence_of(&update, a).is_none(), "alice did not change");
    // Another sync while online changes nothing; one asking for offline leaves presence alone.
    let settled = token(&api);
    let again = api.state.social.set_presence_from_sync(user_id(&bob), None).await.expect("sync presence");
    let offline = ruma::presence::PresenceState::Offline;
    let hidden = api.state.social.set_presence_from_sync(user_id(&carol), Some(&offline)).await.expect("sync presence");
    assert_eq!(token(&api).get(StreamKind::Presence), settled.get(StreamKind::Presence));
    drop((syncing, again, hidden));
    // A first sync shows everyone live in one's rooms.
    let full = ephemeral(&api, &alice, &[&room], &StreamToken::default(), true).await;
    let mut senders: Vec<&str> = full.presence.iter().filter_map(|event| event["sender"].as_str()).collect();
    senders.sort();
    assert_eq!(senders, vec![a, b]);
    // Setting a state without a message clears the message.
    api.put(&presence_path(a), alice.token(), json!({ "presence": "unavailable" })).await.assert_status(StatusCode::OK);
    let away = api.get(&presence_path(a), bob.token()).await.body;
    assert_eq!((away["presence"].as_str(), away.get("status_msg")), (Some("unavailable"), None));
    assert_eq!(away["currently_active"], false);
}

async fn presence_timeouts(backend: Backend) {
    let Some(api) = TestApi::start(backend, |config| {
        config.presence.idle_timeout_ms = 500;
        config.presence.offline_timeout_ms = 500;
    })
    .await
    else {
        return;
    };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let room = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);
    let state = |body: Value| body["presence"].as_str().unwrap_or_default().to_owned();

    let syncing = api.state.social.set_presence_from_sync(user_id(&alice), None).await.expect("sync presence");
    assert_eq!(state(api.get(&presence_path(&alice.user_id), bob.token()).await.body), "online");
    let before_idle = token(&api);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Still syncing, but idle: unavailable, and the sweep told the stream.
    assert_eq!(state(api.get(&presence_path(&alice.user_id), bob.token()).await.body), "unavailable");
    assert!(token(&api).get(StreamKind::Presence) > before_idle.get(StreamKind::Presence));
    let seen = ephemeral(&api, &bob, &[&room], &before_idle, false).await;
    assert_eq!(
        presence_of(&seen, &alice.user_id).map(|event| event["content"]["presence"].clone()),
        Some(json!("unavailable"))
    );
    // Activity (typing) brings her back.
    let typing = format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));
    api.put(&typing, alice.token(), json!({ "typing": true, "timeout": 1000 })).await.assert_status(StatusCode::OK);
    assert_eq!(state(api.get(&presence_path(&alice.user_id), bob.token()).await.body), "online");
    // So does sending a message, after idling again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state(api.get(&presence_path(&alice.user_id), bob.token()).await.body), "unavailable");
    send_text(&api, &alice, &room, "back").await;
    assert_eq!(state(api.get(&presence_path(&alice.user_id), bob.token()).await.body), "online");
    // No sync running for the offline timeout: offline.
    drop(syncing);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state(api.get(&presence_path(&alice.user_id), bob.token()).await.body), "offline");
    let seen = ephemeral(&api, &bob, &[&room], &before_idle, false).await;
    assert_eq!(
        presence_of(&seen, &alice.user_id).map(|event| event["content"]["presence"].clone()),
        Some(json!("offline"))
    );
}

async fn presence_disabled(backend: Backend) {
    let Some(api) = TestApi::start(backend, |config| config.presence.enabled = false).await else { return };
    let alice = api.register("alice", "pw").await;
    let start = token(&api);
    api.put(&presence_path(&alice.user_id), alice.token(), json!({ "presence": "online" }))
        .await
        .assert_status(StatusCode::OK);
    let _syncing = api.state.social.set_presence_from_sync(user_id(&alice), None).await.expect("sync presence");
    assert_eq!(token(&api).get(StreamKind::Presence), start.get(StreamKind::Presence));
    assert_eq!(api.get(&presence_path(&alice.user_id), alice.token()).await.body, json!({ "presence": "offline" }));
    assert!(ephemeral(&api, &alice, &[], &StreamToken::default(), true).await.presence.is_empty());
}

async fn user_directory(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let dave = api.register("dave", "pw").await;
    let search_path = format!("{V3}/user_directory/search");
    let search = |term: &str, limit: Option<u64>| {
        let mut body = json!({ "search_term": term });
        if let Some(limit) = limit {
            body["limit"] = json!(limit);
        }
        body
    };
    let found = |body: &Value| -> Vec<String> {
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|user| user["user_id"].as_str().map(str::to_owned))
            .collect()
    };

    // alice and bob share a private room; carol sits in a public room; dave is alone.
    let private = create_room(&api, &alice, json!({ "invite": [bob.user_id] })).await;
    join(&api, &bob, &private).await.assert_status(StatusCode::OK);
    create_room(&api, &carol, json!({ "preset": "public_chat" })).await;
    create_room(&api, &dave, json!({})).await;

    let bob_found = api.post(&search_path, alice.token(), search("bo", None)).await;
    bob_found.assert_status(StatusCode::OK);
    assert_eq!(
        bob_found.body,
        json!({ "results": [{ "user_id": bob.user_id, "display_name": "bob" }], "limited": false })
    );
    assert_eq!(
        found(&api.post(&search_path, alice.token(), search("CAR", None)).await.body),
        vec![carol.user_id.clone()]
    );
    assert!(found(&api.post(&search_path, alice.token(), search("dave", None)).await.body).is_empty());
    assert!(found(&api.post(&search_path, alice.token(), search("alice", None)).await.body).is_empty(), "not oneself");
    assert!(found(&api.post(&search_path, carol.token(), search("bob", None)).await.body).is_empty());

    // Display names are searched word by word, and results show the new name and avatar.
    let profile = format!("{V3}/profile/{}", enc(&bob.user_id));
    api.put(&format!("{profile}/displayname"), bob.token(), json!({ "displayname": "Robert Builder" }))
        .await
        .assert_status(StatusCode::OK);
    api.put(&format!("{profile}/avatar_url"), bob.token(), json!({ "avatar_url": "mxc://example.org/bob" }))
        .await
        .assert_status(StatusCode::OK);
    let by_name = api.post(&search_path, alice.token(), search("build rob", None)).await.body;
    assert_eq!(
        by_name["results"],
        json!([{ "user_id": bob.user_id, "display_name": "Robert Builder", "avatar_url": "mxc://example.org/bob" }])
    );
    assert!(found(&api.post(&search_path, alice.token(), search("uilder", None)).await.body).is_empty());
    assert_eq!(
        found(&api.post(&search_path, alice.token(), search("@bob:exa", None)).await.body),
        vec![bob.user_id.clone()]
    );

    // Limits: the rest is reported as `limited`; users sharing a room come first.
    let public = create_room(&api, &carol, json!({ "preset": "public_chat", "name": "square" })).await;
    for name in ["bo1", "bo2", "bo3"] {
        let user = api.register(name, "pw").await;
        join(&api, &user, &public).await.assert_status(StatusCode::OK);
    }
    let limited = api.post(&search_path, alice.token(), search("bo", Some(2))).await.body;
    assert_eq!(limited["limited"], true);
    let ids = found(&limited);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], bob.user_id, "the shared-room user first");
    let all = api.post(&search_path, alice.token(), search("bo", None)).await.body;
    assert_eq!((found(&all).len(), all["limited"].as_bool()), (4, Some(false)));
    // Deactivated accounts are not found.
    api.store().deactivate_user("@bo3:example.org").await.expect("deactivate");
    assert_eq!(found(&api.post(&search_path, alice.token(), search("bo", None)).await.body).len(), 3);
    // Edge cases.
    let blank = api.post(&search_path, alice.token(), search("   ", None)).await;
    assert_eq!((blank.status, &blank.body), (StatusCode::OK, &json!({ "results": [], "limited": false })));
    let wild = api.post(&search_path, alice.token(), search("%", None)).await;
    assert_eq!((wild.status, &wild.body["results"]), (StatusCode::OK, &json!([])));
    api.post(&search_path, None, search("bo", None)).await.assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    api.post(&search_path, alice.token(), json!({})).await.assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

async fn state_content(api: &TestApi, session: &Session, room: &str, event_type: &str) -> support::Response {
    api.get(&format!("{V3}/rooms/{}/state/{event_type}", enc(room)), session.token()).await
}

async fn membership(api: &TestApi, room: &str, user: &Session) -> Option<String> {
    api.store().membership(room, &user.user_id).await.expect("membership").map(|row| row.membership)
}

async fn knocking(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let knock_rule = json!([{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }]);
    let room = create_room(
        &api,
        &alice,
        json!({ "room_version": "10", "initial_state": knock_rule, "room_alias_name": "door" }),
    )
    .await;
    let closed = create_room(&api, &alice, json!({ "room_version": "10" })).await;
    let knock = |room: &str| format!("{V3}/knock/{}", enc(room));

    let knocked = api.post(&knock(&room), bob.token(), json!({ "reason": "let me in" })).await;
    assert_eq!((knocked.status, &knocked.body), (StatusCode::OK, &json!({ "room_id": room })));
    assert_eq!(membership(&api, &room, &bob).await.as_deref(), Some("knock"));
    let event = member_content(&api, &alice, &room, &bob.user_id).await;
    assert_eq!(event, json!({ "membership": "knock", "reason": "let me in", "displayname": "bob" }));
    // A knock cannot become a join by itself; an invite lets bob in.
    join(&api, &bob, &room).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&format!("{V3}/rooms/{}/invite", enc(&room)), alice.token(), json!({ "user_id": bob.user_id }))
        .await
        .assert_status(StatusCode::OK);
    join(&api, &bob, &room).await.assert_status(StatusCode::OK);

    // Knocking by alias; a knock can be withdrawn by leaving.
    let by_alias = api.post(&knock("#door:example.org"), carol.token(), json!({})).await;
    assert_eq!((by_alias.status, &by_alias.body), (StatusCode::OK, &json!({ "room_id": room })));
    api.post(&format!("{V3}/rooms/{}/leave", enc(&room)), carol.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(membership(&api, &room, &carol).await.as_deref(), Some("leave"));

    // Not where the join rule does not allow it, not when already in, not into the unknown.
    api.post(&knock(&closed), carol.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&knock(&room), alice.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&knock("!nowhere:example.org"), carol.token(), json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.post(&knock("#nowhere:example.org"), carol.token(), json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Room version 6 has no knocking.
    let old = create_room(&api, &alice, json!({ "room_version": "6", "preset": "public_chat" })).await;
    api.put(
        &format!("{V3}/rooms/{}/state/m.room.join_rules", enc(&old)),
        alice.token(),
        json!({ "join_rule": "knock" }),
    )
    .await
    .assert_status(StatusCode::OK);
    api.post(&knock(&old), carol.token(), json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn restricted_joins(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let space = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    let rule = |join_rule: &str| {
        json!([{ "type": "m.room.join_rules", "content": {
            "join_rule": join_rule, "allow": [{ "type": "m.room_membership", "room_id": space }],
        } }])
    };
    let restricted =
        create_room(&api, &alice, json!({ "room_version": "10", "initial_state": rule("restricted") })).await;
    let knockable =
        create_room(&api, &alice, json!({ "room_version": "10", "initial_state": rule("knock_restricted") })).await;

    // Outside the allowed room: no.
    join(&api, &bob, &restricted).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    join(&api, &bob, &knockable).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A member of it: yes, authorised by a local member who may invite.
    join(&api, &bob, &space).await.assert_status(StatusCode::OK);
    join(&api, &bob, &restricted).await.assert_status(StatusCode::OK);
    let joined = member_content(&api, &alice, &restricted, &bob.user_id).await;
    assert_eq!(joined["join_authorised_via_users_server"], json!(alice.user_id));
    assert_eq!(joined["membership"], "join");
    join(&api, &bob, &knockable).await.assert_status(StatusCode::OK);
    // knock_restricted also lets others knock.
    api.post(&format!("{V3}/knock/{}", enc(&knockable)), carol.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(membership(&api, &knockable, &carol).await.as_deref(), Some("knock"));
    // An invited user joins without an authoriser.
    let invite = format!("{V3}/rooms/{}/invite", enc(&restricted));
    api.post(&invite, alice.token(), json!({ "user_id": carol.user_id })).await.assert_status(StatusCode::OK);
    join(&api, &carol, &restricted).await.assert_status(StatusCode::OK);
    assert!(
        member_content(&api, &alice, &restricted, &carol.user_id)
            .await
            .get("join_authorised_via_users_server")
            .is_none()
    );

    // Nobody here may invite: the join cannot be granted.
    let body = json!({
        "room_version": "10",
        "initial_state": rule("restricted"),
        "power_level_content_override": { "invite": 1000 },
    });
    let locked = create_room(&api, &alice, body).await;
    join(&api, &bob, &locked).await.assert_error(StatusCode::BAD_REQUEST, "M_UNABLE_TO_GRANT_JOIN");
}

async fn room_upgrades(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let carol = api.register("carol", "pw").await;
    let dave = api.register("dave", "pw").await;
    let old = create_room(
        &api,
        &alice,
        json!({
            "room_version": "10", "visibility": "public", "name": "Old", "topic": "Topic",
            "room_alias_name": "up", "preset": "public_chat",
        }),
    )
    .await;
    join(&api, &bob, &old).await.assert_status(StatusCode::OK);
    join(&api, &carol, &old).await.assert_status(StatusCode::OK);
    api.post(&format!("{V3}/rooms/{}/ban", enc(&old)), alice.token(), json!({ "user_id": carol.user_id }))
        .await
        .assert_status(StatusCode::OK);
    let upgrade = format!("{V3}/rooms/{}/upgrade", enc(&old));

    api.post(&upgrade, bob.token(), json!({ "new_version": "12" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&upgrade, dave.token(), json!({ "new_version": "12" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(&upgrade, alice.token(), json!({ "new_version": "99" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
    api.post(
        &format!("{V3}/rooms/{}/upgrade", enc("!nowhere:example.org")),
        alice.token(),
        json!({ "new_version": "12" }),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let upgraded = api.post(&upgrade, alice.token(), json!({ "new_version": "12" })).await;
    upgraded.assert_status(StatusCode::OK);
    let new = upgraded.body["replacement_room"].as_str().expect("replacement_room").to_owned();
    assert_ne!(new, old);

    // The old room: tombstoned, closed to messages and invites from ordinary members.
    let tombstone = state_content(&api, &alice, &old, "m.room.tombstone").await.body;
    assert_eq!(tombstone["replacement_room"], json!(new));
    let levels = state_content(&api, &alice, &old, "m.room.power_levels").await.body;
    assert_eq!((levels["events_default"].as_i64(), levels["invite"].as_i64()), (Some(50), Some(50)));
    let send = format!("{V3}/rooms/{}/send/m.room.message/late", enc(&old));
    api.put(&send, bob.token(), json!({ "msgtype": "m.text", "body": "late" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // The new room: the predecessor, the carried state, the ban, the alias and the listing.
    let create = state_content(&api, &alice, &new, "m.room.create").await.body;
    assert_eq!(
        (create["room_version"].as_str(), create["predecessor"]["room_id"].as_str()),
        (Some("12"), Some(old.as_str()))
    );
    assert!(create["predecessor"]["event_id"].as_str().is_some_and(|id| id.starts_with('$')));
    assert_eq!(state_content(&api, &alice, &new, "m.room.name").await.body, json!({ "name": "Old" }));
    assert_eq!(state_content(&api, &alice, &new, "m.room.topic").await.body["topic"], "Topic");
    assert_eq!(state_content(&api, &alice, &new, "m.room.join_rules").await.body, json!({ "join_rule": "public" }));
    let new_levels = state_content(&api, &alice, &new, "m.room.power_levels").await.body;
    assert!(
        new_levels["users"].get(&alice.user_id).is_none(),
        "creators of version 12 rooms are not listed: {new_levels}"
    );
    assert_eq!(membership(&api, &new, &carol).await.as_deref(), Some("ban"));
    assert_eq!(api.get(&alias_path("#up:example.org"), None).await.body["room_id"], json!(new));
    assert_eq!(
        state_content(&api, &alice, &new, "m.room.canonical_alias").await.body,
        json!({ "alias": "#up:example.org" })
    );
    assert_eq!(state_content(&api, &alice, &old, "m.room.canonical_alias").await.body, json!({}));
    let list = |room: &str| format!("{V3}/directory/list/room/{}", enc(room));
    assert_eq!(api.get(&list(&old), None).await.body, json!({ "visibility": "private" }));
    assert_eq!(api.get(&list(&new), None).await.body, json!({ "visibility": "public" }));
    // Members follow by joining the replacement.
    join(&api, &bob, &new).await.assert_status(StatusCode::OK);
    join(&api, &carol, &new).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // To a version without privileged creators, the upgrader keeps power in the new room.
    let small = create_room(&api, &alice, json!({ "room_version": "10" })).await;
    let upgraded =
        api.post(&format!("{V3}/rooms/{}/upgrade", enc(&small)), alice.token(), json!({ "new_version": "11" })).await;
    upgraded.assert_status(StatusCode::OK);
    let next = upgraded.body["replacement_room"].as_str().expect("replacement_room").to_owned();
    let levels = state_content(&api, &alice, &next, "m.room.power_levels").await.body;
    assert_eq!(levels["users"][&alice.user_id], 100, "{levels}");
    assert_eq!(state_content(&api, &alice, &next, "m.room.create").await.body["predecessor"]["room_id"], json!(small));
}

/// NUL characters are valid JSON and percent-encoding but not PostgreSQL text: every social
/// endpoint answers them with a client error, never a 500.
async fn nul_characters(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let room = create_room(&api, &alice, json!({ "preset": "public_chat" })).await;
    let event = send_text(&api, &alice, &room, "hi").await;
    let (a, r) = (enc(&alice.user_id), enc(&room));
    let cases = [
        ("PUT", format!("{V3}/profile/{a}/displayname"), json!({ "displayname": "a\u{0}b" })),
        ("PUT", format!("{V3}/profile/{a}/org.example.x"), json!({ "org.example.x": "a\u{0}b" })),
        ("PUT", format!("{V3}/profile/{a}/org.exa%00mple"), json!({ "org.exa\u{0}mple": 1 })),
        ("GET", format!("{V3}/profile/{a}/org.exa%00mple"), Value::Null),
        ("GET", format!("{V3}/profile/%40a%00b%3Aexample.org"), Value::Null),
        ("PUT", format!("{V3}/presence/{a}/status"), json!({ "presence": "online", "status_msg": "a\u{0}b" })),
        ("PUT", format!("{V3}/user/{a}/rooms/{r}/tags/u.a%00b"), json!({})),
        ("DELETE", format!("{V3}/user/{a}/rooms/{r}/tags/u.a%00b"), Value::Null),
        ("POST", format!("{V3}/rooms/{r}/receipt/m.read/%24a%00b"), json!({})),
        ("POST", format!("{V3}/rooms/{r}/receipt/m.read/{}", enc(&event)), json!({ "thread_id": "$a\u{0}b" })),
        ("POST", format!("{V3}/rooms/{r}/read_markers"), json!({ "m.fully_read": "$a\u{0}b" })),
        ("PUT", format!("{V3}/directory/room/%23a%00b%3Aexample.org"), json!({ "room_id": room })),
        ("GET", format!("{V3}/directory/room/%23a%00b%3Aexample.org"), Value::Null),
        ("DELETE", format!("{V3}/directory/room/%23a%00b%3Aexample.org"), Value::Null),
        ("POST", format!("{V3}/createRoom"), json!({ "room_alias_name": "a\u{0}b" })),
        ("POST", format!("{V3}/join/%23a%00b%3Aexample.org"), json!({})),
        ("POST", format!("{V3}/knock/%23a%00b%3Aexample.org"), json!({})),
        ("GET", format!("{V3}/directory/list/room/%21a%00b%3Aexample.org"), Value::Null),
        ("GET", format!("{V3}/publicRooms?since=o%00"), Value::Null),
        ("POST", format!("{V3}/publicRooms"), json!({ "filter": { "generic_search_term": "a\u{0}b" } })),
        ("POST", format!("{V3}/user_directory/search"), json!({ "search_term": "a\u{0}b" })),
        ("PUT", format!("{V3}/rooms/%21a%00b%3Aexample.org/typing/{a}"), json!({ "typing": true, "timeout": 100 })),
        ("GET", format!("{V3}/rooms/{r}/aliases"), Value::Null),
    ];
    for (method, path, body) in cases {
        let body = (!body.is_null()).then(|| body.to_string());
        let response = api.send_raw(method, &path, alice.token(), body.clone(), None).await;
        assert!(
            response.status.is_success() || response.status.is_client_error(),
            "{method} {path} {body:?}: {}",
            response.body
        );
    }
}
