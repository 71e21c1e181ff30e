//! The E2EE storage conformance tests: every test runs on SQLite and on PostgreSQL (a fresh
//! database, dropped afterwards), as `name::sqlite` and `name::postgres`; see `ranvier-test`
//! for choosing backends with `RANVIER_TEST_BACKENDS`.

use std::collections::HashSet;

use ranvier_core::util::{now_ms, random_string};
use ranvier_test::{Backend, TestDatabase, backend_tests};

use super::{
    backup::{BackupKey, BackupScope, BackupWrite},
    cross_signing::{CrossSigningKeyRow, CrossSigningKeyType, NewSignature},
    device_lists::VisibleChange,
    keys::{NewKey, UploadKeys, UploadOutcome},
    to_device::{DeviceTarget, OutgoingToDevice, SendOutcome, ToDeviceSend},
};
use crate::{Store, StreamKind};

/// Open (or reopen, as after a restart) the store on a test database.
async fn open(db: &TestDatabase) -> Store {
    match Store::open(&db.url(), 4).await {
        Ok(store) => store,
        Err(e) => panic!("open {} store: {e}", db.backend().name()),
    }
}

async fn user_with_devices(store: &Store, user_id: &str, devices: &[&str]) {
    store.create_user(user_id, None, false).await.unwrap();
    for device in devices {
        store.create_device_with_token(user_id, device, Some("phone"), &random_string(20)).await.unwrap();
    }
}

