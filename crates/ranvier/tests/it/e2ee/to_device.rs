//! The end-to-end encryption plumbing of `/sync`, over raw HTTP: to-device messages arrive
//! exactly once and survive `kill -9`; the one-time key counts, unused fallback key types and
//! device-list changes are what clients decide their key uploads and queries from.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use ranvier_test::{Backend, TestServer, User, backend_tests, encode, password_for, txn_id};
use reqwest::Method;
use ruma::{
    CanonicalJsonObject,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

use crate::start;

/// Send one `m.test` to-device request from `sender` under `txn`.
async fn send_to_device(server: &TestServer, sender: &User, txn: &str, messages: Value) {
    let path = format!("/_matrix/client/v3/sendToDevice/m.test/{}", encode(txn));
    let body = json!({ "messages": messages });
    let (status, reply) = server.request(Method::PUT, &path, Some(&body), Some(&sender.access_token)).await;
    assert_eq!(status, 200, "sendToDevice: {reply}");
    assert_eq!(reply, json!({}), "sendToDevice answers an empty object");
}

/// The `to_device.events` of a sync response.
fn to_device_events(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

/// The `n` markers of `m.test` events from `sender`, checking each event's shape.
fn markers(events: &[Value], sender: &User) -> Vec<u64> {
    events
        .iter()
        .map(|event| {
            assert_eq!(event["type"], "m.test", "{event}");
            assert_eq!(event["sender"], sender.user_id.as_str(), "{event}");
            event["content"]["n"].as_u64().unwrap_or_else(|| panic!("a marker: {event}"))
        })
        .collect()
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap_or_else(|| panic!("next_batch: {sync}")).to_owned()
}

/// To-device messages wait for an offline device across `kill -9`, arrive in order and
/// exactly once over several responses, are sent again until the client acknowledges them
/// (by syncing with the token that carried them), and a retried transaction is not repeated.
async fn to_device_exactly_once_across_kill(backend: Backend) {
    let mut server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_phone = server.login("bob", &password_for("bob")).await;
    let initial = server.sync(&bob, None, None).await;
    assert!(to_device_events(&initial).is_empty(), "{initial}");
    let start_token = next_batch(&initial);
    let phone_token = next_batch(&server.sync(&bob_phone, None, None).await);

    // While bob is offline: one message sent twice under the same transaction id, one for
    // all of bob's devices, then more than one response can carry.
    let bob_id = bob.user_id.as_str();
    let retried = txn_id();
    for _ in 0..2 {
        send_to_device(&server, &alice, &retried, json!({ bob_id: { bob.device_id.as_str(): {"n": 0} } })).await;
    }
    send_to_device(&server, &alice, &txn_id(), json!({ bob_id: { "*": {"n": 1} } })).await;
    const TOTAL: u64 = 130;
    for n in 2..TOTAL {
        send_to_device(&server, &alice, &txn_id(), json!({ bob_id: { bob.device_id.as_str(): {"n": n} } })).await;
    }
    server.kill_9();
    server.restart().await;

    // The first page, again and again until bob acknowledges it, even across a crash.
    let first = server.sync(&bob, Some(&start_token), None).await;
    let first_page = markers(&to_device_events(&first), &alice);
    assert!(!first_page.is_empty() && (first_page.len() as u64) < TOTAL, "a first page: {first_page:?}");
    let again = server.sync(&bob, Some(&start_token), None).await;
    assert_eq!(markers(&to_device_events(&again), &alice), first_page, "unacknowledged messages come again");
    server.kill_9();
    server.restart().await;
    let after_crash = server.sync(&bob, Some(&start_token), None).await;
    assert_eq!(markers(&to_device_events(&after_crash), &alice), first_page, "and survive a crash");

    // Following the tokens delivers the rest, each message once.
    let mut received = first_page.clone();
    let mut token = next_batch(&after_crash);
    let mut rounds = 0;
    loop {
        let sync = server.sync(&bob, Some(&token), None).await;
        let page = markers(&to_device_events(&sync), &alice);
        token = next_batch(&sync);
        if page.is_empty() {
            break;
        }
        received.extend(page);
        rounds += 1;
        assert!(rounds < 10, "the inbox drains");
        if rounds == 1 {
            // A crash between pages loses and repeats nothing.
            server.kill_9();
            server.restart().await;
        }
    }
    assert_eq!(received, (0..TOTAL).collect::<Vec<_>>(), "every message once, in order");

    // Delivered messages are gone for good, and the retried transaction stays done.
    send_to_device(&server, &alice, &retried, json!({ bob_id: { bob.device_id.as_str(): {"n": 0} } })).await;
    server.kill_9();
    server.restart().await;
    let settled = server.sync(&bob, Some(&token), None).await;
    assert!(to_device_events(&settled).is_empty(), "nothing is repeated: {settled}");
    let from_start = server.sync(&bob, Some(&start_token), None).await;
    assert!(to_device_events(&from_start).is_empty(), "acknowledged messages are deleted: {from_start}");

    // Bob's other device got the message for all devices, and only that.
    let phone = server.sync(&bob_phone, Some(&phone_token), None).await;
    assert_eq!(markers(&to_device_events(&phone), &alice), vec![1], "{phone}");
    let phone_again = server.sync(&bob_phone, Some(&next_batch(&phone)), None).await;
    assert!(to_device_events(&phone_again).is_empty(), "{phone_again}");
}

/// A device's identity key pair, signing its keys the way a client does.
struct TestDevice {
    user: User,
    pair: Ed25519KeyPair,
}

impl TestDevice {
    fn new(user: &User) -> Self {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, user.device_id.clone()).expect("a generated key pair");
        Self { user: user.clone(), pair }
    }

    fn sign(&self, value: Value) -> Value {
        let mut object: CanonicalJsonObject = serde_json::from_value(value).expect("canonical JSON");
        sign_json(&self.user.user_id, &self.pair, &mut object).expect("sign");
        serde_json::to_value(object).expect("JSON")
    }

    /// Self-signed device keys with a fresh curve25519 key (a new identity for the device
    /// whenever it is called).
    fn device_keys(&self) -> Value {
        let device = self.user.device_id.as_str();
        self.sign(json!({
            "user_id": self.user.user_id,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device}"): random_key(),
                format!("ed25519:{device}"): Base64::<Standard>::new(self.pair.public_key().to_vec()).encode(),
            },
        }))
    }

    /// `count` signed one-time keys with ids `AAAA{first}`, ... .
    fn one_time_keys(&self, first: u32, count: u32) -> Value {
        let keys: serde_json::Map<String, Value> = (first..first + count)
            .map(|i| (format!("signed_curve25519:AAAA{i}"), self.sign(json!({"key": random_key()}))))
            .collect();
        Value::Object(keys)
    }

    fn fallback_key(&self, id: &str) -> Value {
        json!({ format!("signed_curve25519:{id}"): self.sign(json!({"key": random_key(), "fallback": true})) })
    }

    async fn upload(&self, server: &TestServer, body: Value) -> Value {
        let (status, reply) = server
            .request(Method::POST, "/_matrix/client/v3/keys/upload", Some(&body), Some(&self.user.access_token))
            .await;
        assert_eq!(status, 200, "keys/upload: {reply}");
        reply
    }
}

