//! Typing, receipts, read markers, unread counts and presence, read back through
//! `Social::sync_ephemeral`, the one call `/sync` makes for them.

use std::time::Duration;

use http::StatusCode;
use ranvier_store::{StreamKind, StreamToken};
use serde_json::{Value, json};

use crate::{
    both_backends,
    common::*,
    support::{Backend, Session, TestApi},
};

both_backends!(typing, receipts_and_read_markers, unread_counts, presence, presence_timeouts, presence_disabled);

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
        let push = api.state.push.clone();
        let user = user_id(who).to_owned();
        let room_id = room_id.to_owned();
        async move {
            let counts = push.room_counts(&user, &room_id, i64::MAX, false).await.expect("unread count");
            counts.room.notifications
        }
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
    assert_eq!(unread(&alice).await, 0, "one's own messages never notify");
    // State events and edits do not notify (the default push rules).
    let topic = format!("{V3}/rooms/{}/state/m.room.topic", enc(&room));
    api.put(&topic, alice.token(), json!({ "topic": "t" })).await.assert_status(StatusCode::OK);
    let edit_path = format!("{V3}/rooms/{}/send/m.room.message/edit1", enc(&room));
    let edit = json!({ "msgtype": "m.text", "body": "* three", "m.relates_to": { "rel_type": "m.replace", "event_id": "$x" } });
    api.put(&edit_path, alice.token(), edit).await.assert_status(StatusCode::OK);
    assert_eq!(unread(&bob).await, 3);
    let fourth = send_text(&api, &alice, &room, "four").await;
    send_text(&api, &alice, &room, "five").await;
    assert_eq!(unread(&bob).await, 5);
    // A receipt (public or private) reads up to its event.
    let receipt = format!("{V3}/rooms/{}/receipt/m.read.private/{}", enc(&room), enc(&fourth));
    api.post(&receipt, bob.token(), json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(unread(&bob).await, 1);
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
