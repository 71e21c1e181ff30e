//! In-process API tests of end-to-end encryption support: keys, to-device, cross-signing,
//! device lists and key backup, driven through the client router with `tower::oneshot`, with
//! exact status codes and errcodes. Clients' keys are real ed25519 keys, signed as clients do.

mod support;

use http::{Method, StatusCode};
use ranvier_client::AppState;
use ranvier_store::StreamToken;
use ruma::{
    CanonicalJsonValue,
    canonical_json::to_canonical_value,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};
use support::{Backend, SERVER_NAME, TestApi};

/// The in-process API of one test, with the helpers these tests share.
struct TestServer {
    api: TestApi,
    state: AppState,
}

/// A registered user with one device.
#[derive(Clone)]
struct Client {
    user_id: String,
    device_id: String,
    token: String,
}

/// A real ed25519 key whose key id is `ed25519:{name}`.
struct Key {
    pair: Ed25519KeyPair,
}

impl Key {
    fn new(name: &str) -> Self {
        Self { pair: Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), name.to_owned()).unwrap() }
    }

    /// A key named after its own public key, as cross-signing keys are.
    fn cross_signing() -> Self {
        let der = Ed25519KeyPair::generate();
        let public = Ed25519KeyPair::from_der(&der, String::new()).unwrap().public_key().to_vec();
        Self { pair: Ed25519KeyPair::from_der(&der, Base64::<Standard>::new(public).encode()).unwrap() }
    }

    fn public(&self) -> String {
        Base64::<Standard>::new(self.pair.public_key().to_vec()).encode()
    }

    fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    /// `value` with this key's signature (as `signer`) added.
    fn sign(&self, signer: &str, value: Value) -> Value {
        let CanonicalJsonValue::Object(mut object) = to_canonical_value(&value).unwrap() else {
            panic!("not an object")
        };
        sign_json(signer, &self.pair, &mut object).unwrap();
        serde_json::to_value(&object).unwrap()
    }
}

/// A user id on the test server.
fn local(localpart: &str) -> String {
    format!("@{localpart}:{SERVER_NAME}")
}

impl TestServer {
    /// A server on `backend`, or `None` when that backend is not available here.
    async fn start(backend: Backend) -> Option<Self> {
        let api = TestApi::start(backend, |_| {}).await?;
        let state = api.state.clone();
        Some(Self { api, state })
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let response = self.api.send(method.as_str(), path, token, body.as_ref(), None).await;
        (response.status, response.body)
    }

    async fn register(&self, name: &str) -> Client {
        let body = json!({
            "username": name,
            "password": "pw",
            "auth": {"type": "m.login.dummy"},
            "initial_device_display_name": format!("{name}'s phone"),
        });
        let (status, body) = self.call(Method::POST, "/_matrix/client/v3/register", None, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Client {
            user_id: body["user_id"].as_str().unwrap().into(),
            device_id: body["device_id"].as_str().unwrap().into(),
            token: body["access_token"].as_str().unwrap().into(),
        }
    }

    /// A second device of an existing user.
    async fn login(&self, client: &Client) -> Client {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": client.user_id}, "password": "pw"});
        let (status, body) = self.call(Method::POST, "/_matrix/client/v3/login", None, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Client {
            user_id: client.user_id.clone(),
            device_id: body["device_id"].as_str().unwrap().into(),
            token: body["access_token"].as_str().unwrap().into(),
        }
    }

    async fn post(&self, client: &Client, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, &format!("/_matrix/client/v3{path}"), Some(&client.token), Some(body)).await
    }

    async fn put(&self, client: &Client, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, &format!("/_matrix/client/v3{path}"), Some(&client.token), Some(body)).await
    }

    async fn get(&self, client: &Client, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/_matrix/client/v3{path}"), Some(&client.token), None).await
    }

