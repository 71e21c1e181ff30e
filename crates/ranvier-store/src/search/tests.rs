//! Conformance tests of search, reports and mutual rooms: every test runs on SQLite and on
//! PostgreSQL (a fresh database, dropped afterwards), as `name::sqlite` and `name::postgres`.

use ranvier_test::{Backend, TestDatabase, backend_tests};

use super::{SearchHit, SearchOrder, SearchQuery, SearchRoom, SearchScope};
use crate::{
    Store,
    persist::{MembershipChange, PersistEvent, Redaction},
    reports::{NewReport, ReportKind, ReportQuery},
};

async fn open(db: &TestDatabase) -> Store {
    match Store::open(&db.url(), 4).await {
        Ok(store) => store,
        Err(e) => panic!("open {} store: {e}", db.backend().name()),
    }
}

/// A test room: events are persisted through the one write path with consecutive positions.
struct Room<'a> {
    store: &'a Store,
    room_id: &'static str,
}

impl Room<'_> {
    /// Persist a message (indexed) at `position`, returning its event id.
    async fn message(&self, position: i64, sender: &str, body: &str) -> String {
        self.event(position, sender, "m.room.message", None, serde_json::json!({ "body": body }), Some(body)).await
    }

    async fn event(
        &self,
        position: i64,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: serde_json::Value,
        search_text: Option<&str>,
    ) -> String {
        let event_id = format!("$e{position}");
        let pdu = serde_json::json!({ "type": event_type, "content": content, "sender": sender });
        let event = PersistEvent {
            stream_ordering: position,
            event_id: event_id.clone(),
            room_id: self.room_id.to_owned(),
            sender: sender.to_owned(),
            event_type: event_type.to_owned(),
            state_key: state_key.map(str::to_owned),
            depth: position,
            origin_server_ts: 1_000 + position,
            pdu: pdu.to_string(),
            search_text: search_text.map(str::to_owned),
            ..PersistEvent::default()
        };
        self.store.persist_event(&event).await.unwrap_or_else(|e| panic!("persist {event_id}: {e}"));
        event_id
    }

    async fn redact(&self, position: i64, target: &str) {
        let event = PersistEvent {
            stream_ordering: position,
            event_id: format!("$e{position}"),
            room_id: self.room_id.to_owned(),
            sender: "@mod:test".to_owned(),
            event_type: "m.room.redaction".to_owned(),
            depth: position,
            pdu: "{}".to_owned(),
            redaction: Some(Redaction { target_event_id: target.to_owned(), redacted_pdu: "{}".to_owned() }),
            ..PersistEvent::default()
        };
        self.store.persist_event(&event).await.unwrap_or_else(|e| panic!("persist redaction: {e}"));
    }
}

fn whole(room_id: &str) -> SearchRoom {
    SearchRoom { room_id: room_id.to_owned(), up_to: None }
}

const MESSAGES: &[&str] = &["m.room.message"];
const ALL_TYPES: &[&str] = &["m.room.message", "m.room.name", "m.room.topic"];

async fn search(store: &Store, term: &str, scope: &SearchScope<'_>, order: SearchOrder, limit: i64) -> Vec<SearchHit> {
    store
        .search_events(&SearchQuery::parse(term), scope, order, limit)
        .await
        .unwrap_or_else(|e| panic!("search {term:?}: {e}"))
}

async fn ids(store: &Store, term: &str, scope: &SearchScope<'_>, order: SearchOrder) -> Vec<String> {
    search(store, term, scope, order, 100).await.into_iter().map(|hit| hit.event.event_id).collect()
}

async fn count(store: &Store, term: &str, scope: &SearchScope<'_>) -> i64 {
    store.search_count(&SearchQuery::parse(term), scope).await.unwrap_or_else(|e| panic!("count {term:?}: {e}"))
}

const NEWEST: SearchOrder = SearchOrder::Recent { before: i64::MAX };
const BEST: SearchOrder = SearchOrder::Rank { offset: 0 };

