//! Event relations over raw HTTP: the exact shape of the aggregations bundled with events
//! (edits, threads, references) on every read path, `/relations` pagination (both
//! directions, `from`/`to`, filters, recursion, history visibility) and `/threads`; and
//! the same seen through `matrix-sdk`.

use std::time::Duration;

use matrix_sdk::{
    room::{IncludeRelations, RelationsOptions},
    ruma::{
        OwnedEventId, OwnedRoomId,
        api::client::room::create_room::v3::Request as CreateRoomRequest,
        events::{reaction::ReactionEventContent, relation::Annotation, relation::RelationType},
    },
};
use ranvier_test::{Backend, MessagesQuery, Method, TestServer, User, backend_tests, encode, txn_id};
use serde_json::{Value, json};

use crate::start;

/// Users registered under `names`, all in a private room (history `shared`) the first made.
async fn room_with(server: &TestServer, names: &[&str]) -> (Vec<User>, String) {
    let mut users = Vec::new();
    for name in names {
        users.push(server.register(name).await);
    }
    let room = server.create_room(&users[0], json!({"preset": "private_chat"})).await;
    for user in &users[1..] {
        server.invite(&users[0], &room, &user.user_id).await;
        server.join(user, &room).await;
    }
    (users, room)
}

/// Distinct `origin_server_ts` for events that must be ordered by time.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn edit(target: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    })
}

fn thread_reply(root: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
}

fn relation(rel_type: &str, parent: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": rel_type, "event_id": parent}})
}

async fn redact(server: &TestServer, user: &User, room: &str, event_id: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/{}", encode(room), encode(event_id), txn_id());
    server.expect_ok(Method::PUT, &path, Some(&json!({})), Some(&user.access_token)).await;
}

async fn get_event(server: &TestServer, user: &User, room: &str, event_id: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(room), encode(event_id));
    server.expect_ok(Method::GET, &path, None, Some(&user.access_token)).await
}

/// `GET /relations/{event_id}{suffix}` (suffix: `/relType…` and the query string).
async fn relations(server: &TestServer, user: &User, room: &str, event_id: &str, suffix: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v1/rooms/{}/relations/{}{suffix}", encode(room), encode(event_id));
    server.request(Method::GET, &path, None, Some(&user.access_token)).await
}

async fn relations_ok(server: &TestServer, user: &User, room: &str, event_id: &str, suffix: &str) -> Value {
    let (status, body) = relations(server, user, room, event_id, suffix).await;
    assert_eq!(status, 200, "/relations/{event_id}{suffix}: {body}\n{}", server.log_report());
    body
}

async fn threads(server: &TestServer, user: &User, room: &str, query: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v1/rooms/{}/threads{query}", encode(room));
    server.request(Method::GET, &path, None, Some(&user.access_token)).await
}

async fn threads_ok(server: &TestServer, user: &User, room: &str, query: &str) -> Value {
    let (status, body) = threads(server, user, room, query).await;
    assert_eq!(status, 200, "/threads{query}: {body}\n{}", server.log_report());
    body
}

/// The event ids of a response's `chunk`.
fn ids(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("a chunk in {body}"))
        .iter()
        .map(|event| event["event_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn bundle(event: &Value) -> &Value {
    &event["unsigned"]["m.relations"]
}

/// The event `event_id` among `events`.
fn find<'a>(events: &'a Value, event_id: &str) -> &'a Value {
    events
        .as_array()
        .and_then(|events| events.iter().find(|event| event["event_id"] == event_id))
        .unwrap_or_else(|| panic!("{event_id} in {events}"))
}

fn encoded(token: &Value) -> String {
    encode(token.as_str().unwrap_or_else(|| panic!("a token, got {token}")))
}

