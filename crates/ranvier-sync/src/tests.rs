//! Store-level tests of the read side on both backends, with rooms written by the fixtures.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use ranvier_rooms::Rooms;
use ranvier_store::{Store, events::Direction};
use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};
use serde_json::{Value, json};

use crate::{
    SyncRequest, SyncService,
    fixtures::{RoomFixture, fixture_ts, on_each_backend, record_transaction},
    history::MessagesRequest,
};

const ALICE: &str = "@alice:test";
const BOB: &str = "@bob:test";
const CAROL: &str = "@carol:test";
const DAVE: &str = "@dave:test";
const EVE: &str = "@eve:test";

fn service(store: &Store) -> SyncService {
    let der = ruma::signatures::Ed25519KeyPair::generate();
    let key = ruma::signatures::Ed25519KeyPair::from_der(&der, "t".to_owned()).expect("load key");
    let rooms = Rooms::new(store.clone(), "test".try_into().expect("server name"), key);
    SyncService::new(store.clone(), rooms)
}

fn filter(value: Value) -> FilterDefinition {
    serde_json::from_value(value).expect("filter")
}

/// Run one sync and return its JSON body.
async fn sync_with(
    sync: &SyncService,
    user: &str,
    device: &str,
    since: Option<&str>,
    filter_json: Value,
    timeout_ms: u64,
) -> Value {
    let request = SyncRequest {
        user_id: user.to_owned(),
        device_id: device.to_owned(),
        filter: Box::new(filter(filter_json)),
        since: since.map(|s| SyncService::parse_token(s).expect("token")),
        full_state: false,
        timeout: Duration::from_millis(timeout_ms),
    };
    serde_json::to_value(sync.sync(request).await.expect("sync")).expect("json")
}

async fn sync(sync: &SyncService, user: &str, since: Option<&str>) -> Value {
    sync_with(sync, user, "DEV", since, json!({}), 0).await
}

fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| match e["content"]["body"].as_str() {
            Some(body) => body.to_owned(),
            None => format!("{}|{}", e["type"].as_str().unwrap_or(""), e["state_key"].as_str().unwrap_or("")),
        })
        .collect()
}

fn types(events: &Value) -> HashSet<String> {
    events
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| format!("{}|{}", e["type"].as_str().unwrap_or(""), e["state_key"].as_str().unwrap_or("")))
        .collect()
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn messages(
    sync: &SyncService,
    user: &str,
    room: &str,
    (from, to): (Option<&str>, Option<&str>),
    direction: Direction,
    limit: usize,
    filter: RoomEventFilter,
) -> crate::history::MessagesResponse {
    sync.messages(MessagesRequest {
        user_id: user.to_owned(),
        device_id: "DEV".to_owned(),
        room_id: room.to_owned(),
        from: from.map(str::to_owned),
        to: to.map(str::to_owned),
        direction,
        limit,
        filter,
    })
    .await
    .expect("messages")
}

/// Page through a room until the server says there is no more; returns the bodies.
async fn paginate_all(
    sync: &SyncService,
    user: &str,
    room: &str,
    from: Option<String>,
    direction: Direction,
    limit: usize,
    filter: RoomEventFilter,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = from;
    for _ in 0..1000 {
        let page = messages(sync, user, room, (from.as_deref(), None), direction, limit, filter.clone()).await;
        assert!(page.chunk.len() <= limit);
        out.extend(bodies(&Value::Array(page.chunk)));
        match page.end {
            Some(end) => from = Some(end),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

const CREATION: [&str; 5] = [
    "m.room.create|",
    "m.room.member|@alice:test",
    "m.room.power_levels|",
    "m.room.join_rules|",
    "m.room.history_visibility|",
];

#[tokio::test]
async fn initial_then_incremental_sync() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        for i in 0..15 {
            a.message(&store, ALICE, &format!("m{i}")).await;
        }
        let mut b = RoomFixture::create(&store, "!b:test", ALICE, "shared").await;
        b.message(&store, ALICE, "b0").await;

        let initial = sync(&sync_service, ALICE, None).await;
        let room_a = &initial["rooms"]["join"]["!a:test"];
        let expected: Vec<String> = (5..15).map(|i| format!("m{i}")).collect();
        assert_eq!(bodies(&room_a["timeline"]["events"]), expected);
        assert_eq!(room_a["timeline"]["limited"], json!(true));
        assert_eq!(types(&room_a["state"]["events"]), set(&CREATION));
        assert!(room_a["timeline"]["events"][0].get("room_id").is_none(), "sync nests events under their room");
        assert_eq!(room_a["summary"]["m.joined_member_count"], json!(1));
        let room_b = &initial["rooms"]["join"]["!b:test"];
        assert_eq!(room_b["timeline"]["events"].as_array().map(Vec::len), Some(6));
        assert_eq!(room_b["timeline"]["limited"], json!(false));
        assert_eq!(room_b["state"]["events"], json!([]));
        for section in ["presence", "account_data", "to_device"] {
            assert_eq!(initial[section]["events"], json!([]), "{section}");
        }
        assert_eq!(initial["device_lists"], json!({"changed": [], "left": []}));

        // prev_batch continues exactly where the timeline starts.
        let prev_batch = room_a["timeline"]["prev_batch"].as_str().expect("prev_batch").to_owned();
        let older = paginate_all(
            &sync_service,
            ALICE,
            "!a:test",
            Some(prev_batch),
            Direction::Backward,
            100,
            Default::default(),
        )
        .await;
        let mut expected: Vec<String> = (0..5).rev().map(|i| format!("m{i}")).collect();
        expected.extend(CREATION.iter().rev().map(|s| (*s).to_owned()));
        assert_eq!(older, expected);

        // Incremental: only the room with something new, only what is new.
        let next = initial["next_batch"].as_str().expect("next_batch").to_owned();
        a.message(&store, ALICE, "m15").await;
        let incremental = sync(&sync_service, ALICE, Some(&next)).await;
        assert_eq!(incremental["rooms"]["join"].as_object().map(|o| o.len()), Some(1));
        let room_a = &incremental["rooms"]["join"]["!a:test"];
        assert_eq!(bodies(&room_a["timeline"]["events"]), vec!["m15"]);
        assert_eq!(room_a["timeline"]["limited"], json!(false));
        assert_eq!(room_a["state"]["events"], json!([]));
        assert!(room_a.get("summary").is_none(), "no member change, no summary");

        // Nothing new: an empty response whose token does not go backwards.
        let next2 = incremental["next_batch"].as_str().expect("next_batch").to_owned();
        let quiet = sync(&sync_service, ALICE, Some(&next2)).await;
        assert_eq!(quiet["rooms"]["join"], json!({}));
        assert_eq!(quiet["next_batch"].as_str(), Some(next2.as_str()));
    })
    .await;
}

