//! Conformance of `event_relations`: rows written with their event and removed by a
//! redaction, and every read the relations service makes.

use std::collections::{HashMap, HashSet};

use ranvier_store::{
    events::Direction,
    persist::{NewRelation, PersistEvent, Redaction},
    relations::{RelationSummary, RelationsQuery, ThreadRow},
};
use ranvier_test::{Backend, backend_tests};

use super::{fresh, open};

const ROOM: &str = "!room:test";

fn event(stream: i64, id: &str, sender: &str, event_type: &str, parent: Option<(&str, &str)>) -> PersistEvent {
    PersistEvent {
        stream_ordering: stream,
        event_id: id.to_owned(),
        room_id: ROOM.to_owned(),
        sender: sender.to_owned(),
        event_type: event_type.to_owned(),
        depth: stream,
        origin_server_ts: 1_000 + stream,
        pdu: "{}".to_owned(),
        relation: parent
            .map(|(rel_type, parent)| NewRelation { relates_to_id: parent.to_owned(), rel_type: rel_type.to_owned() }),
        ..PersistEvent::default()
    }
}

fn ids(events: &[ranvier_store::events::StoredEvent]) -> Vec<&str> {
    events.iter().map(|event| event.event_id.as_str()).collect()
}

async fn relations_index_and_reads(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let (alice, bob, carol, dave) = ("@alice:test", "@bob:test", "@carol:test", "@dave:test");
    let message = "m.room.message";
    let mut events = vec![
        event(1, "$p", alice, message, None),
        event(2, "$e1", alice, message, Some(("m.replace", "$p"))),
        event(3, "$t1", bob, message, Some(("m.thread", "$p"))),
        event(4, "$t2", carol, "m.room.encrypted", Some(("m.thread", "$p"))),
        event(5, "$r1", alice, message, Some(("m.reference", "$p"))),
        event(6, "$g", alice, message, Some(("m.reference", "$r1"))),
        event(7, "$x", alice, message, Some(("m.reference", "$p"))),
        event(8, "$p2", dave, message, None),
        event(9, "$t3", alice, message, Some(("m.thread", "$p2"))),
    ];
    events[6].room_id = "!elsewhere:test".to_owned();
    for event in &events {
        store.persist_event(event).await.unwrap_or_else(|e| panic!("persist {}: {e}", event.event_id));
    }

    assert!(store.room_has_relations(ROOM).await.unwrap_or_else(|e| panic!("{e}")));
    assert!(!store.room_has_relations("!quiet:test").await.unwrap_or_else(|e| panic!("{e}")));
    let parents = vec!["$p".to_owned(), "$p2".to_owned()];
    let mut summaries = store
        .relation_summaries(ROOM, &parents, &["m.replace", "m.thread", "m.reference"], bob)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    summaries.sort_by(|a, b| (&a.parent_id, &a.rel_type).cmp(&(&b.parent_id, &b.rel_type)));
    let summary =
        |parent: &str, rel_type: &str, count: i64, (first_position, latest_position), by_user| RelationSummary {
            parent_id: parent.to_owned(),
            rel_type: rel_type.to_owned(),
            count,
            latest_position,
            first_position,
            by_user,
        };
    assert_eq!(
        summaries,
        [
            summary("$p", "m.reference", 1, (5, 5), false),
            summary("$p", "m.replace", 1, (2, 2), false),
            summary("$p", "m.thread", 2, (3, 4), true),
            summary("$p2", "m.thread", 1, (9, 9), false),
        ],
        "a child in another room does not count"
    );
    let only_threads =
        store.relation_summaries(ROOM, &parents, &["m.thread"], bob).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(only_threads.len(), 2);

    let by_senders = |senders: &[&str]| {
        let senders: Vec<String> = senders.iter().map(|s| (*s).to_owned()).collect();
        let store = &store;
        let parents = &parents;
        async move { store.relation_counts_by_senders(ROOM, parents, "m.thread", &senders).await }
    };
    let counts = by_senders(&[bob, carol]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts, HashMap::from([("$p".to_owned(), 2)]), "bob's and carol's replies to $p");
    let counts = by_senders(&[alice]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts, HashMap::from([("$p2".to_owned(), 1)]));
    assert!(by_senders(&[]).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert!(by_senders(&[dave]).await.unwrap_or_else(|e| panic!("{e}")).is_empty(), "dave replied nowhere");

    let edits = store.relating_events(ROOM, &["$p".to_owned()], "m.replace").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(edits.len(), 1);
    assert_eq!((edits[0].0.as_str(), edits[0].1.event_id.as_str()), ("$p", "$e1"));
    let references =
        store.relating_event_ids(ROOM, &["$p".to_owned()], "m.reference").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(references.get("$p"), Some(&vec!["$r1".to_owned()]));
    let at = store.events_at_positions(&[4, 9]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(at.iter().map(|event| event.event_id.as_str()).collect::<HashSet<_>>(), HashSet::from(["$t2", "$t3"]));

    let query = |rel_type: Option<&'static str>, event_type: Option<&'static str>, depth: i64| RelationsQuery {
        room_id: ROOM,
        parent_id: "$p",
        rel_type,
        event_type,
        depth,
        after: 0,
        up_to: i64::MAX,
        direction: Direction::Backward,
        limit: 100,
    };
    let page = |q: RelationsQuery<'static>| {
        let store = store.clone();
        async move { store.relations_page(&q).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    assert_eq!(ids(&page(query(None, None, 1)).await), ["$r1", "$t2", "$t1", "$e1"]);
    assert_eq!(ids(&page(query(None, None, 3)).await), ["$g", "$r1", "$t2", "$t1", "$e1"]);
    assert_eq!(ids(&page(query(Some("m.thread"), None, 1)).await), ["$t2", "$t1"]);
    assert_eq!(ids(&page(query(Some("m.thread"), Some("m.room.encrypted"), 1)).await), ["$t2"]);
    assert_eq!(ids(&page(query(Some("m.thread"), None, 3)).await), ["$t2", "$t1"], "filters apply at every level");
    let forward = RelationsQuery { direction: Direction::Forward, after: 2, limit: 2, ..query(None, None, 1) };
    assert_eq!(ids(&page(forward).await), ["$t1", "$t2"]);
    let bounded = RelationsQuery { up_to: 4, after: 2, ..query(None, None, 1) };
    assert_eq!(ids(&page(bounded).await), ["$t2", "$t1"]);

    let threads = |up_to: i64, at_most: i64, participant: Option<&'static str>| {
        let store = store.clone();
        async move { store.thread_roots(ROOM, up_to, at_most, participant, 10).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    let row = |root: &str, latest_position: i64| ThreadRow { root_id: root.to_owned(), latest_position };
    assert_eq!(threads(i64::MAX, i64::MAX, None).await, [row("$p2", 9), row("$p", 4)]);
    assert_eq!(threads(i64::MAX, 8, None).await, [row("$p", 4)]);
    assert_eq!(threads(3, i64::MAX, None).await, [row("$p", 3)], "replies past up_to are not counted");
    assert_eq!(threads(i64::MAX, i64::MAX, Some(alice)).await, [row("$p2", 9), row("$p", 4)]);
    assert_eq!(threads(i64::MAX, i64::MAX, Some(dave)).await, [row("$p2", 9)], "the root's sender took part");
    assert_eq!(threads(i64::MAX, i64::MAX, Some(carol)).await, [row("$p", 4)], "a reply's sender took part");
    assert!(threads(i64::MAX, i64::MAX, Some("@nobody:test")).await.is_empty());

    // A redaction removes the relation of its target in its own transaction.
    let mut redaction = event(10, "$redaction", carol, "m.room.redaction", None);
    redaction.redaction = Some(Redaction { target_event_id: "$t2".to_owned(), redacted_pdu: "{}".to_owned() });
    store.persist_event(&redaction).await.unwrap_or_else(|e| panic!("{e}"));
    let summaries =
        store.relation_summaries(ROOM, &parents, &["m.thread"], carol).await.unwrap_or_else(|e| panic!("{e}"));
    let thread = summaries.iter().find(|summary| summary.parent_id == "$p").unwrap_or_else(|| panic!("{summaries:?}"));
    assert_eq!((thread.count, thread.latest_position, thread.by_user), (1, 3, false));
    assert_eq!(threads(i64::MAX, i64::MAX, None).await, [row("$p2", 9), row("$p", 3)]);
}

/// Migration 0006 indexes the relations of the events stored before it: accepted, unredacted
/// events whose `m.relates_to` has a string `rel_type` and `event_id`.
async fn migration_backfills_relations(backend: Backend) {
    let (store, db) = fresh(backend).await;
    let rows: [(i64, &str, &str, i64, Option<&str>); 6] = [
        (1, "$p", r#"{"content":{"body":"parent"}}"#, 0, None),
        (2, "$thread", r#"{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$p"}}}"#, 0, None),
        (3, "$reply", r#"{"content":{"m.relates_to":{"m.in_reply_to":{"event_id":"$p"}}}}"#, 0, None),
        (4, "$outlier", r#"{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$p"}}}"#, 1, None),
        (5, "$redacted", r#"{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":"$p"}}}"#, 0, Some("$r")),
        (6, "$odd", r#"{"content":{"m.relates_to":{"rel_type":"m.thread","event_id":7}}}"#, 0, None),
    ];
    for (stream, id, pdu, outlier, redacted_by) in rows {
        sqlx::query(
            "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, depth, origin_server_ts, pdu, \
             outlier, redacted_by) VALUES ($1, $2, $3, '@a:test', 'm.room.message', $1, 0, $4, $5, $6)",
        )
        .bind(stream)
        .bind(id)
        .bind(ROOM)
        .bind(pdu)
        .bind(outlier)
        .bind(redacted_by)
        .execute(store.pool())
        .await
        .unwrap_or_else(|e| panic!("insert {id}: {e}"));
    }
    for sql in ["DROP TABLE event_relations", "DELETE FROM schema_version WHERE version = 6"] {
        sqlx::query(sql).execute(store.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    drop(store);
    let store = open(&db).await;
    let summaries = store
        .relation_summaries(ROOM, &["$p".to_owned()], &["m.thread"], "@a:test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        summaries,
        [RelationSummary {
            parent_id: "$p".to_owned(),
            rel_type: "m.thread".to_owned(),
            count: 1,
            latest_position: 2,
            first_position: 2,
            by_user: true
        }]
    );
}

backend_tests!(relations_index_and_reads, migration_backfills_relations);