/// `m.replace` bundles the newest valid edit, whole, on every read path; edits by another
/// sender, of another type, without `m.new_content` or of an edit are ignored; redacting the
/// newest edit falls back to the one before, and a redacted original bundles none.
async fn edits_bundle_the_latest_valid_edit(backend: Backend) {
    let server = start(backend).await;
    let (users, room) = room_with(&server, &["alice", "bob"]).await;
    let (alice, bob) = (&users[0], &users[1]);
    let original = server.send_text(alice, &room, "cake").await;
    tick().await;
    let first = server.send_event(alice, &room, "m.room.message", &edit(&original, "chocolate cake")).await;
    tick().await;
    let second = server.send_event(alice, &room, "m.room.message", &edit(&original, "lemon cake")).await;
    tick().await;
    // None of these is a valid edit of the original.
    server.send_event(bob, &room, "m.room.message", &edit(&original, "bob's cake")).await;
    let mut sticker = edit(&original, "a sticker");
    sticker["url"] = json!("mxc://x/y");
    server.send_event(alice, &room, "m.sticker", &sticker).await;
    let mut bare = edit(&original, "no new content");
    bare.as_object_mut().map(|content| content.remove("m.new_content"));
    server.send_event(alice, &room, "m.room.message", &bare).await;
    server.send_event(alice, &room, "m.room.message", &edit(&first, "edit of an edit")).await;

    let check = |event: &Value, expected: &str, what: &str| {
        let replace = &bundle(event)["m.replace"];
        assert_eq!(replace["event_id"], expected, "{what}: {event}");
        assert_eq!(replace["sender"], alice.user_id.as_str(), "{what}: {event}");
        assert_eq!(replace["type"], "m.room.message", "{what}: {event}");
        assert!(replace["origin_server_ts"].is_u64(), "{what}: {event}");
        assert_eq!(replace["content"]["m.relates_to"]["event_id"], original.as_str(), "{what}: {event}");
        assert_eq!(event["content"]["body"], "cake", "{what}: the original's content is left intact: {event}");
    };
    let event = get_event(&server, bob, &room, &original).await;
    check(&event, &second, "GET /event");
    assert_eq!(bundle(&event)["m.replace"]["content"]["m.new_content"]["body"], "lemon cake", "{event}");

    let messages = server.messages(bob, &room, &MessagesQuery::backward(None, 50)).await;
    check(find(&messages["chunk"], &original), &second, "/messages");

    let path = format!("/_matrix/client/v3/rooms/{}/context/{}?limit=20", encode(&room), encode(&original));
    let context = server.expect_ok(Method::GET, &path, None, Some(&bob.access_token)).await;
    check(&context["event"], &second, "/context event");
    let path = format!("/_matrix/client/v3/rooms/{}/context/{}?limit=20", encode(&room), encode(&first));
    let context = server.expect_ok(Method::GET, &path, None, Some(&bob.access_token)).await;
    check(find(&context["events_before"], &original), &second, "/context events_before");

    let filter = json!({"room": {"timeline": {"limit": 50}}});
    let sync = server.sync(bob, None, Some(&filter)).await;
    check(find(&sync["rooms"]["join"][&room]["timeline"]["events"], &original), &second, "/sync");

    // The first edit was edited, but an edit cannot be edited.
    let event = get_event(&server, bob, &room, &first).await;
    assert!(bundle(&event).get("m.replace").is_none(), "{event}");

    // Redacting the newest edit reverts to the one before.
    redact(&server, alice, &room, &second).await;
    check(&get_event(&server, bob, &room, &original).await, &first, "after redacting the newest edit");

    // A redacted original bundles no edit.
    redact(&server, alice, &room, &original).await;
    let event = get_event(&server, bob, &room, &original).await;
    assert!(bundle(&event).get("m.replace").is_none(), "{event}");
}

