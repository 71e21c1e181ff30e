//! Service-level tests of the room graph against a real store: every test runs on SQLite (in a
//! temporary directory) and, when it is reachable, on PostgreSQL (a uniquely named database
//! that is dropped afterwards).

use std::{future::Future, pin::Pin};

use ranvier_core::{Error, error::ErrorKind, util::random_string};
use ranvier_rooms::{
    CreateRoom, EventTemplate, MembershipAction, Preset, Rooms,
    format::{FormatOptions, client_event},
    read::MembersQuery,
};
use ranvier_store::{Backend, Store, events::StoredEvent, persist::TxnKey};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId, signatures::Ed25519KeyPair};
use serde_json::{Value, json};
use sqlx::Connection;

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1/postgres";

type TestFn = fn(Rooms) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn new_rooms(store: Store) -> Rooms {
    let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "t1".to_owned()).unwrap();
    Rooms::new(store, "test.local".try_into().unwrap(), key)
}

/// Run `test` on a fresh SQLite store.
async fn on_sqlite(test: TestFn) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::open(&url, 4).await.unwrap();
    test(new_rooms(store)).await;
}

/// Run `test` on a fresh PostgreSQL database, if the server is reachable.
async fn on_postgres(test: TestFn) {
    let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN_URL).await else {
        eprintln!("PostgreSQL is not reachable at {PG_ADMIN_URL}; skipping");
        return;
    };
    let name = format!("ranvier_rooms_test_{}", random_string(10).to_lowercase());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    let store = Store::open(&format!("postgres://postgres@127.0.0.1/{name}"), 4).await.unwrap();
    let pool = store.pool().clone();
    // Run in a task so that a failing test still drops its database.
    let outcome = tokio::spawn(test(new_rooms(store))).await;
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&mut admin).await.unwrap();
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// One test function, run on both backends.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::on_sqlite(|rooms| Box::pin(super::$name(rooms))).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::on_postgres(|rooms| Box::pin(super::$name(rooms))).await;
                }
            }
        )*
    };
}

both_backends!(
    create_v12_room,
    create_older_room_versions,
    every_supported_version_works,
    membership_and_auth_failures,
    power_levels_are_enforced,
    send_is_idempotent,
    concurrent_sends_commit_in_groups,
    failed_group_commit_is_recovered,
    state_reads_and_access,
    redaction_rewrites_the_event,
    persisted_dag_and_state_groups,
    state_group_snapshots_and_reload,
    oversized_events_are_refused,
);

fn user(name: &str) -> OwnedUserId {
    UserId::parse(format!("@{name}:test.local")).unwrap()
}

fn kind(error: &Error) -> Option<&ErrorKind> {
    error.kind()
}

fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, Error>) {
    match result {
        Err(error) => assert_eq!(kind(&error), Some(&ErrorKind::Forbidden), "{error}"),
        Ok(value) => panic!("expected M_FORBIDDEN, got {value:?}"),
    }
}

fn pdu_json(event: &StoredEvent) -> Value {
    serde_json::from_str(&event.pdu).unwrap()
}

fn content(event: &StoredEvent) -> Value {
    pdu_json(event)["content"].clone()
}

async fn create(rooms: &Rooms, creator: &UserId, version: RoomVersionId, preset: Preset) -> OwnedRoomId {
    let request = CreateRoom { room_version: Some(version), preset: Some(preset), ..Default::default() };
    rooms.create_room(creator, request).await.unwrap()
}

async fn say(rooms: &Rooms, room: &RoomId, sender: &UserId, body: &str) -> Result<String, Error> {
    let template = EventTemplate::message("m.room.message", json!({ "msgtype": "m.text", "body": body }));
    rooms.send_event(room, sender, template, None).await.map(|id| id.to_string())
}

async fn current(rooms: &Rooms, room: &RoomId, event_type: &str, state_key: &str) -> Option<StoredEvent> {
    rooms.store().current_state_event(room.as_str(), event_type, state_key).await.unwrap()
}

