//! Test fixtures: throwaway stores on each backend and rooms written straight into the tables
//! (events with PDU JSON, delta-chained state groups, current state, memberships), so that the
//! read side can be tested without the write path.
//!
//! Compiled for this crate's tests and, with the `fixtures` feature, for other crates' tests.

use std::future::Future;

use ranvier_store::{
    Backend, Store, StreamKind,
    events::StateIds,
    persist::{CurrentStateChange, MembershipChange, NewStateGroup, PersistEvent},
};
use serde_json::{Value, json};

/// The backends named in `RANVIER_TEST_BACKENDS` (default: both).
fn configured_backends() -> Vec<Backend> {
    match std::env::var("RANVIER_TEST_BACKENDS") {
        Err(_) => vec![Backend::Sqlite, Backend::Postgres],
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| match name {
                "sqlite" => Backend::Sqlite,
                "postgres" | "postgresql" | "pg" => Backend::Postgres,
                other => panic!("RANVIER_TEST_BACKENDS names an unknown backend `{other}`"),
            })
            .collect(),
    }
}

fn postgres_admin_url() -> String {
    std::env::var("RANVIER_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1/postgres".to_owned())
}

/// Run `scenario` on a fresh store of every configured backend. PostgreSQL gets a uniquely
/// named database, dropped afterwards; if PostgreSQL is configured but unreachable the
/// backend is skipped with a message (CI sets `RANVIER_TEST_BACKENDS` to make it mandatory).
pub async fn on_each_backend<F, Fut>(scenario: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in configured_backends() {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                let store = Store::open(&url, 4).await.expect("open sqlite store");
                scenario(store).await;
            }
            Backend::Postgres => {
                use sqlx::{Connection, Executor};
                let admin_url = postgres_admin_url();
                let mut admin = match sqlx::postgres::PgConnection::connect(&admin_url).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        if std::env::var("RANVIER_TEST_BACKENDS").is_ok() {
                            panic!("PostgreSQL is required but unreachable at {admin_url}: {e}");
                        }
                        eprintln!("skipped postgres: unreachable at {admin_url}: {e}");
                        continue;
                    }
                };
                let name = format!("ranvier_sync_test_{}", ranvier_core::util::random_string(12).to_lowercase());
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
                let store = Store::open(&format!("{base}/{name}"), 4).await.expect("open postgres store");
                scenario(store.clone()).await;
                store.pool().close().await;
                drop(store);
                admin
                    .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .await
                    .expect("drop test database");
            }
        }
    }
}

/// A room being written by a test.
#[derive(Clone, Debug)]
pub struct RoomFixture {
    pub room_id: String,
    /// The state group holding the state after the last event.
    pub state_group: i64,
    pub state: StateIds,
    depth: i64,
}

/// A written event: its id and stream position.
#[derive(Clone, Debug)]
pub struct Written {
    pub event_id: String,
    pub stream_ordering: i64,
}

/// The `origin_server_ts` fixtures give the event at `position`: one second apart.
pub fn fixture_ts(position: i64) -> i64 {
    1_700_000_000_000 + position * 1000
}

impl RoomFixture {
    /// Create a room: `m.room.create`, the creator's join, power levels, public join rules and
    /// the given history visibility.
    pub async fn create(store: &Store, room_id: &str, creator: &str, history_visibility: &str) -> RoomFixture {
        sqlx::query("INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, '11', $2, $3)")
            .bind(room_id)
            .bind(creator)
            .bind(0i64)
            .execute(store.pool())
            .await
            .expect("insert room");
        // The empty state before the create event gets a group of its own (negative ids do not
        // collide with the stream positions that name other groups).
        let root = -(store.streams().current(StreamKind::Events) + 1_000_000);
        sqlx::query("INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES ($1, $2, NULL, 0)")
            .bind(root)
            .bind(room_id)
            .execute(store.pool())
            .await
            .expect("insert root state group");
        let mut room = RoomFixture { room_id: room_id.to_owned(), state_group: root, state: StateIds::new(), depth: 0 };
        room.state_event(store, creator, "m.room.create", "", json!({"creator": creator, "room_version": "11"})).await;
        room.membership(store, creator, creator, "join").await;
        room.state_event(store, creator, "m.room.power_levels", "", json!({"users": {creator: 100}})).await;
        room.state_event(store, creator, "m.room.join_rules", "", json!({"join_rule": "public"})).await;
        room.state_event(
            store,
            creator,
            "m.room.history_visibility",
            "",
            json!({"history_visibility": history_visibility}),
        )
        .await;
        room
    }

