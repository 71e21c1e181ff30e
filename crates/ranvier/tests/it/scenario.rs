//! A whole session over raw HTTP: register, create rooms, invite and join, send messages,
//! change state, sync with filters, paginate through hundreds of events, and meet the error
//! codes along the way.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use ranvier_test::{Backend, MessagesQuery, Method, TestServer, User, backend_tests, encode, password_for};
use serde_json::{Value, json};

use crate::start;

/// The timeline events of `room` in a sync response (empty if the room is absent).
fn timeline<'a>(sync: &'a Value, room: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| events.iter().collect())
        .unwrap_or_default()
}

/// The `body` of each `m.room.message` among `events`.
fn bodies<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    events
        .into_iter()
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn joined_rooms(sync: &Value) -> Vec<String> {
    sync["rooms"]["join"].as_object().map(|rooms| rooms.keys().cloned().collect()).unwrap_or_default()
}

#[track_caller]
fn assert_no_duplicate_ids(events: &[Value], what: &str) {
    let ids: Vec<&str> = events.iter().map(|event| event["event_id"].as_str().unwrap_or("")).collect();
    assert!(ids.iter().all(|id| !id.is_empty()), "{what}: every event has an id");
    let unique: HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{what}: an event appears twice");
}

struct Session {
    server: TestServer,
    alice: User,
    bob: User,
    general: String,
    lobby: String,
}

async fn register_and_create_rooms(backend: Backend) -> Session {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    assert_eq!(alice.user_id, server.user_id("alice"));
    assert!(!alice.device_id.is_empty() && !alice.access_token.is_empty());
    let bob = server.register("bob").await;
    let again = server.login("alice", &password_for("alice")).await;
    assert_eq!(again.user_id, alice.user_id);
    assert_ne!(again.access_token, alice.access_token, "each login has its own token");

    let general =
        server.create_room(&alice, json!({"name": "General", "topic": "Everything", "preset": "private_chat"})).await;
    let lobby = server.create_room(&alice, json!({"name": "Lobby", "preset": "public_chat"})).await;
    assert_ne!(general, lobby);
    assert!(general.starts_with('!'), "room ids start with '!': {general}");

    // The initial state of a new room.
    let create = server.get_state(&alice, &general, "m.room.create", "").await;
    assert!(create["room_version"].is_string(), "m.room.create names the room version: {create}");
    assert_eq!(server.get_state(&alice, &general, "m.room.name", "").await["name"], "General");
    assert_eq!(server.get_state(&alice, &general, "m.room.topic", "").await["topic"], "Everything");
    assert_eq!(server.get_state(&alice, &general, "m.room.member", &alice.user_id).await["membership"], "join");
    assert_eq!(server.get_state(&alice, &general, "m.room.join_rules", "").await["join_rule"], "invite");
    assert_eq!(server.get_state(&alice, &lobby, "m.room.join_rules", "").await["join_rule"], "public");
    let state = server.get_all_state(&alice, &general).await;
    let kinds: HashSet<(&str, &str)> =
        state.iter().filter_map(|event| Some((event["type"].as_str()?, event["state_key"].as_str()?))).collect();
    for expected in [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", alice.user_id.as_str()),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} is in the room state: {kinds:?}");
    }
    let joined =
        server.expect_ok(Method::GET, "/_matrix/client/v3/joined_rooms", None, Some(&alice.access_token)).await;
    let joined: HashSet<&str> = joined["joined_rooms"]
        .as_array()
        .map(|rooms| rooms.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(joined, HashSet::from([general.as_str(), lobby.as_str()]));
    Session { server, alice, bob, general, lobby }
}

