//! Storage conformance: the same tests run against SQLite (a file in a temporary directory)
//! and PostgreSQL (a fresh database), so that both backends keep exactly the same behaviour.
//!
//! Each test is an `async fn(Backend)`; `backend_tests!` turns it into `name::sqlite` and
//! `name::postgres`. `RANVIER_TEST_BACKENDS` chooses which of them really run.

use std::collections::HashMap;

use ranvier_store::{
    Store, StreamKind,
    events::Direction,
    persist::{CurrentStateChange, MembershipChange, NewRoom, NewStateGroup, PersistEvent, Redaction, TxnKey},
    uia::TokenStage,
};
use ranvier_test::{Backend, TestDatabase, backend_tests};

#[path = "conformance/media.rs"]
mod media;
#[path = "conformance/push.rs"]
mod push;
#[path = "conformance/relations.rs"]
mod relations;

/// A store on a fresh database, and the database (kept alive for as long as the test runs).
async fn fresh(backend: Backend) -> (Store, TestDatabase) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    (store, db)
}

async fn open(db: &TestDatabase) -> Store {
    match Store::open(&db.url(), 4).await {
        Ok(store) => store,
        Err(e) => panic!("open {} store: {e}", db.backend().name()),
    }
}

/// Run one SQL statement with no parameters.
async fn exec(store: &Store, sql: &'static str) {
    if let Err(e) = sqlx::query(sql).execute(store.pool()).await {
        panic!("{sql}: {e}");
    }
}

/// Insert a minimal event row straight into `events`.
async fn insert_event(store: &Store, stream_ordering: i64, event_id: &str, room_id: &str) {
    let result = sqlx::query(
        "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, state_key, depth, origin_server_ts, pdu)
         VALUES ($1, $2, $3, '@a:test', 'm.room.message', NULL, $1, 0, '{}')",
    )
    .bind(stream_ordering)
    .bind(event_id)
    .bind(room_id)
    .execute(store.pool())
    .await;
    if let Err(e) = result {
        panic!("insert event {event_id}: {e}");
    }
}

/// Opening an already migrated database changes nothing and applies nothing twice; a database
/// from a newer version is refused.
async fn migrations_are_idempotent(backend: Backend) {
    let (store, db) = fresh(backend).await;
    let versions = || async {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT version, name FROM schema_version ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap_or_else(|e| panic!("read schema_version: {e}"));
        rows
    };
    let first = versions().await;
    assert!(!first.is_empty(), "migrations were recorded");
    assert_eq!(first[0], (1, "0001_init".to_owned()));
    // Numbers are handed out to areas in advance, so there may be gaps; they only increase,
    // and each migration's name starts with its number.
    assert!(first.windows(2).all(|pair| pair[0].0 < pair[1].0), "versions increase: {first:?}");
    assert!(
        first.iter().all(|(version, name)| name.starts_with(&format!("{version:04}_"))),
        "names carry their numbers: {first:?}"
    );
    assert!(store.create_user("@keep:test", None, false).await.unwrap_or_else(|e| panic!("{e}")));
    drop(store);

    for _ in 0..2 {
        let store = open(&db).await;
        let again: Vec<(i64, String)> = sqlx::query_as("SELECT version, name FROM schema_version ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap_or_else(|e| panic!("read schema_version: {e}"));
        assert_eq!(again, first, "reopening applies nothing");
        assert!(store.get_user("@keep:test").await.unwrap_or_else(|e| panic!("{e}")).is_some(), "data survives reopen");
    }

    let store = open(&db).await;
    exec(&store, "INSERT INTO schema_version (version, name, applied_ts) VALUES (9999, 'from_the_future', 0)").await;
    drop(store);
    assert!(Store::open(&db.url(), 4).await.is_err(), "a schema newer than the binary is refused");
}

/// Users, devices and access tokens round-trip; tokens are stored hashed.
async fn accounts_round_trip(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let ok = |r: ranvier_core::Result<bool>| r.unwrap_or_else(|e| panic!("{e}"));
    assert!(ok(store.create_user("@alice:test", Some("hash-a"), false).await));
    assert!(!ok(store.create_user("@alice:test", Some("other"), true).await), "a taken id is refused");
    assert!(ok(store.create_user("@root:test", None, true).await));

    let alice =
        store.get_user("@alice:test").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("alice"));
    assert_eq!(alice.user_id, "@alice:test");
    assert_eq!(alice.password_hash.as_deref(), Some("hash-a"), "the first registration wins");
    assert!(!alice.admin && !alice.deactivated);
    assert!(alice.created_ts > 0);
    let root = store.get_user("@root:test").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("root"));
    assert!(root.admin && root.password_hash.is_none());
    assert!(store.get_user("@nobody:test").await.unwrap_or_else(|e| panic!("{e}")).is_none());

    store.set_password_hash("@alice:test", Some("hash-b")).await.unwrap_or_else(|e| panic!("{e}"));
    let alice =
        store.get_user("@alice:test").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("alice"));
    assert_eq!(alice.password_hash.as_deref(), Some("hash-b"));

    store
        .create_device_with_token("@alice:test", "PHONE", Some("Phone"), "token-phone")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .create_device_with_token("@alice:test", "LAPTOP", None, "token-laptop")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let owner =
        store.token_owner("token-phone").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("owner"));
    assert_eq!((owner.user_id.as_str(), owner.device_id.as_str()), ("@alice:test", "PHONE"));
    assert!(store.token_owner("token-nobody").await.unwrap_or_else(|e| panic!("{e}")).is_none());

    let devices = store.list_devices("@alice:test").await.unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = devices.iter().map(|d| d.device_id.as_str()).collect();
    assert_eq!(ids, ["LAPTOP", "PHONE"], "devices are listed by id");
    assert_eq!(devices[1].display_name.as_deref(), Some("Phone"));
    assert_eq!(devices[0].display_name, None);

    // The token itself is never stored, only its hash.
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM access_tokens")
        .fetch_all(store.pool())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|hash| !hash.contains("token-")), "tokens are stored hashed: {stored:?}");

    // Logging in again on a device replaces that device's token.
    store
        .create_device_with_token("@alice:test", "PHONE", None, "token-phone-2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        store.token_owner("token-phone").await.unwrap_or_else(|e| panic!("{e}")).is_none(),
        "the old token is gone"
    );
    assert!(store.token_owner("token-phone-2").await.unwrap_or_else(|e| panic!("{e}")).is_some());
    let devices = store.list_devices("@alice:test").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(devices.len(), 2, "the device is kept, not duplicated");
    assert_eq!(devices[1].display_name.as_deref(), Some("Phone"), "the display name is kept");
}

