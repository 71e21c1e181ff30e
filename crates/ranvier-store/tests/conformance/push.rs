//! Conformance of the push tables: push outcomes written with events, unread counts per
//! thread as receipts leave them, the notifications list, and pushers.

use ranvier_store::{
    Store,
    persist::{MembershipChange, PersistEvent, Redaction},
    push::{NewPushAction, PusherRow, ThreadCounts},
    social::receipts::NewReceipt,
};
use ranvier_test::{Backend, backend_tests};

use super::fresh;

const ROOM: &str = "!push:test";
const BOB: &str = "@bob:test";

fn action(thread: &str, highlight: bool) -> NewPushAction {
    NewPushAction {
        user_id: BOB.to_owned(),
        thread_id: thread.to_owned(),
        notify: true,
        highlight,
        actions: if highlight { r#"["notify",{"set_tweak":"highlight"}]"# } else { r#"["notify"]"# }.to_owned(),
    }
}

/// An event at `stream` in [`ROOM`] with push outcomes for bob.
fn event(stream: i64, id: &str, actions: Vec<NewPushAction>) -> PersistEvent {
    PersistEvent {
        stream_ordering: stream,
        event_id: id.to_owned(),
        room_id: ROOM.to_owned(),
        sender: "@alice:test".to_owned(),
        event_type: "m.room.message".to_owned(),
        depth: stream,
        origin_server_ts: 1000 + stream,
        pdu: "{}".to_owned(),
        update_extremities: true,
        push_actions: actions,
        ..PersistEvent::default()
    }
}

/// Bob's join at `stream`, `$join`.
fn join(stream: i64) -> PersistEvent {
    let mut join = event(stream, "$join", vec![]);
    join.memberships.push(MembershipChange {
        user_id: BOB.to_owned(),
        membership: "join".to_owned(),
        event_id: "$join".to_owned(),
    });
    join
}

async fn persist(store: &Store, event: &PersistEvent) {
    store.persist_event(event).await.unwrap_or_else(|e| panic!("persist {}: {e}", event.event_id));
}

async fn receipt(store: &Store, thread: &str, event_id: &str, position: i64, receipt_type: &str) {
    let receipt = NewReceipt {
        room_id: ROOM,
        receipt_type,
        user_id: BOB,
        thread_id: thread,
        event_id,
        event_stream_ordering: position,
        ts: 0,
    };
    store.put_receipt(&receipt).await.unwrap_or_else(|e| panic!("receipt: {e}"));
}

/// Bob's unread counts in [`ROOM`], checked against the several-rooms read (which must give
/// the same rows for the room, named twice, and nothing for a room without outcomes).
async fn counts(store: &Store, up_to: i64) -> Vec<ThreadCounts> {
    let one = store.unread_counts(BOB, ROOM, up_to).await.unwrap_or_else(|e| panic!("unread counts: {e}"));
    let rooms = [ROOM.to_owned(), "!other:test".to_owned(), ROOM.to_owned()];
    let several = store.unread_counts_in_rooms(BOB, &rooms, up_to).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(several.iter().all(|(room_id, _)| room_id == ROOM), "{several:?}");
    assert_eq!(several.into_iter().map(|(_, counts)| counts).collect::<Vec<_>>(), one);
    one
}

fn thread(thread_id: &str, notifications: i64, highlights: i64) -> ThreadCounts {
    ThreadCounts { thread_id: thread_id.to_owned(), notifications, highlights }
}

/// Outcomes written with their events count until receipts read them: an unthreaded receipt
/// reads every thread, a threaded one its own; a redaction forgets its target's outcome.
async fn push_actions_and_counts(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    persist(&store, &join(1)).await;
    persist(&store, &event(2, "$m1", vec![action("main", false)])).await;
    persist(&store, &event(3, "$m2", vec![action("main", true)])).await;
    persist(&store, &event(4, "$t1", vec![action("$root", false)])).await;
    persist(&store, &event(5, "$t2", vec![action("$root", true)])).await;
    persist(&store, &event(6, "$quiet", vec![])).await;

    assert_eq!(counts(&store, i64::MAX).await, [thread("$root", 2, 1), thread("main", 2, 1)]);
    assert_eq!(counts(&store, 3).await, [thread("main", 2, 1)], "counted up to a position");
    assert_eq!(store.unread_totals(BOB).await.unwrap_or_else(|e| panic!("{e}")), (1, 4));

    receipt(&store, "$root", "$t1", 4, "m.read").await;
    assert_eq!(counts(&store, i64::MAX).await, [thread("$root", 1, 1), thread("main", 2, 1)]);
    receipt(&store, "main", "$m1", 2, "m.read.private").await;
    assert_eq!(counts(&store, i64::MAX).await, [thread("$root", 1, 1), thread("main", 1, 1)]);
    let mut positions = store.read_positions(BOB, ROOM).await.unwrap_or_else(|e| panic!("{e}"));
    positions.sort();
    assert_eq!(positions, [("$root".to_owned(), 4), ("main".to_owned(), 2)]);

    // A redaction removes its target's outcome.
    let mut redaction = event(7, "$redaction", vec![]);
    redaction.redaction = Some(Redaction { target_event_id: "$t2".to_owned(), redacted_pdu: "{}".to_owned() });
    persist(&store, &redaction).await;
    assert_eq!(counts(&store, i64::MAX).await, [thread("main", 1, 1)]);

    receipt(&store, "", "$m2", 3, "m.read").await;
    assert!(counts(&store, i64::MAX).await.is_empty(), "an unthreaded receipt reads everything before it");
    assert_eq!(store.unread_totals(BOB).await.unwrap_or_else(|e| panic!("{e}")), (0, 0));

    // The list and the pusher feed.
    let all = store.notifications(BOB, None, 10, false).await.unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = all.iter().map(|row| row.event_id.as_str()).collect();
    assert_eq!(ids, ["$t1", "$m2", "$m1"], "newest first, the redacted one gone");
    assert_eq!(all[1].ts, 1003);
    assert!(all[1].highlight && all[1].notify);
    let page = store.notifications(BOB, Some(all[0].stream_ordering), 1, false).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.iter().map(|row| row.event_id.as_str()).collect::<Vec<_>>(), ["$m2"]);
    let highlights = store.notifications(BOB, None, 10, true).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(highlights.iter().map(|row| row.event_id.as_str()).collect::<Vec<_>>(), ["$m2"]);
    let feed = store.push_actions_after(BOB, 2, 4, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(feed.iter().map(|row| row.event_id.as_str()).collect::<Vec<_>>(), ["$m2", "$t1"]);
}

fn pusher(user: &str, pushkey: &str, device: &str) -> PusherRow {
    PusherRow {
        user_id: user.to_owned(),
        app_id: "org.example".to_owned(),
        pushkey: pushkey.to_owned(),
        device_id: device.to_owned(),
        kind: "http".to_owned(),
        app_display_name: "App".to_owned(),
        device_display_name: "Phone".to_owned(),
        profile_tag: None,
        lang: "en".to_owned(),
        data: r#"{"url":"https://push.example/_matrix/push/v1/notify"}"#.to_owned(),
        pushkey_ts: 1,
        last_stream_ordering: 10,
        failing_since: None,
    }
}

/// Pushers: set (in place, with and without `append`), progress, and deletion by key or by
/// device.
async fn pushers(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    let alice = "@alice:test";
    let unwrap = |result: ranvier_core::Result<()>| result.unwrap_or_else(|e| panic!("{e}"));
    unwrap(store.set_pusher(&pusher(alice, "k1", "D1"), false).await);
    unwrap(store.set_pusher(&pusher(alice, "k2", "D2"), false).await);
    let mut renamed = pusher(alice, "k1", "D1");
    renamed.device_display_name = "Tablet".to_owned();
    renamed.last_stream_ordering = 99;
    unwrap(store.set_pusher(&renamed, false).await);
    let listed = store.pushers_of(alice).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].device_display_name, "Tablet");
    assert_eq!(listed[0].last_stream_ordering, 10, "setting again keeps the progress");

    unwrap(store.update_pusher_progress(alice, "org.example", "k1", 42, Some(7)).await);
    let one = store.get_pusher(alice, "org.example", "k1").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one.map(|p| (p.last_stream_ordering, p.failing_since)), Some((42, Some(7))));

    // Another user's pusher with the same key: kept with `append`, replacing without.
    unwrap(store.set_pusher(&pusher(BOB, "k1", "B1"), true).await);
    assert_eq!(store.pushers_of(alice).await.unwrap_or_else(|e| panic!("{e}")).len(), 2);
    unwrap(store.set_pusher(&pusher(BOB, "k1", "B1"), false).await);
    let left: Vec<String> =
        store.pushers_of(alice).await.unwrap_or_else(|e| panic!("{e}")).into_iter().map(|p| p.pushkey).collect();
    assert_eq!(left, ["k2"]);
    assert_eq!(store.users_with_pushers().await.unwrap_or_else(|e| panic!("{e}")), [alice, BOB]);

    let removed = store.delete_pushers_of_devices(alice, &["D2", "D9"]).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(removed.len(), 1);
    assert!(store.pushers_of(alice).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert!(store.delete_pusher(BOB, "org.example", "k1").await.unwrap_or_else(|e| panic!("{e}")));
    assert!(!store.delete_pusher(BOB, "org.example", "k1").await.unwrap_or_else(|e| panic!("{e}")));
}