    /// Send a message event.
    pub async fn message(&mut self, store: &Store, sender: &str, body: &str) -> Written {
        self.write(store, sender, "m.room.message", None, json!({"msgtype": "m.text", "body": body})).await
    }

    /// Send a state event.
    pub async fn state_event(
        &mut self,
        store: &Store,
        sender: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> Written {
        self.write(store, sender, event_type, Some(state_key), content).await
    }

    /// Change `target`'s membership (sent by `sender`).
    pub async fn membership(&mut self, store: &Store, sender: &str, target: &str, membership: &str) -> Written {
        self.write(store, sender, "m.room.member", Some(target), json!({"membership": membership})).await
    }

    /// Write one event with the bookkeeping the write path keeps: a new state group for state
    /// events (a delta on the previous one), current state and memberships.
    pub async fn write(
        &mut self,
        store: &Store,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Written {
        let guard = store.streams().allocate(StreamKind::Events);
        let position = guard.position();
        let event_id = format!("$fixture{position}_{}", self.room_id.trim_start_matches('!').replace(':', "_"));
        self.depth += 1;
        let mut pdu = json!({
            "room_id": self.room_id,
            "sender": sender,
            "type": event_type,
            "content": content,
            "origin_server_ts": fixture_ts(position),
            "depth": self.depth,
            "prev_events": [],
            "auth_events": [],
            "hashes": {"sha256": "x"},
            "signatures": {},
        });
        if let Some(state_key) = state_key {
            pdu["state_key"] = json!(state_key);
        }
        let mut event = PersistEvent {
            stream_ordering: position,
            event_id: event_id.clone(),
            room_id: self.room_id.clone(),
            sender: sender.to_owned(),
            event_type: event_type.to_owned(),
            state_key: state_key.map(str::to_owned),
            depth: self.depth,
            origin_server_ts: fixture_ts(position),
            pdu: pdu.to_string(),
            state_group: Some(self.state_group),
            ..PersistEvent::default()
        };
        if let Some(state_key) = state_key {
            event.new_state_groups = vec![NewStateGroup {
                id: position,
                prev_group: Some(self.state_group),
                chain_length: 0,
                entries: vec![(event_type.to_owned(), state_key.to_owned(), event_id.clone())],
            }];
            event.current_state = vec![CurrentStateChange {
                event_type: event_type.to_owned(),
                state_key: state_key.to_owned(),
                event_id: Some(event_id.clone()),
            }];
            event.current_state_group = Some(position);
            if event_type == "m.room.member" {
                let membership = pdu["content"]["membership"].as_str().unwrap_or("leave").to_owned();
                event.memberships =
                    vec![MembershipChange { user_id: state_key.to_owned(), membership, event_id: event_id.clone() }];
            }
            self.state.insert((event_type.to_owned(), state_key.to_owned()), event_id.clone());
            self.state_group = position;
        }
        // The store's own write path, so that its caches follow.
        store.persist_event(&event).await.expect("persist fixture event");
        drop(guard);
        Written { event_id, stream_ordering: position }
    }
}

/// Record that `device_id` of `user_id` sent `event_id` with transaction id `txn_id`.
pub async fn record_transaction(store: &Store, user_id: &str, device_id: &str, txn_id: &str, event_id: &str) {
    sqlx::query("INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id) VALUES ($1, $2, $3, $4)")
        .bind(user_id)
        .bind(device_id)
        .bind(txn_id)
        .bind(event_id)
        .execute(store.pool())
        .await
        .expect("insert transaction id");
}