async fn create_v12_room(rooms: Rooms) {
    let alice = user("alice");
    let request = CreateRoom {
        room_version: Some(RoomVersionId::V12),
        name: Some("Pub".into()),
        topic: Some("Drinks".into()),
        ..Default::default()
    };
    let room_id = rooms.create_room(&alice, request).await.unwrap();
    let create = current(&rooms, &room_id, "m.room.create", "").await.unwrap();
    // The room id is the create event's reference hash.
    assert_eq!(room_id.as_str()[1..], create.event_id[1..]);
    assert!(room_id.server_name().is_none());
    let pdu = pdu_json(&create);
    assert!(pdu.get("room_id").is_none(), "a v12 create event has no room_id");
    assert!(pdu.get("event_id").is_none());
    assert_eq!(pdu["content"]["room_version"], "12");
    assert!(pdu["content"].get("creator").is_none());
    assert!(pdu["signatures"]["test.local"].is_object());
    assert!(pdu["hashes"]["sha256"].is_string());

    let power = content(&current(&rooms, &room_id, "m.room.power_levels", "").await.unwrap());
    assert!(power["users"].get(alice.as_str()).is_none(), "creators are not listed in v12");
    assert_eq!(power["events"]["m.room.tombstone"], 150);
    let join_rules = content(&current(&rooms, &room_id, "m.room.join_rules", "").await.unwrap());
    assert_eq!(join_rules["join_rule"], "invite");
    let history = content(&current(&rooms, &room_id, "m.room.history_visibility", "").await.unwrap());
    assert_eq!(history["history_visibility"], "shared");
    let guest = content(&current(&rooms, &room_id, "m.room.guest_access", "").await.unwrap());
    assert_eq!(guest["guest_access"], "can_join");
    assert_eq!(content(&current(&rooms, &room_id, "m.room.name", "").await.unwrap())["name"], "Pub");
    assert_eq!(content(&current(&rooms, &room_id, "m.room.topic", "").await.unwrap())["topic"], "Drinks");
    let member = current(&rooms, &room_id, "m.room.member", alice.as_str()).await.unwrap();
    assert_eq!(content(&member)["membership"], "join");

    // The spec's order: create, creator join, power levels, preset events, name, topic.
    let mut state = rooms.store().current_state_events(room_id.as_str(), None).await.unwrap();
    state.sort_by_key(|event| event.stream_ordering);
    let order: Vec<&str> = state.iter().map(|event| event.event_type.as_str()).collect();
    assert_eq!(
        order,
        [
            "m.room.create",
            "m.room.member",
            "m.room.power_levels",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.guest_access",
            "m.room.name",
            "m.room.topic",
        ]
    );
    let row = rooms.store().room(room_id.as_str()).await.unwrap().unwrap();
    assert_eq!(row.room_version, "12");
    assert!(!row.is_public);

    // Even with power levels that give nobody any power, the v12 creator may do anything.
    let overrides = json!({ "users_default": 0, "state_default": 100, "events_default": 100 });
    let request = CreateRoom {
        room_version: Some(RoomVersionId::V12),
        power_level_content_override: Some(overrides.as_object().unwrap().clone()),
        ..Default::default()
    };
    let room_id = rooms.create_room(&alice, request).await.unwrap();
    say(&rooms, &room_id, &alice, "infinite power").await.unwrap();

    // Identical create events in the same millisecond would share a room id: each room still
    // gets its own.
    let creates = (0..4).map(|_| {
        let rooms = rooms.clone();
        let alice = alice.clone();
        tokio::spawn(async move { rooms.create_room(&alice, CreateRoom::default()).await.unwrap() })
    });
    let mut ids = std::collections::HashSet::new();
    for create in creates {
        ids.insert(create.await.unwrap());
    }
    assert_eq!(ids.len(), 4);
}

async fn create_older_room_versions(rooms: Rooms) {
    let alice = user("alice");
    let v10 = create(&rooms, &alice, RoomVersionId::V10, Preset::PublicChat).await;
    assert_eq!(v10.server_name().map(|s| s.as_str()), Some("test.local"));
    let create10 = current(&rooms, &v10, "m.room.create", "").await.unwrap();
    let pdu = pdu_json(&create10);
    assert_eq!(pdu["room_id"], v10.as_str());
    assert_eq!(pdu["content"]["creator"], alice.as_str());
    assert_eq!(pdu["content"]["room_version"], "10");
    let power = content(&current(&rooms, &v10, "m.room.power_levels", "").await.unwrap());
    assert_eq!(power["users"][alice.as_str()], 100);
    assert_eq!(content(&current(&rooms, &v10, "m.room.join_rules", "").await.unwrap())["join_rule"], "public");
    assert!(current(&rooms, &v10, "m.room.guest_access", "").await.is_none());
    // Version 4+ event ids are URL-safe reference hashes.
    assert!(!create10.event_id.contains(':') && !create10.event_id.contains('+'));

    let v1 = create(&rooms, &alice, RoomVersionId::V1, Preset::PrivateChat).await;
    let member = current(&rooms, &v1, "m.room.member", alice.as_str()).await.unwrap();
    let pdu = pdu_json(&member);
    // Version 1 PDUs carry `$random:server` ids and `[id, hashes]` references.
    assert_eq!(pdu["event_id"], member.event_id.as_str());
    assert!(member.event_id.ends_with(":test.local"));
    let prev = &pdu["prev_events"][0];
    assert!(prev.is_array(), "{prev}");
    let create1 = current(&rooms, &v1, "m.room.create", "").await.unwrap();
    assert_eq!(prev[0], create1.event_id.as_str());
    let message = say(&rooms, &v1, &alice, "old room").await.unwrap();
    assert!(message.ends_with(":test.local"));
}