/// Deleting a token, a device, or deactivating the account revokes exactly what it should.
async fn token_deletion(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let must = |r: ranvier_core::Result<()>| r.unwrap_or_else(|e| panic!("{e}"));
    let owner = |token: &'static str| {
        let store = store.clone();
        async move { store.token_owner(token).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    store.create_user("@bob:test", Some("h"), false).await.unwrap_or_else(|e| panic!("{e}"));
    store.create_user("@carol:test", Some("h"), false).await.unwrap_or_else(|e| panic!("{e}"));
    must(store.create_device_with_token("@bob:test", "A", None, "bob-a").await);
    must(store.create_device_with_token("@bob:test", "B", None, "bob-b").await);
    must(store.create_device_with_token("@bob:test", "C", None, "bob-c").await);
    must(store.create_device_with_token("@carol:test", "A", None, "carol-a").await);

    must(store.delete_token("bob-a").await);
    assert!(owner("bob-a").await.is_none(), "a deleted token no longer authenticates");
    assert!(owner("bob-b").await.is_some(), "other tokens are untouched");
    must(store.delete_token("never-existed").await);

    must(store.delete_device("@bob:test", "B").await);
    assert!(owner("bob-b").await.is_none(), "deleting a device revokes its token");
    let devices = store.list_devices("@bob:test").await.unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = devices.iter().map(|d| d.device_id.as_str()).collect();
    assert_eq!(ids, ["A", "C"], "device A stays (only its token went), B is gone");
    assert!(owner("carol-a").await.is_some(), "another user's device with the same id is untouched");

    must(store.deactivate_user("@bob:test").await);
    assert!(owner("bob-c").await.is_none(), "deactivation revokes every token");
    assert!(store.list_devices("@bob:test").await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    let bob = store.get_user("@bob:test").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("bob"));
    assert!(bob.deactivated && bob.password_hash.is_none());
    assert!(owner("carol-a").await.is_some());
}

/// Account data: set, overwrite, read back, and the changes between two stream positions.
async fn account_data_ranges(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let set = |user: &'static str, room: &'static str, kind: &'static str, content: &'static str| {
        let store = store.clone();
        async move { store.set_account_data(user, room, kind, content).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    let start = store.streams().current(StreamKind::AccountData);
    let p1 = set("@u:test", "", "m.push_rules", r#"{"v":1}"#).await;
    let p2 = set("@u:test", "!r:test", "m.tag", r#"{"tags":{}}"#).await;
    let p3 = set("@other:test", "", "m.push_rules", r#"{"other":true}"#).await;
    let p4 = set("@u:test", "", "org.example", r#"{"x":1}"#).await;
    assert!(start < p1 && p1 < p2 && p2 < p3 && p3 < p4, "positions increase: {start} {p1} {p2} {p3} {p4}");
    assert_eq!(store.streams().current(StreamKind::AccountData), p4, "every write is visible once committed");

    let get = |user: &'static str, room: &'static str, kind: &'static str| {
        let store = store.clone();
        async move { store.get_account_data(user, room, kind).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    assert_eq!(get("@u:test", "", "m.push_rules").await.as_deref(), Some(r#"{"v":1}"#));
    assert_eq!(get("@u:test", "!r:test", "m.tag").await.as_deref(), Some(r#"{"tags":{}}"#));
    assert_eq!(get("@u:test", "", "m.tag").await, None, "room and global data are separate");
    assert_eq!(get("@other:test", "", "m.push_rules").await.as_deref(), Some(r#"{"other":true}"#));

    let changes = |since: i64, until: i64| {
        let store = store.clone();
        async move {
            let rows = store.account_data_changes("@u:test", since, until).await.unwrap_or_else(|e| panic!("{e}"));
            rows.into_iter().map(|(room, kind, _)| format!("{room}|{kind}")).collect::<Vec<_>>()
        }
    };
    assert_eq!(changes(start, p4).await, ["|m.push_rules", "!r:test|m.tag", "|org.example"], "everything, in order");
    assert_eq!(changes(p1, p4).await, ["!r:test|m.tag", "|org.example"], "`since` is exclusive");
    assert_eq!(changes(start, p2).await, ["|m.push_rules", "!r:test|m.tag"], "`until` is inclusive");
    assert!(changes(p4, p4).await.is_empty());

    // Overwriting moves the entry to its new position: it is reported once, after the others.
    let p5 = set("@u:test", "", "m.push_rules", r#"{"v":2}"#).await;
    assert_eq!(get("@u:test", "", "m.push_rules").await.as_deref(), Some(r#"{"v":2}"#));
    assert_eq!(changes(start, p5).await, ["!r:test|m.tag", "|org.example", "|m.push_rules"]);
    assert_eq!(changes(p4, p5).await, ["|m.push_rules"]);
    let rows = store.account_data_changes("@u:test", p4, p5).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows[0].2, r#"{"v":2}"#, "the changes carry the new content");

    // All of one room's data, whenever it was written, up to a position.
    let p6 = set("@u:test", "!r:test", "m.fully_read", r#"{"event_id":"$e"}"#).await;
    set("@other:test", "!r:test", "m.tag", r#"{"tags":{"x":{}}}"#).await;
    let room = |until: i64| {
        let store = store.clone();
        async move { store.room_account_data("@u:test", "!r:test", until).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    let all = room(i64::MAX).await;
    assert_eq!(
        all,
        [
            ("m.tag".to_owned(), r#"{"tags":{}}"#.to_owned()),
            ("m.fully_read".to_owned(), r#"{"event_id":"$e"}"#.to_owned())
        ]
    );
    assert_eq!(room(p6 - 1).await.len(), 1, "`until` bounds it");
    assert!(
        store.room_account_data("@u:test", "!none:test", i64::MAX).await.unwrap_or_else(|e| panic!("{e}")).is_empty()
    );
}

/// After a reopen, every stream continues from the highest position stored.
async fn stream_positions_seeded_after_reopen(backend: Backend) {
    let (store, db) = fresh(backend).await;
    assert_eq!(store.streams().current(StreamKind::Events), 0, "a fresh database starts at 0");
    let mut last = 0;
    for i in 0..3 {
        last = store.set_account_data("@u:test", "", &format!("t{i}"), "{}").await.unwrap_or_else(|e| panic!("{e}"));
    }
    insert_event(&store, 40, "$a", "!r:test").await;
    insert_event(&store, 42, "$b", "!r:test").await;
    insert_event(&store, 41, "$c", "!r:test").await;
    drop(store);

    let store = open(&db).await;
    assert_eq!(store.streams().current(StreamKind::Events), 42, "events continue from the stored maximum");
    assert_eq!(store.streams().current(StreamKind::AccountData), last, "account data continues too");
    let token = store.streams().current_token();
    assert_eq!(token.get(StreamKind::Events), 42);
    assert_eq!(token.get(StreamKind::AccountData), last);
    let next = store.streams().allocate(StreamKind::Events);
    assert_eq!(next.position(), 43, "the next event position is fresh");
    drop(next);
    let position = store.set_account_data("@u:test", "", "after", "{}").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(position, last + 1, "the next account data position follows the stored ones");
}

/// State groups are delta chains; `state_group_ids` applies them from the root.
async fn state_group_delta_chains(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    for sql in [
        "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (10, '!r:test', NULL, 0)",
        "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (11, '!r:test', 10, 1)",
        "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (15, '!r:test', 11, 2)",
        "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (12, '!r:test', 10, 1)",
        "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (20, '!r:test', 99, 1)",
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES (10, 'm.room.create', '', '$create')",
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES (10, 'm.room.member', '@a:test', '$join-a')",
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES (11, 'm.room.name', '', '$name-1')",
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES (11, 'm.room.member', '@b:test', '$join-b')",
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES (15, 'm.room.name', '', '$name-2')",
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES (15, 'm.room.member', '@a:test', '$leave-a')",
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id) VALUES (12, 'm.room.topic', '', '$topic')",
    ] {
        exec(&store, sql).await;
    }
    let state = |group: i64| {
        let store = store.clone();
        async move {
            let ids = store.state_group_ids(group).await.unwrap_or_else(|e| panic!("state group {group}: {e}"));
            let mut pairs: Vec<(String, String, String)> = ids.into_iter().map(|((t, k), e)| (t, k, e)).collect();
            pairs.sort();
            pairs
        }
    };
    let expect = |pairs: &[(&str, &str, &str)]| {
        let mut pairs: Vec<(String, String, String)> =
            pairs.iter().map(|(t, k, e)| (t.to_string(), k.to_string(), e.to_string())).collect();
        pairs.sort();
        pairs
    };
    assert_eq!(state(10).await, expect(&[("m.room.create", "", "$create"), ("m.room.member", "@a:test", "$join-a")]));
    assert_eq!(
        state(11).await,
        expect(&[
            ("m.room.create", "", "$create"),
            ("m.room.member", "@a:test", "$join-a"),
            ("m.room.member", "@b:test", "$join-b"),
            ("m.room.name", "", "$name-1"),
        ])
    );
    assert_eq!(
        state(15).await,
        expect(&[
            ("m.room.create", "", "$create"),
            ("m.room.member", "@a:test", "$leave-a"),
            ("m.room.member", "@b:test", "$join-b"),
            ("m.room.name", "", "$name-2"),
        ]),
        "later deltas override earlier ones"
    );
    assert_eq!(
        state(12).await,
        expect(&[
            ("m.room.create", "", "$create"),
            ("m.room.member", "@a:test", "$join-a"),
            ("m.room.topic", "", "$topic")
        ]),
        "a sibling branch sees only its own deltas"
    );
    assert!(store.state_group_ids(404).await.is_err(), "an unknown group is an error, not empty state");
    assert!(store.state_group_ids(20).await.is_err(), "a chain with a missing link is an error");

    // The single-statement reader used by sync agrees with the chain walk.
    for group in [10, 11, 12, 15] {
        let walked = store.state_group_ids(group).await.unwrap_or_else(|e| panic!("{e}"));
        let direct = store.state_group_state(group).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(direct, walked, "state_group_state({group}) agrees with state_group_ids");
    }

    // Sanity: the same answers through a connection, as used inside transactions.
    let mut conn = store.conn().await.unwrap_or_else(|e| panic!("{e}"));
    let through_conn: HashMap<(String, String), String> =
        ranvier_store::events::state_group_ids(&mut conn, 15).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(through_conn.len(), 4);
}

/// Filters are numbered from 0 per user, read back per user, and concurrent creations get
/// distinct ids.
async fn filters_numbered_per_user(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let create = |user: &'static str, json: &'static str| {
        let store = store.clone();
        async move { store.create_filter(user, json).await.unwrap_or_else(|e| panic!("create filter: {e}")) }
    };
    assert_eq!(create("@a:test", r#"{"n":0}"#).await, 0);
    assert_eq!(create("@a:test", r#"{"n":1}"#).await, 1);
    assert_eq!(create("@b:test", r#"{"n":"b0"}"#).await, 0, "each user counts from 0");
    let get = |user: &'static str, id: i64| {
        let store = store.clone();
        async move { store.get_filter(user, id).await.unwrap_or_else(|e| panic!("get filter: {e}")) }
    };
    assert_eq!(get("@a:test", 1).await.as_deref(), Some(r#"{"n":1}"#));
    assert_eq!(get("@b:test", 0).await.as_deref(), Some(r#"{"n":"b0"}"#));
    assert_eq!(get("@b:test", 1).await, None, "another user's filter id is not visible");
    assert_eq!(get("@a:test", -1).await, None);

    // Many more creations than pooled connections, so that some transactions keep losing the
    // race for the next id while newer ones arrive: the id allocation must not give up.
    let tasks: Vec<_> = (0..32).map(|_| tokio::spawn(create("@c:test", "{}"))).collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap_or_else(|e| panic!("filter task: {e}")));
    }
    ids.sort();
    assert_eq!(ids, (0..32).collect::<Vec<i64>>(), "concurrent creations get distinct ids");
}

/// Registration tokens and the UIA sessions that hold their pending uses.
async fn registration_tokens_and_uia_sessions(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let must = |r: ranvier_core::Result<bool>| r.unwrap_or_else(|e| panic!("{e}"));
    assert!(must(store.create_registration_token("once", Some(1), None).await));
    assert!(!must(store.create_registration_token("once", None, None).await), "a token name is unique");
    assert!(must(store.create_registration_token("open", None, None).await));
    assert!(must(store.create_registration_token("stale", None, Some(1_000)).await));
    let names: Vec<String> = store
        .list_registration_tokens()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|row| row.token)
        .collect();
    assert_eq!(names, ["once", "open", "stale"], "listed by name");
    assert!(must(store.registration_token_is_valid("once").await));
    assert!(!must(store.registration_token_is_valid("stale").await), "an expired token is invalid");
    assert!(!must(store.registration_token_is_valid("unknown").await));

    let stage = |session: &'static str, token: &'static str| {
        let store = store.clone();
        async move { store.complete_registration_token_stage(session, token).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    for session in ["s1", "s2", "s3"] {
        store.create_uia_session(session, "register", None).await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(stage("s1", "once").await, TokenStage::Reserved);
    let once =
        store.get_registration_token("once").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("once"));
    assert_eq!((once.pending, once.completed), (1, 0), "the session holds a pending use");
    assert!(!must(store.registration_token_is_valid("once").await), "its only use is taken");
    assert_eq!(stage("s2", "once").await, TokenStage::Invalid, "a second session cannot take it");
    assert_eq!(stage("s2", "stale").await, TokenStage::Invalid);
    assert_eq!(stage("gone", "open").await, TokenStage::SessionGone);
    assert_eq!(stage("s1", "once").await, TokenStage::Reserved, "repeating the stage keeps the reservation");
    let once =
        store.get_registration_token("once").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("once"));
    assert_eq!(once.pending, 1, "and does not take a second use");

    let completed = store.complete_uia_stage("s1", "m.login.dummy").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(completed, Some(vec!["m.login.registration_token".to_owned(), "m.login.dummy".to_owned()]));
    let again = store.complete_uia_stage("s1", "m.login.dummy").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.map(|stages| stages.len()), Some(2), "a stage is recorded once");
    assert_eq!(store.complete_uia_stage("nope", "m.login.dummy").await.unwrap_or_else(|e| panic!("{e}")), None);
    let session = store.get_uia_session("s1").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("s1"));
    assert_eq!((session.operation.as_str(), session.registration_token.as_deref()), ("register", Some("once")));

    store.delete_uia_session("s1").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(store.get_uia_session("s1").await.unwrap_or_else(|e| panic!("{e}")).is_none());
    let once =
        store.get_registration_token("once").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("once"));
    assert_eq!((once.pending, once.completed), (0, 0), "ending the session releases the use");
    assert!(must(store.registration_token_is_valid("once").await));

    // An expired session releases its use as well.
    assert_eq!(stage("s3", "once").await, TokenStage::Reserved);
    exec(&store, "UPDATE uia_sessions SET created_ts = 0 WHERE session_id = 's3'").await;
    assert!(store.get_uia_session("s3").await.unwrap_or_else(|e| panic!("{e}")).is_none(), "expired sessions are gone");
    let expired = store.expire_uia_sessions().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(expired, 1);
    let once =
        store.get_registration_token("once").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("once"));
    assert_eq!(once.pending, 0);

    assert!(must(store.delete_registration_token("once").await));
    assert!(!must(store.delete_registration_token("once").await));
    assert!(store.get_registration_token("once").await.unwrap_or_else(|e| panic!("{e}")).is_none());
}

/// A write that gives up early (an invalid token) must leave nothing locked: the next writer,
/// which reads before it writes, goes through at once, however quickly it follows.
async fn abandoned_writes_leave_no_lock(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    store.create_registration_token("plenty", None, None).await.unwrap_or_else(|e| panic!("{e}"));
    for i in 0..200 {
        let session = format!("s{i}");
        store.create_uia_session(&session, "register", None).await.unwrap_or_else(|e| panic!("{e}"));
        let refused = store.complete_registration_token_stage(&session, "no-such-token").await;
        assert_eq!(refused.unwrap_or_else(|e| panic!("round {i}: refusing a token failed: {e}")), TokenStage::Invalid);
        let accepted = store.complete_registration_token_stage(&session, "plenty").await;
        assert_eq!(accepted.unwrap_or_else(|e| panic!("round {i}: the next write failed: {e}")), TokenStage::Reserved);
    }
}

/// A small room written through `persist_event` reads back through every reader.
async fn room_graph_round_trip(backend: Backend) {
    let (store, db) = fresh(backend).await;
    let room = "!room:test";
    let alice = "@alice:test";
    let base = |stream: i64, id: &str, event_type: &str, state_key: Option<&str>, prev: &[&str]| PersistEvent {
        stream_ordering: stream,
        event_id: id.to_owned(),
        room_id: room.to_owned(),
        sender: alice.to_owned(),
        event_type: event_type.to_owned(),
        state_key: state_key.map(str::to_owned),
        depth: stream,
        origin_server_ts: 1_000 + stream,
        pdu: format!(r#"{{"n":{stream}}}"#),
        prev_events: prev.iter().map(|p| p.to_string()).collect(),
        auth_events: if stream > 1 { vec!["$create".to_owned()] } else { vec![] },
        update_extremities: true,
        ..PersistEvent::default()
    };
    let entry = |t: &str, k: &str, e: &str| (t.to_owned(), k.to_owned(), e.to_owned());
    let set = |t: &str, k: &str, e: &str| CurrentStateChange {
        event_type: t.to_owned(),
        state_key: k.to_owned(),
        event_id: Some(e.to_owned()),
    };
    let member = |membership: &str, e: &str| MembershipChange {
        user_id: alice.to_owned(),
        membership: membership.to_owned(),
        event_id: e.to_owned(),
    };

    let mut create = base(1, "$create", "m.room.create", Some(""), &[]);
    create.new_room =
        Some(NewRoom { room_version: "12".to_owned(), creator: Some(alice.to_owned()), is_public: false });
    create.new_state_groups = vec![NewStateGroup {
        id: 1,
        prev_group: None,
        chain_length: 0,
        entries: vec![entry("m.room.create", "", "$create")],
    }];
    create.current_state = vec![set("m.room.create", "", "$create")];
    create.current_state_group = Some(1);

    let mut join = base(2, "$join", "m.room.member", Some(alice), &["$create"]);
    join.state_group = Some(1);
    join.new_state_groups = vec![NewStateGroup {
        id: 2,
        prev_group: Some(1),
        chain_length: 1,
        entries: vec![entry("m.room.member", alice, "$join")],
    }];
    join.current_state = vec![set("m.room.member", alice, "$join")];
    join.memberships = vec![member("join", "$join")];
    join.current_state_group = Some(2);

    let mut message = base(3, "$message", "m.room.message", None, &["$join"]);
    message.state_group = Some(2);
    message.txn = Some(TxnKey { user_id: alice.to_owned(), device_id: "DEV".to_owned(), txn_id: "t1".to_owned() });

    let mut outlier = base(4, "$outlier", "m.room.message", None, &["$message"]);
    outlier.outlier = true;
    outlier.update_extremities = false;
    let mut rejected = base(5, "$rejected", "m.room.message", None, &["$message"]);
    rejected.rejected_reason = Some("auth".to_owned());
    rejected.update_extremities = false;
    let mut soft_failed = base(6, "$soft", "m.room.message", None, &["$message"]);
    soft_failed.soft_failed = true;
    soft_failed.update_extremities = false;

    let mut redaction = base(7, "$redaction", "m.room.redaction", None, &["$message"]);
    redaction.state_group = Some(2);
    redaction.redaction = Some(Redaction { target_event_id: "$message".to_owned(), redacted_pdu: "{}".to_owned() });

    let mut leave = base(8, "$leave", "m.room.member", Some(alice), &["$redaction"]);
    leave.state_group = Some(2);
    leave.new_state_groups = vec![NewStateGroup {
        id: 8,
        prev_group: Some(2),
        chain_length: 2,
        entries: vec![entry("m.room.member", alice, "$leave")],
    }];
    leave.current_state = vec![set("m.room.member", alice, "$leave")];
    leave.memberships = vec![member("leave", "$leave")];
    leave.current_state_group = Some(8);

    // `memberships_of` is cached per user: each read below follows the write before it.
    let memberships = |store: &Store| {
        let store = store.clone();
        async move {
            let rows = store.memberships_of(alice).await.unwrap_or_else(|e| panic!("{e}"));
            rows.into_iter().map(|row| (row.membership, row.event_id)).collect::<Vec<_>>()
        }
    };
    assert!(memberships(&store).await.is_empty());
    for event in [&create, &join, &message, &outlier, &rejected, &soft_failed, &redaction, &leave] {
        store.persist_event(event).await.unwrap_or_else(|e| panic!("persist {}: {e}", event.event_id));
        if event.event_id == "$join" {
            assert_eq!(memberships(&store).await, [("join".to_owned(), "$join".to_owned())]);
        }
    }
    assert_eq!(memberships(&store).await, [("leave".to_owned(), "$leave".to_owned())]);

    let row = store.room(room).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("the room exists"));
    assert_eq!((row.room_version.as_str(), row.creator.as_deref(), row.is_public), ("12", Some(alice), false));
    assert_eq!(row.current_state_group, Some(8));
    assert_eq!(store.room_version(room).await.unwrap_or_else(|e| panic!("{e}")).as_deref(), Some("12"));

    let ids =
        |events: Vec<ranvier_store::events::StoredEvent>| events.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
    let timeline = |after: i64, up_to: i64, direction: Direction, limit: i64| {
        let store = store.clone();
        async move { ids(store.room_timeline(room, after, up_to, direction, limit).await.unwrap_or_else(|e| panic!("{e}"))) }
    };
    assert_eq!(
        timeline(0, 100, Direction::Forward, 100).await,
        ["$create", "$join", "$message", "$redaction", "$leave"],
        "outliers, rejected and soft-failed events stay out of the timeline"
    );
    assert_eq!(timeline(0, 100, Direction::Backward, 2).await, ["$leave", "$redaction"]);
    assert_eq!(
        timeline(1, 3, Direction::Forward, 100).await,
        ["$join", "$message"],
        "after is exclusive, up_to inclusive"
    );

    let message_row =
        store.get_event("$message").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("$message"));
    assert_eq!(message_row.redacted_by.as_deref(), Some("$redaction"));
    assert_eq!(message_row.pdu, "{}", "the redacted PDU replaces the original");
    assert_eq!(message_row.state_group, Some(2));
    let outlier_row =
        store.get_event("$outlier").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("$outlier"));
    assert!(outlier_row.outlier && !outlier_row.rejected);
    let rejected_row =
        store.get_event("$rejected").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("$rejected"));
    assert!(rejected_row.rejected);
    let mut found = ids(store
        .get_events(&["$join".to_owned(), "$nope".to_owned(), "$create".to_owned()])
        .await
        .unwrap_or_else(|e| panic!("{e}")));
    found.sort();
    assert_eq!(found, ["$create", "$join"], "unknown ids are skipped");

    let current = store.current_state_ids(room).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(current.len(), 2);
    assert_eq!(current.get(&("m.room.member".to_owned(), alice.to_owned())).map(String::as_str), Some("$leave"));
    let state_8 = store.state_group_ids(8).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(state_8, current, "the current state group matches current_state");
    assert_eq!(store.state_group_chain_length(8).await.unwrap_or_else(|e| panic!("{e}")), Some(2));

    let membership =
        store.membership(room, alice).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("membership"));
    assert_eq!(
        (membership.membership.as_str(), membership.event_id.as_str(), membership.stream_ordering),
        ("leave", "$leave", 8)
    );
    let rooms = store.rooms_for_user(alice).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rooms, vec![(room.to_owned(), "leave".to_owned(), "$leave".to_owned(), 8)]);
    store.set_room_forgotten(room, alice, true).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        store.rooms_for_user(alice).await.unwrap_or_else(|e| panic!("{e}")).is_empty(),
        "a forgotten room is not listed"
    );
    assert!(memberships(&store).await.is_empty(), "nor among the user's memberships");

    let extremities = store.forward_extremities(room).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(extremities, vec![("$leave".to_owned(), 8)], "only the newest event is a forward extremity");
    assert_eq!(store.prev_event_ids("$join").await.unwrap_or_else(|e| panic!("{e}")), ["$create"]);
    assert_eq!(store.auth_event_ids("$join").await.unwrap_or_else(|e| panic!("{e}")), ["$create"]);
    assert_eq!(
        store.txn_event_id(alice, "DEV", "t1").await.unwrap_or_else(|e| panic!("{e}")).as_deref(),
        Some("$message")
    );
    assert_eq!(
        store.txn_event_id(alice, "OTHER", "t1").await.unwrap_or_else(|e| panic!("{e}")),
        None,
        "txn ids are per device"
    );

    // The same event id cannot be stored twice, and a failed write leaves nothing behind.
    let mut duplicate = base(9, "$join", "m.room.message", None, &["$leave"]);
    duplicate.new_state_groups = vec![NewStateGroup { id: 9, prev_group: Some(8), chain_length: 3, entries: vec![] }];
    assert!(store.persist_event(&duplicate).await.is_err(), "a duplicate event id is refused");
    assert_eq!(
        store.state_group_chain_length(9).await.unwrap_or_else(|e| panic!("{e}")),
        None,
        "the transaction rolled back"
    );
    drop(store);

    let store = open(&db).await;
    assert_eq!(store.streams().current(StreamKind::Events), 8, "after reopen, events continue from the stored maximum");
    let again = ids(store.room_timeline(room, 0, 100, Direction::Forward, 100).await.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(again.len(), 5, "everything is still there after reopening");
    // The first look-up of a device loads its transaction ids; later ones answer from them.
    for round in ["loading", "loaded"] {
        let txn = |txn_id| store.txn_event_id(alice, "DEV", txn_id);
        assert_eq!(txn("t1").await.unwrap_or_else(|e| panic!("{e}")).as_deref(), Some("$message"), "{round}");
        assert_eq!(txn("t2").await.unwrap_or_else(|e| panic!("{e}")), None, "{round}: a new id");
    }
}

/// The forward extremities follow the DAG even when a parent is stored after its child (as
/// federation can deliver them): the late parent does not become an extremity, and a second
/// copy of an extremity changes nothing.
async fn extremities_with_late_parents(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let room = "!late:test";
    let event = |stream: i64, id: &str, prev: &[&str]| PersistEvent {
        stream_ordering: stream,
        event_id: id.to_owned(),
        room_id: room.to_owned(),
        sender: "@a:test".to_owned(),
        event_type: "m.room.message".to_owned(),
        depth: stream,
        pdu: "{}".to_owned(),
        prev_events: prev.iter().map(|p| p.to_string()).collect(),
        update_extremities: true,
        ..PersistEvent::default()
    };
    let extremities = || {
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store
                .forward_extremities(room)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            ids.sort();
            ids
        }
    };
    for e in [event(1, "$root", &[]), event(2, "$child", &["$parent"])] {
        store.persist_event(&e).await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(extremities().await, ["$child", "$root"], "the parent is not known yet");
    store.persist_event(&event(3, "$parent", &["$root"])).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(extremities().await, ["$child"], "the late parent replaces $root but is not an extremity itself");
    store.persist_event(&event(4, "$sibling", &["$parent"])).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(extremities().await, ["$child", "$sibling"]);
    store.persist_event(&event(5, "$merge", &["$child", "$sibling"])).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(extremities().await, ["$merge"]);
}

/// Several events written as one group (the room service's group commit) come out as if they
/// had been written one by one: one chain with one extremity, their auth edges, transaction
/// ids, relations and push outcomes; and a group of more rows than one insert carries.
async fn group_writes_match_single_writes(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let room = "!group:test";
    let event = |stream: i64, prev: &str| PersistEvent {
        stream_ordering: stream,
        event_id: format!("$e{stream}"),
        room_id: room.to_owned(),
        sender: "@a:test".to_owned(),
        event_type: "m.room.message".to_owned(),
        depth: stream,
        origin_server_ts: 1000 + stream,
        pdu: "{}".to_owned(),
        prev_events: vec![prev.to_owned()],
        auth_events: vec!["$create".to_owned(), "$power".to_owned()],
        update_extremities: true,
        txn: Some(TxnKey { user_id: "@a:test".to_owned(), device_id: "D".to_owned(), txn_id: format!("t{stream}") }),
        push_actions: (0..150)
            .map(|i| ranvier_store::push::NewPushAction {
                user_id: format!("@member{i}:test"),
                thread_id: "main".to_owned(),
                notify: true,
                highlight: i == 0,
                actions: r#"["notify"]"#.to_owned(),
            })
            .collect(),
        search_text: Some(format!("group message {stream}")),
        ..PersistEvent::default()
    };
    store.persist_event(&event(1, "$start")).await.unwrap_or_else(|e| panic!("{e}"));
    let mut group: Vec<PersistEvent> = (2..=6).map(|stream| event(stream, &format!("$e{}", stream - 1))).collect();
    group[2].relation = Some(ranvier_store::persist::NewRelation {
        relates_to_id: "$e2".to_owned(),
        rel_type: "m.annotation".to_owned(),
    });
    let refs: Vec<&PersistEvent> = group.iter().collect();
    store.persist_events(&refs).await.unwrap_or_else(|e| panic!("group: {e}"));

    let extremities = store.forward_extremities(room).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(extremities, [("$e6".to_owned(), 6)], "only the last of the chain is an extremity");
    for stream in 2..=6 {
        let id = format!("$e{stream}");
        let prev = store.prev_event_ids(&id).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(prev, [format!("$e{}", stream - 1)]);
        let mut auth = store.auth_event_ids(&id).await.unwrap_or_else(|e| panic!("{e}"));
        auth.sort();
        assert_eq!(auth, ["$create", "$power"]);
        let txn = store.txn_event_id("@a:test", "D", &format!("t{stream}")).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(txn, Some(id));
    }
    // 6 events × 150 members: 8,100 values, several inserts.
    let counts = store.unread_counts("@member0:test", room, 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((counts[0].notifications, counts[0].highlights), (6, 6));
    let counts = store.unread_counts("@member149:test", room, 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((counts[0].notifications, counts[0].highlights), (6, 0));
    let query = ranvier_store::relations::RelationsQuery {
        room_id: room,
        parent_id: "$e2",
        rel_type: None,
        event_type: None,
        depth: 1,
        after: 0,
        up_to: 100,
        direction: Direction::Forward,
        limit: 10,
    };
    let children = store.relations_page(&query).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(children.into_iter().map(|event| event.event_id).collect::<Vec<_>>(), ["$e4"]);
    let timeline = store.room_timeline(room, 0, 100, Direction::Forward, 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(timeline.len(), 6);
    let rooms = [ranvier_store::search::SearchRoom { room_id: room.to_owned(), up_to: None }];
    let scope = ranvier_store::search::SearchScope { rooms: &rooms, event_types: &["m.room.message"], up_to: 100 };
    let searched = |term: &'static str| {
        let store = store.clone();
        async move {
            let query = ranvier_store::search::SearchQuery::parse(term);
            store.search_count(&query, &scope).await.unwrap_or_else(|e| panic!("search {term}: {e}"))
        }
    };
    assert_eq!(searched("group").await, 6, "every event's text is indexed");
    assert_eq!(searched("5").await, 1);

    // A group whose insert fails (an event id already stored) writes nothing.
    let mut fresh_one = event(7, "$e6");
    fresh_one.txn = None;
    assert!(store.persist_events(&[&fresh_one, &group[4]]).await.is_err());
    assert_eq!(store.forward_extremities(room).await.unwrap_or_else(|e| panic!("{e}")), [("$e6".to_owned(), 6)]);
    assert!(store.get_event("$e7").await.unwrap_or_else(|e| panic!("{e}")).is_none());
    assert_eq!(searched("7").await, 0, "nor its text");
    assert_eq!(store.txn_event_id("@a:test", "D", "t7").await.unwrap_or_else(|e| panic!("{e}")), None);

    // A small group (on PostgreSQL one statement) whose last event already has a child stored,
    // as federation can deliver it: neither the group's cited events nor that one become
    // extremities, and the one the group builds on stops being one.
    let quiet = |stream: i64, prev: &str| PersistEvent { push_actions: Vec::new(), ..event(stream, prev) };
    store.persist_event(&quiet(20, "$e11")).await.unwrap_or_else(|e| panic!("{e}"));
    let small: Vec<PersistEvent> = (7..=11).map(|stream| quiet(stream, &format!("$e{}", stream - 1))).collect();
    let refs: Vec<&PersistEvent> = small.iter().collect();
    store.persist_events(&refs).await.unwrap_or_else(|e| panic!("small group: {e}"));
    assert_eq!(store.forward_extremities(room).await.unwrap_or_else(|e| panic!("{e}")), [("$e20".to_owned(), 20)]);
    assert_eq!(
        store.room_timeline(room, 0, 100, Direction::Forward, 100).await.unwrap_or_else(|e| panic!("{e}")).len(),
        12
    );
}

/// A state snapshot of a large room (more entries than one insert statement carries, and
/// more values than one combined SQLite statement takes) is stored whole, together with the
/// current state of the same event.
async fn large_state_snapshot(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let room = "!big:test";
    let members: Vec<String> = (0..1500).map(|i| format!("@member{i}:test")).collect();
    let mut event = PersistEvent {
        stream_ordering: 1,
        event_id: "$snapshot".to_owned(),
        room_id: room.to_owned(),
        sender: "@a:test".to_owned(),
        event_type: "m.room.member".to_owned(),
        state_key: Some("@a:test".to_owned()),
        depth: 1,
        pdu: "{}".to_owned(),
        update_extremities: true,
        new_room: Some(NewRoom { room_version: "12".to_owned(), creator: None, is_public: true }),
        current_state_group: Some(1),
        ..PersistEvent::default()
    };
    let entries: Vec<(String, String, String)> =
        members.iter().map(|m| ("m.room.member".to_owned(), m.clone(), format!("$join-{m}"))).collect();
    event.new_state_groups = vec![NewStateGroup { id: 1, prev_group: None, chain_length: 0, entries: entries.clone() }];
    event.current_state = entries
        .iter()
        .map(|(t, k, e)| CurrentStateChange { event_type: t.clone(), state_key: k.clone(), event_id: Some(e.clone()) })
        .collect();
    store.persist_event(&event).await.unwrap_or_else(|e| panic!("{e}"));

    let group = store.state_group_ids(1).await.unwrap_or_else(|e| panic!("{e}"));
    let current = store.current_state_ids(room).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(group.len(), 1500);
    assert_eq!(group, current);
    assert_eq!(
        group.get(&("m.room.member".to_owned(), "@member1499:test".to_owned())).map(String::as_str),
        Some("$join-@member1499:test")
    );
    assert_eq!(
        store.forward_extremities(room).await.unwrap_or_else(|e| panic!("{e}")),
        vec![("$snapshot".to_owned(), 1)]
    );
}

/// PostgreSQL connections that the server closed while they sat in the pool are replaced
/// before use, not handed to a query (the pool checks connections idle for a second or more).
async fn dead_connections_are_replaced(backend: Backend) {
    if backend != Backend::Postgres {
        return;
    }
    let (store, _db) = fresh(backend).await;
    // Fill the pool with several open connections.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(store.conn().await.unwrap_or_else(|e| panic!("{e}")));
    }
    drop(held);
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(store.pool())
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!killed.is_empty(), "other connections of the pool existed");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    for i in 0..8 {
        let user = format!("@after{i}:test");
        assert!(store.create_user(&user, None, false).await.unwrap_or_else(|e| panic!("query {i}: {e}")));
        assert!(store.get_user(&user).await.unwrap_or_else(|e| panic!("query {i}: {e}")).is_some());
    }
}

/// Writes go through their own connection on SQLite: whatever a write transaction commits is
/// visible to the readers at once, and a rolled-back one leaves nothing, however the two kinds
/// of statements interleave.
async fn writes_visible_to_readers_at_once(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    for i in 0..20 {
        let user = format!("@u{i}:test");
        let mut txn = store.begin_write().await.unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("INSERT INTO users (user_id, password_hash, created_ts) VALUES ($1, NULL, 0)")
            .bind(&user)
            .execute(&mut *txn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if i % 2 == 0 {
            txn.commit().await.unwrap_or_else(|e| panic!("{e}"));
        } else {
            drop(txn);
        }
        let found = store.get_user(&user).await.unwrap_or_else(|e| panic!("{e}")).is_some();
        assert_eq!(found, i % 2 == 0, "{user}: committed writes are seen, rolled back ones are not");
    }
}

/// The SQLite writer gets the page cache the store is opened with, and each reader half of it
/// (PostgreSQL has no such setting; the store opens there all the same).
async fn sqlite_page_cache_follows_the_setting(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = Store::open_with_cache(&db.url(), 4, 0, 300).await.unwrap_or_else(|e| panic!("open store: {e}"));
    if backend != Backend::Sqlite {
        return;
    }
    // Two reads at once, so that a second reader connection is likely to be opened too.
    let (a, b) = tokio::join!(
        sqlx::query_as::<_, (i64,)>("PRAGMA cache_size").fetch_one(store.pool()),
        sqlx::query_as::<_, (i64,)>("PRAGMA cache_size").fetch_one(store.pool()),
    );
    for read in [a, b] {
        assert_eq!(read.unwrap_or_else(|e| panic!("{e}")).0, -150, "a reader's cache_size (negative: KiB)");
    }
    let mut txn = store.begin_write().await.unwrap_or_else(|e| panic!("{e}"));
    let (size,): (i64,) =
        sqlx::query_as("PRAGMA cache_size").fetch_one(&mut *txn).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(size, -300, "the writer's cache_size (negative: KiB)");
}

/// The tables migrations 0011 and 0012 rebuild (SQLite) or re-key (PostgreSQL), in the shape
/// they had before them, so that the migrations can be run again over rows written in that
/// shape.
const BEFORE_0011_SQLITE: &str = "
    DROP TABLE events; DROP TABLE event_edges; DROP TABLE event_auth; DROP TABLE forward_extremities;
    DROP TABLE event_txn_ids; DROP TABLE event_push_actions;
    CREATE TABLE events (stream_ordering BIGINT PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, room_id TEXT NOT NULL,
        sender TEXT NOT NULL, event_type TEXT NOT NULL, state_key TEXT, depth BIGINT NOT NULL,
        origin_server_ts BIGINT NOT NULL, pdu TEXT NOT NULL, outlier BIGINT NOT NULL DEFAULT 0, rejected_reason TEXT,
        soft_failed BIGINT NOT NULL DEFAULT 0, redacted_by TEXT, state_group BIGINT);
    CREATE INDEX events_by_room ON events (room_id, stream_ordering);
    CREATE INDEX events_by_room_ts ON events (room_id, origin_server_ts);
    CREATE INDEX events_by_room_type_key ON events (room_id, event_type, state_key);
    CREATE TABLE event_edges (event_id TEXT NOT NULL, prev_event_id TEXT NOT NULL, PRIMARY KEY (event_id, prev_event_id));
    CREATE INDEX event_edges_by_prev ON event_edges (prev_event_id);
    CREATE TABLE event_auth (event_id TEXT NOT NULL, auth_event_id TEXT NOT NULL, PRIMARY KEY (event_id, auth_event_id));
    CREATE INDEX event_auth_by_auth ON event_auth (auth_event_id);
    CREATE TABLE forward_extremities (room_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (room_id, event_id));
    CREATE TABLE event_txn_ids (user_id TEXT NOT NULL, device_id TEXT NOT NULL, txn_id TEXT NOT NULL,
        event_id TEXT NOT NULL, PRIMARY KEY (user_id, device_id, txn_id));
    CREATE INDEX event_txn_ids_by_event ON event_txn_ids (event_id);
    CREATE TABLE event_push_actions (user_id TEXT NOT NULL, room_id TEXT NOT NULL, event_id TEXT NOT NULL,
        stream_ordering BIGINT NOT NULL, thread_id TEXT NOT NULL, notify BIGINT NOT NULL, highlight BIGINT NOT NULL,
        actions TEXT NOT NULL, ts BIGINT NOT NULL, PRIMARY KEY (user_id, event_id));
    CREATE INDEX event_push_actions_by_room ON event_push_actions (user_id, room_id, stream_ordering);
    CREATE INDEX event_push_actions_by_user ON event_push_actions (user_id, stream_ordering);
    CREATE INDEX event_push_actions_by_event ON event_push_actions (event_id);
    DELETE FROM schema_version WHERE version IN (11, 12);
";
const BEFORE_0011_POSTGRES: &str = "
    ALTER TABLE event_push_actions DROP CONSTRAINT event_push_actions_pkey;
    ALTER TABLE event_push_actions ADD PRIMARY KEY (user_id, event_id);
    CREATE INDEX event_push_actions_by_room ON event_push_actions (user_id, room_id, stream_ordering);
    CREATE INDEX event_auth_by_auth ON event_auth (auth_event_id);
    DROP INDEX event_push_actions_by_stream;
    CREATE INDEX event_push_actions_by_event ON event_push_actions (event_id);
    DELETE FROM schema_version WHERE version IN (11, 12);
";

/// Migrations 0011 and 0012 keep every row of the tables they rebuild or re-key, and the store
/// reads and writes them as before afterwards.
async fn migrations_0011_and_0012_keep_the_rows(backend: Backend) {
    let (store, db) = fresh(backend).await;
    let before = match backend {
        Backend::Sqlite => BEFORE_0011_SQLITE,
        Backend::Postgres => BEFORE_0011_POSTGRES,
    };
    sqlx::raw_sql(before).execute(store.pool()).await.unwrap_or_else(|e| panic!("old schema: {e}"));
    let statements = [
        "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, state_key, depth, \
         origin_server_ts, pdu) VALUES (7, '$a', '!r:test', '@a:test', 'm.room.message', NULL, 3, 70, '{}')",
        "INSERT INTO event_edges (event_id, prev_event_id) VALUES ('$a', '$p')",
        "INSERT INTO event_auth (event_id, auth_event_id) VALUES ('$a', '$c')",
        "INSERT INTO forward_extremities (room_id, event_id) VALUES ('!r:test', '$a')",
        "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id) VALUES ('@a:test', 'D', 't1', '$a')",
        "INSERT INTO event_push_actions (user_id, room_id, event_id, stream_ordering, thread_id, notify, highlight, \
         actions, ts) VALUES ('@b:test', '!r:test', '$a', 7, 'main', 1, 1, '[\"notify\"]', 70)",
    ];
    for sql in statements {
        sqlx::query(sql).execute(store.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    drop(store);
    let store = open(&db).await;
    // Reopening ran both migrations: 11 (keys and WITHOUT ROWID tables) and 12 (push actions
    // as a rowid table on SQLite, an index swapped on PostgreSQL).
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_version WHERE version IN (11, 12) ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(versions, [11, 12], "the migrations ran again");
    let event = store.get_event("$a").await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("event kept"));
    assert_eq!((event.stream_ordering, event.room_id.as_str(), event.depth), (7, "!r:test", 3));
    assert_eq!(store.prev_event_ids("$a").await.unwrap_or_else(|e| panic!("{e}")), ["$p"]);
    assert_eq!(store.auth_event_ids("$a").await.unwrap_or_else(|e| panic!("{e}")), ["$c"]);
    assert_eq!(store.forward_extremities("!r:test").await.unwrap_or_else(|e| panic!("{e}")), [("$a".to_owned(), 3)]);
    assert_eq!(store.txn_event_id("@a:test", "D", "t1").await.unwrap_or_else(|e| panic!("{e}")).as_deref(), Some("$a"));
    let counts = store.unread_counts("@b:test", "!r:test", 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!((counts[0].notifications, counts[0].highlights), (1, 1));
    let notifications = store.notifications("@b:test", None, 10, false).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(notifications.len(), 1);
    // The key still allows one row per user and event.
    let again = sqlx::query(
        "INSERT INTO event_push_actions (user_id, room_id, event_id, stream_ordering, thread_id, notify, highlight, \
         actions, ts) VALUES ('@b:test', '!r:test', '$a', 7, 'main', 1, 0, '[]', 70)",
    )
    .execute(store.pool())
    .await;
    assert!(again.is_err(), "a second row for the same user and event is refused");
}

/// Reads through the event cache follow the rows: an event read (and so cached) before a
/// redaction reads redacted after it, by id and by timeline position, and what the writer put
/// in the cache is what a store with an empty cache reads from the database.
async fn cached_reads_follow_redactions(backend: Backend) {
    let (store, db) = fresh(backend).await;
    let room = "!cache:test";
    let event = |stream: i64, event_id: &str, prev: &str| PersistEvent {
        stream_ordering: stream,
        event_id: event_id.to_owned(),
        room_id: room.to_owned(),
        sender: "@a:test".to_owned(),
        event_type: "m.room.message".to_owned(),
        depth: stream,
        origin_server_ts: 1000 + stream,
        pdu: format!(r#"{{"n":{stream}}}"#),
        prev_events: vec![prev.to_owned()],
        update_extremities: true,
        ..PersistEvent::default()
    };
    store.persist_event(&event(1, "$a", "$start")).await.unwrap_or_else(|e| panic!("{e}"));
    store.persist_event(&event(2, "$b", "$a")).await.unwrap_or_else(|e| panic!("{e}"));
    let read = |store: &Store, event_id: &'static str| {
        let store = store.clone();
        async move {
            store.get_event(event_id).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("{event_id}"))
        }
    };
    let a = read(&store, "$a").await;
    assert_eq!((a.pdu.as_str(), a.redacted_by.as_deref()), (r#"{"n":1}"#, None));

    let mut redaction = event(3, "$r", "$b");
    redaction.event_type = "m.room.redaction".to_owned();
    redaction.redaction = Some(Redaction { target_event_id: "$a".to_owned(), redacted_pdu: "{}".to_owned() });
    store.persist_event(&redaction).await.unwrap_or_else(|e| panic!("{e}"));

    let redacted = |event: &ranvier_store::events::StoredEvent| (event.pdu.clone(), event.redacted_by.clone());
    let expected = ("{}".to_owned(), Some("$r".to_owned()));
    assert_eq!(redacted(&read(&store, "$a").await), expected, "by id");
    let many = store.get_events(&["$a".into(), "$b".into(), "$a".into()]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(many.len(), 2, "each event once");
    let a = many.iter().find(|event| event.event_id == "$a").unwrap_or_else(|| panic!("{many:?}"));
    assert_eq!(redacted(a), expected, "by ids");
    let timeline = store.room_timeline(room, 0, 10, Direction::Backward, 10).await.unwrap_or_else(|e| panic!("{e}"));
    let order: Vec<&str> = timeline.iter().map(|event| event.event_id.as_str()).collect();
    assert_eq!(order, ["$r", "$b", "$a"]);
    assert_eq!(redacted(&timeline[2]), expected, "by position");
    let batches = store.rooms_timelines(&[(room.to_owned(), 1, 10)], 10).await.unwrap_or_else(|e| panic!("{e}"));
    let order: Vec<&str> = batches[room].iter().map(|event| event.event_id.as_str()).collect();
    assert_eq!(order, ["$r", "$b"], "after 1, newest first");

    // A store with an empty cache reads the same from the database.
    let other = open(&db).await;
    for event_id in ["$a", "$b", "$r"] {
        let cached = format!("{:?}", read(&store, event_id).await);
        assert_eq!(cached, format!("{:?}", read(&other, event_id).await), "{event_id}");
    }
}

/// A write transaction dropped without a commit leaves nothing behind, whatever comes after
/// it: the next transaction commits only its own rows, and a reader sees the dropped rows
/// neither before nor after.
async fn dropped_write_transactions_leave_nothing(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let count = |store: &Store, key: &'static str| {
        let store = store.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM filters WHERE filter_json = $1")
                .bind(key)
                .fetch_one(store.pool())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            n
        }
    };
    let insert = "INSERT INTO filters (user_id, filter_id, filter_json) VALUES ('@a:test', $1, $2)";
    {
        let mut txn = store.begin_write().await.unwrap_or_else(|e| panic!("{e}"));
        sqlx::query(insert).bind(1i64).bind("dropped").execute(&mut *txn).await.unwrap_or_else(|e| panic!("{e}"));
        // Dropped here, without a commit.
    }
    assert_eq!(count(&store, "dropped").await, 0);
    let mut txn = store.begin_write().await.unwrap_or_else(|e| panic!("{e}"));
    sqlx::query(insert).bind(2i64).bind("kept").execute(&mut *txn).await.unwrap_or_else(|e| panic!("{e}"));
    txn.commit().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((count(&store, "dropped").await, count(&store, "kept").await), (0, 1));
}

backend_tests!(
    dropped_write_transactions_leave_nothing,
    sqlite_page_cache_follows_the_setting,
    cached_reads_follow_redactions,
    extremities_with_late_parents,
    group_writes_match_single_writes,
    dead_connections_are_replaced,
    large_state_snapshot,
    writes_visible_to_readers_at_once,
    filters_numbered_per_user,
    registration_tokens_and_uia_sessions,
    abandoned_writes_leave_no_lock,
    room_graph_round_trip,
    migrations_are_idempotent,
    migrations_0011_and_0012_keep_the_rows,
    accounts_round_trip,
    token_deletion,
    account_data_ranges,
    stream_positions_seeded_after_reopen,
    state_group_delta_chains,
);
