//! Durability: every event the server acknowledged is still there after `kill -9` and a
//! restart on the same data, on every backend.

use std::{
    collections::HashSet,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use ranvier_test::{Backend, MessagesQuery, Method, TestServer, User, backend_tests, encode, txn_id};
use serde_json::{Value, json};

use crate::start;

/// The event ids of a room's whole timeline, oldest first, checked for duplicates.
async fn timeline_ids(server: &TestServer, user: &User, room: &str) -> Vec<String> {
    let events = server.paginate(user, room, &MessagesQuery::backward(None, 50)).await;
    let mut ids: Vec<String> = events
        .iter()
        .map(|event| event["event_id"].as_str().unwrap_or_else(|| panic!("an event without an id: {event}")).to_owned())
        .collect();
    ids.reverse();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "the timeline holds an event twice: {ids:?}");
    ids
}

/// Assert that `expected` appears in `timeline` in the same relative order.
#[track_caller]
fn assert_in_order(timeline: &[String], expected: &[String]) {
    let mut position = 0;
    for id in expected {
        match timeline[position..].iter().position(|candidate| candidate == id) {
            Some(offset) => position += offset + 1,
            None if timeline.contains(id) => panic!("event {id} is out of order in the timeline"),
            None => {
                panic!("acknowledged event {id} was lost ({} of {} in the timeline)", timeline.len(), expected.len())
            }
        }
    }
}

/// Send one message with a given transaction id; returns the event id.
async fn send_with_txn(server: &TestServer, user: &User, room: &str, txn: &str, body: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(room), encode(txn));
    let reply = server
        .expect_ok(Method::PUT, &path, Some(&json!({"msgtype": "m.text", "body": body})), Some(&user.access_token))
        .await;
    reply["event_id"].as_str().unwrap_or_else(|| panic!("no event_id: {reply}")).to_owned()
}

/// Messages sent one after another, then `kill -9` right after the last acknowledgement.
async fn acknowledged_messages_survive_kill(backend: Backend) {
    let mut server = start(backend).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"name": "before the crash"})).await;
    server.set_state(&alice, &room, "m.room.topic", "", &json!({"topic": "durable"})).await;
    let mut acked = Vec::new();
    let mut last_txn = String::new();
    for i in 0..60 {
        last_txn = txn_id();
        acked.push(send_with_txn(&server, &alice, &room, &last_txn, &format!("message {i}")).await);
    }
    server.kill_9();
    server.restart().await;

    let timeline = timeline_ids(&server, &alice, &room).await;
    assert_in_order(&timeline, &acked);
    assert_eq!(timeline.last(), acked.last(), "nothing follows the last acknowledged message");
    assert_eq!(server.get_state(&alice, &room, "m.room.topic", "").await["topic"], "durable");
    assert_eq!(server.get_state(&alice, &room, "m.room.name", "").await["name"], "before the crash");

    // The transaction id is remembered too: a retransmission gets the same event, not a copy.
    let again = send_with_txn(&server, &alice, &room, &last_txn, "message 59").await;
    assert_eq!(Some(&again), acked.last(), "a retransmitted transaction after restart is the same event");

    // /sync sees the same history, and new events order after everything stored before the
    // crash (the stream positions are reloaded from the database).
    let sync = server.sync(&alice, None, Some(&json!({"room": {"timeline": {"limit": 5}}}))).await;
    let synced: Vec<&str> = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("the room is not in /sync: {sync}"))
        .iter()
        .filter_map(|event| event["event_id"].as_str())
        .collect();
    assert_eq!(synced.last().copied(), acked.last().map(String::as_str), "/sync ends with the last message");
    let after = server.send_text(&alice, &room, "after the crash").await;
    let timeline = timeline_ids(&server, &alice, &room).await;
    assert_eq!(timeline.last(), Some(&after), "a new event sorts after the ones from before the crash");
    let next = server.sync(&alice, sync["next_batch"].as_str(), None).await;
    let new_ids: Vec<&str> = next["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|event| event["event_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(new_ids, vec![after.as_str()], "an incremental sync from before the restart sees only the new event");
}

/// Several writers in two rooms; the server is killed the moment the 80th acknowledgement
/// arrives, with other requests still in flight. Every acknowledged event survives.
async fn concurrent_writes_survive_kill(backend: Backend) {
    const TARGET: usize = 80;
    let mut server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let rooms = [
        server.create_room(&alice, json!({"preset": "public_chat"})).await,
        server.create_room(&alice, json!({"preset": "public_chat"})).await,
    ];
    for room in &rooms {
        server.join(&bob, room).await;
    }
    let switch = server.kill_switch();
    let acked: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let count = AtomicUsize::new(0);
    let killed = AtomicBool::new(false);

    let writer = |user: &User, room_index: usize, name: &'static str| {
        let (server, acked, count, killed, rooms) = (&server, &acked, &count, &killed, &rooms);
        let token = user.access_token.clone();
        async move {
            for i in 0..1000 {
                if killed.load(Ordering::SeqCst) {
                    return;
                }
                let path =
                    format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(&rooms[room_index]), txn_id());
                let body = json!({"msgtype": "m.text", "body": format!("{name} {i}")}).to_string().into_bytes();
                let Ok(reply) =
                    server.try_request(Method::PUT, &path, Some(body), Some("application/json"), Some(&token)).await
                else {
                    // The connection died with the server: this one was never acknowledged.
                    assert!(killed.load(Ordering::SeqCst), "a request failed before the server was killed");
                    return;
                };
                assert_eq!(reply.status, 200, "send: {}", reply.body);
                let id = reply.body["event_id"].as_str().unwrap_or_else(|| panic!("no event_id: {}", reply.body));
                acked.lock().unwrap_or_else(|e| e.into_inner()).push((room_index, id.to_owned()));
                if count.fetch_add(1, Ordering::SeqCst) + 1 == TARGET {
                    killed.store(true, Ordering::SeqCst);
                    switch.fire();
                }
            }
        }
    };
    tokio::join!(
        writer(&alice, 0, "alice-a"),
        writer(&alice, 1, "alice-b"),
        writer(&bob, 0, "bob-a"),
        writer(&bob, 1, "bob-b"),
    );
    assert!(killed.load(Ordering::SeqCst), "the writers stopped before the target was reached");
    server.kill_9();
    server.restart().await;

    let acked = acked.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(acked.len() >= TARGET);
    for (index, room) in rooms.iter().enumerate() {
        let timeline = timeline_ids(&server, &alice, room).await;
        let expected: Vec<String> = acked.iter().filter(|(i, _)| *i == index).map(|(_, id)| id.clone()).collect();
        let present: HashSet<&String> = timeline.iter().collect();
        let lost: Vec<&String> = expected.iter().filter(|id| !present.contains(id)).collect();
        assert!(
            lost.is_empty(),
            "room {index}: {} of {} acknowledged events lost: {lost:?}",
            lost.len(),
            expected.len()
        );
    }
    // The server works normally after the crash.
    let last = server.send_text(&bob, &rooms[0], "still here").await;
    let timeline = timeline_ids(&server, &alice, &rooms[0]).await;
    assert_eq!(timeline.last(), Some(&last));
    let _: Value = server.sync(&bob, None, None).await;
}

backend_tests!(acknowledged_messages_survive_kill, concurrent_writes_survive_kill);