    async fn delete(&self, client: &Client, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, &format!("/_matrix/client/v3{path}"), Some(&client.token), None).await
    }

    /// Upload signed device keys for `client`'s device; returns its ed25519 key.
    async fn upload_device_keys(&self, client: &Client) -> Key {
        let key = Key::new(&client.device_id);
        let (status, body) = self.post(client, "/keys/upload", json!({"device_keys": device_keys(client, &key)})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        key
    }

    fn token(&self) -> StreamToken {
        self.state.store.streams().current_token()
    }

    async fn create_room(&self, client: &Client) -> String {
        let (status, body) = self.post(client, "/createRoom", json!({"preset": "public_chat"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["room_id"].as_str().unwrap().to_owned()
    }

    async fn join(&self, client: &Client, room_id: &str) {
        let (status, body) = self.post(client, &format!("/join/{room_id}"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn leave(&self, client: &Client, room_id: &str) {
        let (status, body) = self.post(client, &format!("/rooms/{room_id}/leave"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn key_changes(&self, client: &Client, from: &StreamToken) -> (Vec<String>, Vec<String>) {
        let path = format!("/keys/changes?from={from}&to={}", self.token());
        let (status, body) = self.get(client, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let users = |field: &str| -> Vec<String> {
            let mut users: Vec<String> =
                body[field].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect();
            users.sort();
            users
        };
        (users("changed"), users("left"))
    }
}

/// Device keys of `client`'s device with `key`, self-signed.
fn device_keys(client: &Client, key: &Key) -> Value {
    let keys = json!({
        "user_id": client.user_id,
        "device_id": client.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", client.device_id): "curve25519+public+key",
            key.key_id(): key.public(),
        },
    });
    key.sign(&client.user_id, keys)
}

fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("<none>")
}

/// A signed one-time key.
fn signed_otk(client: &Client, key: &Key, public: &str, fallback: bool) -> Value {
    let mut otk = json!({ "key": Base64::<Standard>::new(public.as_bytes().to_vec()).encode() });
    if fallback {
        otk["fallback"] = json!(true);
    }
    key.sign(&client.user_id, otk)
}

async fn keys_upload_checks_the_device_keys(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let key = Key::new(&alice.device_id);

    let (status, body) = server.call(Method::POST, "/_matrix/client/v3/keys/upload", None, Some(json!({}))).await;
    assert_eq!((status, errcode(&body)), (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"));

    // Keys naming another user or device are refused.
    let (status, body) = server.post(&bob, "/keys/upload", json!({"device_keys": device_keys(&alice, &key)})).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    let other_device = Client { device_id: "OTHERDEV".into(), ..alice.clone() };
    let (status, body) =
        server.post(&alice, "/keys/upload", json!({"device_keys": device_keys(&other_device, &key)})).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));

    // A signature by another key, or over other content, is refused.
    let impostor = Key::new(&alice.device_id);
    let mut forged = device_keys(&alice, &impostor);
    forged["keys"][key.key_id()] = json!(key.public());
    let (status, body) = server.post(&alice, "/keys/upload", json!({"device_keys": forged})).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"));
    let mut tampered = device_keys(&alice, &key);
    tampered["algorithms"] = json!(["m.megolm.v1.aes-sha2"]);
    let (status, body) = server.post(&alice, "/keys/upload", json!({"device_keys": tampered})).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"));
    let mut unsigned = device_keys(&alice, &key);
    unsigned.as_object_mut().unwrap().remove("signatures");
    let (status, body) = server.post(&alice, "/keys/upload", json!({"device_keys": unsigned})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let mut keyless = device_keys(&alice, &key);
    keyless["keys"].as_object_mut().unwrap().remove(&key.key_id());
    let (status, body) = server.post(&alice, "/keys/upload", json!({"device_keys": keyless})).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    let (status, body) = server.post(&alice, "/keys/upload", json!({"device_keys": "nope"})).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_BAD_JSON"));

    // Valid keys with one-time keys: the counts come back, signed_curve25519 always.
    let (status, body) = server.post(&alice, "/keys/upload", json!({"device_keys": device_keys(&alice, &key)})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"one_time_key_counts": {"signed_curve25519": 0}}));
    let otks = json!({
        "signed_curve25519:AAAA": signed_otk(&alice, &key, "one", false),
        "signed_curve25519:AAAB": signed_otk(&alice, &key, "two", false),
    });
    let (status, body) = server.post(&alice, "/keys/upload", json!({"one_time_keys": otks})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 2);
    // The same key id with other content is refused.
    let clash = json!({"signed_curve25519:AAAA": signed_otk(&alice, &key, "three", false)});
    let (status, body) = server.post(&alice, "/keys/upload", json!({"one_time_keys": clash})).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    // An empty upload just reports the counts.
    let (status, body) = server.post(&alice, "/keys/upload", json!({})).await;
    assert_eq!((status, body["one_time_key_counts"]["signed_curve25519"].clone()), (StatusCode::OK, json!(2)));
}

async fn keys_query_and_claim(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let key = server.upload_device_keys(&alice).await;
    let otks = json!({
        "signed_curve25519:AAAA": signed_otk(&alice, &key, "one", false),
    });
    let fallback = json!({"signed_curve25519:FFFF": signed_otk(&alice, &key, "fallback", true)});
    let (status, _) =
        server.post(&alice, "/keys/upload", json!({"one_time_keys": otks, "fallback_keys": fallback})).await;
    assert_eq!(status, StatusCode::OK);

    let query = json!({"device_keys": {
        alice.user_id.clone(): [],
        local("nobody"): [],
        "@someone:elsewhere.example": [],
    }});
    let (status, body) = server.post(&bob, "/keys/query", query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let device = &body["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["keys"][key.key_id()], key.public());
    assert_eq!(device["user_id"], alice.user_id);
    assert!(device["signatures"][&alice.user_id][key.key_id()].is_string());
    assert_eq!(device["unsigned"], json!({"device_display_name": "alice's phone"}));
    assert_eq!(body["device_keys"][local("nobody")], json!({}), "local users always get an entry");
    assert!(body["device_keys"].get("@someone:elsewhere.example").is_none(), "no federation yet");
    // Asking for named devices returns only those.
    let (_, body) =
        server.post(&bob, "/keys/query", json!({"device_keys": {alice.user_id.clone(): ["UNKNOWN"]}})).await;
    assert_eq!(body["device_keys"][&alice.user_id], json!({}));

    // Claims: the one-time key once, then the fallback key, again and again.
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let (status, body) = server.post(&bob, "/keys/claim", claim.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys = body["one_time_keys"][&alice.user_id][&alice.device_id].as_object().unwrap();
    assert_eq!(keys.keys().collect::<Vec<_>>(), ["signed_curve25519:AAAA"]);
    assert!(keys["signed_curve25519:AAAA"]["signatures"].is_object());
    for _ in 0..2 {
        let (_, body) = server.post(&bob, "/keys/claim", claim.clone()).await;
        let keys = body["one_time_keys"][&alice.user_id][&alice.device_id].as_object().unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["signed_curve25519:FFFF"]);
        assert_eq!(keys["signed_curve25519:FFFF"]["fallback"], true);
    }
    // Nothing to claim: an empty map, not an error.
    let (status, body) = server
        .post(
            &bob,
            "/keys/claim",
            json!({"one_time_keys": {bob.user_id.clone(): {bob.device_id.clone(): "signed_curve25519"}}}),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"one_time_keys": {}})));

    // The device learns through sync that its fallback key was used and its one-time keys are gone.
    let sync = server.state.e2ee.sync_data(&alice.user_id, &alice.device_id, None, &server.token()).await.unwrap();
    assert_eq!(sync.one_time_keys_count.get("signed_curve25519"), Some(&0));
    assert!(sync.unused_fallback_key_types.is_empty());

    // A deleted device's keys are gone, and its removal is a device-list change.
    let before = server.token();
    let user_id = ruma::UserId::parse(&alice.user_id).unwrap();
    let device_id: &ruma::DeviceId = alice.device_id.as_str().into();
    server.state.e2ee.device_removed(&user_id, device_id).await.unwrap();
    let (_, body) = server.post(&bob, "/keys/query", json!({"device_keys": {alice.user_id.clone(): []}})).await;
    assert_eq!(body["device_keys"][&alice.user_id], json!({}));
    assert!(server.token().is_after(&before));

    // A device deleted without telling E2EE no longer shows its keys.
    let bob2 = server.login(&bob).await;
    server.upload_device_keys(&bob2).await;
    server.state.store.delete_device(&bob2.user_id, &bob2.device_id).await.unwrap();
    let (_, body) = server.post(&bob, "/keys/query", json!({"device_keys": {bob.user_id.clone(): []}})).await;
    assert_eq!(body["device_keys"][&bob.user_id], json!({}));

    // Deactivation forgets the keys of every device of the user.
    let carol = server.register("carol").await;
    let carol2 = server.login(&carol).await;
    server.upload_device_keys(&carol).await;
    server.upload_device_keys(&carol2).await;
    let (_, body) = server.post(&bob, "/keys/query", json!({"device_keys": {carol.user_id.clone(): []}})).await;
    assert_eq!(body["device_keys"][&carol.user_id].as_object().unwrap().len(), 2);
    let carol_id = ruma::UserId::parse(&carol.user_id).unwrap();
    server.state.e2ee.user_deactivated(&carol_id).await.unwrap();
    let (_, body) = server.post(&bob, "/keys/query", json!({"device_keys": {carol.user_id.clone(): []}})).await;
    assert_eq!(body["device_keys"][&carol.user_id], json!({}));
}

async fn to_device_is_delivered_once_per_device(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob2 = server.login(&bob).await;
    let since = server.token();

    let body = json!({"messages": {bob.user_id.clone(): {"*": {"hello": "all"}}}});
    let (status, reply) = server.put(&alice, "/sendToDevice/m.test/txn1", body.clone()).await;
    assert_eq!((status, reply), (StatusCode::OK, json!({})));
    // A retry with the same transaction id is not delivered again.
    let (status, _) = server.put(&alice, "/sendToDevice/m.test/txn1", body).await;
    assert_eq!(status, StatusCode::OK);
    let direct = json!({"messages": {bob.user_id.clone(): {bob2.device_id.clone(): {"hello": "two"}}}});
    let (status, _) = server.put(&alice, "/sendToDevice/m.test/txn2", direct).await;
    assert_eq!(status, StatusCode::OK);
    let bad = json!({"messages": {bob.user_id.clone(): {"*": "not an object"}}});
    let (status, reply) = server.put(&alice, "/sendToDevice/m.test/txn3", bad).await;
    assert_eq!((status, errcode(&reply)), (StatusCode::BAD_REQUEST, "M_BAD_JSON"));

    let e2ee = &server.state.e2ee;
    let now = server.token();
    let first = e2ee.sync_data(&bob.user_id, &bob.device_id, Some(&since), &now).await.unwrap();
    assert_eq!(
        first.to_device_events,
        vec![json!({"sender": alice.user_id, "type": "m.test", "content": {"hello": "all"}})]
    );
    assert!(first.has_news());
    let second = e2ee.sync_data(&bob.user_id, &bob2.device_id, Some(&since), &now).await.unwrap();
    assert_eq!(second.to_device_events.len(), 2);
    assert_eq!(second.to_device_events[1]["content"], json!({"hello": "two"}));

    // Until the device syncs with a token past them, the messages are sent again.
    let again = e2ee.sync_data(&bob.user_id, &bob.device_id, Some(&since), &now).await.unwrap();
    assert_eq!(again.to_device_events.len(), 1);
    let mut next = now;
    next.set(ranvier_store::StreamKind::ToDevice, first.to_device_position);
    let after = e2ee.sync_data(&bob.user_id, &bob.device_id, Some(&next), &now).await.unwrap();
    assert!(after.to_device_events.is_empty());
    // Acknowledged messages are deleted: even an initial sync no longer sees them.
    let initial = e2ee.sync_data(&bob.user_id, &bob.device_id, None, &now).await.unwrap();
    assert!(initial.to_device_events.is_empty());
    let initial2 = e2ee.sync_data(&bob.user_id, &bob2.device_id, None, &now).await.unwrap();
    assert_eq!(initial2.to_device_events.len(), 2, "the other device has not acknowledged yet");
}

async fn to_device_pages_carry_their_position(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let since = server.token();
    let total = ranvier_e2ee::sync::TO_DEVICE_LIMIT + 5;
    for i in 0..total {
        let body = json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"n": i}}}});
        let (status, _) = server.put(&alice, &format!("/sendToDevice/m.test/t{i}"), body).await;
        assert_eq!(status, StatusCode::OK);
    }
    let now = server.token();
    let e2ee = &server.state.e2ee;
    let first = e2ee.sync_data(&bob.user_id, &bob.device_id, Some(&since), &now).await.unwrap();
    assert_eq!(first.to_device_events.len(), ranvier_e2ee::sync::TO_DEVICE_LIMIT);
    assert!(first.to_device_position < now.get(ranvier_store::StreamKind::ToDevice));
    let mut next = now;
    next.set(ranvier_store::StreamKind::ToDevice, first.to_device_position);
    let second = e2ee.sync_data(&bob.user_id, &bob.device_id, Some(&next), &now).await.unwrap();
    assert_eq!(second.to_device_events.len(), 5);
    assert_eq!(second.to_device_events[0]["content"]["n"], ranvier_e2ee::sync::TO_DEVICE_LIMIT);
    assert_eq!(second.to_device_position, now.get(ranvier_store::StreamKind::ToDevice));
}

async fn device_lists_follow_shared_rooms(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice).await;
    let start = server.token();

    // Bob joins: alice hears of him, and he of her.
    server.join(&bob, &room).await;
    assert_eq!(server.key_changes(&alice, &start).await, (vec![bob.user_id.clone()], vec![]));
    assert_eq!(server.key_changes(&bob, &start).await, (vec![alice.user_id.clone()], vec![]));
    let joined = server.token();

    // Bob's new keys reach alice, not carol, who shares no room with him.
    server.upload_device_keys(&bob).await;
    assert_eq!(server.key_changes(&alice, &joined).await, (vec![bob.user_id.clone()], vec![]));
    assert_eq!(server.key_changes(&carol, &joined).await, (vec![], vec![]));
    // Bob is told about his own devices.
    assert_eq!(server.key_changes(&bob, &joined).await, (vec![bob.user_id.clone()], vec![]));
    // The same numbers through the sync entry point.
    let sync =
        server.state.e2ee.sync_data(&alice.user_id, &alice.device_id, Some(&joined), &server.token()).await.unwrap();
    assert_eq!(sync.device_lists_changed, vec![bob.user_id.clone()]);
    // An initial sync carries no device lists.
    let initial = server.state.e2ee.sync_data(&alice.user_id, &alice.device_id, None, &server.token()).await.unwrap();
    assert!(initial.device_lists_changed.is_empty());

    // Bob leaves: alice sees him in `left`, and his later changes no more.
    let before_leave = server.token();
    server.leave(&bob, &room).await;
    assert_eq!(server.key_changes(&alice, &before_leave).await, (vec![], vec![bob.user_id.clone()]));
    assert_eq!(server.key_changes(&bob, &before_leave).await, (vec![], vec![alice.user_id.clone()]));
    let left = server.token();
    let bob2 = server.login(&bob).await;
    server.upload_device_keys(&bob2).await;
    assert_eq!(server.key_changes(&alice, &left).await, (vec![], vec![]));

    // Nothing moved: nothing to say.
    let now = server.token();
    assert_eq!(server.key_changes(&alice, &now).await, (vec![], vec![]));
    let (status, body) = server.get(&alice, "/keys/changes?from=nonsense&to=s1").await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
}