async fn invite_join_and_talk(s: &Session) -> String {
    let Session { server, alice, bob, general, lobby } = s;
    server.invite(alice, general, &bob.user_id).await;
    let sync = server.sync(bob, None, None).await;
    let invite_state = sync["rooms"]["invite"][general]["invite_state"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("bob's sync shows the invite to {general}: {sync}"));
    assert!(
        invite_state.iter().any(|event| event["type"] == "m.room.member"
            && event["state_key"] == bob.user_id.as_str()
            && event["content"]["membership"] == "invite"),
        "the invite state holds bob's invite: {invite_state:?}"
    );
    server.join(bob, general).await;
    server.join(bob, lobby).await;
    let sync = server.sync(bob, None, None).await;
    let rooms: HashSet<String> = joined_rooms(&sync).into_iter().collect();
    assert_eq!(rooms, HashSet::from([general.clone(), lobby.clone()]), "bob is in both rooms: {sync}");
    assert!(sync["rooms"]["invite"].get(general).is_none(), "the invite is gone once joined");
    let since = sync["next_batch"].as_str().unwrap_or_else(|| panic!("no next_batch: {sync}")).to_owned();

    let sent: Vec<String> = (0..5).map(|i| format!("hello {i}")).collect();
    for text in &sent {
        server.send_text(alice, general, text).await;
    }
    let sync = server.sync(bob, Some(&since), None).await;
    assert_eq!(bodies(timeline(&sync, general)), sent, "bob receives alice's messages, in order: {sync}");
    assert!(timeline(&sync, general).iter().all(|event| event["sender"] == alice.user_id.as_str()));

    // A state change shows in the timeline and in the state API.
    let since = sync["next_batch"].as_str().unwrap_or_default().to_owned();
    server.set_state(alice, general, "m.room.topic", "", &json!({"topic": "Changed"})).await;
    assert_eq!(server.get_state(bob, general, "m.room.topic", "").await["topic"], "Changed");
    let sync = server.sync(bob, Some(&since), None).await;
    let topic_events: Vec<&Value> =
        timeline(&sync, general).into_iter().filter(|event| event["type"] == "m.room.topic").collect();
    assert_eq!(topic_events.len(), 1, "the topic change is in bob's timeline: {sync}");
    assert_eq!(topic_events[0]["state_key"], "");
    assert_eq!(topic_events[0]["content"]["topic"], "Changed");
    sync["next_batch"].as_str().unwrap_or_default().to_owned()
}

async fn sync_with_filters(s: &Session) {
    let Session { server, alice, bob, general, lobby } = s;
    let sync = server.sync(bob, None, Some(&json!({"room": {"timeline": {"limit": 2}}}))).await;
    let events = timeline(&sync, general);
    assert_eq!(events.len(), 2, "timeline limit 2: {sync}");
    assert_eq!(sync["rooms"]["join"][general]["timeline"]["limited"], true, "more history exists: {sync}");
    assert!(sync["rooms"]["join"][general]["timeline"]["prev_batch"].is_string(), "a limited timeline has prev_batch");

    let sync = server.sync(bob, None, Some(&json!({"room": {"rooms": [lobby]}}))).await;
    assert_eq!(joined_rooms(&sync), vec![lobby.clone()], "the rooms filter keeps only the lobby: {sync}");

    let sync =
        server.sync(bob, None, Some(&json!({"room": {"timeline": {"types": ["m.room.message"], "limit": 50}}}))).await;
    let events = timeline(&sync, general);
    assert_eq!(bodies(events.iter().copied()).len(), 5, "all five messages pass the types filter: {sync}");
    assert!(events.iter().all(|event| event["type"] == "m.room.message"), "only messages: {sync}");

    let sync = server
        .sync(bob, None, Some(&json!({"room": {"timeline": {"not_senders": [alice.user_id], "limit": 50}}})))
        .await;
    for room in [general, lobby] {
        let events = timeline(&sync, room);
        assert!(
            events.iter().all(|event| event["sender"] != alice.user_id.as_str()),
            "not_senders drops alice: {sync}"
        );
        assert!(
            events.iter().any(|event| event["sender"] == bob.user_id.as_str()),
            "bob's own join remains in {room}: {sync}"
        );
    }

    let filter_id = server.upload_filter(bob, &json!({"room": {"timeline": {"limit": 1}}})).await;
    let stored = server
        .expect_ok(
            Method::GET,
            &format!("/_matrix/client/v3/user/{}/filter/{}", encode(&bob.user_id), encode(&filter_id)),
            None,
            Some(&bob.access_token),
        )
        .await;
    assert_eq!(stored["room"]["timeline"]["limit"], 1, "the filter reads back: {stored}");
    let sync = server.sync(bob, None, Some(&Value::String(filter_id))).await;
    assert_eq!(timeline(&sync, general).len(), 1, "an uploaded filter by id: {sync}");

    let sync = server
        .sync(bob, None, Some(&json!({"room": {"state": {"types": ["m.room.name"]}, "timeline": {"limit": 1}}})))
        .await;
    let state = sync["rooms"]["join"][general]["state"]["events"].as_array().cloned().unwrap_or_default();
    assert!(!state.is_empty(), "the room name is in the state section: {sync}");
    assert!(state.iter().all(|event| event["type"] == "m.room.name"), "the state filter keeps only names: {sync}");
}