/// When as many passes run as the bound allows, another sync waits for one of them to end
/// before it runs its own, and runs it once a permit is free.
#[tokio::test]
async fn passes_beyond_the_bound_wait_their_turn() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        a.message(&store, ALICE, "hello").await;

        let bound = u32::try_from(crate::passes_at_once()).expect("bound");
        let running = sync_service.inner.passes.acquire_many(bound).await.expect("permits");
        let waiting = tokio::spawn({
            let sync_service = sync_service.clone();
            async move { sync(&sync_service, ALICE, None).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "a pass ran while every permit was taken");

        drop(running);
        let initial = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the pass ran once a permit was free")
            .expect("sync task");
        assert_eq!(
            bodies(&initial["rooms"]["join"]["!a:test"]["timeline"]["events"]).last().map(String::as_str),
            Some("hello")
        );
        assert_eq!(sync_service.inner.passes.available_permits(), crate::passes_at_once());
    })
    .await;
}

/// An initial sync reads the newest events of all its rooms together: from the log of recent
/// events where it holds them, else 50 rooms to a statement. Each room's part is what a sync
/// of that room alone answers, whether the log holds all of the room's events (a service
/// started before them), the newest of them only, or none (started after them), and also
/// when the filter drops the whole first batch and the walk goes on reading.
#[tokio::test]
async fn initial_sync_of_many_rooms_matches_one_room_at_a_time() {
    on_each_backend(|store| async move {
        let early = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        for i in 0..5 {
            a.message(&store, ALICE, &format!("a{i}")).await;
        }
        let middle = service(&store);
        for i in 0..6 {
            a.state_event(&store, ALICE, "m.room.topic", "", json!({"topic": format!("t{i}")})).await;
        }
        let mut b = RoomFixture::create(&store, "!b:test", ALICE, "shared").await;
        b.message(&store, ALICE, "b0").await;
        b.message(&store, ALICE, "b1").await;
        let mut rooms = vec!["!a:test".to_owned(), "!b:test".to_owned()];
        for r in 0..52 {
            let room_id = format!("!r{r}:test");
            let mut room = RoomFixture::create(&store, &room_id, ALICE, "shared").await;
            room.message(&store, ALICE, &format!("r{r}")).await;
            rooms.push(room_id);
        }
        let late = service(&store);
        let timeline = json!({"types": ["m.room.message"], "limit": 3});
        for sync_service in [&early, &middle, &late] {
            let all = sync_with(sync_service, ALICE, "DEV", None, json!({"room": {"timeline": timeline}}), 0).await;
            let joined = all["rooms"]["join"].as_object().expect("joined rooms");
            assert_eq!(joined.len(), rooms.len());
            let room_a = &all["rooms"]["join"]["!a:test"];
            assert_eq!(bodies(&room_a["timeline"]["events"]), ["a2", "a3", "a4"]);
            assert_eq!(room_a["timeline"]["limited"], json!(true));
            assert_eq!(bodies(&all["rooms"]["join"]["!b:test"]["timeline"]["events"]), ["b0", "b1"]);
            assert_eq!(bodies(&all["rooms"]["join"]["!r51:test"]["timeline"]["events"]), ["r51"]);
            for room_id in &rooms {
                let alone = json!({"room": {"rooms": [room_id], "timeline": timeline}});
                let one = sync_with(&late, ALICE, "DEV", None, alone, 0).await;
                let (one, all) = (
                    ageless(&one["rooms"]["join"][room_id.as_str()]),
                    ageless(&all["rooms"]["join"][room_id.as_str()]),
                );
                assert_eq!(one, all, "{room_id}");
            }
        }
    })
    .await;
}