/// Master, self-signing and user-signing keys of `client`, the latter two signed by the master.
struct CrossSigning {
    master: Key,
    self_signing: Key,
    user_signing: Key,
}

impl CrossSigning {
    fn new() -> Self {
        Self { master: Key::cross_signing(), self_signing: Key::cross_signing(), user_signing: Key::cross_signing() }
    }

    fn key(client: &Client, usage: &str, key: &Key) -> Value {
        json!({"user_id": client.user_id, "usage": [usage], "keys": {key.key_id(): key.public()}})
    }

    fn upload(&self, client: &Client) -> Value {
        json!({
            "master_key": Self::key(client, "master", &self.master),
            "self_signing_key": self.master.sign(&client.user_id, Self::key(client, "self_signing", &self.self_signing)),
            "user_signing_key": self.master.sign(&client.user_id, Self::key(client, "user_signing", &self.user_signing)),
        })
    }
}

async fn cross_signing_upload_needs_auth_only_to_replace_keys(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let keys = CrossSigning::new();

    // A self-signing key alone, with no master key anywhere.
    let lonely = json!({"self_signing_key": keys.upload(&alice)["self_signing_key"].clone()});
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", lonely).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_MISSING_PARAM"));
    // A self-signing key signed by something else.
    let mut badly_signed = keys.upload(&alice);
    badly_signed["self_signing_key"] =
        keys.user_signing.sign(&alice.user_id, CrossSigning::key(&alice, "self_signing", &keys.self_signing));
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", badly_signed).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"));
    // Keys of someone else, or with the wrong usage.
    let mut foreign = keys.upload(&alice);
    foreign["master_key"]["user_id"] = json!(local("mallory"));
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", foreign).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    let mut misused = keys.upload(&alice);
    misused["master_key"]["usage"] = json!(["self_signing"]);
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", misused).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    // A key whose id is one of the user's device ids.
    let clash = json!({"master_key": {"user_id": alice.user_id, "usage": ["master"], "keys": {format!("ed25519:{}", alice.device_id): alice.device_id}}});
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", clash).await;
    assert_eq!((status, errcode(&body)), (StatusCode::FORBIDDEN, "M_FORBIDDEN"));

    // The first upload needs no UIA; an identical retry neither.
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", keys.upload(&alice)).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", keys.upload(&alice)).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));

    // Replacing them asks for the password.
    let new_keys = CrossSigning::new();
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", new_keys.upload(&alice)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = body["session"].as_str().unwrap().to_owned();
    let mut with_auth = new_keys.upload(&alice);
    with_auth["auth"] = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id}, "password": "wrong", "session": session});
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", with_auth.clone()).await;
    assert_eq!((status, errcode(&body)), (StatusCode::UNAUTHORIZED, "M_FORBIDDEN"));
    with_auth["auth"]["password"] = json!("pw");
    let (status, body) = server.post(&alice, "/keys/device_signing/upload", with_auth).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));

    let (_, body) = server.post(&alice, "/keys/query", json!({"device_keys": {alice.user_id.clone(): []}})).await;
    assert_eq!(body["master_keys"][&alice.user_id]["keys"][new_keys.master.key_id()], new_keys.master.public());
    assert!(body["self_signing_keys"][&alice.user_id].is_object());
    assert!(body["user_signing_keys"][&alice.user_id].is_object(), "the user sees their own user-signing key");
    let bob = server.register("bob").await;
    let (_, body) = server.post(&bob, "/keys/query", json!({"device_keys": {alice.user_id.clone(): []}})).await;
    assert!(body["master_keys"][&alice.user_id].is_object());
    assert!(body.get("user_signing_keys").is_none_or(|keys| keys.get(&alice.user_id).is_none()), "{body}");
}