/// The query language, stemming, case and punctuation behave the same on both backends.
async fn matching_rules(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    let room = Room { store: &store, room_id: "!a:test" };
    let m1 = room.message(1, "@alice:test", "Martians landed near the old mill").await;
    let m2 = room.message(2, "@bob:test", "The little green men came from Mars").await;
    let m3 = room.message(3, "@alice:test", "Visit ranvier.org for the chronicles of a martian").await;
    let m4 = room.message(4, "@bob:test", "running late, sorry").await;
    let rooms = [whole("!a:test")];
    let scope = SearchScope { rooms: &rooms, event_types: MESSAGES, up_to: i64::MAX };

    assert_eq!(ids(&store, "martian", &scope, NEWEST).await, [m3.clone(), m1.clone()], "stemmed: martians");
    assert_eq!(ids(&store, "MARTIANS", &scope, NEWEST).await, [m3.clone(), m1.clone()], "case folded");
    assert_eq!(ids(&store, "runs", &scope, NEWEST).await, [m4.as_str()], "stemmed: running");
    assert_eq!(ids(&store, "martian chronicles", &scope, NEWEST).await, [m3.as_str()], "every word must appear");
    assert_eq!(ids(&store, "martian or mars", &scope, NEWEST).await, [m3.clone(), m2.clone(), m1.clone()]);
    assert_eq!(ids(&store, "martian -ranvier", &scope, NEWEST).await, [m1.as_str()], "exclusion");
    assert_eq!(ids(&store, r#""green men""#, &scope, NEWEST).await, [m2.as_str()], "phrase in order");
    assert!(ids(&store, r#""men green""#, &scope, NEWEST).await.is_empty(), "phrase out of order");
    assert_eq!(ids(&store, "ranvier.org", &scope, NEWEST).await, [m3.as_str()], "punctuation splits words");
    assert_eq!(ids(&store, "RANVIER", &scope, NEWEST).await, [m3.as_str()]);
    assert!(ids(&store, "venus", &scope, NEWEST).await.is_empty());
    assert!(ids(&store, "-martian", &scope, NEWEST).await.is_empty(), "nothing required, nothing found");
    assert!(ids(&store, "\"\" * ' : ( ) & | !", &scope, NEWEST).await.is_empty(), "syntax of neither backend leaks");
    assert_eq!(count(&store, "martian", &scope).await, 2);
    assert_eq!(count(&store, "venus", &scope).await, 0);
}

/// Rank puts the better match first; recent puts the newer first; both page without gaps or
/// repeats.
async fn ordering_and_pages(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    let room = Room { store: &store, room_id: "!a:test" };
    let strong = room.message(1, "@a:test", "apple apple apple").await;
    let weak =
        room.message(2, "@a:test", "a long story about many things: trains, boats, weather, and once an apple").await;
    let rooms = [whole("!a:test")];
    let scope = SearchScope { rooms: &rooms, event_types: MESSAGES, up_to: i64::MAX };
    let ranked = search(&store, "apple", &scope, BEST, 10).await;
    assert_eq!(ranked.iter().map(|hit| hit.event.event_id.as_str()).collect::<Vec<_>>(), [&strong, &weak]);
    assert!(ranked[0].rank > ranked[1].rank, "{} > {}", ranked[0].rank, ranked[1].rank);
    assert!(ranked[1].rank > 0.0);
    assert_eq!(ids(&store, "apple", &scope, NEWEST).await, [weak.clone(), strong.clone()]);

    let mut expected = Vec::new();
    for position in 3..=12 {
        expected.push(room.message(position, "@a:test", &format!("pear number {position}")).await);
    }
    expected.reverse();
    // Newest first, three at a time, each page continuing below the last event of the one before.
    let mut seen = Vec::new();
    let mut before = i64::MAX;
    loop {
        let page = search(&store, "pear", &scope, SearchOrder::Recent { before }, 3).await;
        let Some(last) = page.last() else { break };
        before = last.event.stream_ordering;
        seen.extend(page.into_iter().map(|hit| hit.event.event_id));
    }
    assert_eq!(seen, expected);
    // By rank, with offsets.
    let mut ranked = Vec::new();
    for offset in (0..12).step_by(4) {
        ranked.extend(search(&store, "pear", &scope, SearchOrder::Rank { offset }, 4).await);
    }
    let mut ranked: Vec<String> = ranked.into_iter().map(|hit| hit.event.event_id).collect();
    assert_eq!(ranked.len(), 10, "{ranked:?}");
    ranked.sort();
    ranked.dedup();
    assert_eq!(ranked.len(), 10, "no event on two pages");
}

/// The scope: rooms, a room's last visible position, event types and the newest position.
async fn scope_limits_results(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    let a = Room { store: &store, room_id: "!a:test" };
    let b = Room { store: &store, room_id: "!b:test" };
    let c = Room { store: &store, room_id: "!c:test" };
    let a1 = a.message(1, "@a:test", "comet sighting").await;
    let b1 = b.message(2, "@a:test", "comet tail").await;
    let c1 = c.message(3, "@a:test", "comet dust").await;
    let b2 = b.message(4, "@a:test", "comet again, after the user left").await;
    let name = a
        .event(5, "@a:test", "m.room.name", Some(""), serde_json::json!({"name": "Comet club"}), Some("Comet club"))
        .await;
    let topic =
        a.event(6, "@a:test", "m.room.topic", Some(""), serde_json::json!({"topic": "comets"}), Some("comets")).await;
    let a2 = a.message(7, "@a:test", "comet").await;

    let rooms = [whole("!a:test"), SearchRoom { room_id: "!b:test".to_owned(), up_to: Some(2) }];
    let scope = SearchScope { rooms: &rooms, event_types: MESSAGES, up_to: i64::MAX };
    assert_eq!(ids(&store, "comet", &scope, NEWEST).await, [a2.clone(), b1.clone(), a1.clone()]);
    assert_eq!(count(&store, "comet", &scope).await, 3, "neither room c nor b after the leave");
    let scope = SearchScope { rooms: &rooms, event_types: ALL_TYPES, up_to: i64::MAX };
    assert_eq!(
        ids(&store, "comet", &scope, NEWEST).await,
        [a2.clone(), topic.clone(), name.clone(), b1.clone(), a1.clone()]
    );
    let scope = SearchScope { rooms: &rooms, event_types: &["m.room.name"], up_to: i64::MAX };
    assert_eq!(ids(&store, "comet", &scope, NEWEST).await, [name.as_str()]);
    let scope = SearchScope { rooms: &rooms, event_types: ALL_TYPES, up_to: 4 };
    assert_eq!(ids(&store, "comet", &scope, NEWEST).await, [b1.clone(), a1.clone()], "snapshot position");
    assert_eq!(count(&store, "comet", &scope).await, 2);
    let all = [whole("!a:test"), whole("!b:test"), whole("!c:test")];
    let scope = SearchScope { rooms: &all, event_types: MESSAGES, up_to: i64::MAX };
    assert_eq!(ids(&store, "comet", &scope, NEWEST).await, [a2, b2, c1, b1, a1]);
    let scope = SearchScope { rooms: &[], event_types: MESSAGES, up_to: i64::MAX };
    assert!(ids(&store, "comet", &scope, NEWEST).await.is_empty());
    assert_eq!(count(&store, "comet", &scope).await, 0);
}

/// Redaction takes an event out of the index in the redaction's transaction; events written
/// without text are never in it; the index survives a restart.
async fn redaction_leaves_the_index(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    let room = Room { store: &store, room_id: "!a:test" };
    let keep = room.message(1, "@a:test", "secret plans").await;
    let gone = room.message(2, "@a:test", "secret password hunter2").await;
    room.event(3, "@a:test", "m.room.message", None, serde_json::json!({"body": "secret"}), None).await;
    let rooms = [whole("!a:test")];
    let scope = SearchScope { rooms: &rooms, event_types: MESSAGES, up_to: i64::MAX };
    assert_eq!(ids(&store, "secret", &scope, NEWEST).await, [gone.clone(), keep.clone()]);
    room.redact(4, &gone).await;
    assert_eq!(ids(&store, "secret", &scope, NEWEST).await, [keep.as_str()]);
    assert!(ids(&store, "hunter2", &scope, NEWEST).await.is_empty());
    assert_eq!(count(&store, "secret", &scope).await, 1);
    // The index row itself is gone, not merely hidden behind `redacted_by`.
    sqlx::query("UPDATE events SET redacted_by = NULL").execute(store.pool()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(ids(&store, "hunter2", &scope, NEWEST).await.is_empty());
    // Redacting an event that was never indexed is harmless.
    room.redact(5, "$e3").await;
    drop(store);
    let store = open(&db).await;
    assert_eq!(ids(&store, "secret", &scope, NEWEST).await, [keep]);
}

/// Migration 0008 indexes the events written before it: messages, names and topics that are in
/// the timeline and not redacted.
async fn the_migration_indexes_existing_events(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    let room = Room { store: &store, room_id: "!a:test" };
    let none = None;
    let message =
        room.event(1, "@a:test", "m.room.message", None, serde_json::json!({"body": "old harbour news"}), none).await;
    let name = room.event(2, "@a:test", "m.room.name", Some(""), serde_json::json!({"name": "Harbour"}), none).await;
    let topic = room
        .event(3, "@a:test", "m.room.topic", Some(""), serde_json::json!({"topic": "All about the harbour"}), none)
        .await;
    let redacted = room.event(4, "@a:test", "m.room.message", None, serde_json::json!({"body": "harbour"}), none).await;
    room.redact(5, &redacted).await;
    room.event(6, "@a:test", "m.room.message", None, serde_json::json!({"body": ["harbour"]}), none).await;
    room.event(7, "@a:test", "m.room.message", Some("x"), serde_json::json!({"body": "harbour"}), none).await;
    room.event(8, "@a:test", "m.room.member", Some("@a:test"), serde_json::json!({"body": "harbour"}), none).await;
    let rooms = [whole("!a:test")];
    let scope = SearchScope { rooms: &rooms, event_types: ALL_TYPES, up_to: i64::MAX };
    assert!(ids(&store, "harbour", &scope, NEWEST).await.is_empty(), "written without search text");

    // Back to the schema before 0008, then open again: the migration runs over these events.
    for statement in ["DROP TABLE event_search", "DROP TABLE reports", "DELETE FROM schema_version WHERE version = 8"] {
        sqlx::query(statement).execute(store.pool()).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    drop(store);
    let store = open(&db).await;
    assert_eq!(ids(&store, "harbour", &scope, NEWEST).await, [topic, name, message.clone()]);
    assert_eq!(ids(&store, "harbours news", &scope, NEWEST).await, [message]);
}

/// Reports are numbered in arrival order and listed per kind, newest first by default.
async fn reports_are_numbered_and_listed(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    let report = |kind, reporter, room_id, n: i64| NewReport {
        kind,
        reporter,
        room_id,
        event_id: (kind == ReportKind::Event).then_some("$bad"),
        target_user_id: Some("@spammer:test"),
        reason: (n % 2 == 0).then_some("spam"),
        score: (kind == ReportKind::Event).then_some(-100),
        content: (kind == ReportKind::Event).then_some(r#"{"reason":"spam","score":-100}"#),
        received_ts: 1_000 + n,
    };
    let add = |r: NewReport<'static>| {
        let store = store.clone();
        async move { store.add_report(&r).await.unwrap_or_else(|e| panic!("add report: {e}")) }
    };
    assert_eq!(add(report(ReportKind::Event, "@a:test", Some("!r:test"), 0)).await, 1);
    assert_eq!(add(report(ReportKind::Room, "@b:test", Some("!r:test"), 1)).await, 2);
    assert_eq!(add(report(ReportKind::User, "@a:test", None, 2)).await, 3);
    assert_eq!(add(report(ReportKind::Event, "@b:test", Some("!s:test"), 3)).await, 4);
    assert_eq!(add(report(ReportKind::Event, "@a:test", Some("!s:test"), 4)).await, 5);

    let list = |kind, from, limit, newest_first, reporter, room_id| {
        let store = store.clone();
        async move {
            let query = ReportQuery { kind, from, limit, newest_first, reporter, room_id };
            let (rows, total) = store.list_reports(&query).await.unwrap_or_else(|e| panic!("list reports: {e}"));
            (rows.into_iter().map(|row| row.id).collect::<Vec<_>>(), total)
        }
    };
    assert_eq!(list(ReportKind::Event, 0, 10, true, None, None).await, (vec![5, 4, 1], 3));
    assert_eq!(list(ReportKind::Event, 0, 10, false, None, None).await, (vec![1, 4, 5], 3));
    assert_eq!(list(ReportKind::Event, 1, 1, true, None, None).await, (vec![4], 3));
    assert_eq!(list(ReportKind::Event, 0, 10, true, Some("@a:test"), None).await, (vec![5, 1], 2));
    assert_eq!(list(ReportKind::Event, 0, 10, true, Some("@a:test"), Some("!s:test")).await, (vec![5], 1));
    assert_eq!(list(ReportKind::Room, 0, 10, true, None, None).await, (vec![2], 1));
    assert_eq!(list(ReportKind::User, 0, 10, true, None, Some("!r:test")).await, (vec![], 0));

    let (rows, _) = store
        .list_reports(&ReportQuery {
            kind: ReportKind::Event,
            from: 0,
            limit: 1,
            newest_first: false,
            reporter: None,
            room_id: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = &rows[0];
    assert_eq!(
        (first.kind.as_str(), first.reporter.as_str(), first.room_id.as_deref(), first.event_id.as_deref()),
        ("event", "@a:test", Some("!r:test"), Some("$bad"))
    );
    assert_eq!((first.reason.as_deref(), first.score, first.received_ts), (Some("spam"), Some(-100), 1_000));
    assert_eq!(first.target_user_id.as_deref(), Some("@spammer:test"));
    assert_eq!(first.content.as_deref(), Some(r#"{"reason":"spam","score":-100}"#));
}

/// Mutual rooms are the rooms both users are joined to, paged in room id order.
async fn mutual_rooms_page_by_room_id(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    let mut position = 0;
    let mut member = |room_id: &'static str, user_id: &str, membership: &str| {
        position += 1;
        PersistEvent {
            stream_ordering: position,
            event_id: format!("$m{position}"),
            room_id: room_id.to_owned(),
            sender: user_id.to_owned(),
            event_type: "m.room.member".to_owned(),
            state_key: Some(user_id.to_owned()),
            pdu: "{}".to_owned(),
            memberships: vec![MembershipChange {
                user_id: user_id.to_owned(),
                membership: membership.to_owned(),
                event_id: format!("$m{position}"),
            }],
            ..PersistEvent::default()
        }
    };
    let mut events = Vec::new();
    for room in ["!d:test", "!a:test", "!c:test", "!b:test", "!e:test"] {
        events.push(member(room, "@alice:test", "join"));
    }
    for room in ["!a:test", "!b:test", "!d:test"] {
        events.push(member(room, "@bob:test", "join"));
    }
    events.push(member("!c:test", "@bob:test", "invite"));
    events.push(member("!e:test", "@bob:test", "join"));
    events.push(member("!e:test", "@bob:test", "leave"));
    for event in &events {
        store.persist_event(event).await.unwrap_or_else(|e| panic!("persist: {e}"));
    }
    let mutual = |after: Option<&'static str>, limit| {
        let store = store.clone();
        async move {
            store
                .mutual_joined_rooms("@alice:test", "@bob:test", after, limit)
                .await
                .unwrap_or_else(|e| panic!("mutual rooms: {e}"))
        }
    };
    assert_eq!(mutual(None, 10).await, (vec!["!a:test".to_owned(), "!b:test".to_owned(), "!d:test".to_owned()], 3));
    assert_eq!(mutual(None, 2).await, (vec!["!a:test".to_owned(), "!b:test".to_owned()], 3));
    assert_eq!(mutual(Some("!b:test"), 2).await, (vec!["!d:test".to_owned()], 3));
    assert_eq!(mutual(Some("!d:test"), 2).await, (vec![], 3));
    let (rooms, total) =
        store.mutual_joined_rooms("@alice:test", "@carol:test", None, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((rooms.len(), total), (0, 0));
}

backend_tests!(
    matching_rules,
    ordering_and_pages,
    scope_limits_results,
    redaction_leaves_the_index,
    the_migration_indexes_existing_events,
    reports_are_numbered_and_listed,
    mutual_rooms_page_by_room_id,
);