/// A random curve25519-sized public key in unpadded base64.
fn random_key() -> String {
    Base64::<Standard>::new(rand::random::<[u8; 32]>().to_vec()).encode()
}

/// `/keys/claim` one `signed_curve25519` key of `device` as `claimer`; the claimed key ids.
async fn claim(server: &TestServer, claimer: &User, device: &User) -> Vec<String> {
    let body =
        json!({"one_time_keys": { device.user_id.as_str(): { device.device_id.as_str(): "signed_curve25519" } }});
    let (status, reply) =
        server.request(Method::POST, "/_matrix/client/v3/keys/claim", Some(&body), Some(&claimer.access_token)).await;
    assert_eq!(status, 200, "keys/claim: {reply}");
    reply["one_time_keys"][device.user_id.as_str()][device.device_id.as_str()]
        .as_object()
        .map(|keys| keys.keys().cloned().collect())
        .unwrap_or_default()
}

fn otk_count(sync: &Value) -> u64 {
    sync["device_one_time_keys_count"]["signed_curve25519"]
        .as_u64()
        .unwrap_or_else(|| panic!("device_one_time_keys_count.signed_curve25519 is always there: {sync}"))
}

fn fallback_types(sync: &Value) -> Vec<String> {
    serde_json::from_value(sync["device_unused_fallback_key_types"].clone())
        .unwrap_or_else(|e| panic!("device_unused_fallback_key_types is a list: {e}: {sync}"))
}