async fn signatures_are_verified_stored_and_shown(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let alice_device = server.upload_device_keys(&alice).await;
    server.upload_device_keys(&bob).await;
    let alice_keys = CrossSigning::new();
    let bob_keys = CrossSigning::new();
    assert_eq!(server.post(&alice, "/keys/device_signing/upload", alice_keys.upload(&alice)).await.0, StatusCode::OK);
    assert_eq!(server.post(&bob, "/keys/device_signing/upload", bob_keys.upload(&bob)).await.0, StatusCode::OK);

    // Alice signs her device with her self-signing key and her master key with her device;
    // she signs Bob's master key with her user-signing key. One forged signature fails alone.
    let (_, query) = server
        .post(&alice, "/keys/query", json!({"device_keys": {alice.user_id.clone(): [], bob.user_id.clone(): []}}))
        .await;
    let own_device = query["device_keys"][&alice.user_id][&alice.device_id].clone();
    let own_master = query["master_keys"][&alice.user_id].clone();
    let bob_master = query["master_keys"][&bob.user_id].clone();
    let bob_device = query["device_keys"][&bob.user_id][&bob.device_id].clone();
    let mut unsigned_device = own_device.clone();
    unsigned_device.as_object_mut().unwrap().remove("unsigned");
    let signed_device = alice_keys.self_signing.sign(&alice.user_id, unsigned_device);
    let signed_master = alice_device.sign(&alice.user_id, own_master);
    let signed_bob = alice_keys.user_signing.sign(&alice.user_id, bob_master);
    let forged_bob_device = alice_keys.self_signing.sign(&alice.user_id, bob_device);
    let upload = json!({
        alice.user_id.clone(): {
            alice.device_id.clone(): signed_device,
            alice_keys.master.public(): signed_master,
            "NOSUCHDEVICE": {"user_id": alice.user_id},
        },
        bob.user_id.clone(): {
            bob_keys.master.public(): signed_bob,
            bob.device_id.clone(): forged_bob_device,
        },
    });
    let (status, body) = server.post(&alice, "/keys/signatures/upload", upload).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Uploading the same device keys again, even with other signatures attached, keeps the
    // signatures made of them.
    let again = Key::new("ELSEWHERE").sign("@someone:elsewhere.example", device_keys(&alice, &alice_device));
    let (status, _) = server.post(&alice, "/keys/upload", json!({"device_keys": again})).await;
    assert_eq!(status, StatusCode::OK);
    let failures = &body["failures"];
    assert_eq!(failures[&alice.user_id].as_object().unwrap().len(), 1, "{body}");
    assert_eq!(failures[&alice.user_id]["NOSUCHDEVICE"]["errcode"], "M_NOT_FOUND");
    assert_eq!(failures[&bob.user_id].as_object().unwrap().len(), 1, "{body}");
    assert!(failures[&bob.user_id][&bob.device_id]["errcode"].is_string());

    // A signature that does not verify is reported as such.
    let mut bad = alice_keys.self_signing.sign(&alice.user_id, {
        let mut device = own_device.clone();
        device.as_object_mut().unwrap().remove("unsigned");
        device
    });
    bad["signatures"][&alice.user_id][alice_keys.self_signing.key_id()] = json!(alice_keys.self_signing.public());
    let (_, body) = server
        .post(&alice, "/keys/signatures/upload", json!({alice.user_id.clone(): {alice.device_id.clone(): bad}}))
        .await;
    assert_eq!(body["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE");

    // Everyone sees Alice's device signed by her self-signing key and her master key signed by
    // her device; only Alice sees her signature of Bob's master key.
    for (viewer, sees_alices_signature_of_bob) in [(&alice, true), (&bob, false)] {
        let (_, body) = server
            .post(viewer, "/keys/query", json!({"device_keys": {alice.user_id.clone(): [], bob.user_id.clone(): []}}))
            .await;
        let device_signatures = &body["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id];
        assert!(device_signatures[alice_keys.self_signing.key_id()].is_string(), "{body}");
        let master_signatures = &body["master_keys"][&alice.user_id]["signatures"][&alice.user_id];
        assert!(master_signatures[alice_device.key_id()].is_string(), "{body}");
        let bob_signed_by_alice = &body["master_keys"][&bob.user_id]["signatures"][&alice.user_id];
        assert_eq!(
            bob_signed_by_alice[alice_keys.user_signing.key_id()].is_string(),
            sees_alices_signature_of_bob,
            "{body}"
        );
    }
}

fn backup_algorithm() -> Value {
    json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abcdefg", "signatures": {}}})
}

fn session(first_message_index: u64, forwarded_count: u64, is_verified: bool, marker: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {"ephemeral": "e", "ciphertext": marker, "mac": "m"},
    })
}