fn otk(algorithm: &str, key_id: &str, key: &str) -> NewKey {
    NewKey { algorithm: algorithm.into(), key_id: key_id.into(), key_json: format!(r#"{{"key":"{key}"}}"#) }
}

fn changed_users(changes: &[VisibleChange]) -> Vec<&str> {
    changes.iter().map(|change| change.user_id.as_str()).collect()
}

async fn keys_upload_count_and_claim(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    user_with_devices(&store, "@a:x", &["DEV"]).await;
    let start = store.streams().current(StreamKind::DeviceLists);
    let upload = UploadKeys {
        device_keys: Some(r#"{"device_id":"DEV"}"#.into()),
        one_time_keys: vec![otk("signed_curve25519", "A1", "k1"), otk("signed_curve25519", "A2", "k2")],
        fallback_keys: vec![otk("signed_curve25519", "F1", "f1")],
    };
    assert_eq!(
        store.upload_keys("@a:x", "DEV", &upload).await.unwrap(),
        UploadOutcome::Stored { device_keys_changed: true }
    );
    let after_first = store.streams().current(StreamKind::DeviceLists);
    assert!(after_first > start, "a new device key is a device-list change");
    // The same upload again changes nothing and is not a conflict.
    assert_eq!(
        store.upload_keys("@a:x", "DEV", &upload).await.unwrap(),
        UploadOutcome::Stored { device_keys_changed: false }
    );
    assert_eq!(store.streams().current(StreamKind::DeviceLists), after_first);
    // The counts a sync reads are cached per device; every write below must replace them.
    let two = (vec![("signed_curve25519".into(), 2)], vec!["signed_curve25519".to_owned()]);
    assert_eq!(store.sync_key_counts("@a:x", "DEV").await.unwrap(), two);
    // A later upload's keys come after the earlier ones.
    let later = UploadKeys { one_time_keys: vec![otk("signed_curve25519", "A0", "k0")], ..Default::default() };
    store.upload_keys("@a:x", "DEV", &later).await.unwrap();
    assert_eq!(store.one_time_key_counts("@a:x", "DEV").await.unwrap(), vec![("signed_curve25519".into(), 3)]);
    assert_eq!(store.unused_fallback_key_algorithms("@a:x", "DEV").await.unwrap(), vec!["signed_curve25519"]);
    assert_eq!(
        store.sync_key_counts("@a:x", "DEV").await.unwrap(),
        (vec![("signed_curve25519".into(), 3)], vec!["signed_curve25519".to_owned()]),
        "the sync's combined read agrees"
    );

    // Reusing a key id with other content is refused, and nothing of that upload is kept.
    let conflict = UploadKeys {
        one_time_keys: vec![otk("signed_curve25519", "B1", "new"), otk("signed_curve25519", "A1", "other")],
        ..Default::default()
    };
    let outcome = store.upload_keys("@a:x", "DEV", &conflict).await.unwrap();
    assert!(
        matches!(outcome, UploadOutcome::OneTimeKeyConflict { ref key_id, .. } if key_id == "signed_curve25519:A1")
    );
    assert_eq!(store.one_time_key_counts("@a:x", "DEV").await.unwrap(), vec![("signed_curve25519".into(), 3)]);

    // Claims hand out the first upload's keys, then the later one, then the fallback key.
    let request = vec![("@a:x".to_owned(), "DEV".to_owned(), "signed_curve25519".to_owned())];
    let mut ids = Vec::new();
    for _ in 0..3 {
        let claimed = store.claim_keys(&request).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(!claimed[0].fallback);
        ids.push(claimed[0].full_key_id.clone());
    }
    assert_eq!(ids[2], "signed_curve25519:A0");
    assert_eq!(
        ids[..2].iter().collect::<HashSet<_>>(),
        ["signed_curve25519:A1".to_owned(), "signed_curve25519:A2".to_owned()].iter().collect()
    );
    assert!(store.one_time_key_counts("@a:x", "DEV").await.unwrap().is_empty());
    assert_eq!(store.sync_key_counts("@a:x", "DEV").await.unwrap(), (vec![], vec!["signed_curve25519".to_owned()]));
    for _ in 0..2 {
        let claimed = store.claim_keys(&request).await.unwrap();
        assert_eq!(claimed[0].full_key_id, "signed_curve25519:F1");
        assert!(claimed[0].fallback);
    }
    assert!(store.unused_fallback_key_algorithms("@a:x", "DEV").await.unwrap().is_empty());
    assert_eq!(store.sync_key_counts("@a:x", "DEV").await.unwrap(), (vec![], vec![]));
    // Uploading the same fallback key keeps it used; a new one is unused.
    let same_fallback = UploadKeys { fallback_keys: vec![otk("signed_curve25519", "F1", "f1")], ..Default::default() };
    store.upload_keys("@a:x", "DEV", &same_fallback).await.unwrap();
    assert!(store.unused_fallback_key_algorithms("@a:x", "DEV").await.unwrap().is_empty());
    let new_fallback = UploadKeys { fallback_keys: vec![otk("signed_curve25519", "F2", "f2")], ..Default::default() };
    store.upload_keys("@a:x", "DEV", &new_fallback).await.unwrap();
    assert_eq!(store.unused_fallback_key_algorithms("@a:x", "DEV").await.unwrap(), vec!["signed_curve25519"]);
    // Unknown algorithms and devices claim nothing.
    let unknown = vec![
        ("@a:x".to_owned(), "DEV".to_owned(), "curve25519".to_owned()),
        ("@a:x".to_owned(), "NOPE".to_owned(), "signed_curve25519".to_owned()),
    ];
    assert!(store.claim_keys(&unknown).await.unwrap().is_empty());

    // Device keys are read back with the device's display name.
    let keys = store.device_keys("@a:x", &[]).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].display_name.as_deref(), Some("phone"));
    assert!(keys[0].device_exists);
    assert!(store.device_keys("@a:x", &["OTHER".into()]).await.unwrap().is_empty());
    store.delete_device("@a:x", "DEV").await.unwrap();
    assert!(!store.device_keys("@a:x", &[]).await.unwrap()[0].device_exists);
}

async fn concurrent_claims_never_share_a_key(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    user_with_devices(&store, "@a:x", &["DEV"]).await;
    let keys: Vec<NewKey> = (0..20).map(|i| otk("signed_curve25519", &format!("K{i:02}"), &format!("k{i}"))).collect();
    let upload = UploadKeys { one_time_keys: keys, ..Default::default() };
    store.upload_keys("@a:x", "DEV", &upload).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let request = vec![("@a:x".to_owned(), "DEV".to_owned(), "signed_curve25519".to_owned())];
            store.claim_keys(&request).await.unwrap()
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap().into_iter().map(|key| key.full_key_id));
    }
    let distinct: HashSet<_> = claimed.iter().collect();
    assert_eq!(claimed.len(), 20, "every key is handed out, and only the 20 there are");
    assert_eq!(distinct.len(), 20, "no key is handed out twice");
}