async fn paginate_hundreds(s: &Session) {
    const COUNT: usize = 300;
    let Session { server, alice, bob, lobby, .. } = s;
    let sent: Vec<String> = (0..COUNT).map(|i| format!("lobby {i}")).collect();
    for text in &sent {
        server.send_text(alice, lobby, text).await;
    }

    let backward = server.paginate(bob, lobby, &MessagesQuery::backward(None, 40)).await;
    assert_no_duplicate_ids(&backward, "backward pagination");
    let mut got = bodies(&backward);
    got.reverse();
    assert_eq!(got, sent, "backward pagination returns every message, newest first");
    assert_eq!(backward.last().map(|event| &event["type"]), Some(&json!("m.room.create")), "the walk ends at creation");

    let forward = server.paginate(bob, lobby, &MessagesQuery::forward(None, 64)).await;
    assert_no_duplicate_ids(&forward, "forward pagination");
    assert_eq!(bodies(&forward), sent, "forward pagination returns every message, oldest first");
    assert_eq!(forward.len(), backward.len(), "both directions see the same events");

    let filtered = server
        .paginate(bob, lobby, &MessagesQuery::backward(None, 25).filter(json!({"types": ["m.room.message"]})))
        .await;
    assert!(filtered.iter().all(|event| event["type"] == "m.room.message"), "the types filter applies to /messages");
    assert_eq!(filtered.len(), COUNT);

    // A limited sync timeline plus a backward walk from its prev_batch give the whole history
    // exactly once.
    let sync = server.sync(bob, None, Some(&json!({"room": {"timeline": {"limit": 10}}}))).await;
    let recent: Vec<Value> = timeline(&sync, lobby).into_iter().cloned().collect();
    assert_eq!(bodies(&recent), sent[COUNT - 10..].to_vec(), "the last ten messages: {sync}");
    let prev_batch = sync["rooms"]["join"][lobby]["timeline"]["prev_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("a limited timeline has prev_batch: {sync}"));
    let older = server.paginate(bob, lobby, &MessagesQuery::backward(Some(prev_batch), 50)).await;
    let mut whole: Vec<Value> = older.into_iter().rev().collect();
    whole.extend(recent);
    assert_no_duplicate_ids(&whole, "prev_batch pagination plus the sync timeline");
    assert_eq!(bodies(&whole), sent, "prev_batch continues exactly where the sync timeline starts");

    // A page size limit is respected.
    let page = server.messages(bob, lobby, &MessagesQuery::backward(None, 7)).await;
    assert_eq!(page["chunk"].as_array().map(Vec::len), Some(7), "limit=7: {page}");
    assert!(page["start"].is_string() && page["end"].is_string(), "a middle page has start and end: {page}");
}

async fn error_codes(s: &Session) {
    let Session { server, alice, general, .. } = s;
    let eve = server.register("eve").await;
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/eve1", encode(general));
    let (status, body) = server
        .request(Method::PUT, &path, Some(&json!({"msgtype": "m.text", "body": "hi"})), Some(&eve.access_token))
        .await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let path = format!("/_matrix/client/v3/rooms/{}/state/org.example.nothing", encode(general));
    let (status, body) = server.request(Method::GET, &path, None, Some(&alice.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) =
        server.request(Method::GET, "/_matrix/client/v3/nothing_here", None, Some(&alice.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")), "{body}");
    let (status, body) = server
        .request_raw(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(b"{".to_vec()),
            Some("application/json"),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_NOT_JSON")), "{body}");
    let (status, _) =
        server.request(Method::POST, "/_matrix/client/v3/logout", Some(&json!({})), Some(&eve.access_token)).await;
    assert_eq!(status, 200);
    let (status, body) = server.request(Method::GET, "/_matrix/client/v3/sync", None, Some(&eve.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "{body}");
}

/// The whole session, step by step.
async fn whole_session(backend: Backend) {
    let session = register_and_create_rooms(backend).await;
    invite_join_and_talk(&session).await;
    sync_with_filters(&session).await;
    paginate_hundreds(&session).await;
    error_codes(&session).await;
}

/// A long-polling `/sync` returns as soon as an event arrives, not at its timeout.
async fn long_poll_wakes_on_new_event(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let since = server.sync(&alice, None, None).await["next_batch"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    let (sync, _) = tokio::join!(server.sync_with_timeout(&alice, Some(&since), None, 30_000), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.send_text(&alice, &room, "wake up").await
    });
    assert!(started.elapsed() < Duration::from_secs(15), "the sync waited {:?} for a new event", started.elapsed());
    assert_eq!(bodies(timeline(&sync, &room)), vec!["wake up".to_owned()], "{sync}");

    // With nothing new, it waits for its timeout and returns the same position.
    let since = sync["next_batch"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    let idle = server.sync_with_timeout(&alice, Some(&since), None, 1_000).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "an idle sync waits for its timeout");
    assert!(timeline(&idle, &room).is_empty(), "nothing new: {idle}");
}

backend_tests!(whole_session, long_poll_wakes_on_new_event);