/// `m.thread` bundles the latest reply (whole, with its own edit), the count and whether
/// the reader took part; encrypted replies count (their `m.relates_to` is in clear);
/// redacting a reply updates the summary.
async fn threads_bundle_count_latest_and_participation(backend: Backend) {
    let server = start(backend).await;
    let (users, room) = room_with(&server, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&users[0], &users[1], &users[2]);
    let root = server.send_text(alice, &room, "root").await;
    let first = server.send_event(bob, &room, "m.room.message", &thread_reply(&root, "one")).await;
    let encrypted = json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEnAC",
        "sender_key": "key",
        "device_id": "DEVICE",
        "session_id": "session",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    });
    let second = server.send_event(bob, &room, "m.room.encrypted", &encrypted).await;
    let third = server.send_event(bob, &room, "m.room.message", &thread_reply(&root, "three")).await;
    let third_edit = server.send_event(bob, &room, "m.room.message", &edit(&third, "three, edited")).await;

    // A thread cannot start from an event that relates to another, nor relate across rooms.
    let send_path = |room: &str| format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(room), txn_id());
    let nested = thread_reply(&first, "a thread in a thread");
    let (status, body) = server.request(Method::PUT, &send_path(&room), Some(&nested), Some(&bob.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_UNKNOWN")), "{body}");
    let other_room = server.create_room(bob, json!({})).await;
    let across = thread_reply(&root, "from another room");
    let (status, body) =
        server.request(Method::PUT, &send_path(&other_room), Some(&across), Some(&bob.access_token)).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_UNKNOWN")), "{body}");

    let summary = |event: &Value| bundle(event)["m.thread"].clone();
    for (user, participated) in [(alice, true), (bob, true), (carol, false)] {
        let thread = summary(&get_event(&server, user, &room, &root).await);
        assert_eq!(thread["count"], 3, "{}: {thread}", user.user_id);
        assert_eq!(thread["current_user_participated"], participated, "{}: {thread}", user.user_id);
        let latest = &thread["latest_event"];
        assert_eq!(latest["event_id"], third.as_str(), "{thread}");
        assert_eq!(latest["sender"], bob.user_id.as_str(), "{thread}");
        assert_eq!(latest["room_id"], room.as_str(), "{thread}");
        assert_eq!(latest["content"]["body"], "three", "{thread}");
        assert_eq!(
            bundle(latest)["m.replace"]["event_id"],
            third_edit.as_str(),
            "the latest event's own edit: {thread}"
        );
    }
    // The same summary on the other read paths.
    let messages = server.messages(carol, &room, &MessagesQuery::backward(None, 50)).await;
    assert_eq!(summary(find(&messages["chunk"], &root))["latest_event"]["event_id"], third.as_str(), "{messages}");
    let filter = json!({"room": {"timeline": {"limit": 50}}});
    let sync = server.sync(carol, None, Some(&filter)).await;
    let synced = find(&sync["rooms"]["join"][&room]["timeline"]["events"], &root);
    assert_eq!(summary(synced)["count"], 3, "{synced}");

    // Redacting the latest reply makes the encrypted one the latest.
    redact(&server, bob, &room, &third).await;
    let thread = summary(&get_event(&server, carol, &room, &root).await);
    assert_eq!(thread["count"], 2, "{thread}");
    assert_eq!(thread["latest_event"]["event_id"], second.as_str(), "{thread}");
    assert_eq!(thread["latest_event"]["type"], "m.room.encrypted", "{thread}");
    redact(&server, bob, &room, &second).await;
    redact(&server, bob, &room, &first).await;
    let event = get_event(&server, carol, &room, &root).await;
    assert!(bundle(&event).get("m.thread").is_none(), "no replies left: {event}");
    let (status, body) = threads(&server, carol, &room, "").await;
    assert_eq!((status, ids(&body)), (200, Vec::<String>::new()), "{body}");
}

/// `/relations` pages newest first or oldest first, honours `from`, `to` and `limit`,
/// filters by relation and event type (at every level when recursing), recurses three levels
/// on request, bundles `m.reference`, and hides what history visibility hides.
async fn relations_paginate_filter_and_recurse(backend: Backend) {
    let server = start(backend).await;
    let (users, room) = room_with(&server, &["alice", "bob"]).await;
    let (alice, bob) = (&users[0], &users[1]);
    server.set_state(alice, &room, "m.room.history_visibility", "", &json!({"history_visibility": "joined"})).await;
    let parent = server.send_text(alice, &room, "parent").await;
    let c1 = server.send_event(alice, &room, "m.room.message", &relation("m.reference", &parent, "c1")).await;
    let c2 = server.send_event(bob, &room, "m.room.message", &relation("m.reference", &parent, "c2")).await;
    let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": "👍"}});
    let a1 = server.send_event(bob, &room, "m.reaction", &reaction).await;
    let c3 = server.send_event(alice, &room, "m.room.message", &relation("m.reference", &parent, "c3")).await;
    let c4 = server.send_event(bob, &room, "m.room.message", &relation("m.reference", &parent, "c4")).await;
    let g1 = server.send_event(alice, &room, "m.room.message", &relation("m.reference", &c1, "g1")).await;
    let g2 = server.send_event(alice, &room, "m.room.message", &relation("m.reference", &a1, "g2")).await;
    let gg = server.send_event(alice, &room, "m.room.message", &relation("m.reference", &g1, "gg")).await;
    let ggg = server.send_event(alice, &room, "m.room.message", &relation("m.reference", &gg, "ggg")).await;
    // A plain reply is not a relation the server follows.
    let reply = json!({"msgtype": "m.text", "body": "reply", "m.relates_to": {"m.in_reply_to": {"event_id": parent}}});
    server.send_event(bob, &room, "m.room.message", &reply).await;

    // Backward (the default), two at a time.
    let page = relations_ok(&server, bob, &room, &parent, "?limit=2").await;
    assert_eq!(ids(&page), [c4.as_str(), c3.as_str()], "{page}");
    assert!(page.get("prev_batch").is_none(), "no `from`, no prev_batch: {page}");
    assert!(page.get("recursion_depth").is_none(), "{page}");
    let first_next = page["next_batch"].clone();
    let page = relations_ok(&server, bob, &room, &parent, &format!("?limit=2&from={}", encoded(&first_next))).await;
    assert_eq!(ids(&page), [a1.as_str(), c2.as_str()], "{page}");
    assert_eq!(page["prev_batch"], first_next, "{page}");
    let page =
        relations_ok(&server, bob, &room, &parent, &format!("?limit=2&from={}", encoded(&page["next_batch"]))).await;
    assert_eq!(ids(&page), [c1.as_str()], "{page}");
    assert!(page.get("next_batch").is_none(), "the last page: {page}");
    // `to` stops where the first page stopped.
    let page = relations_ok(&server, bob, &room, &parent, &format!("?to={}", encoded(&first_next))).await;
    assert_eq!(ids(&page), [c4.as_str(), c3.as_str()], "{page}");

    // Forward.
    let page = relations_ok(&server, bob, &room, &parent, "?dir=f&limit=3").await;
    assert_eq!(ids(&page), [c1.as_str(), c2.as_str(), a1.as_str()], "{page}");
    let page =
        relations_ok(&server, bob, &room, &parent, &format!("?dir=f&from={}", encoded(&page["next_batch"]))).await;
    assert_eq!(ids(&page), [c3.as_str(), c4.as_str()], "{page}");
    assert!(page.get("next_batch").is_none(), "{page}");

    // Filters.
    let page = relations_ok(&server, bob, &room, &parent, "/m.reference?limit=10").await;
    assert_eq!(ids(&page), [c4.as_str(), c3.as_str(), c2.as_str(), c1.as_str()], "{page}");
    let page = relations_ok(&server, bob, &room, &parent, "/m.annotation/m.reaction").await;
    assert_eq!(ids(&page), [a1.as_str()], "{page}");
    assert_eq!(page["chunk"][0]["content"]["m.relates_to"]["key"], "👍", "{page}");
    let page = relations_ok(&server, bob, &room, &parent, "/m.reference/m.reaction").await;
    assert_eq!(ids(&page), Vec::<String>::new(), "{page}");

    // Recursion: three levels; filters apply to every level.
    let page = relations_ok(&server, bob, &room, &parent, "?recurse=true&limit=20").await;
    assert_eq!(
        ids(&page),
        [gg.as_str(), g2.as_str(), g1.as_str(), c4.as_str(), c3.as_str(), a1.as_str(), c2.as_str(), c1.as_str()],
        "{page}"
    );
    assert!(!ids(&page).contains(&ggg), "four levels down is past the recursion depth");
    assert_eq!(page["recursion_depth"], 3, "{page}");
    let page = relations_ok(&server, bob, &room, &parent, "/m.reference?recurse=true&limit=20").await;
    assert_eq!(
        ids(&page),
        [gg.as_str(), g1.as_str(), c4.as_str(), c3.as_str(), c2.as_str(), c1.as_str()],
        "g2 hangs off an annotation: {page}"
    );

    // Each child carries its own aggregations, and so does the parent.
    let page = relations_ok(&server, bob, &room, &parent, "/m.reference?limit=10").await;
    assert_eq!(bundle(find(&page["chunk"], &c1))["m.reference"], json!({"chunk": [{"event_id": g1}]}), "{page}");
    let event = get_event(&server, bob, &room, &parent).await;
    let expected: Vec<Value> = [&c1, &c2, &c3, &c4].iter().map(|id| json!({"event_id": id})).collect();
    assert_eq!(bundle(&event)["m.reference"], json!({"chunk": expected}), "{event}");
    redact(&server, alice, &room, &c1).await;
    let event = get_event(&server, bob, &room, &parent).await;
    assert_eq!(bundle(&event)["m.reference"]["chunk"].as_array().map(Vec::len), Some(3), "{event}");

    // Unknown events, bad tokens and invisible parents.
    let (status, body) = relations(&server, bob, &room, "$nothere:localhost", "").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = relations(&server, bob, &room, &parent, "?from=nonsense").await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let carol = server.register("carol").await;
    let (status, body) = relations(&server, &carol, &room, &parent, "").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "a stranger: {body}");

    // Carol joins a room whose history is `joined`: she sees neither the old parent nor, once
    // she has left, the children sent after.
    server.invite(alice, &room, &carol.user_id).await;
    server.join(&carol, &room).await;
    let (status, body) = relations(&server, &carol, &room, &parent, "").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "from before her join: {body}");
    let later = server.send_text(alice, &room, "later").await;
    let seen = server.send_event(bob, &room, "m.room.message", &relation("m.reference", &later, "seen")).await;
    let seen_reply = server.send_event(bob, &room, "m.room.message", &thread_reply(&later, "seen")).await;
    server.leave(&carol, &room).await;
    server.send_event(bob, &room, "m.room.message", &relation("m.reference", &later, "unseen")).await;
    let unseen_reply = server.send_event(bob, &room, "m.room.message", &thread_reply(&later, "unseen")).await;
    let page = relations_ok(&server, &carol, &room, &later, "").await;
    assert_eq!(ids(&page), [seen_reply.as_str(), seen.as_str()], "{page}");
    // Her thread summary stops at the last reply she could see; bob's does not.
    let event = get_event(&server, &carol, &room, &later).await;
    assert_eq!(bundle(&event)["m.thread"]["latest_event"]["event_id"], seen_reply.as_str(), "{event}");
    let event = get_event(&server, bob, &room, &later).await;
    assert_eq!(bundle(&event)["m.thread"]["latest_event"]["event_id"], unseen_reply.as_str(), "{event}");
}