async fn every_supported_version_works(rooms: Rooms) {
    let alice = user("alice");
    let bob = user("bob");
    for version in ranvier_rooms::supported_room_versions() {
        let room = create(&rooms, &alice, version.clone(), Preset::PublicChat).await;
        rooms.update_membership(&room, &bob, &bob, MembershipAction::Join, None).await.unwrap();
        say(&rooms, &room, &bob, "hello").await.unwrap();
        let template = EventTemplate::state("m.room.topic", "", json!({ "topic": "t" }));
        rooms.send_event(&room, &alice, template, None).await.unwrap();
        let row = rooms.store().room(room.as_str()).await.unwrap().unwrap();
        assert_eq!(row.room_version, version.as_str());
    }
    let unknown = CreateRoom { room_version: Some(RoomVersionId::try_from("99").unwrap()), ..Default::default() };
    let error = rooms.create_room(&alice, unknown).await.unwrap_err();
    assert_eq!(kind(&error), Some(&ErrorKind::UnsupportedRoomVersion));
}

async fn membership_and_auth_failures(rooms: Rooms) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let room = create(&rooms, &alice, RoomVersionId::V12, Preset::PrivateChat).await;

    // Invite-only: bob cannot join uninvited, and a non-member cannot send.
    assert_forbidden(rooms.update_membership(&room, &bob, &bob, MembershipAction::Join, None).await);
    assert_forbidden(say(&rooms, &room, &carol, "hi").await);
    // Nor can a non-member invite.
    assert_forbidden(rooms.update_membership(&room, &carol, &bob, MembershipAction::Invite, None).await);

    rooms.update_membership(&room, &alice, &bob, MembershipAction::Invite, None).await.unwrap();
    assert_eq!(rooms.store().membership(room.as_str(), bob.as_str()).await.unwrap().unwrap().membership, "invite");
    rooms.update_membership(&room, &bob, &bob, MembershipAction::Join, Some("hello".into())).await.unwrap();
    say(&rooms, &room, &bob, "I'm in").await.unwrap();
    assert!(rooms.joined_rooms(&bob).await.unwrap().contains(&room));
    let joined: Vec<String> =
        rooms.joined_members(&room, &bob).await.unwrap().into_iter().map(|member| member.user_id).collect();
    assert_eq!(joined.len(), 2);

    // Joining again is a no-op that answers with the existing join.
    let first = rooms.store().membership(room.as_str(), bob.as_str()).await.unwrap().unwrap();
    let again = rooms.update_membership(&room, &bob, &bob, MembershipAction::Join, None).await.unwrap();
    assert_eq!(again.as_str(), first.event_id);

    // bob (power 0) cannot kick alice; alice kicks bob, who cannot come back uninvited.
    assert_forbidden(rooms.update_membership(&room, &bob, &alice, MembershipAction::Kick, None).await);
    rooms.update_membership(&room, &alice, &bob, MembershipAction::Kick, Some("bye".into())).await.unwrap();
    let kicked = rooms.store().membership(room.as_str(), bob.as_str()).await.unwrap().unwrap();
    assert_eq!(kicked.membership, "leave");
    let kick_event = rooms.store().get_event(&kicked.event_id).await.unwrap().unwrap();
    assert_eq!(kick_event.sender, alice.as_str());
    assert_eq!(content(&kick_event)["reason"], "bye");
    assert_forbidden(rooms.update_membership(&room, &bob, &bob, MembershipAction::Join, None).await);
    assert_forbidden(say(&rooms, &room, &bob, "still here?").await);
    // Kicking someone who is not in the room is refused.
    assert_forbidden(rooms.update_membership(&room, &alice, &carol, MembershipAction::Kick, None).await);

    // A banned user cannot be invited or join, even in a public room.
    let public = create(&rooms, &alice, RoomVersionId::V10, Preset::PublicChat).await;
    rooms.update_membership(&public, &bob, &bob, MembershipAction::Join, None).await.unwrap();
    rooms.update_membership(&public, &alice, &bob, MembershipAction::Ban, None).await.unwrap();
    assert_eq!(rooms.store().membership(public.as_str(), bob.as_str()).await.unwrap().unwrap().membership, "ban");
    assert_forbidden(rooms.update_membership(&public, &bob, &bob, MembershipAction::Join, None).await);
    assert_forbidden(rooms.update_membership(&public, &alice, &bob, MembershipAction::Invite, None).await);
    // Unbanning someone who is not banned is refused; unbanning bob lets him join again.
    assert_forbidden(rooms.update_membership(&public, &alice, &carol, MembershipAction::Unban, None).await);
    rooms.update_membership(&public, &alice, &bob, MembershipAction::Unban, None).await.unwrap();
    rooms.update_membership(&public, &bob, &bob, MembershipAction::Join, None).await.unwrap();

    // Leaving, then forgetting; forgetting while joined is refused.
    let error = rooms.forget_room(&public, &bob).await.unwrap_err();
    assert_eq!(kind(&error), Some(&ErrorKind::Unknown));
    rooms.update_membership(&public, &bob, &bob, MembershipAction::Leave, None).await.unwrap();
    assert_forbidden(rooms.update_membership(&public, &bob, &bob, MembershipAction::Leave, None).await);
    rooms.forget_room(&public, &bob).await.unwrap();
    let listed = rooms.store().rooms_for_user(bob.as_str()).await.unwrap();
    assert!(listed.iter().all(|(room_id, ..)| room_id != public.as_str()));

    // Unknown rooms.
    let nowhere = RoomId::parse("!nowhere:test.local").unwrap();
    let error = rooms.update_membership(&nowhere, &bob, &bob, MembershipAction::Join, None).await.unwrap_err();
    assert_eq!(kind(&error), Some(&ErrorKind::NotFound));
    assert_forbidden(say(&rooms, &nowhere, &bob, "hello?").await);
}