/// `value` without the `age` fields (which follow the clock) of its events.
fn ageless(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(key, _)| *key != "age").map(|(key, v)| (key.clone(), ageless(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(ageless).collect()),
        other => other.clone(),
    }
}

#[tokio::test]
async fn limited_incremental_sync_carries_state_delta() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        a.message(&store, ALICE, "first").await;
        let initial = sync(&sync_service, ALICE, None).await;
        let since = initial["next_batch"].as_str().expect("next_batch").to_owned();
        a.state_event(&store, ALICE, "m.room.name", "", json!({"name": "Renamed"})).await;
        for i in 0..12 {
            a.message(&store, ALICE, &format!("n{i}")).await;
        }
        let limited = sync(&sync_service, ALICE, Some(&since)).await;
        let room = &limited["rooms"]["join"]["!a:test"];
        assert_eq!(room["timeline"]["limited"], json!(true));
        assert_eq!(bodies(&room["timeline"]["events"]), (2..12).map(|i| format!("n{i}")).collect::<Vec<_>>());
        assert_eq!(types(&room["state"]["events"]), set(&["m.room.name|"]));

        // The gap closes exactly with /messages from `since` to `prev_batch`.
        let prev_batch = room["timeline"]["prev_batch"].as_str().expect("prev_batch");
        let gap = messages(
            &sync_service,
            ALICE,
            "!a:test",
            (Some(&since), Some(prev_batch)),
            Direction::Forward,
            50,
            Default::default(),
        )
        .await;
        assert_eq!(bodies(&Value::Array(gap.chunk)), vec!["m.room.name|", "n0", "n1"]);

        // With a larger limit the same range is complete and the state section empty.
        let complete =
            sync_with(&sync_service, ALICE, "DEV", Some(&since), json!({"room": {"timeline": {"limit": 20}}}), 0).await;
        let room = &complete["rooms"]["join"]["!a:test"];
        assert_eq!(room["timeline"]["limited"], json!(false));
        assert_eq!(room["timeline"]["events"].as_array().map(Vec::len), Some(13));
        assert_eq!(room["state"]["events"], json!([]));

        // full_state repeats the whole state even on an incremental sync.
        let request = SyncRequest {
            user_id: ALICE.to_owned(),
            device_id: "DEV".to_owned(),
            filter: Box::default(),
            since: Some(SyncService::parse_token(&since).expect("token")),
            full_state: true,
            timeout: Duration::ZERO,
        };
        let full = serde_json::to_value(sync_service.sync(request).await.expect("sync")).expect("json");
        let state = types(&full["rooms"]["join"]["!a:test"]["state"]["events"]);
        assert!(state.is_superset(&set(&CREATION)), "{state:?}");
    })
    .await;
}