/// `/threads` lists thread roots by latest activity, pages, and filters to the threads the
/// user took part in; all of it survives a restart.
async fn threads_list_by_activity(backend: Backend) {
    let mut server = start(backend).await;
    let (users, room) = room_with(&server, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&users[0], &users[1], &users[2]);
    let t1 = server.send_text(alice, &room, "thread one").await;
    server.send_event(bob, &room, "m.room.message", &thread_reply(&t1, "bob in one")).await;
    let t2 = server.send_text(carol, &room, "thread two").await;
    server.send_event(carol, &room, "m.room.message", &thread_reply(&t2, "carol in two")).await;
    server.send_text(bob, &room, "not a thread").await;
    server.send_event(alice, &room, "m.room.message", &thread_reply(&t1, "alice in one")).await;

    let all = threads_ok(&server, alice, &room, "").await;
    assert_eq!(ids(&all), [t1.as_str(), t2.as_str()], "{all}");
    assert!(all.get("next_batch").is_none(), "{all}");
    assert_eq!(bundle(&all["chunk"][0])["m.thread"]["count"], 2, "roots come with their aggregations: {all}");
    let page = threads_ok(&server, alice, &room, "?limit=1&include=all").await;
    assert_eq!(ids(&page), [t1.as_str()], "{page}");
    let page = threads_ok(&server, alice, &room, &format!("?limit=1&from={}", encoded(&page["next_batch"]))).await;
    assert_eq!(ids(&page), [t2.as_str()], "{page}");
    assert!(page.get("next_batch").is_none(), "{page}");

    for (user, expected) in [(alice, vec![t1.as_str()]), (bob, vec![t1.as_str()]), (carol, vec![t2.as_str()])] {
        let page = threads_ok(&server, user, &room, "?include=participated").await;
        assert_eq!(ids(&page), expected, "{}: {page}", user.user_id);
    }

    // Bob replies in the second thread: it moves to the front, and he took part in both.
    let reply = server.send_event(bob, &room, "m.room.message", &thread_reply(&t2, "bob in two")).await;
    assert_eq!(ids(&threads_ok(&server, alice, &room, "").await), [t2.as_str(), t1.as_str()]);
    assert_eq!(ids(&threads_ok(&server, bob, &room, "?include=participated").await), [t2.as_str(), t1.as_str()]);
    redact(&server, bob, &room, &reply).await;
    assert_eq!(ids(&threads_ok(&server, alice, &room, "").await), [t1.as_str(), t2.as_str()]);
    assert_eq!(ids(&threads_ok(&server, bob, &room, "?include=participated").await), [t1.as_str()]);

    let (status, body) = threads(&server, alice, &room, "?from=nonsense").await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let (status, body) = threads(&server, alice, &room, "?include=mine").await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let dave = server.register("dave").await;
    let (status, body) = threads(&server, &dave, &room, "").await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // After a restart the relations are read back from the database.
    server.restart().await;
    let all = threads_ok(&server, alice, &room, "").await;
    assert_eq!(ids(&all), [t1.as_str(), t2.as_str()], "{all}");
    let event = get_event(&server, carol, &room, &t1).await;
    assert_eq!(bundle(&event)["m.thread"]["count"], 2, "{event}");
}

