//! The social layer as `/sync` delivers it, over raw HTTP: typing wakes a waiting sync,
//! receipts reach the other members, unread counts drop once read, and presence reaches the
//! users who share a room.

use std::time::{Duration, Instant};

use ranvier_test::{Backend, Method, TestServer, User, backend_tests, encode};
use serde_json::{Value, json};

use crate::start;

/// The joined-room section of `room_id` in a sync response.
fn joined<'a>(sync: &'a Value, room_id: &str) -> &'a Value {
    &sync["rooms"]["join"][room_id]
}

/// The ephemeral event of `event_type` in a room's sync section, if any.
fn ephemeral<'a>(room: &'a Value, event_type: &str) -> Option<&'a Value> {
    room["ephemeral"]["events"].as_array()?.iter().find(|event| event["type"] == event_type)
}

async fn typing(server: &TestServer, user: &User, room_id: &str, on: bool) {
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", encode(room_id), encode(&user.user_id));
    server
        .expect_ok(Method::PUT, &path, Some(&json!({"typing": on, "timeout": 30000})), Some(&user.access_token))
        .await;
}

async fn two_members(server: &TestServer) -> (User, User, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "private_chat"})).await;
    server.invite(&alice, &room, &bob.user_id).await;
    server.join(&bob, &room).await;
    (alice, bob, room)
}

/// Typing reaches a sync that is already waiting, well before its timeout.
async fn typing_wakes_a_waiting_sync(backend: Backend) {
    let server = start(backend).await;
    let (alice, bob, room) = two_members(&server).await;
    let since = server.sync(&bob, None, None).await["next_batch"].as_str().expect("next_batch").to_owned();

    let waiting = async {
        let started = Instant::now();
        let sync = server.sync_with_timeout(&bob, Some(&since), None, 20_000).await;
        (sync, started.elapsed())
    };
    let act = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        typing(&server, &alice, &room, true).await;
    };
    let ((sync, waited), ()) = tokio::join!(waiting, act);
    assert!(waited < Duration::from_secs(10), "the typing notification woke the sync ({waited:?})");
    let typing_event = ephemeral(joined(&sync, &room), "m.typing").unwrap_or_else(|| panic!("m.typing in {sync}"));
    assert_eq!(typing_event["content"]["user_ids"], json!([alice.user_id]), "{sync}");

    // Stopping is news too.
    let since = sync["next_batch"].as_str().expect("next_batch").to_owned();
    typing(&server, &alice, &room, false).await;
    let sync = server.sync(&bob, Some(&since), None).await;
    let typing_event = ephemeral(joined(&sync, &room), "m.typing").unwrap_or_else(|| panic!("m.typing in {sync}"));
    assert_eq!(typing_event["content"]["user_ids"], json!([]), "{sync}");
}

/// Unread counts count others' messages after the user's read receipt; the receipt reaches
/// the sender's sync.
async fn receipts_and_unread_counts(backend: Backend) {
    let server = start(backend).await;
    let (alice, bob, room) = two_members(&server).await;
    let alice_since = server.sync(&alice, None, None).await["next_batch"].as_str().expect("next_batch").to_owned();
    let bob_since = server.sync(&bob, None, None).await["next_batch"].as_str().expect("next_batch").to_owned();

    server.send_text(&alice, &room, "one").await;
    let last = server.send_text(&alice, &room, "two").await;
    let sync = server.sync(&bob, Some(&bob_since), None).await;
    assert_eq!(joined(&sync, &room)["unread_notifications"]["notification_count"], 2, "{sync}");
    let bob_since = sync["next_batch"].as_str().expect("next_batch").to_owned();

    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", encode(&room), encode(&last));
    server.expect_ok(Method::POST, &path, Some(&json!({})), Some(&bob.access_token)).await;

    let sync = server.sync(&bob, Some(&bob_since), None).await;
    assert_eq!(joined(&sync, &room)["unread_notifications"]["notification_count"], 0, "{sync}");
    let sync = server.sync(&alice, Some(&alice_since), None).await;
    let receipt = ephemeral(joined(&sync, &room), "m.receipt").unwrap_or_else(|| panic!("m.receipt in {sync}"));
    assert!(
        receipt["content"][&last]["m.read"][&bob.user_id]["ts"].is_u64(),
        "bob's read receipt on {last}: {receipt}"
    );
}

/// A user who syncs is online to those who share a room with them, and to nobody else.
async fn presence_reaches_room_companions(backend: Backend) {
    let server = start(backend).await;
    let (alice, bob, _room) = two_members(&server).await;
    let stranger = server.register("carol").await;
    server.sync(&alice, None, None).await;

    let presence_of = |sync: &Value, user: &str| {
        sync["presence"]["events"]
            .as_array()
            .and_then(|events| events.iter().find(|event| event["sender"] == user).cloned())
    };
    let sync = server.sync(&bob, None, None).await;
    let event = presence_of(&sync, &alice.user_id).unwrap_or_else(|| panic!("alice's presence in {sync}"));
    assert_eq!(event["type"], "m.presence");
    assert_eq!(event["content"]["presence"], "online", "{event}");
    let sync = server.sync(&stranger, None, None).await;
    assert!(presence_of(&sync, &alice.user_id).is_none(), "no shared room, no presence: {sync}");
}

backend_tests!(typing_wakes_a_waiting_sync, receipts_and_unread_counts, presence_reaches_room_companions);