#[tokio::test]
async fn long_poll_wakes_for_the_user_and_times_out_otherwise() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        let mut other = RoomFixture::create(&store, "!other:test", BOB, "shared").await;
        let since = sync(&sync_service, ALICE, None).await["next_batch"].as_str().expect("next").to_owned();

        // An event in a room Alice is not in does not end her wait.
        let started = Instant::now();
        let waiter = {
            let sync_service = sync_service.clone();
            let since = since.clone();
            tokio::spawn(async move { sync_with(&sync_service, ALICE, "DEV", Some(&since), json!({}), 600).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        other.message(&store, BOB, "not for alice").await;
        let quiet = waiter.await.expect("join");
        assert!(started.elapsed() >= Duration::from_millis(600), "returned early: {:?}", started.elapsed());
        assert_eq!(quiet["rooms"]["join"], json!({}));
        let since = quiet["next_batch"].as_str().expect("next").to_owned();

        // An event in her room wakes her at once.
        let started = Instant::now();
        let waiter = {
            let sync_service = sync_service.clone();
            let since = since.clone();
            tokio::spawn(async move { sync_with(&sync_service, ALICE, "DEV", Some(&since), json!({}), 20_000).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        a.message(&store, ALICE, "wake up").await;
        let woken = waiter.await.expect("join");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        assert_eq!(bodies(&woken["rooms"]["join"]["!a:test"]["timeline"]["events"]), vec!["wake up"]);

        // An invite into a room she is not in yet wakes her too.
        let since = woken["next_batch"].as_str().expect("next").to_owned();
        let started = Instant::now();
        let waiter = {
            let sync_service = sync_service.clone();
            tokio::spawn(async move { sync_with(&sync_service, ALICE, "DEV", Some(&since), json!({}), 20_000).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        other.message(&store, BOB, "still not for alice").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        other.membership(&store, BOB, ALICE, "invite").await;
        let invited = waiter.await.expect("join");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        assert!(invited["rooms"]["invite"].get("!other:test").is_some(), "{invited}");
    })
    .await;
}

#[tokio::test]
async fn lazy_loading_sends_only_the_senders_members_once() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        a.membership(&store, BOB, BOB, "join").await;
        a.membership(&store, CAROL, CAROL, "join").await;
        a.message(&store, CAROL, "from carol").await;
        a.message(&store, BOB, "from bob").await;
        let lazy = json!({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true}}});

        let eager =
            sync_with(&sync_service, ALICE, "EAGER", None, json!({"room": {"timeline": {"limit": 1}}}), 0).await;
        let state = types(&eager["rooms"]["join"]["!a:test"]["state"]["events"]);
        assert!(state.contains("m.room.member|@carol:test"));

        let initial = sync_with(&sync_service, ALICE, "LAZY", None, lazy.clone(), 0).await;
        let room = &initial["rooms"]["join"]["!a:test"];
        assert_eq!(bodies(&room["timeline"]["events"]), vec!["from bob"]);
        let state = types(&room["state"]["events"]);
        assert!(state.contains("m.room.member|@bob:test") && state.contains("m.room.member|@alice:test"));
        assert!(!state.contains("m.room.member|@carol:test"), "{state:?}");
        assert!(state.contains("m.room.create|"));
        assert_eq!(room["summary"]["m.joined_member_count"], json!(3));
        assert_eq!(room["summary"]["m.heroes"], json!([BOB, CAROL]));

        // Carol speaks: her member event comes with her message, once.
        let since = initial["next_batch"].as_str().expect("next").to_owned();
        a.message(&store, CAROL, "carol again").await;
        let next = sync_with(&sync_service, ALICE, "LAZY", Some(&since), lazy.clone(), 0).await;
        assert_eq!(types(&next["rooms"]["join"]["!a:test"]["state"]["events"]), set(&["m.room.member|@carol:test"]));
        let since = next["next_batch"].as_str().expect("next").to_owned();
        a.message(&store, CAROL, "and again").await;
        let again = sync_with(&sync_service, ALICE, "LAZY", Some(&since), lazy.clone(), 0).await;
        assert_eq!(again["rooms"]["join"]["!a:test"]["state"]["events"], json!([]));
        // Unless the client asks for redundant members.
        let redundant = json!({"room": {"state": {"lazy_load_members": true, "include_redundant_members": true}}});
        let again = sync_with(&sync_service, ALICE, "LAZY", Some(&since), redundant, 0).await;
        assert_eq!(
            types(&again["rooms"]["join"]["!a:test"]["state"]["events"]),
            set(&["m.room.member|@carol:test", "m.room.member|@alice:test"])
        );
    })
    .await;
}

#[tokio::test]
async fn invites_joins_and_leaves() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        a.state_event(&store, ALICE, "m.room.name", "", json!({"name": "Room A"})).await;
        a.message(&store, ALICE, "before invite").await;
        a.membership(&store, ALICE, CAROL, "invite").await;

        let initial = sync(&sync_service, CAROL, None).await;
        assert_eq!(initial["rooms"]["join"], json!({}));
        let invite_state = &initial["rooms"]["invite"]["!a:test"]["invite_state"]["events"];
        assert_eq!(
            types(invite_state),
            set(&[
                "m.room.create|",
                "m.room.join_rules|",
                "m.room.name|",
                "m.room.member|@alice:test",
                "m.room.member|@carol:test"
            ])
        );
        let invite = invite_state.as_array().and_then(|e| e.last()).expect("invite event");
        assert_eq!(invite["content"]["membership"], json!("invite"));
        assert_eq!(invite["sender"], json!(ALICE));

        // The invite is not repeated while nothing changes.
        let since = initial["next_batch"].as_str().expect("next").to_owned();
        a.message(&store, ALICE, "while invited").await;
        let quiet = sync(&sync_service, CAROL, Some(&since)).await;
        assert_eq!(quiet["rooms"]["invite"], json!({}));
        assert_eq!(quiet["rooms"]["join"], json!({}));

        // Joining brings the whole room.
        let since = quiet["next_batch"].as_str().expect("next").to_owned();
        a.membership(&store, CAROL, CAROL, "join").await;
        let joined = sync(&sync_service, CAROL, Some(&since)).await;
        let room = &joined["rooms"]["join"]["!a:test"];
        let timeline = bodies(&room["timeline"]["events"]);
        assert_eq!(timeline.last().map(String::as_str), Some("m.room.member|@carol:test"));
        assert!(timeline.contains(&"before invite".to_owned()), "shared history is visible after joining");
        let everything: HashSet<String> =
            types(&room["state"]["events"]).union(&types(&room["timeline"]["events"])).cloned().collect();
        assert!(everything.is_superset(&set(&CREATION)));
        assert!(everything.contains("m.room.name|"));

        // A profile change is not a new join: the room stays incremental.
        let since = joined["next_batch"].as_str().expect("next").to_owned();
        a.write(&store, CAROL, "m.room.member", Some(CAROL), json!({"membership": "join", "displayname": "C"})).await;
        let renamed = sync(&sync_service, CAROL, Some(&since)).await;
        let room = &renamed["rooms"]["join"]["!a:test"];
        assert_eq!(bodies(&room["timeline"]["events"]), vec!["m.room.member|@carol:test"]);
        assert_eq!(room["timeline"]["limited"], json!(false));
        assert_eq!(room["state"]["events"], json!([]));

        // Leaving reports the room under `leave`, up to the leave.
        let since = renamed["next_batch"].as_str().expect("next").to_owned();
        a.message(&store, ALICE, "last seen").await;
        a.membership(&store, CAROL, CAROL, "leave").await;
        a.message(&store, ALICE, "after carol left").await;
        let left = sync(&sync_service, CAROL, Some(&since)).await;
        assert_eq!(left["rooms"]["join"], json!({}));
        let timeline = bodies(&left["rooms"]["leave"]["!a:test"]["timeline"]["events"]);
        assert_eq!(timeline, vec!["last seen", "m.room.member|@carol:test"]);

        // Later events in the room are not hers any more.
        let since = left["next_batch"].as_str().expect("next").to_owned();
        a.message(&store, ALICE, "much later").await;
        let after = sync(&sync_service, CAROL, Some(&since)).await;
        assert!(after["rooms"]["leave"].as_object().is_some_and(|o| o.is_empty()));
        assert_eq!(after["rooms"]["join"], json!({}));

        // Initial syncs show left rooms only with include_leave.
        let fresh = sync(&sync_service, CAROL, None).await;
        assert_eq!(fresh["rooms"]["leave"], json!({}));
        let with_leave =
            sync_with(&sync_service, CAROL, "DEV", None, json!({"room": {"include_leave": true}}), 0).await;
        let timeline = bodies(&with_leave["rooms"]["leave"]["!a:test"]["timeline"]["events"]);
        assert_eq!(timeline.last().map(String::as_str), Some("m.room.member|@carol:test"));
        assert!(!timeline.contains(&"after carol left".to_owned()));

        // A rejected invite shows up under `leave`, with the rejection.
        let mut b = RoomFixture::create(&store, "!b:test", ALICE, "joined").await;
        b.membership(&store, ALICE, DAVE, "invite").await;
        let since = sync(&sync_service, DAVE, None).await["next_batch"].as_str().expect("next").to_owned();
        b.membership(&store, DAVE, DAVE, "leave").await;
        let rejected = sync(&sync_service, DAVE, Some(&since)).await;
        assert_eq!(
            bodies(&rejected["rooms"]["leave"]["!b:test"]["timeline"]["events"]),
            vec!["m.room.member|@dave:test"]
        );

        // A knock shows up under `knock` with the room's stripped state.
        b.state_event(&store, ALICE, "m.room.join_rules", "", json!({"join_rule": "knock"})).await;
        b.membership(&store, EVE, EVE, "knock").await;
        let knocked = sync(&sync_service, EVE, None).await;
        let knock_state = &knocked["rooms"]["knock"]["!b:test"]["knock_state"]["events"];
        let expected = set(&["m.room.create|", "m.room.join_rules|", "m.room.member|@eve:test"]);
        assert!(types(knock_state).is_superset(&expected), "{knock_state}");
        assert_eq!(knocked["rooms"]["join"], json!({}));
    })
    .await;
}