async fn sdk_sync(client: &matrix_sdk::Client, server: &TestServer) {
    let pass = client.sync_once(matrix_sdk::config::SyncSettings::default().timeout(Duration::ZERO));
    if let Err(e) = pass.await {
        panic!("sync_once: {e}\n{}", server.log_report());
    }
}

/// A reaction, an edit and a thread reply sent through `matrix-sdk` reach another SDK client
/// through `Room::relations` and `Room::event` with the bundled aggregations.
async fn sdk_sees_relations(backend: Backend) {
    let server = start(backend).await;
    server.register("alice").await;
    server.register("bob").await;
    let alice = crate::e2ee::login(&server, "alice").await;
    let bob = crate::e2ee::login(&server, "bob").await;
    sdk_sync(&alice, &server).await;
    let room = alice
        .create_room(CreateRoomRequest::new())
        .await
        .unwrap_or_else(|e| panic!("create room: {e}\n{}", server.log_report()));
    let room_id: OwnedRoomId = room.room_id().to_owned();
    room.invite_user_by_id(bob.user_id().expect("bob is logged in"))
        .await
        .unwrap_or_else(|e| panic!("invite: {e}\n{}", server.log_report()));
    sdk_sync(&bob, &server).await;
    bob.join_room_by_id(&room_id).await.unwrap_or_else(|e| panic!("join: {e}\n{}", server.log_report()));

    let send = |content: Value, event_type: &'static str| {
        let room = room.clone();
        async move {
            room.send_raw(event_type, content)
                .await
                .unwrap_or_else(|e| panic!("send {event_type}: {e}"))
                .response
                .event_id
        }
    };
    let original: OwnedEventId = send(json!({"msgtype": "m.text", "body": "hello"}), "m.room.message").await;
    let bob_room = bob.get_room(&room_id).unwrap_or_else(|| panic!("bob knows the room"));
    let reaction = bob_room
        .send(ReactionEventContent::new(Annotation::new(original.clone(), "🎉".to_owned())))
        .await
        .unwrap_or_else(|e| panic!("react: {e}\n{}", server.log_report()))
        .response
        .event_id;
    tick().await;
    let edited = send(edit(original.as_str(), "hello, edited"), "m.room.message").await;
    let reply = send(thread_reply(original.as_str(), "in a thread"), "m.room.message").await;

    let all = bob_room
        .relations(original.clone(), RelationsOptions::default())
        .await
        .unwrap_or_else(|e| panic!("relations: {e}\n{}", server.log_report()));
    let seen: Vec<String> = all.chunk.iter().map(|event| event.event_id().expect("an event id").to_string()).collect();
    assert_eq!(seen, [reply.to_string(), edited.to_string(), reaction.to_string()], "newest first");
    let options = RelationsOptions {
        include_relations: IncludeRelations::RelationsOfType(RelationType::Thread),
        ..Default::default()
    };
    let threads = bob_room.relations(original.clone(), options).await.unwrap_or_else(|e| panic!("relations: {e}"));
    let seen: Vec<String> =
        threads.chunk.iter().map(|event| event.event_id().expect("an event id").to_string()).collect();
    assert_eq!(seen, [reply.to_string()]);

    let event = bob_room.event(&original, None).await.unwrap_or_else(|e| panic!("event: {e}\n{}", server.log_report()));
    let event: Value = serde_json::from_str(event.raw().json().get()).unwrap_or_else(|e| panic!("JSON: {e}"));
    let relations = bundle(&event);
    assert_eq!(relations["m.replace"]["event_id"], edited.as_str(), "{event}");
    assert_eq!(relations["m.replace"]["content"]["m.new_content"]["body"], "hello, edited", "{event}");
    assert_eq!(relations["m.thread"]["latest_event"]["event_id"], reply.as_str(), "{event}");
    assert_eq!(relations["m.thread"]["count"], 1, "{event}");
    assert_eq!(relations["m.thread"]["current_user_participated"], false, "bob took no part: {event}");
}