async fn power_levels_are_enforced(rooms: Rooms) {
    let (alice, bob) = (user("alice"), user("bob"));
    for version in [RoomVersionId::V10, RoomVersionId::V12] {
        let room = create(&rooms, &alice, version, Preset::PublicChat).await;
        rooms.update_membership(&room, &bob, &bob, MembershipAction::Join, None).await.unwrap();
        let name = EventTemplate::state("m.room.name", "", json!({ "name": "bob's" }));
        assert_forbidden(rooms.send_event(&room, &bob, name.clone(), None).await);
        // bob cannot raise himself.
        let mut power = content(&current(&rooms, &room, "m.room.power_levels", "").await.unwrap());
        power["users"][bob.as_str()] = json!(50);
        let raise = EventTemplate::state("m.room.power_levels", "", power.clone());
        assert_forbidden(rooms.send_event(&room, &bob, raise.clone(), None).await);
        // alice raises bob to 50, which is enough for the name.
        rooms.send_event(&room, &alice, raise, None).await.unwrap();
        rooms.send_event(&room, &bob, name, None).await.unwrap();
        assert_eq!(content(&current(&rooms, &room, "m.room.name", "").await.unwrap())["name"], "bob's");
        // A state key naming another user is refused.
        let other = EventTemplate::state("org.example.profile", alice.as_str(), json!({}));
        assert_forbidden(rooms.send_event(&room, &bob, other, None).await);
    }
}

async fn send_is_idempotent(rooms: Rooms) {
    let alice = user("alice");
    let room = create(&rooms, &alice, RoomVersionId::V12, Preset::PrivateChat).await;
    let txn = |device: &str, id: &str| {
        Some(TxnKey { user_id: alice.to_string(), device_id: device.into(), txn_id: id.into() })
    };
    let message = EventTemplate::message("m.room.message", json!({ "msgtype": "m.text", "body": "once" }));
    let first = rooms.send_event(&room, &alice, message.clone(), txn("PHONE", "t1")).await.unwrap();
    let retry = rooms.send_event(&room, &alice, message.clone(), txn("PHONE", "t1")).await.unwrap();
    assert_eq!(first, retry);
    let other_device = rooms.send_event(&room, &alice, message.clone(), txn("LAPTOP", "t1")).await.unwrap();
    assert_ne!(first, other_device);
    let other_txn = rooms.send_event(&room, &alice, message, txn("PHONE", "t2")).await.unwrap();
    assert_ne!(first, other_txn);
    let messages = rooms
        .store()
        .room_timeline(room.as_str(), 0, i64::MAX, ranvier_store::events::Direction::Forward, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.event_type == "m.room.message")
        .count();
    assert_eq!(messages, 3);

    // Concurrent retries of one transaction still send once.
    let sends = (0..4).map(|_| {
        let rooms = rooms.clone();
        let room = room.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            let message = EventTemplate::message("m.room.message", json!({ "body": "race" }));
            let key = TxnKey { user_id: alice.to_string(), device_id: "PHONE".into(), txn_id: "race".into() };
            rooms.send_event(&room, &alice, message, Some(key)).await.unwrap()
        })
    });
    let mut ids = Vec::new();
    for send in sends {
        ids.push(send.await.unwrap());
    }
    assert!(ids.windows(2).all(|pair| pair[0] == pair[1]), "{ids:?}");
}