#[tokio::test]
async fn history_visibility_through_messages() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let all = |s: &SyncService, user: &'static str, room: &'static str| {
            let s = s.clone();
            async move { paginate_all(&s, user, room, None, Direction::Forward, 4, Default::default()).await }
        };

        // joined: history starts at the join and stops at the leave. The events sent before
        // the history visibility was set fall under the default, `shared`, and stay visible.
        let mut joined = RoomFixture::create(&store, "!joined:test", ALICE, "joined").await;
        joined.message(&store, ALICE, "j1").await;
        joined.membership(&store, DAVE, DAVE, "join").await;
        joined.message(&store, ALICE, "j2").await;
        joined.membership(&store, DAVE, DAVE, "leave").await;
        joined.message(&store, ALICE, "j3").await;
        let mut expected: Vec<String> = CREATION.iter().map(|s| (*s).to_owned()).collect();
        expected.extend(["m.room.member|@dave:test", "j2", "m.room.member|@dave:test"].map(str::to_owned));
        assert_eq!(all(&sync_service, DAVE, "!joined:test").await, expected);

        // shared: joining opens everything before, nothing after leaving.
        let mut shared = RoomFixture::create(&store, "!shared:test", ALICE, "shared").await;
        shared.message(&store, ALICE, "s1").await;
        shared.membership(&store, DAVE, DAVE, "join").await;
        shared.membership(&store, DAVE, DAVE, "leave").await;
        shared.message(&store, ALICE, "s2").await;
        let seen = all(&sync_service, DAVE, "!shared:test").await;
        assert!(seen.contains(&"s1".to_owned()) && seen.contains(&"m.room.create|".to_owned()));
        assert!(!seen.contains(&"s2".to_owned()), "{seen:?}");

        // invited: history starts at the invite.
        let mut invited = RoomFixture::create(&store, "!invited:test", ALICE, "invited").await;
        invited.message(&store, ALICE, "i0").await;
        invited.membership(&store, ALICE, DAVE, "invite").await;
        invited.message(&store, ALICE, "i1").await;
        invited.membership(&store, DAVE, DAVE, "join").await;
        invited.message(&store, ALICE, "i2").await;
        let mut expected: Vec<String> = CREATION.iter().map(|s| (*s).to_owned()).collect();
        expected.extend(["m.room.member|@dave:test", "i1", "m.room.member|@dave:test", "i2"].map(str::to_owned));
        assert_eq!(all(&sync_service, DAVE, "!invited:test").await, expected);

        // world_readable: anyone may read; elsewhere a stranger is refused.
        let mut open = RoomFixture::create(&store, "!open:test", ALICE, "world_readable").await;
        open.message(&store, ALICE, "o1").await;
        let seen = all(&sync_service, EVE, "!open:test").await;
        assert_eq!(seen.last().map(String::as_str), Some("o1"));
        let refused = sync_service
            .messages(MessagesRequest {
                user_id: EVE.to_owned(),
                device_id: "DEV".to_owned(),
                room_id: "!joined:test".to_owned(),
                from: None,
                to: None,
                direction: Direction::Backward,
                limit: 10,
                filter: Default::default(),
            })
            .await
            .expect_err("stranger");
        assert_eq!(refused.kind(), Some(&ruma::api::error::ErrorKind::Forbidden));

        // The user's own leave is visible even where the history is `joined`.
        let mut strict = RoomFixture::create(&store, "!strict:test", ALICE, "joined").await;
        strict.membership(&store, ALICE, CAROL, "invite").await;
        strict.membership(&store, CAROL, CAROL, "leave").await;
        assert_eq!(all(&sync_service, CAROL, "!strict:test").await, vec!["m.room.member|@carol:test"]);
    })
    .await;
}