async fn ignore(server: &TestServer, user: &User, ignored: &[&User]) {
    let list: serde_json::Map<String, Value> = ignored.iter().map(|u| (u.user_id.clone(), json!({}))).collect();
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", encode(&user.user_id));
    server.expect_ok(Method::PUT, &path, Some(&json!({ "ignored_users": list })), Some(&user.access_token)).await;
}

/// What an ignored user sends is left out of relations for the user who ignores them: thread
/// summaries count and show only the others' replies, references leave theirs out,
/// `/relations` and `/threads` do not list them, and their events are not found by `/event`
/// nor as a `/relations` parent. Another reader sees everything.
async fn ignored_users_vanish_from_relations(backend: Backend) {
    let server = start(backend).await;
    let (users, room) = room_with(&server, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&users[0], &users[1], &users[2]);
    let root = server.send_text(alice, &room, "root").await;
    let from_carol = server.send_event(carol, &room, "m.room.message", &thread_reply(&root, "carol")).await;
    tick().await;
    let from_bob = server.send_event(bob, &room, "m.room.message", &thread_reply(&root, "bob")).await;
    let carol_ref = server.send_event(carol, &room, "m.room.message", &relation("m.reference", &root, "c")).await;
    let bob_ref = server.send_event(bob, &room, "m.room.message", &relation("m.reference", &root, "b")).await;
    let bobs_root = server.send_text(bob, &room, "bob's root").await;
    server.send_event(carol, &room, "m.room.message", &thread_reply(&bobs_root, "carol in bob's")).await;
    // A thread whose newest reply is not bob's: his earlier one is taken off the count.
    let second_root = server.send_text(alice, &room, "second root").await;
    server.send_event(bob, &room, "m.room.message", &thread_reply(&second_root, "bob first")).await;
    let carol_last = server.send_event(carol, &room, "m.room.message", &thread_reply(&second_root, "carol")).await;
    ignore(&server, alice, &[bob]).await;

    let event = get_event(&server, alice, &room, &root).await;
    let thread = &bundle(&event)["m.thread"];
    assert_eq!(thread["count"], 1, "bob's reply is not counted: {event}");
    assert_eq!(thread["latest_event"]["event_id"], from_carol.as_str(), "{event}");
    assert_eq!(bundle(&event)["m.reference"], json!({ "chunk": [{ "event_id": carol_ref }] }), "{event}");
    let messages = server.messages(alice, &room, &MessagesQuery::backward(None, 50)).await;
    assert_eq!(bundle(find(&messages["chunk"], &root))["m.thread"]["count"], 1, "{messages}");
    let filter = json!({"room": {"timeline": {"limit": 50}}});
    let sync = server.sync(alice, None, Some(&filter)).await;
    let synced = find(&sync["rooms"]["join"][&room]["timeline"]["events"], &root);
    assert_eq!(bundle(synced)["m.thread"]["latest_event"]["event_id"], from_carol.as_str(), "{synced}");

    let event = get_event(&server, alice, &room, &second_root).await;
    let thread = &bundle(&event)["m.thread"];
    assert_eq!(
        (thread["count"].as_u64(), &thread["latest_event"]["event_id"]),
        (Some(1), &json!(carol_last)),
        "{event}"
    );

    let listed = relations_ok(&server, alice, &room, &root, "?limit=50").await;
    assert_eq!(ids(&listed), [carol_ref.clone(), from_carol.clone()], "{listed}");
    for hidden in [&from_bob, &bobs_root] {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(&room), encode(hidden));
        let (status, body) = server.request(Method::GET, &path, None, Some(&alice.access_token)).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "/event: {body}");
    }
    let (status, body) = relations(&server, alice, &room, &bobs_root, "").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "/relations: {body}");
    let listed = threads_ok(&server, alice, &room, "").await;
    assert_eq!(ids(&listed), [second_root.clone(), root.clone()], "bob's thread is not listed: {listed}");

    // Carol ignores nobody.
    let event = get_event(&server, carol, &room, &root).await;
    let thread = &bundle(&event)["m.thread"];
    assert_eq!((thread["count"].as_u64(), &thread["latest_event"]["event_id"]), (Some(2), &json!(from_bob)), "{event}");
    assert_eq!(bundle(&event)["m.reference"]["chunk"].as_array().map(Vec::len), Some(2), "{event}");
    assert!(bundle(&event)["m.reference"].to_string().contains(&bob_ref), "{event}");
    let listed = threads_ok(&server, carol, &room, "").await;
    assert_eq!(ids(&listed), [second_root.clone(), bobs_root.clone(), root.clone()], "{listed}");
    let event = get_event(&server, carol, &room, &second_root).await;
    assert_eq!(bundle(&event)["m.thread"]["count"], 2, "{event}");

    // Un-ignoring brings bob back.
    ignore(&server, alice, &[]).await;
    let event = get_event(&server, alice, &room, &root).await;
    assert_eq!(bundle(&event)["m.thread"]["count"], 2, "{event}");
}