/// Sync `user` from `token` and move `token` on.
async fn synced(server: &TestServer, user: &User, token: &mut String) -> Value {
    let sync = server.sync(user, Some(token), None).await;
    *token = next_batch(&sync);
    sync
}

/// One-time key counts and unused fallback key types in `/sync` follow uploads and claims,
/// in every response: claims move no stream, so the syncs after them find nothing else new.
async fn key_counts_in_sync(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let device = TestDevice::new(&bob);

    let initial = server.sync(&bob, None, None).await;
    assert_eq!(otk_count(&initial), 0, "no keys yet: {initial}");
    assert_eq!(fallback_types(&initial), Vec::<String>::new(), "{initial}");

    let reply = device
        .upload(
            &server,
            json!({
                "device_keys": device.device_keys(),
                "one_time_keys": device.one_time_keys(0, 3),
                "fallback_keys": device.fallback_key("FB1"),
            }),
        )
        .await;
    assert_eq!(reply["one_time_key_counts"]["signed_curve25519"], 3, "{reply}");
    let mut token = next_batch(&initial);
    let sync = synced(&server, &bob, &mut token).await;
    assert_eq!(otk_count(&sync), 3, "{sync}");
    assert_eq!(fallback_types(&sync), vec!["signed_curve25519".to_owned()], "{sync}");

    // Each claim takes a one-time key, and then the fallback key, which stays but is used.
    let mut claimed = BTreeSet::new();
    for left in (0..3).rev() {
        let keys = claim(&server, &alice, &bob).await;
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(claimed.insert(keys[0].clone()), "a one-time key is handed out once: {keys:?}");
        let sync = synced(&server, &bob, &mut token).await;
        assert_eq!(otk_count(&sync), left, "{sync}");
    }
    for _ in 0..2 {
        assert_eq!(claim(&server, &alice, &bob).await, vec!["signed_curve25519:FB1".to_owned()]);
    }
    let sync = synced(&server, &bob, &mut token).await;
    assert_eq!(otk_count(&sync), 0, "{sync}");
    assert_eq!(fallback_types(&sync), Vec::<String>::new(), "the fallback key was used: {sync}");

    // The client reacts by uploading more keys and a new fallback key.
    device
        .upload(
            &server,
            json!({"one_time_keys": device.one_time_keys(3, 2), "fallback_keys": device.fallback_key("FB2")}),
        )
        .await;
    let sync = synced(&server, &bob, &mut token).await;
    assert_eq!(otk_count(&sync), 2, "{sync}");
    assert_eq!(fallback_types(&sync), vec!["signed_curve25519".to_owned()], "{sync}");
}

/// The `device_lists` of a sync response: `(changed, left)`.
fn device_lists(sync: &Value) -> (Vec<String>, Vec<String>) {
    let list = |field: &str| -> Vec<String> {
        serde_json::from_value(sync["device_lists"][field].clone()).unwrap_or_default()
    };
    (list("changed"), list("left"))
}

/// Sync `user` from `token`, return the device lists, and move `token` on.
async fn lists_since(server: &TestServer, user: &User, token: &mut String) -> (Vec<String>, Vec<String>) {
    let sync = server.sync(user, Some(token), None).await;
    *token = next_batch(&sync);
    device_lists(&sync)
}