/// Sends into one room from many tasks at once: every send is answered with its own event,
/// the events form one chain (each cites the one before as its only prev event) in stream
/// order, and a membership change right after sees all of them committed.
async fn concurrent_sends_commit_in_groups(rooms: Rooms) {
    let alice = user("alice");
    let room = create(&rooms, &alice, RoomVersionId::V12, Preset::PublicChat).await;
    let senders: Vec<OwnedUserId> = (0..8).map(|i| user(&format!("sender{i}"))).collect();
    for sender in &senders {
        rooms.update_membership(&room, sender, sender, MembershipAction::Join, None).await.unwrap();
    }
    let before = rooms.store().forward_extremities(room.as_str()).await.unwrap();
    let tasks: Vec<_> = senders
        .iter()
        .flat_map(|sender| (0..10).map(move |i| (sender.clone(), i)))
        .map(|(sender, i)| {
            let rooms = rooms.clone();
            let room = room.clone();
            tokio::spawn(async move {
                let body = format!("{sender} {i}");
                let message = EventTemplate::message("m.room.message", json!({ "msgtype": "m.text", "body": body }));
                let txn = TxnKey { user_id: sender.to_string(), device_id: "D".into(), txn_id: format!("t{i}") };
                (body, rooms.send_event(&room, &sender, message, Some(txn)).await.unwrap())
            })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(task.await.unwrap());
    }
    let ids: std::collections::HashSet<_> = sent.iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(ids.len(), 80, "every send has an event of its own");

    // A join right after the sends returned: it builds on the last of them.
    let late = user("late");
    rooms.update_membership(&room, &late, &late, MembershipAction::Join, None).await.unwrap();

    let timeline = rooms
        .store()
        .room_timeline(room.as_str(), 0, i64::MAX, ranvier_store::events::Direction::Forward, 1000)
        .await
        .unwrap();
    let messages: Vec<&StoredEvent> = timeline.iter().filter(|event| event.event_type == "m.room.message").collect();
    assert_eq!(messages.len(), 80);
    for (event_id_body, id) in &sent {
        let event = messages.iter().find(|event| event.event_id == id.as_str()).expect("the answered event is stored");
        assert_eq!(content(event)["body"], event_id_body.as_str());
    }
    // One chain in stream order, from the extremity before the sends to the late join.
    let mut previous = before[0].0.clone();
    for event in &messages {
        assert_eq!(rooms.store().prev_event_ids(&event.event_id).await.unwrap(), vec![previous.clone()]);
        previous = event.event_id.clone();
    }
    let join = timeline.last().unwrap();
    assert_eq!(join.event_type, "m.room.member");
    assert_eq!(rooms.store().prev_event_ids(&join.event_id).await.unwrap(), vec![previous]);
    let extremities = rooms.store().forward_extremities(room.as_str()).await.unwrap();
    assert_eq!(extremities.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), vec![join.event_id.as_str()]);
}