/// Before any unthreaded receipt, a thread's own receipt decides its rows even where it lies
/// before the join, while the main thread counts from the join: the counts start as low as
/// the earliest receipt, not at the join.
async fn counts_around_a_join(backend: Backend) {
    let (store, _db) = fresh(backend).await;
    persist(&store, &event(2, "$invite", vec![action("main", false)])).await;
    persist(&store, &event(3, "$early", vec![action("$root", false)])).await;
    persist(&store, &join(5)).await;
    persist(&store, &event(6, "$m", vec![action("main", false)])).await;
    persist(&store, &event(7, "$t", vec![action("$root", true)])).await;
    receipt(&store, "$root", "$invite", 2, "m.read").await;
    assert_eq!(counts(&store, i64::MAX).await, [thread("$root", 2, 1), thread("main", 1, 0)]);
    assert_eq!(store.unread_totals(BOB).await.unwrap_or_else(|e| panic!("{e}")), (1, 3));
    receipt(&store, "", "$m", 6, "m.read").await;
    assert_eq!(counts(&store, i64::MAX).await, [thread("$root", 1, 1)]);
}

/// Counts the store keeps in memory between reads follow every write that changes them: each
/// is checked against a second store on the same database, which reads them afresh.
async fn remembered_counts_follow_writes(backend: Backend) {
    let (store, db) = fresh(backend).await;
    let fresh_counts = |up_to: i64| {
        let url = db.url();
        async move {
            let other = Store::open(&url, 2).await.unwrap_or_else(|e| panic!("open: {e}"));
            other.unread_counts(BOB, ROOM, up_to).await.unwrap_or_else(|e| panic!("unread counts: {e}"))
        }
    };
    persist(&store, &join(1)).await;
    persist(&store, &event(2, "$m1", vec![action("main", false)])).await;
    assert_eq!(counts(&store, 2).await, [thread("main", 1, 0)]);
    // New outcomes after the remembered counts, read up to each position.
    persist(&store, &event(3, "$m2", vec![action("main", true)])).await;
    persist(&store, &event(4, "$t1", vec![action("$root", false)])).await;
    assert_eq!(counts(&store, 3).await, [thread("main", 2, 1)]);
    assert_eq!(counts(&store, 4).await, [thread("$root", 1, 0), thread("main", 2, 1)]);
    assert_eq!(counts(&store, 4).await, fresh_counts(4).await);
    assert_eq!(counts(&store, 3).await, fresh_counts(3).await, "before the remembered position");
    // A receipt, a redaction, and the user leaving and joining again.
    receipt(&store, "main", "$m1", 2, "m.read").await;
    assert_eq!(counts(&store, 4).await, [thread("$root", 1, 0), thread("main", 1, 1)]);
    persist(&store, &event(5, "$t2", vec![action("$root", true)])).await;
    let mut redaction = event(6, "$redaction", vec![]);
    redaction.redaction = Some(Redaction { target_event_id: "$t1".to_owned(), redacted_pdu: "{}".to_owned() });
    persist(&store, &redaction).await;
    assert_eq!(counts(&store, 6).await, [thread("$root", 1, 1), thread("main", 1, 1)]);
    assert_eq!(counts(&store, 6).await, fresh_counts(6).await);
    let mut rejoin = join(7);
    rejoin.event_id = "$rejoin".to_owned();
    rejoin.memberships[0].event_id = "$rejoin".to_owned();
    persist(&store, &rejoin).await;
    persist(&store, &event(8, "$m3", vec![action("main", false)])).await;
    // The main timeline's receipt decides what of it is read; the thread, without a receipt,
    // counts from the new join.
    assert_eq!(counts(&store, 8).await, [thread("main", 2, 1)]);
    assert_eq!(counts(&store, 8).await, fresh_counts(8).await);
}

backend_tests!(push_actions_and_counts, counts_around_a_join, remembered_counts_follow_writes, pushers);