/// A thread's `count` counts only the replies the reader may see, like its `latest_event`:
/// a user who joined a `joined`-history room after some replies counts only the later ones,
/// on every read path, while a member from the start counts them all. `/versions`
/// advertises threads.
async fn thread_count_follows_history_visibility(backend: Backend) {
    let server = start(backend).await;
    let (users, room) = room_with(&server, &["alice", "bob"]).await;
    let (alice, bob) = (&users[0], &users[1]);
    let carol = server.register("carol").await;
    let root = server.send_text(alice, &room, "root").await;
    server.set_state(alice, &room, "m.room.history_visibility", "", &json!({"history_visibility": "joined"})).await;
    server.send_event(bob, &room, "m.room.message", &thread_reply(&root, "one")).await;
    server.send_event(bob, &room, "m.room.message", &thread_reply(&root, "two")).await;
    server.invite(alice, &room, &carol.user_id).await;
    server.join(&carol, &room).await;
    let three = server.send_event(bob, &room, "m.room.message", &thread_reply(&root, "three")).await;

    // Clients learn that threads, threaded receipts and thread counts are there.
    let versions = server.expect_ok(Method::GET, "/_matrix/client/versions", None, None).await;
    for feature in ["org.matrix.msc3440.stable", "org.matrix.msc3771", "org.matrix.msc3773"] {
        assert_eq!(versions["unstable_features"][feature], true, "{feature}: {versions}");
    }

    let thread = |event: &Value| bundle(event)["m.thread"].clone();
    let seen = thread(&get_event(&server, &carol, &room, &root).await);
    assert_eq!((seen["count"].as_u64(), &seen["latest_event"]["event_id"]), (Some(1), &json!(three)), "{seen}");
    let messages = server.messages(&carol, &room, &MessagesQuery::backward(None, 50)).await;
    assert_eq!(thread(find(&messages["chunk"], &root))["count"], 1, "{messages}");
    let listed = threads_ok(&server, &carol, &room, "").await;
    assert_eq!(thread(find(&listed["chunk"], &root))["count"], 1, "{listed}");
    let filter = json!({"room": {"timeline": {"limit": 50}}});
    let sync = server.sync(&carol, None, Some(&filter)).await;
    let synced = find(&sync["rooms"]["join"][&room]["timeline"]["events"], &root);
    assert_eq!(thread(synced)["count"], 1, "{synced}");

    for user in [alice, bob] {
        let seen = thread(&get_event(&server, user, &room, &root).await);
        assert_eq!((seen["count"].as_u64(), &seen["latest_event"]["event_id"]), (Some(3), &json!(three)), "{seen}");
    }
}

backend_tests!(
    edits_bundle_the_latest_valid_edit,
    threads_bundle_count_latest_and_participation,
    relations_paginate_filter_and_recurse,
    threads_list_by_activity,
    sdk_sees_relations,
    ignored_users_vanish_from_relations,
    thread_count_follows_history_visibility,
);