/// A group commit that fails answers its sends with an error and stores none of them; the
/// room's cache is reloaded, so the next send builds on the last committed event.
async fn failed_group_commit_is_recovered(rooms: Rooms) {
    let alice = user("alice");
    let room = create(&rooms, &alice, RoomVersionId::V12, Preset::PrivateChat).await;
    let message = |body: &str| EventTemplate::message("m.room.message", json!({ "msgtype": "m.text", "body": body }));
    let committed = rooms.send_event(&room, &alice, message("kept"), None).await.unwrap();

    // Break the write path: every write to the auth edges' table fails (nothing reads it
    // before the commit), so the commit fails.
    let pool = rooms.store().pool().clone();
    let (break_writes, mend_writes) = match rooms.store().backend() {
        // On SQLite the table stays: a write whose cached statement must be prepared again
        // after a schema change, and cannot be, leaves the statement in a state that sqlx-sqlite
        // 0.9.0 cannot reset (its connection thread panics and the write never answers). A
        // trigger fails the insert while it runs instead, as a full disk or a broken
        // constraint would.
        Backend::Sqlite => (
            "CREATE TRIGGER event_auth_broken BEFORE INSERT ON event_auth BEGIN SELECT RAISE(ABORT, 'broken'); END",
            "DROP TRIGGER event_auth_broken",
        ),
        Backend::Postgres => {
            ("ALTER TABLE event_auth RENAME TO event_auth_away", "ALTER TABLE event_auth_away RENAME TO event_auth")
        }
    };
    sqlx::query(break_writes).execute(&pool).await.unwrap();
    let failures: Vec<_> = (0..4)
        .map(|i| {
            let rooms = rooms.clone();
            let room = room.clone();
            let alice = alice.clone();
            tokio::spawn(async move { rooms.send_event(&room, &alice, message(&format!("lost {i}")), None).await })
        })
        .collect();
    for failure in failures {
        let error = failure.await.unwrap().expect_err("the commit failed");
        assert_eq!(kind(&error), None, "an internal error, not a client one: {error}");
    }
    sqlx::query(mend_writes).execute(&pool).await.unwrap();

    let next = rooms.send_event(&room, &alice, message("after"), None).await.unwrap();
    assert_eq!(rooms.store().prev_event_ids(next.as_str()).await.unwrap(), vec![committed.to_string()]);
    let bodies: Vec<String> = rooms
        .store()
        .room_timeline(room.as_str(), 0, i64::MAX, ranvier_store::events::Direction::Forward, 100)
        .await
        .unwrap()
        .iter()
        .filter(|event| event.event_type == "m.room.message")
        .map(|event| content(event)["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies, ["kept", "after"]);
}

async fn state_reads_and_access(rooms: Rooms) {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let room = create(&rooms, &alice, RoomVersionId::V12, Preset::PublicChat).await;
    let topic = EventTemplate::state("m.room.topic", "", json!({ "topic": "first" }));
    rooms.send_event(&room, &alice, topic, None).await.unwrap();
    let joined_event = rooms.update_membership(&room, &bob, &bob, MembershipAction::Join, None).await.unwrap();
    let joined_event = joined_event.to_string();

    let event = rooms.state_event(&room, &bob, "m.room.topic", "").await.unwrap();
    assert_eq!(content(&event)["topic"], "first");
    let missing = rooms.state_event(&room, &bob, "m.room.avatar", "").await.unwrap_err();
    assert_eq!(kind(&missing), Some(&ErrorKind::NotFound));
    assert_forbidden(rooms.state_event(&room, &carol, "m.room.topic", "").await);
    assert_forbidden(rooms.room_state(&room, &carol).await);
    let state = rooms.room_state(&room, &bob).await.unwrap();
    assert!(state.iter().any(|event| event.event_type == "m.room.create"));
    assert!(state.iter().any(|event| event.state_key.as_deref() == Some(bob.as_str())));

    // Setting the same state again sends nothing new.
    let same = EventTemplate::state("m.room.topic", "", json!({ "topic": "first" }));
    let current_topic = current(&rooms, &room, "m.room.topic", "").await.unwrap();
    let again = rooms.send_event(&room, &alice, same, None).await.unwrap();
    assert_eq!(again.as_str(), current_topic.event_id);

    // A state change records what it replaced for clients.
    let topic = EventTemplate::state("m.room.topic", "", json!({ "topic": "second" }));
    let second = rooms.send_event(&room, &alice, topic, None).await.unwrap();
    let stored = rooms.store().get_event(second.as_str()).await.unwrap().unwrap();
    let formatted = client_event(&stored, FormatOptions::default());
    assert_eq!(formatted["unsigned"]["prev_content"]["topic"], "first");
    assert_eq!(formatted["content"]["topic"], "second");
    assert_eq!(formatted["unsigned"]["prev_sender"], alice.as_str());

    // After leaving, bob sees the state as it was when he left.
    rooms.update_membership(&room, &bob, &bob, MembershipAction::Leave, None).await.unwrap();
    let topic = EventTemplate::state("m.room.topic", "", json!({ "topic": "third" }));
    rooms.send_event(&room, &alice, topic, None).await.unwrap();
    let seen = rooms.state_event(&room, &bob, "m.room.topic", "").await.unwrap();
    assert_eq!(content(&seen)["topic"], "second");
    let now = rooms.state_event(&room, &alice, "m.room.topic", "").await.unwrap();
    assert_eq!(content(&now)["topic"], "third");

    // Members with filters.
    let all = rooms.members(&room, &alice, &MembersQuery::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    let joined = MembersQuery { membership: Some("join".into()), ..Default::default() };
    let joined = rooms.members(&room, &alice, &joined).await.unwrap();
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].state_key.as_deref(), Some(alice.as_str()));
    let not_joined = MembersQuery { not_membership: Some("join".into()), ..Default::default() };
    let left = rooms.members(&room, &alice, &not_joined).await.unwrap();
    assert_eq!(left[0].state_key.as_deref(), Some(bob.as_str()));
    assert_forbidden(rooms.joined_members(&room, &bob).await);

    // Members at a sync token from before bob left.
    let join_position = rooms.store().get_event(&joined_event).await.unwrap().unwrap().stream_ordering;
    let at = MembersQuery { at: Some(format!("s{join_position}")), ..Default::default() };
    let then = rooms.members(&room, &alice, &at).await.unwrap();
    let bob_then = then.iter().find(|event| event.state_key.as_deref() == Some(bob.as_str())).unwrap();
    assert_eq!(content(bob_then)["membership"], "join");
    let bad = MembersQuery { at: Some("nonsense".into()), ..Default::default() };
    let error = rooms.members(&room, &alice, &bad).await.unwrap_err();
    assert_eq!(kind(&error), Some(&ErrorKind::InvalidParam));
}

async fn redaction_rewrites_the_event(rooms: Rooms) {
    let (alice, bob) = (user("alice"), user("bob"));
    let room = create(&rooms, &alice, RoomVersionId::V12, Preset::PublicChat).await;
    rooms.update_membership(&room, &bob, &bob, MembershipAction::Join, None).await.unwrap();
    let secret = say(&rooms, &room, &alice, "secret").await.unwrap();
    let secret_id = ruma::EventId::parse(&secret).unwrap();

    // bob has no power to redact alice's message.
    assert_forbidden(rooms.redact_event(&room, &bob, &secret_id, None, None).await);
    let redaction = rooms.redact_event(&room, &alice, &secret_id, Some("oops".into()), None).await.unwrap();
    let stored = rooms.store().get_event(&secret).await.unwrap().unwrap();
    assert_eq!(stored.redacted_by.as_deref(), Some(redaction.as_str()));
    assert_eq!(content(&stored), json!({}));
    assert!(pdu_json(&stored)["signatures"].is_object(), "redaction keeps the signatures");
    let formatted = client_event(&stored, FormatOptions::default());
    assert_eq!(formatted["content"], json!({}));
    let because = &formatted["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction.as_str());
    assert_eq!(because["type"], "m.room.redaction");
    assert_eq!(because["content"]["reason"], "oops");
    assert_eq!(because["redacts"], secret.as_str());
    // The redaction event itself names its target in both places (v11+ keeps it in content).
    let redaction_event = rooms.store().get_event(redaction.as_str()).await.unwrap().unwrap();
    let formatted = client_event(&redaction_event, FormatOptions::default());
    assert_eq!(formatted["redacts"], secret.as_str());
    assert_eq!(formatted["content"]["redacts"], secret.as_str());
    // The event route sees the redacted form.
    let fetched = rooms.room_event(&room, &bob, &secret_id).await.unwrap();
    assert_eq!(content(&fetched), json!({}));

    // bob may redact his own message; in a v10 room `redacts` is a top-level key.
    let v10 = create(&rooms, &alice, RoomVersionId::V10, Preset::PublicChat).await;
    rooms.update_membership(&v10, &bob, &bob, MembershipAction::Join, None).await.unwrap();
    let own = say(&rooms, &v10, &bob, "typo").await.unwrap();
    let own_id = ruma::EventId::parse(&own).unwrap();
    let redaction = rooms.redact_event(&v10, &bob, &own_id, None, None).await.unwrap();
    let redaction_event = rooms.store().get_event(redaction.as_str()).await.unwrap().unwrap();
    assert_eq!(pdu_json(&redaction_event)["redacts"], own.as_str());
    assert_eq!(content(&rooms.store().get_event(&own).await.unwrap().unwrap()), json!({}));

    // Redacting the power levels keeps the fields the auth rules need, and the cache follows.
    let power = current(&rooms, &v10, "m.room.power_levels", "").await.unwrap();
    let power_id = ruma::EventId::parse(&power.event_id).unwrap();
    rooms.redact_event(&v10, &alice, &power_id, None, None).await.unwrap();
    let name = EventTemplate::state("m.room.name", "", json!({ "name": "x" }));
    assert_forbidden(rooms.send_event(&v10, &bob, name.clone(), None).await);
    rooms.send_event(&v10, &alice, name, None).await.unwrap();
}

async fn persisted_dag_and_state_groups(rooms: Rooms) {
    let alice = user("alice");
    let room = create(&rooms, &alice, RoomVersionId::V12, Preset::PrivateChat).await;
    for i in 0..3 {
        say(&rooms, &room, &alice, &format!("message {i}")).await.unwrap();
    }
    let topic = EventTemplate::state("m.room.topic", "", json!({ "topic": "t" }));
    rooms.send_event(&room, &alice, topic, None).await.unwrap();
    say(&rooms, &room, &alice, "after topic").await.unwrap();

    let store = rooms.store();
    let timeline =
        store.room_timeline(room.as_str(), 0, i64::MAX, ranvier_store::events::Direction::Forward, 100).await.unwrap();
    assert_eq!(timeline[0].event_type, "m.room.create");
    assert_eq!(timeline[0].depth, 1);
    assert_eq!(timeline[0].state_group, None, "nothing precedes the create event");
    assert!(store.prev_event_ids(&timeline[0].event_id).await.unwrap().is_empty());
    let mut state = ranvier_store::events::StateIds::new();
    for pair in timeline.windows(2) {
        let (before, event) = (&pair[0], &pair[1]);
        // A linear DAG: each event points at the previous one, one level deeper.
        assert_eq!(store.prev_event_ids(&event.event_id).await.unwrap(), vec![before.event_id.clone()]);
        assert_eq!(event.depth, before.depth + 1);
        assert_eq!(pdu_json(event)["prev_events"], json!([before.event_id]));
        // The state group of an event is the state before it.
        if let Some(key) = &before.state_key {
            state.insert((before.event_type.clone(), key.clone()), before.event_id.clone());
        }
        let group = event.state_group.expect("every later event has a state group");
        assert_eq!(store.state_group_ids(group).await.unwrap(), state, "state before {}", event.event_type);
        // Auth events are recorded as edges too.
        let auth = store.auth_event_ids(&event.event_id).await.unwrap();
        assert!(!auth.contains(&timeline[0].event_id), "v12 events do not cite the create event");
    }
    let last = timeline.last().unwrap();
    let extremities = store.forward_extremities(room.as_str()).await.unwrap();
    assert_eq!(extremities, vec![(last.event_id.clone(), last.depth)]);
    assert_eq!(store.current_state_ids(room.as_str()).await.unwrap(), state);

    // A message sender's auth events: power levels and its own membership.
    let auth = store.auth_event_ids(&last.event_id).await.unwrap();
    let power = current(&rooms, &room, "m.room.power_levels", "").await.unwrap();
    let member = current(&rooms, &room, "m.room.member", alice.as_str()).await.unwrap();
    let mut expected = vec![power.event_id, member.event_id];
    let mut auth_sorted = auth.clone();
    auth_sorted.sort();
    expected.sort();
    assert_eq!(auth_sorted, expected);
}

async fn state_group_snapshots_and_reload(rooms: Rooms) {
    let alice = user("alice");
    let room = create(&rooms, &alice, RoomVersionId::V11, Preset::PrivateChat).await;
    for i in 0..60 {
        let template = EventTemplate::state("org.example.counter", format!("k{i}"), json!({ "i": i }));
        rooms.send_event(&room, &alice, template, None).await.unwrap();
    }
    let store = rooms.store();
    let row = store.room(room.as_str()).await.unwrap().unwrap();
    let group = row.current_state_group.unwrap();
    let chain = store.state_group_chain_length(group).await.unwrap().unwrap();
    assert!(chain <= 50, "delta chains are capped, got {chain}");
    let state = store.state_group_ids(group).await.unwrap();
    assert_eq!(state, store.current_state_ids(room.as_str()).await.unwrap());
    assert!(state.contains_key(&("org.example.counter".to_owned(), "k59".to_owned())));
    assert!(state.contains_key(&("m.room.create".to_owned(), String::new())));

    // A second service over the same store (a restart) loads the room and carries on.
    let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "t2".to_owned()).unwrap();
    let restarted = Rooms::new(store.clone(), "test.local".try_into().unwrap(), key);
    let before = store.forward_extremities(room.as_str()).await.unwrap();
    let id = say(&restarted, &room, &alice, "after restart").await.unwrap();
    let event = store.get_event(&id).await.unwrap().unwrap();
    assert_eq!(store.prev_event_ids(&id).await.unwrap(), vec![before[0].0.clone()]);
    assert_eq!(event.depth, before[0].1 + 1);
    assert_eq!(event.state_group, Some(group));
    let bob = user("bob");
    assert_forbidden(restarted.update_membership(&room, &bob, &bob, MembershipAction::Join, None).await);
}

async fn oversized_events_are_refused(rooms: Rooms) {
    let alice = user("alice");
    let room = create(&rooms, &alice, RoomVersionId::V12, Preset::PrivateChat).await;
    let before = rooms.store().forward_extremities(room.as_str()).await.unwrap();
    let error = say(&rooms, &room, &alice, &"x".repeat(70_000)).await.unwrap_err();
    assert_eq!(kind(&error), Some(&ErrorKind::TooLarge));
    // Nothing was stored.
    assert_eq!(rooms.store().forward_extremities(room.as_str()).await.unwrap(), before);
    say(&rooms, &room, &alice, &"x".repeat(60_000)).await.unwrap();
}