async fn key_backup_versions_keys_and_errors(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let room = format!("!room:{SERVER_NAME}");
    let room = room.as_str();
    let other_room = format!("!other:{SERVER_NAME}");

    let (status, body) = server.get(&alice, "/room_keys/version").await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
    let (status, body) = server.put(&alice, "/room_keys/keys?version=1", json!({"rooms": {}})).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
    let (status, body) = server.post(&alice, "/room_keys/version", json!({"auth_data": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = server.post(&alice, "/room_keys/version", backup_algorithm()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"version": "1"})));
    let (_, body) = server.post(&alice, "/room_keys/version", backup_algorithm()).await;
    assert_eq!(body["version"], "2");
    let (status, body) = server.get(&alice, "/room_keys/version").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], "2");
    assert_eq!(body["count"], 0);
    assert_eq!(body["algorithm"], "m.megolm_backup.v1.curve25519-aes-sha2");
    assert_eq!(body["auth_data"]["public_key"], "abcdefg");
    let etag = body["etag"].clone();

    // Writing to the old version: 403 with the current one.
    let path = format!("/room_keys/keys/{room}/s1?version=1");
    let (status, body) = server.put(&alice, &path, session(5, 0, false, "a")).await;
    assert_eq!((status, errcode(&body)), (StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION"));
    assert_eq!(body["current_version"], "2");
    let (status, body) =
        server.put(&alice, &format!("/room_keys/keys/{room}/s1?version=7"), session(5, 0, false, "a")).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));

    let path = format!("/room_keys/keys/{room}/s1?version=2");
    let (status, body) = server.put(&alice, &path, session(5, 0, false, "first")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 1);
    assert_ne!(body["etag"], etag);
    // A worse key is not kept; the etag stays. Better ones replace it.
    for (key, kept) in [
        (session(9, 0, false, "worse"), "first"),
        (session(5, 1, false, "more forwarded"), "first"),
        (session(4, 3, false, "lower index"), "lower index"),
        (session(9, 9, true, "verified"), "verified"),
        (session(0, 0, false, "unverified"), "verified"),
    ] {
        let (status, body) = server.put(&alice, &path, key).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["count"], 1);
        let (_, stored) = server.get(&alice, &path).await;
        assert_eq!(stored["session_data"]["ciphertext"], kept);
    }
    let (_, body) = server.put(&alice, &path, session(9, 0, false, "worse")).await;
    let (_, again) = server.put(&alice, &path, session(9, 0, false, "worse")).await;
    assert_eq!(body["etag"], again["etag"], "keeping the stored key does not move the etag");

    // The bulk forms.
    let bulk = json!({"rooms": {room: {"sessions": {"s2": session(0, 0, false, "b")}}, other_room.clone(): {"sessions": {"s3": session(0, 0, true, "c")}}}});
    let (status, body) = server.put(&alice, "/room_keys/keys?version=2", bulk).await;
    assert_eq!((status, body["count"].clone()), (StatusCode::OK, json!(3)));
    let (_, body) = server.get(&alice, "/room_keys/keys?version=2").await;
    assert_eq!(body["rooms"][room]["sessions"].as_object().unwrap().len(), 2);
    assert_eq!(body["rooms"][&other_room]["sessions"]["s3"]["is_verified"], true);
    let (_, body) = server.get(&alice, &format!("/room_keys/keys/{room}?version=2")).await;
    assert_eq!(body["sessions"].as_object().unwrap().len(), 2);
    let (status, body) = server.get(&alice, &format!("/room_keys/keys/!empty:{SERVER_NAME}?version=2")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"sessions": {}})));
    let (status, body) = server.get(&alice, &format!("/room_keys/keys/{room}/nope?version=2")).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
    let (status, body) = server.get(&alice, "/room_keys/keys?version=9").await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));

    let (status, body) = server.delete(&alice, &format!("/room_keys/keys/{room}/s2?version=2")).await;
    assert_eq!((status, body["count"].clone()), (StatusCode::OK, json!(2)));
    let (status, body) = server.delete(&alice, &format!("/room_keys/keys/{room}?version=2")).await;
    assert_eq!((status, body["count"].clone()), (StatusCode::OK, json!(1)));
    let (status, body) = server.delete(&alice, "/room_keys/keys?version=2").await;
    assert_eq!((status, body["count"].clone()), (StatusCode::OK, json!(0)));

    // Updating auth_data: the algorithm and version must match.
    let mut update = backup_algorithm();
    update["auth_data"]["public_key"] = json!("newkey");
    let (status, body) = server.put(&alice, "/room_keys/version/2", update.clone()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (_, body) = server.get(&alice, "/room_keys/version/2").await;
    assert_eq!(body["auth_data"]["public_key"], "newkey");
    let mut wrong_version = update.clone();
    wrong_version["version"] = json!("1");
    let (status, body) = server.put(&alice, "/room_keys/version/2", wrong_version).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    let mut wrong_algorithm = update.clone();
    wrong_algorithm["algorithm"] = json!("org.example.other");
    let (status, body) = server.put(&alice, "/room_keys/version/2", wrong_algorithm).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    let (status, body) = server.put(&alice, "/room_keys/version/8", update).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));

    // Deleting: twice is fine, an unknown version is not; the previous version is current again.
    let (status, _) = server.delete(&alice, "/room_keys/version/2").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.delete(&alice, "/room_keys/version/2").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.delete(&alice, "/room_keys/version/5").await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
    let (status, body) = server.get(&alice, "/room_keys/version/2").await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
    let (_, body) = server.get(&alice, "/room_keys/version").await;
    assert_eq!(body["version"], "1");

    // Another user's backups are their own.
    let bob = server.register("bob").await;
    let (status, body) = server.get(&bob, "/room_keys/version/1").await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
}

both_backends!(
    keys_upload_checks_the_device_keys,
    keys_query_and_claim,
    to_device_is_delivered_once_per_device,
    to_device_pages_carry_their_position,
    device_lists_follow_shared_rooms,
    cross_signing_upload_needs_auth_only_to_replace_keys,
    signatures_are_verified_stored_and_shown,
    key_backup_versions_keys_and_errors,
);