#[tokio::test]
async fn pagination_is_exact_both_ways() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        a.membership(&store, BOB, BOB, "join").await;
        let mut expected: Vec<String> = CREATION.iter().map(|s| (*s).to_owned()).collect();
        expected.push("m.room.member|@bob:test".to_owned());
        for i in 0..300 {
            let sender = if i % 3 == 0 { BOB } else { ALICE };
            a.message(&store, sender, &format!("m{i}")).await;
            expected.push(format!("m{i}"));
        }
        let forward =
            paginate_all(&sync_service, ALICE, "!a:test", None, Direction::Forward, 7, Default::default()).await;
        assert_eq!(forward, expected);
        let backward =
            paginate_all(&sync_service, ALICE, "!a:test", None, Direction::Backward, 7, Default::default()).await;
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(backward, reversed);

        // Filtered pagination keeps exactly the matching events.
        let only_bob: RoomEventFilter =
            serde_json::from_value(json!({"types": ["m.room.message"], "senders": [BOB]})).expect("filter");
        let bob = paginate_all(&sync_service, ALICE, "!a:test", None, Direction::Backward, 9, only_bob).await;
        let expected_bob: Vec<String> = (0..300).rev().filter(|i| i % 3 == 0).map(|i| format!("m{i}")).collect();
        assert_eq!(bob, expected_bob);
        let not_types: RoomEventFilter =
            serde_json::from_value(json!({"not_types": ["m.room.message"]})).expect("filter");
        let state_only = paginate_all(&sync_service, ALICE, "!a:test", None, Direction::Forward, 2, not_types).await;
        assert_eq!(state_only, expected[..6].to_vec());

        // `to` bounds a page.
        let first =
            messages(&sync_service, ALICE, "!a:test", (None, None), Direction::Backward, 3, Default::default()).await;
        let end = first.end.expect("end");
        let back_to =
            messages(&sync_service, ALICE, "!a:test", (None, Some(&end)), Direction::Backward, 50, Default::default())
                .await;
        assert_eq!(bodies(&Value::Array(back_to.chunk)), vec!["m299", "m298", "m297"]);
        assert!(back_to.end.is_none());

        // Lazy-loading /messages returns the member events of the chunk's senders.
        let lazy: RoomEventFilter = serde_json::from_value(json!({"lazy_load_members": true})).expect("filter");
        let page = messages(&sync_service, ALICE, "!a:test", (None, None), Direction::Backward, 3, lazy.clone()).await;
        assert_eq!(bodies(&Value::Array(page.chunk)), vec!["m299", "m298", "m297"]);
        assert_eq!(types(&Value::Array(page.state)), set(&["m.room.member|@alice:test", "m.room.member|@bob:test"]));
        let page = messages(&sync_service, ALICE, "!a:test", (None, None), Direction::Backward, 2, lazy).await;
        assert_eq!(types(&Value::Array(page.state)), set(&["m.room.member|@alice:test"]));
    })
    .await;
}