/// `device_lists.changed` names users who share a room and changed their devices (and no
/// one else); `device_lists.left` names users who no longer share any room.
async fn device_list_changes_in_sync(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let charlie = server.register("charlie").await;
    let first = server.create_room(&alice, json!({})).await;
    let second = server.create_room(&alice, json!({})).await;
    for room in [&first, &second] {
        server.invite(&alice, room, &bob.user_id).await;
        server.join(&bob, room).await;
    }
    let mut alice_token = next_batch(&server.sync(&alice, None, None).await);
    let mut bob_token = next_batch(&server.sync(&bob, None, None).await);

    // Bob's device uploads its keys: alice, who shares rooms with him, hears of it; bob too.
    let bob_device = TestDevice::new(&bob);
    bob_device.upload(&server, json!({"device_keys": bob_device.device_keys()})).await;
    // Charlie shares no room with alice: his keys are none of her business.
    let charlie_device = TestDevice::new(&charlie);
    charlie_device.upload(&server, json!({"device_keys": charlie_device.device_keys()})).await;
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![bob.user_id.clone()], vec![]));
    assert_eq!(lists_since(&server, &bob, &mut bob_token).await, (vec![bob.user_id.clone()], vec![]));
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![], vec![]), "reported once");

    // Bob's new device, with keys of its own.
    let bob_laptop = server.login("bob", &password_for("bob")).await;
    let laptop = TestDevice::new(&bob_laptop);
    laptop
        .upload(&server, json!({"device_keys": laptop.device_keys(), "one_time_keys": laptop.one_time_keys(0, 1)}))
        .await;
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![bob.user_id.clone()], vec![]));
    assert_eq!(lists_since(&server, &bob, &mut bob_token).await, (vec![bob.user_id.clone()], vec![]));
    // One-time keys alone change nobody's device list.
    laptop.upload(&server, json!({"one_time_keys": laptop.one_time_keys(1, 1)})).await;
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![], vec![]));

    // Leaving one of two shared rooms is not leaving; leaving the last one is.
    server.leave(&bob, &first).await;
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![], vec![]));
    let bob_left_one = lists_since(&server, &bob, &mut bob_token).await;
    assert_eq!(bob_left_one, (vec![], vec![]), "bob still shares a room with alice");
    server.leave(&bob, &second).await;
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![], vec![bob.user_id.clone()]));
    assert_eq!(lists_since(&server, &bob, &mut bob_token).await, (vec![], vec![alice.user_id.clone()]));

    // Once apart, bob's key changes no longer reach alice.
    let laptop_again = TestDevice::new(&bob_laptop);
    laptop_again.upload(&server, json!({"device_keys": laptop_again.device_keys()})).await;
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![], vec![]));
    // Sharing a room again makes bob news for alice: she may have missed changes meanwhile.
    server.invite(&alice, &second, &bob.user_id).await;
    server.join(&bob, &second).await;
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![bob.user_id.clone()], vec![]));
}

/// A long-polling sync wakes up for a to-device message for its device and for a device-list
/// change it must hear of, and keeps waiting through a message for another device.
async fn long_poll_wakes_for_e2ee_news(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_phone = server.login("bob", &password_for("bob")).await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, &bob.user_id).await;
    server.join(&bob, &room).await;
    // Syncing brings both users online, which is news to the other; settle presence first so
    // that only the end-to-end encryption news below can end a wait.
    let mut alice_token = next_batch(&server.sync(&alice, None, None).await);
    let mut bob_token = next_batch(&server.sync(&bob, None, None).await);
    alice_token = next_batch(&server.sync(&alice, Some(&alice_token), None).await);
    let bob_id = bob.user_id.as_str();

    // A message for bob's phone is no news for bob's first device: it waits out its timeout.
    let started = Instant::now();
    let (quiet, ()) = tokio::join!(server.sync_with_timeout(&bob, Some(&bob_token), None, 1_500), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send_to_device(&server, &alice, &txn_id(), json!({ bob_id: { bob_phone.device_id.as_str(): {"n": 1} } })).await;
    });
    assert!(started.elapsed() >= Duration::from_millis(1_400), "the sync waited: {:?}", started.elapsed());
    assert!(to_device_events(&quiet).is_empty(), "{quiet}");
    bob_token = next_batch(&quiet);

    // A message for it ends the wait at once.
    let started = Instant::now();
    let (woken, ()) = tokio::join!(server.sync_with_timeout(&bob, Some(&bob_token), None, 20_000), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send_to_device(&server, &alice, &txn_id(), json!({ bob_id: { bob.device_id.as_str(): {"n": 2} } })).await;
    });
    assert!(started.elapsed() < Duration::from_secs(10), "woken early: {:?}", started.elapsed());
    assert_eq!(markers(&to_device_events(&woken), &alice), vec![2], "{woken}");

    // So does bob uploading device keys, for alice, who shares a room with him.
    let device = TestDevice::new(&bob);
    let started = Instant::now();
    let (woken, ()) = tokio::join!(server.sync_with_timeout(&alice, Some(&alice_token), None, 20_000), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        device.upload(&server, json!({"device_keys": device.device_keys()})).await;
    });
    assert!(started.elapsed() < Duration::from_secs(10), "woken early: {:?}", started.elapsed());
    assert_eq!(device_lists(&woken), (vec![bob.user_id.clone()], vec![]), "{woken}");
    alice_token = next_batch(&woken);
    let phone = server.sync(&bob_phone, None, None).await;
    assert_eq!(markers(&to_device_events(&phone), &alice), vec![1], "the phone's message waited for it: {phone}");
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![], vec![]));
}