async fn to_device_is_idempotent_queued_and_deleted_once_delivered(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    user_with_devices(&store, "@s:x", &["S"]).await;
    user_with_devices(&store, "@r:x", &["R1", "R2"]).await;
    let messages = vec![
        OutgoingToDevice { user_id: "@r:x".into(), target: DeviceTarget::All, content: r#"{"n":1}"#.into() },
        OutgoingToDevice {
            user_id: "@r:x".into(),
            target: DeviceTarget::Device("GONE".into()),
            content: r#"{"n":2}"#.into(),
        },
    ];
    let send =
        ToDeviceSend { sender: "@s:x", sender_device: "S", txn_id: "t1", event_type: "m.test", messages: &messages };
    let before = store.streams().current(StreamKind::ToDevice);
    assert_eq!(store.send_to_device(send).await.unwrap(), SendOutcome::Queued(2));
    assert_eq!(store.send_to_device(send).await.unwrap(), SendOutcome::Duplicate);
    let first_pos = store.streams().current(StreamKind::ToDevice);
    assert_eq!(first_pos, before + 1);
    // The same transaction id from another device is another send.
    let other = ToDeviceSend { sender_device: "S2", ..send };
    assert_eq!(store.send_to_device(other).await.unwrap(), SendOutcome::Queued(2));
    let now = store.streams().current(StreamKind::ToDevice);

    let page = store.to_device_inbox("@r:x", "R1", 0, now, 100).await.unwrap();
    assert_eq!(page.complete_up_to, now);
    let inbox = page.messages;
    assert_eq!(inbox.len(), 2);
    assert_eq!((inbox[0].sender.as_str(), inbox[0].event_type.as_str()), ("@s:x", "m.test"));
    assert_eq!(inbox[0].content, r#"{"n":1}"#);
    // A page of one stops after the first send.
    let page = store.to_device_inbox("@r:x", "R1", 0, now, 1).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].stream_pos, first_pos);
    assert_eq!(page.complete_up_to, first_pos);
    // Messages stay until the device syncs past them.
    assert_eq!(store.delete_delivered_to_device("@r:x", "R1", first_pos).await.unwrap(), 1);
    assert_eq!(store.delete_delivered_to_device("@r:x", "R1", first_pos).await.unwrap(), 0);
    assert_eq!(store.to_device_inbox("@r:x", "R1", 0, now, 100).await.unwrap().messages.len(), 1);
    assert_eq!(store.to_device_inbox("@r:x", "R2", 0, now, 100).await.unwrap().messages.len(), 2);
    assert_eq!(store.delete_delivered_to_device("@r:x", "R1", now).await.unwrap(), 1);
    drop(store);

    // After a restart undelivered messages are still there, and positions are not reused
    // even though every message at the newest position of R1 was deleted.
    let store = open(&db).await;
    assert_eq!(store.streams().current(StreamKind::ToDevice), now);
    assert_eq!(store.to_device_inbox("@r:x", "R2", 0, now, 100).await.unwrap().messages.len(), 2);
    store.delete_delivered_to_device("@r:x", "R2", now).await.unwrap();
    drop(store);
    let store = open(&db).await;
    assert_eq!(store.streams().current(StreamKind::ToDevice), now, "the high-water mark survives");
    let third = ToDeviceSend { txn_id: "t3", ..send };
    store.send_to_device(third).await.unwrap();
    assert_eq!(store.streams().current(StreamKind::ToDevice), now + 1);
}