#[tokio::test]
async fn context_and_timestamp_lookup() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        a.membership(&store, BOB, BOB, "join").await;
        let mut written = Vec::new();
        for i in 0..20 {
            written.push(a.message(&store, ALICE, &format!("m{i}")).await);
        }
        let middle = &written[10];
        let context = sync_service
            .context(ALICE, "DEV", "!a:test", &middle.event_id, 4, &Default::default())
            .await
            .expect("context");
        assert_eq!(context.event["content"]["body"], json!("m10"));
        assert_eq!(bodies(&Value::Array(context.events_before.clone())), vec!["m9", "m8"]);
        assert_eq!(bodies(&Value::Array(context.events_after.clone())), vec!["m11", "m12"]);
        assert!(types(&Value::Array(context.state.clone())).is_superset(&set(&CREATION)));
        let before = messages(
            &sync_service,
            ALICE,
            "!a:test",
            (Some(&context.start), None),
            Direction::Backward,
            2,
            Default::default(),
        )
        .await;
        assert_eq!(bodies(&Value::Array(before.chunk)), vec!["m7", "m6"]);
        let after = messages(
            &sync_service,
            ALICE,
            "!a:test",
            (Some(&context.end), None),
            Direction::Forward,
            2,
            Default::default(),
        )
        .await;
        assert_eq!(bodies(&Value::Array(after.chunk)), vec!["m13", "m14"]);

        // Lazy loading narrows the state to the members of the events' senders.
        let lazy: RoomEventFilter = serde_json::from_value(json!({"lazy_load_members": true})).expect("filter");
        let context = sync_service.context(ALICE, "DEV", "!a:test", &middle.event_id, 4, &lazy).await.expect("context");
        let state = types(&Value::Array(context.state));
        assert!(state.contains("m.room.member|@alice:test") && state.contains("m.room.create|"), "{state:?}");
        assert!(!state.contains("m.room.member|@bob:test"), "{state:?}");

        let missing = sync_service.context(ALICE, "DEV", "!a:test", "$nope", 4, &Default::default()).await;
        assert_eq!(missing.expect_err("unknown event").kind(), Some(&ruma::api::error::ErrorKind::NotFound));

        let ts = fixture_ts(written[5].stream_ordering);
        let forward = sync_service.timestamp_to_event(ALICE, "!a:test", ts + 1, true).await.expect("forward");
        assert_eq!(forward.event_id, written[6].event_id);
        let backward = sync_service.timestamp_to_event(ALICE, "!a:test", ts + 1, false).await.expect("backward");
        assert_eq!(backward.event_id, written[5].event_id);
        let none =
            sync_service.timestamp_to_event(ALICE, "!a:test", fixture_ts(written[19].stream_ordering) + 1, true).await;
        assert_eq!(none.expect_err("nothing after").kind(), Some(&ruma::api::error::ErrorKind::NotFound));
    })
    .await;
}

#[tokio::test]
async fn stored_filters_per_user() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let definition = filter(json!({"room": {"timeline": {"limit": 5, "types": ["m.room.message"]}}}));
        let first = sync_service.create_filter(ALICE, &definition).await.expect("create");
        let second = sync_service.create_filter(ALICE, &FilterDefinition::default()).await.expect("create");
        assert_ne!(first, second);
        let bobs = sync_service.create_filter(BOB, &definition).await.expect("create");
        assert_eq!(bobs, first, "ids are per user");
        let loaded = sync_service.get_filter(ALICE, &first).await.expect("get");
        assert_eq!(serde_json::to_value(&loaded).expect("json"), serde_json::to_value(&definition).expect("json"));
        for unknown in ["99", "abc", "-1"] {
            let error = sync_service.get_filter(ALICE, unknown).await.expect_err("unknown");
            assert_eq!(error.kind(), Some(&ruma::api::error::ErrorKind::NotFound), "{unknown}");
        }
        let error = sync_service.stored_or_inline_filter(ALICE, "{\"room\": ").await.expect_err("bad");
        assert_eq!(error.kind(), Some(&ruma::api::error::ErrorKind::NotJson));
        let error = sync_service.stored_or_inline_filter(ALICE, "{\"room\": 3}").await.expect_err("bad");
        assert_eq!(error.kind(), Some(&ruma::api::error::ErrorKind::BadJson));

        // A stored filter applies to sync.
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        a.message(&store, ALICE, "hello").await;
        let resolved = sync_service.stored_or_inline_filter(ALICE, &first).await.expect("resolve");
        let request = SyncRequest {
            user_id: ALICE.to_owned(),
            device_id: "DEV".to_owned(),
            filter: Box::new(resolved),
            since: None,
            full_state: false,
            timeout: Duration::ZERO,
        };
        let body = serde_json::to_value(sync_service.sync(request).await.expect("sync")).expect("json");
        assert_eq!(bodies(&body["rooms"]["join"]["!a:test"]["timeline"]["events"]), vec!["hello"]);
    })
    .await;
}

