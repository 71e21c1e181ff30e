//! Storage conformance: the same tests run against SQLite (a file in a temporary directory)
//! and PostgreSQL (a fresh database), so that both backends keep exactly the same behaviour.
//!
//! Each test is an `async fn(Backend)`; `backend_tests!` turns it into `name::sqlite` and
//! `name::postgres`. `RANVIER_TEST_BACKENDS` chooses which of them really run.

use std::collections::HashMap;

use ranvier_store::{Store, StreamKind};
use ranvier_test::{Backend, TestDatabase, backend_tests};

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
    let numbers: Vec<i64> = first.iter().map(|(version, _)| *version).collect();
    assert_eq!(numbers, (1..=first.len() as i64).collect::<Vec<_>>(), "versions are numbered without gaps");
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

    // Sanity: the same answers through a connection, as used inside transactions.
    let mut conn = store.conn().await.unwrap_or_else(|e| panic!("{e}"));
    let through_conn: HashMap<(String, String), String> =
        ranvier_store::events::state_group_ids(&mut conn, 15).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(through_conn.len(), 4);
}

backend_tests!(
    migrations_are_idempotent,
    accounts_round_trip,
    token_deletion,
    account_data_ranges,
    stream_positions_seeded_after_reopen,
    state_group_delta_chains,
);