async fn inbox_pages_never_split_a_send(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    user_with_devices(&store, "@s:x", &["S"]).await;
    user_with_devices(&store, "@r:x", &["R"]).await;
    // Sends of one, two (`*` and the device itself) and one message for R.
    let one = |n: u32| OutgoingToDevice {
        user_id: "@r:x".into(),
        target: DeviceTarget::All,
        content: format!("{{\"n\":{n}}}"),
    };
    let direct =
        OutgoingToDevice { user_id: "@r:x".into(), target: DeviceTarget::Device("R".into()), content: "{}".into() };
    let sends: [(&str, Vec<OutgoingToDevice>); 3] =
        [("a", vec![one(1)]), ("b", vec![one(2), direct.clone()]), ("c", vec![one(3)])];
    let start = store.streams().current(StreamKind::ToDevice);
    for (txn_id, messages) in &sends {
        let send = ToDeviceSend { sender: "@s:x", sender_device: "S", txn_id, event_type: "m.x", messages };
        store.send_to_device(send).await.unwrap();
    }
    let now = store.streams().current(StreamKind::ToDevice);
    assert_eq!(now, start + 3);
    // A limit of two would cut send b: the page stops after send a.
    let page = store.to_device_inbox("@r:x", "R", start, now, 2).await.unwrap();
    assert_eq!((page.messages.len(), page.complete_up_to), (1, start + 1));
    // From send b on, a limit of one still returns send b whole.
    let page = store.to_device_inbox("@r:x", "R", start + 1, now, 1).await.unwrap();
    assert_eq!((page.messages.len(), page.complete_up_to), (2, start + 2));
    // A limit of three ends exactly between sends b and c.
    let page = store.to_device_inbox("@r:x", "R", start, now, 3).await.unwrap();
    assert_eq!((page.messages.len(), page.complete_up_to), (3, start + 2));
    let page = store.to_device_inbox("@r:x", "R", start, now, 10).await.unwrap();
    assert_eq!((page.messages.len(), page.complete_up_to), (4, now));
}

async fn device_removal_forgets_keys_and_inbox(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    user_with_devices(&store, "@a:x", &["DEV", "KEEP"]).await;
    let upload = UploadKeys {
        device_keys: Some("{}".into()),
        one_time_keys: vec![otk("signed_curve25519", "A", "a")],
        fallback_keys: vec![otk("signed_curve25519", "F", "f")],
    };
    store.upload_keys("@a:x", "DEV", &upload).await.unwrap();
    store.upload_keys("@a:x", "KEEP", &upload).await.unwrap();
    let messages = vec![OutgoingToDevice { user_id: "@a:x".into(), target: DeviceTarget::All, content: "{}".into() }];
    let send =
        ToDeviceSend { sender: "@a:x", sender_device: "DEV", txn_id: "t", event_type: "m.x", messages: &messages };
    store.send_to_device(send).await.unwrap();
    let position = store.streams().current(StreamKind::DeviceLists);
    let one = (vec![("signed_curve25519".into(), 1)], vec!["signed_curve25519".to_owned()]);
    assert_eq!(store.sync_key_counts("@a:x", "DEV").await.unwrap(), one);

    assert!(store.delete_device_e2ee("@a:x", "DEV").await.unwrap());
    assert_eq!(store.sync_key_counts("@a:x", "DEV").await.unwrap(), (vec![], vec![]));
    assert!(store.streams().current(StreamKind::DeviceLists) > position, "removal is a device-list change");
    let changes = store.device_list_changes_for("@b:x", position, i64::MAX).await.unwrap();
    assert_eq!(changed_users(&changes), vec!["@a:x"]);
    assert!(store.device_keys("@a:x", &["DEV".into()]).await.unwrap().is_empty());
    assert!(store.one_time_key_counts("@a:x", "DEV").await.unwrap().is_empty());
    assert!(store.unused_fallback_key_algorithms("@a:x", "DEV").await.unwrap().is_empty());
    assert!(store.to_device_inbox("@a:x", "DEV", 0, i64::MAX, 10).await.unwrap().messages.is_empty());
    // The other device keeps everything.
    assert_eq!(store.device_keys("@a:x", &[]).await.unwrap().len(), 1);
    assert_eq!(store.to_device_inbox("@a:x", "KEEP", 0, i64::MAX, 10).await.unwrap().messages.len(), 1);
    // A device without keys changes nobody's device list.
    assert!(!store.delete_device_e2ee("@a:x", "DEV").await.unwrap());
    assert_eq!(store.e2ee_device_ids("@a:x").await.unwrap(), vec!["KEEP"]);
    assert!(store.e2ee_device_ids("@nobody:x").await.unwrap().is_empty());
}