#[tokio::test]
async fn account_data_room_filters_and_transaction_ids() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        let mut b = RoomFixture::create(&store, "!b:test", ALICE, "shared").await;
        store.set_account_data(ALICE, "", "m.push_rules", "{\"global\":{}}").await.expect("set");
        store.set_account_data(ALICE, "!a:test", "m.tag", "{\"tags\":{\"u.work\":{}}}").await.expect("set");

        let initial = sync(&sync_service, ALICE, None).await;
        assert_eq!(initial["account_data"]["events"], json!([{"type": "m.push_rules", "content": {"global": {}}}]));
        assert_eq!(
            initial["rooms"]["join"]["!a:test"]["account_data"]["events"],
            json!([{"type": "m.tag", "content": {"tags": {"u.work": {}}}}])
        );

        // Account data alone brings a room into an incremental sync.
        let since = initial["next_batch"].as_str().expect("next").to_owned();
        store.set_account_data(ALICE, "!b:test", "m.tag", "{\"tags\":{}}").await.expect("set");
        store.set_account_data(ALICE, "", "m.direct", "{}").await.expect("set");
        let next = sync(&sync_service, ALICE, Some(&since)).await;
        assert_eq!(next["account_data"]["events"], json!([{"type": "m.direct", "content": {}}]));
        assert_eq!(
            next["rooms"]["join"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["!b:test".to_owned()])
        );
        assert_eq!(next["rooms"]["join"]["!b:test"]["timeline"]["events"], json!([]));
        let filtered = sync_with(
            &sync_service,
            ALICE,
            "DEV",
            Some(&since),
            json!({"account_data": {"not_types": ["m.direct"]}}),
            0,
        )
        .await;
        assert_eq!(filtered["account_data"]["events"], json!([]));

        // Room filters.
        let only_b = sync_with(&sync_service, ALICE, "DEV", None, json!({"room": {"not_rooms": ["!a:test"]}}), 0).await;
        assert_eq!(
            only_b["rooms"]["join"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["!b:test".to_owned()])
        );
        let messages_only = sync_with(
            &sync_service,
            ALICE,
            "DEV",
            None,
            json!({"room": {"rooms": ["!a:test"], "timeline": {"types": ["m.room.message"]}}}),
            0,
        )
        .await;
        assert_eq!(messages_only["rooms"]["join"]["!a:test"]["timeline"]["events"], json!([]));
        assert!(types(&messages_only["rooms"]["join"]["!a:test"]["state"]["events"]).is_superset(&set(&CREATION)));

        // The sending device sees its transaction id; another device does not.
        let since = sync(&sync_service, ALICE, None).await["next_batch"].as_str().expect("next").to_owned();
        let sent = a.message(&store, ALICE, "with txn").await;
        record_transaction(&store, ALICE, "DEV", "txn1", &sent.event_id).await;
        b.message(&store, ALICE, "other room").await;
        let own = sync_with(&sync_service, ALICE, "DEV", Some(&since), json!({}), 0).await;
        assert_eq!(
            own["rooms"]["join"]["!a:test"]["timeline"]["events"][0]["unsigned"]["transaction_id"],
            json!("txn1")
        );
        let other = sync_with(&sync_service, ALICE, "OTHER", Some(&since), json!({}), 0).await;
        assert!(other["rooms"]["join"]["!a:test"]["timeline"]["events"][0]["unsigned"].get("transaction_id").is_none());

        // event_fields trims the events.
        let trimmed =
            sync_with(&sync_service, ALICE, "DEV", Some(&since), json!({"event_fields": ["type", "content.body"]}), 0)
                .await;
        assert_eq!(
            trimmed["rooms"]["join"]["!a:test"]["timeline"]["events"],
            json!([{"type": "m.room.message", "content": {"body": "with txn"}}])
        );
    })
    .await;
}

#[tokio::test]
async fn a_user_who_left_pages_back_from_their_leave() {
    on_each_backend(|store| async move {
        let sync_service = service(&store);
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        a.membership(&store, DAVE, DAVE, "join").await;
        a.message(&store, ALICE, "seen").await;
        a.membership(&store, DAVE, DAVE, "leave").await;
        // More events after the leave than one walk looks at.
        for i in 0..(crate::timeline::MAX_SCAN + 50) {
            a.message(&store, ALICE, &format!("after {i}")).await;
        }
        let page =
            messages(&sync_service, DAVE, "!a:test", (None, None), Direction::Backward, 2, Default::default()).await;
        assert_eq!(bodies(&Value::Array(page.chunk)), vec!["m.room.member|@dave:test", "seen"]);
        assert!(page.end.is_some());
    })
    .await;
}

#[tokio::test]
async fn recent_events_window_names_rooms_and_own_membership_changes() {
    on_each_backend(|store| async move {
        let mut a = RoomFixture::create(&store, "!a:test", ALICE, "shared").await;
        let mut b = RoomFixture::create(&store, "!b:test", BOB, "shared").await;
        let start = b.message(&store, BOB, "before").await.stream_ordering;
        let log = crate::changes::RecentEvents::new(start);
        let rooms: HashSet<String> = ["!a:test".to_owned()].into();

        let one = a.message(&store, ALICE, "one").await;
        let two = a.message(&store, ALICE, "two").await;
        let last_a = two.stream_ordering;
        b.message(&store, BOB, "elsewhere").await;
        let now = store.streams().current_token().get(ranvier_store::StreamKind::Events);
        let window = log.window(&store, ALICE, &rooms, start, now).await.expect("window").expect("covered");
        assert_eq!(window.rooms, [("!a:test".to_owned(), last_a)].into());
        let newest = [(two.stream_ordering, two.event_id.clone()), (one.stream_ordering, one.event_id.clone())];
        assert_eq!(window.newest, [("!a:test".to_owned(), newest.to_vec())].into(), "newest first, asked rooms only");
        assert_eq!(window.own_membership, None);

        // An invite of Alice into a room she is not in is her own membership change.
        let invite = b.membership(&store, BOB, ALICE, "invite").await.stream_ordering;
        let later = store.streams().current_token().get(ranvier_store::StreamKind::Events);
        let window = log.window(&store, ALICE, &rooms, now, later).await.expect("window").expect("covered");
        assert!(window.rooms.is_empty(), "{window:?}");
        assert_eq!(window.own_membership, Some(invite));

        // Positions older than the log are not answered.
        assert!(log.window(&store, ALICE, &rooms, start - 1, later).await.expect("window").is_none());
    })
    .await;
}