/// Delete `device` of `user` with the password, through user-interactive auth.
async fn delete_device(server: &TestServer, user: &User, device: &str) {
    let path = format!("/_matrix/client/v3/devices/{}", encode(device));
    let (status, challenge) = server.request(Method::DELETE, &path, Some(&json!({})), Some(&user.access_token)).await;
    assert_eq!(status, 401, "{challenge}");
    let localpart = user.user_id.trim_start_matches('@').split(':').next().expect("a localpart");
    let auth = json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": password_for(localpart),
        "session": challenge["session"],
    }});
    let (status, reply) = server.request(Method::DELETE, &path, Some(&auth), Some(&user.access_token)).await;
    assert_eq!(status, 200, "{reply}");
}

/// The device ids `/keys/query` shows for `user` to `requester`.
async fn queried_devices(server: &TestServer, requester: &User, user: &User) -> BTreeSet<String> {
    let body = json!({"device_keys": {user.user_id.as_str(): []}});
    let (status, keys) =
        server.request(Method::POST, "/_matrix/client/v3/keys/query", Some(&body), Some(&requester.access_token)).await;
    assert_eq!(status, 200, "{keys}");
    keys["device_keys"][user.user_id.as_str()]
        .as_object()
        .map(|devices| devices.keys().cloned().collect())
        .unwrap_or_default()
}

/// Deleting a device or logging it out removes its keys and its inbox, and everyone sharing a
/// room with its user hears of it.
async fn removed_devices_leave_no_keys(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob_laptop = server.login("bob", &password_for("bob")).await;
    let bob_tablet = server.login("bob", &password_for("bob")).await;
    let room = server.create_room(&alice, json!({})).await;
    server.invite(&alice, &room, &bob.user_id).await;
    server.join(&bob, &room).await;
    for user in [&bob, &bob_laptop, &bob_tablet] {
        let device = TestDevice::new(user);
        device
            .upload(&server, json!({"device_keys": device.device_keys(), "one_time_keys": device.one_time_keys(0, 2)}))
            .await;
    }
    let all: BTreeSet<String> = [&bob, &bob_laptop, &bob_tablet].iter().map(|user| user.device_id.clone()).collect();
    assert_eq!(queried_devices(&server, &alice, &bob).await, all);
    let mut alice_token = next_batch(&server.sync(&alice, None, None).await);

    // A message waits for the laptop, which is then deleted; the tablet logs out.
    send_to_device(
        &server,
        &alice,
        &txn_id(),
        json!({ bob.user_id.as_str(): { bob_laptop.device_id.as_str(): {"n": 1} } }),
    )
    .await;
    delete_device(&server, &bob, &bob_laptop.device_id).await;
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![bob.user_id.clone()], vec![]));
    let (status, reply) = server
        .request(Method::POST, "/_matrix/client/v3/logout", Some(&json!({})), Some(&bob_tablet.access_token))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(lists_since(&server, &alice, &mut alice_token).await, (vec![bob.user_id.clone()], vec![]));
    assert_eq!(queried_devices(&server, &alice, &bob).await, BTreeSet::from([bob.device_id.clone()]));

    // Their one-time keys are gone: a claim finds none.
    for gone in [&bob_laptop, &bob_tablet] {
        assert!(claim(&server, &alice, gone).await.is_empty(), "{} has no keys left", gone.device_id);
    }
    // A device that logs in again under the laptop's id starts with an empty inbox.
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "bob"},
        "password": password_for("bob"),
        "device_id": bob_laptop.device_id,
    });
    let (status, login) = server.request(Method::POST, "/_matrix/client/v3/login", Some(&body), None).await;
    assert_eq!(status, 200, "{login}");
    let again = User {
        user_id: bob.user_id.clone(),
        access_token: login["access_token"].as_str().expect("a token").to_owned(),
        device_id: bob_laptop.device_id.clone(),
    };
    let sync = server.sync(&again, None, None).await;
    assert!(to_device_events(&sync).is_empty(), "the deleted device's messages went with it: {sync}");
    assert_eq!(otk_count(&sync), 0, "{sync}");
}

backend_tests!(
    to_device_exactly_once_across_kill,
    key_counts_in_sync,
    device_list_changes_in_sync,
    long_poll_wakes_for_e2ee_news,
    removed_devices_leave_no_keys
);