fn cs_key(key_type: CrossSigningKeyType, public_key: &str) -> CrossSigningKeyRow {
    CrossSigningKeyRow { key_type, public_key: public_key.into(), key_json: format!(r#"{{"k":"{public_key}"}}"#) }
}

async fn cross_signing_keys_signatures_and_audiences(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    let start = store.streams().current(StreamKind::DeviceLists);
    let keys = [
        cs_key(CrossSigningKeyType::Master, "M1"),
        cs_key(CrossSigningKeyType::SelfSigning, "S1"),
        cs_key(CrossSigningKeyType::UserSigning, "U1"),
    ];
    assert!(store.set_cross_signing_keys("@a:x", &keys).await.unwrap());
    assert!(!store.set_cross_signing_keys("@a:x", &keys).await.unwrap(), "identical keys change nothing");
    assert_eq!(store.cross_signing_keys("@a:x").await.unwrap(), keys.to_vec());
    let after_keys = store.streams().current(StreamKind::DeviceLists);
    assert_eq!(changed_users(&store.device_list_changes_for("@b:x", start, after_keys).await.unwrap()), ["@a:x"]);

    // Only the user hears of a new user-signing key.
    assert!(store.set_cross_signing_keys("@a:x", &[cs_key(CrossSigningKeyType::UserSigning, "U2")]).await.unwrap());
    let after_usk = store.streams().current(StreamKind::DeviceLists);
    assert!(store.device_list_changes_for("@b:x", after_keys, after_usk).await.unwrap().is_empty());
    assert_eq!(
        store.device_list_changes_for("@a:x", after_keys, after_usk).await.unwrap(),
        vec![VisibleChange { user_id: "@a:x".into(), addressed: true }]
    );

    // Signatures: of a's own device and master key (public), and of b's master key by a
    // (only a hears of it, as a change of b).
    let signatures = vec![
        NewSignature {
            target_user_id: "@a:x".into(),
            target_key_id: "DEV".into(),
            signer_key_id: "ed25519:S1".into(),
            signature: "sig-dev".into(),
        },
        NewSignature {
            target_user_id: "@a:x".into(),
            target_key_id: "M1".into(),
            signer_key_id: "ed25519:DEV".into(),
            signature: "sig-master".into(),
        },
        NewSignature {
            target_user_id: "@b:x".into(),
            target_key_id: "BM".into(),
            signer_key_id: "ed25519:U2".into(),
            signature: "sig-b".into(),
        },
    ];
    store.add_signatures("@a:x", &signatures).await.unwrap();
    let after_sigs = store.streams().current(StreamKind::DeviceLists);
    assert_eq!(changed_users(&store.device_list_changes_for("@c:x", after_usk, after_sigs).await.unwrap()), ["@a:x"]);
    assert_eq!(
        store.device_list_changes_for("@a:x", after_usk, after_sigs).await.unwrap(),
        vec![
            VisibleChange { user_id: "@a:x".into(), addressed: false },
            VisibleChange { user_id: "@b:x".into(), addressed: true }
        ]
    );
    let of_a = store.signatures_of("@a:x", &["DEV".into(), "M1".into()]).await.unwrap();
    assert_eq!(of_a.len(), 2);
    assert_eq!(store.signatures_of("@b:x", &["BM".into()]).await.unwrap()[0].signature, "sig-b");

    // Replacing the self-signing key drops what it signed; replacing the master key drops
    // the signatures of it.
    store.set_cross_signing_keys("@a:x", &[cs_key(CrossSigningKeyType::SelfSigning, "S2")]).await.unwrap();
    let of_a = store.signatures_of("@a:x", &["DEV".into(), "M1".into()]).await.unwrap();
    assert_eq!(of_a.iter().map(|s| s.target_key_id.as_str()).collect::<Vec<_>>(), ["M1"]);
    store.set_cross_signing_keys("@a:x", &[cs_key(CrossSigningKeyType::Master, "M2")]).await.unwrap();
    assert!(store.signatures_of("@a:x", &["M1".into()]).await.unwrap().is_empty());
    // New device keys drop the signatures of the old ones.
    store.add_signatures("@a:x", &signatures[..1]).await.unwrap();
    user_with_devices(&store, "@a:x", &["DEV"]).await;
    let upload = UploadKeys { device_keys: Some(r#"{"v":1}"#.into()), ..Default::default() };
    store.upload_keys("@a:x", "DEV", &upload).await.unwrap();
    assert_eq!(store.signatures_of("@a:x", &["DEV".into()]).await.unwrap().len(), 1, "first keys keep them");
    let upload = UploadKeys { device_keys: Some(r#"{"v":2}"#.into()), ..Default::default() };
    store.upload_keys("@a:x", "DEV", &upload).await.unwrap();
    assert!(store.signatures_of("@a:x", &["DEV".into()]).await.unwrap().is_empty());
}

/// Write a membership row and its member event directly, as the room write path would.
async fn member_event(store: &Store, pos: i64, room_id: &str, user_id: &str, membership: &str, prev: Option<&str>) {
    let mut pdu = serde_json::json!({ "content": { "membership": membership }, "type": "m.room.member" });
    if let Some(prev) = prev {
        pdu["unsigned"] = serde_json::json!({ "prev_content": { "membership": prev } });
    }
    let mut txn = store.begin_write().await.unwrap();
    sqlx::query(
        "INSERT INTO events (stream_ordering, event_id, room_id, sender, event_type, state_key, depth, origin_server_ts, pdu) \
         VALUES ($1, $2, $3, $4, 'm.room.member', $4, 1, $5, $6)",
    )
    .bind(pos)
    .bind(format!("$e{pos}"))
    .bind(room_id)
    .bind(user_id)
    .bind(now_ms())
    .bind(pdu.to_string())
    .execute(&mut *txn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream_ordering) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id, \
         stream_ordering = excluded.stream_ordering",
    )
    .bind(room_id)
    .bind(user_id)
    .bind(membership)
    .bind(format!("$e{pos}"))
    .bind(pos)
    .execute(&mut *txn)
    .await
    .unwrap();
    txn.commit().await.unwrap();
}

async fn membership_reads_for_device_lists(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    member_event(&store, 1, "!r1:x", "@a:x", "join", None).await;
    member_event(&store, 2, "!r1:x", "@b:x", "join", None).await;
    member_event(&store, 3, "!r2:x", "@c:x", "join", None).await;
    member_event(&store, 4, "!r2:x", "@a:x", "join", None).await;
    member_event(&store, 5, "!r2:x", "@c:x", "leave", Some("join")).await;
    member_event(&store, 6, "!r3:x", "@d:x", "join", None).await;

    let sharing = store
        .users_sharing_a_room("@a:x", &["@b:x".into(), "@c:x".into(), "@d:x".into(), "@a:x".into()])
        .await
        .unwrap();
    assert_eq!(sharing, ["@a:x", "@b:x"].into_iter().map(String::from).collect());
    assert_eq!(store.users_sharing_any_room("@a:x").await.unwrap(), sharing);
    assert_eq!(store.joined_room_ids("@a:x").await.unwrap().len(), 2);
    assert_eq!(store.joined_member_ids("!r2:x").await.unwrap(), vec!["@a:x".to_owned()]);

    let changes = store.member_changes_for("@a:x", 2, 6).await.unwrap();
    let seen: Vec<(i64, &str, &str, Option<&str>)> = changes
        .iter()
        .map(|c| (c.stream_ordering, c.user_id.as_str(), c.membership.as_str(), c.prev_membership.as_deref()))
        .collect();
    // Room 3 is none of a's business.
    assert_eq!(seen, vec![(3, "@c:x", "join", None), (4, "@a:x", "join", None), (5, "@c:x", "leave", Some("join"))]);
}

fn backup_key(first_message_index: i64, forwarded_count: i64, is_verified: bool, data: &str) -> BackupKey {
    BackupKey { first_message_index, forwarded_count, is_verified, session_data: format!(r#"{{"d":"{data}"}}"#) }
}

async fn backup_versions_and_keys(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = open(&db).await;
    let lower_index = |existing: &BackupKey, new: &BackupKey| new.first_message_index < existing.first_message_index;
    assert_eq!(store.current_backup_version("@a:x").await.unwrap(), None);
    assert_eq!(store.put_backup_keys("@a:x", 1, &[], lower_index).await.unwrap(), BackupWrite::UnknownVersion);
    let v1 = store.create_backup_version("@a:x", "alg", r#"{"k":1}"#).await.unwrap();
    let v2 = store.create_backup_version("@a:x", "alg", r#"{"k":2}"#).await.unwrap();
    assert_eq!((v1, v2), (1, 2));
    assert_eq!(store.current_backup_version("@a:x").await.unwrap().unwrap().version, 2);
    assert_eq!(store.create_backup_version("@b:x", "alg", "{}").await.unwrap(), 1, "versions are per user");

    let keys = vec![
        ("!r:x".to_owned(), "s1".to_owned(), backup_key(5, 0, false, "a")),
        ("!r:x".to_owned(), "s2".to_owned(), backup_key(0, 0, false, "b")),
        ("!q:x".to_owned(), "s3".to_owned(), backup_key(0, 0, false, "c")),
    ];
    assert_eq!(
        store.put_backup_keys("@a:x", v1, &keys, lower_index).await.unwrap(),
        BackupWrite::NotCurrent { current: 2 }
    );
    assert_eq!(store.put_backup_keys("@a:x", 9, &keys, lower_index).await.unwrap(), BackupWrite::UnknownVersion);
    assert_eq!(
        store.put_backup_keys("@a:x", v2, &keys, lower_index).await.unwrap(),
        BackupWrite::Done { etag: 1, count: 3 }
    );
    // A worse key is not kept and the etag stays; a better one replaces the old.
    let worse = vec![("!r:x".to_owned(), "s1".to_owned(), backup_key(9, 0, false, "worse"))];
    assert_eq!(
        store.put_backup_keys("@a:x", v2, &worse, lower_index).await.unwrap(),
        BackupWrite::Done { etag: 1, count: 3 }
    );
    let better = vec![("!r:x".to_owned(), "s1".to_owned(), backup_key(1, 0, false, "better"))];
    assert_eq!(
        store.put_backup_keys("@a:x", v2, &better, lower_index).await.unwrap(),
        BackupWrite::Done { etag: 2, count: 3 }
    );
    let session = store.backup_keys("@a:x", v2, BackupScope::Session("!r:x", "s1")).await.unwrap();
    assert_eq!(session[0].2, backup_key(1, 0, false, "better"));
    assert_eq!(store.backup_keys("@a:x", v2, BackupScope::Room("!r:x")).await.unwrap().len(), 2);
    assert_eq!(store.backup_keys("@a:x", v2, BackupScope::All).await.unwrap().len(), 3);
    assert_eq!(store.backup_version("@a:x", v2).await.unwrap().unwrap().etag, 2);

    // Deleting keys moves the etag only when something went.
    assert_eq!(store.delete_backup_keys("@a:x", v2, BackupScope::Room("!r:x")).await.unwrap(), Some((3, 1)));
    assert_eq!(store.delete_backup_keys("@a:x", v2, BackupScope::Room("!r:x")).await.unwrap(), Some((3, 1)));
    assert_eq!(store.delete_backup_keys("@a:x", 9, BackupScope::All).await.unwrap(), None);

    // Auth data can be changed on a live version only.
    assert!(store.update_backup_auth_data("@a:x", v1, r#"{"k":"new"}"#).await.unwrap());
    assert_eq!(store.backup_version("@a:x", v1).await.unwrap().unwrap().auth_data, r#"{"k":"new"}"#);

    // Deleting the current version makes the previous one current; numbers are not reused.
    assert!(store.delete_backup_version("@a:x", v2).await.unwrap());
    assert!(store.delete_backup_version("@a:x", v2).await.unwrap(), "deleting again is fine");
    assert!(!store.delete_backup_version("@a:x", 7).await.unwrap());
    assert!(store.backup_version("@a:x", v2).await.unwrap().is_none());
    assert!(store.backup_version_existed("@a:x", v2).await.unwrap());
    assert!(!store.update_backup_auth_data("@a:x", v2, "{}").await.unwrap());
    assert_eq!(store.backup_key_count("@a:x", v2).await.unwrap(), 0);
    assert_eq!(store.current_backup_version("@a:x").await.unwrap().unwrap().version, v1);
    assert_eq!(store.create_backup_version("@a:x", "alg", "{}").await.unwrap(), 3);
}

backend_tests!(
    keys_upload_count_and_claim,
    concurrent_claims_never_share_a_key,
    to_device_is_idempotent_queued_and_deleted_once_delivered,
    inbox_pages_never_split_a_send,
    device_removal_forgets_keys_and_inbox,
    cross_signing_keys_signatures_and_audiences,
    membership_reads_for_device_lists,
    backup_versions_and_keys,
);
