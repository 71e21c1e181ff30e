//! In-process API tests of dehydrated devices (MSC3814): storing, reading, replacing and
//! deleting a user's dehydrated device, its keys as others see them, the to-device messages
//! queued for it and paged through `/events` exactly once, and the errors.

mod support;

use http::{Method, StatusCode};
use ruma::{
    CanonicalJsonValue,
    canonical_json::to_canonical_value,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};
use support::{Backend, TestApi};

const DEHYDRATED: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";

/// A registered user with one device.
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

struct TestServer {
    api: TestApi,
}

impl TestServer {
    async fn start(backend: Backend) -> Option<Self> {
        Some(Self { api: TestApi::start(backend, |_| {}).await? })
    }

    async fn call(&self, method: Method, path: &str, client: &Client, body: Option<Value>) -> (StatusCode, Value) {
        let response = self.api.send(method.as_str(), path, Some(&client.token), body.as_ref(), None).await;
        (response.status, response.body)
    }

    async fn register(&self, name: &str) -> Client {
        let body = json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}});
        let response = self.api.send("POST", "/_matrix/client/v3/register", None, Some(&body), None).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        let body = response.body;
        Client {
            user_id: body["user_id"].as_str().unwrap().into(),
            device_id: body["device_id"].as_str().unwrap().into(),
            token: body["access_token"].as_str().unwrap().into(),
        }
    }

    async fn v3(&self, method: Method, client: &Client, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, &format!("/_matrix/client/v3{path}"), client, body).await
    }

    /// `PUT /dehydrated_device` for `client`'s user.
    async fn put_dehydrated(&self, client: &Client, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, DEHYDRATED, client, Some(body)).await
    }

    /// `POST /dehydrated_device/{device_id}/events`.
    async fn events(&self, client: &Client, device_id: &str, next_batch: Option<&str>) -> (StatusCode, Value) {
        let body = match next_batch {
            Some(next_batch) => json!({"next_batch": next_batch}),
            None => json!({}),
        };
        self.call(Method::POST, &format!("{DEHYDRATED}/{device_id}/events"), client, Some(body)).await
    }

    /// Send a to-device message of type `m.test` to one device.
    async fn send_to(&self, from: &Client, user_id: &str, device_id: &str, txn_id: &str, content: Value) {
        let body = json!({"messages": {user_id: {device_id: content}}});
        let (status, reply) = self.v3(Method::PUT, from, &format!("/sendToDevice/m.test/{txn_id}"), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }

    /// The device ids `/keys/query` shows for `user_id`.
    async fn queried_devices(&self, asker: &Client, user_id: &str) -> Value {
        let query = json!({"device_keys": {user_id: []}});
        let (status, body) = self.v3(Method::POST, asker, "/keys/query", Some(query)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["device_keys"][user_id].clone()
    }

    /// The device ids `GET /devices` lists for `client`.
    async fn listed_devices(&self, client: &Client) -> Vec<String> {
        let (status, body) = self.v3(Method::GET, client, "/devices", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut ids: Vec<String> =
            body["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    }
}

/// A dehydrated device upload for `user_id`'s `device_id`, with keys signed by `key`, one
/// one-time key and one fallback key.
fn dehydrated_upload(user_id: &str, device_id: &str, key: &Key, pickle: &str) -> Value {
    let device_keys = key.sign(
        user_id,
        json!({
            "user_id": user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device_id}"): "curve25519+public+key",
                key.key_id(): key.public(),
            },
            "dehydrated": true,
        }),
    );
    let otk = |public: &str, fallback: bool| {
        let mut otk = json!({"key": Base64::<Standard>::new(public.as_bytes().to_vec()).encode()});
        if fallback {
            otk["fallback"] = json!(true);
        }
        key.sign(user_id, otk)
    };
    json!({
        "device_id": device_id,
        "initial_device_display_name": "Dehydrated device",
        "device_data": {"algorithm": "org.matrix.msc3814.v2", "device_pickle": pickle, "nonce": "bm9uY2U"},
        "device_keys": device_keys,
        "one_time_keys": {"signed_curve25519:AAAA": otk("one", false)},
        "fallback_keys": {"signed_curve25519:FFFF": otk("fallback", true)},
    })
}

fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("<none>")
}

async fn put_get_replace_delete(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    // The feature is advertised.
    let response = server.api.send("GET", "/_matrix/client/versions", None, None, None).await;
    assert_eq!(response.body["unstable_features"]["org.matrix.msc3814"], true, "{}", response.body);

    let (status, body) = server.call(Method::GET, DEHYDRATED, &alice, None).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
    let (status, body) = server.call(Method::DELETE, DEHYDRATED, &alice, None).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));

    let first_key = Key::new("DEHYDRATED1");
    let upload = dehydrated_upload(&alice.user_id, "DEHYDRATED1", &first_key, "first");
    let (status, body) = server.put_dehydrated(&alice, upload.clone()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"device_id": "DEHYDRATED1"})));
    let (status, body) = server.call(Method::GET, DEHYDRATED, &alice, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"device_id": "DEHYDRATED1", "device_data": upload["device_data"]}));

    // Others see the device's keys, with the client's `dehydrated` flag, and can claim its
    // one-time key and then its fallback key.
    let devices = server.queried_devices(&bob, &alice.user_id).await;
    let device = &devices["DEHYDRATED1"];
    assert_eq!(device["dehydrated"], true);
    assert_eq!(device["keys"][first_key.key_id()], first_key.public());
    assert_eq!(device["unsigned"]["device_display_name"], "Dehydrated device");
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {"DEHYDRATED1": "signed_curve25519"}}});
    let (status, body) = server.v3(Method::POST, &bob, "/keys/claim", Some(claim.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claimed: Vec<&String> =
        body["one_time_keys"][&alice.user_id]["DEHYDRATED1"].as_object().unwrap().keys().collect();
    assert_eq!(claimed, ["signed_curve25519:AAAA"]);
    let (_, body) = server.v3(Method::POST, &bob, "/keys/claim", Some(claim)).await;
    let claimed: Vec<&String> =
        body["one_time_keys"][&alice.user_id]["DEHYDRATED1"].as_object().unwrap().keys().collect();
    assert_eq!(claimed, ["signed_curve25519:FFFF"]);
    // Like any device of the user, it is listed by `GET /devices`.
    let mut expected = vec![alice.device_id.clone(), "DEHYDRATED1".to_owned()];
    expected.sort();
    assert_eq!(server.listed_devices(&alice).await, expected);

    // A new dehydrated device replaces the old one, whose keys go with it.
    let second_key = Key::new("DEHYDRATED2");
    let upload = dehydrated_upload(&alice.user_id, "DEHYDRATED2", &second_key, "second");
    let (status, body) = server.put_dehydrated(&alice, upload.clone()).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"device_id": "DEHYDRATED2"})));
    let (_, body) = server.call(Method::GET, DEHYDRATED, &alice, None).await;
    assert_eq!(body, json!({"device_id": "DEHYDRATED2", "device_data": upload["device_data"]}));
    let devices = server.queried_devices(&bob, &alice.user_id).await;
    assert!(devices.get("DEHYDRATED1").is_none(), "{devices}");
    assert_eq!(devices["DEHYDRATED2"]["keys"][second_key.key_id()], second_key.public());
    let mut expected = vec![alice.device_id.clone(), "DEHYDRATED2".to_owned()];
    expected.sort();
    assert_eq!(server.listed_devices(&alice).await, expected);

    let (status, body) = server.call(Method::DELETE, DEHYDRATED, &alice, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"device_id": "DEHYDRATED2"})));
    let (status, body) = server.call(Method::GET, DEHYDRATED, &alice, None).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
    let (status, body) = server.call(Method::DELETE, DEHYDRATED, &alice, None).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
    assert!(server.queried_devices(&bob, &alice.user_id).await.get("DEHYDRATED2").is_none());
    assert_eq!(server.listed_devices(&alice).await, vec![alice.device_id.clone()]);
    // Each user has their own: bob never had one.
    let (status, _) = server.call(Method::GET, DEHYDRATED, &bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn to_device_is_queued_and_paged_once(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let key = Key::new("DEHYD");
    let (status, body) = server.put_dehydrated(&alice, dehydrated_upload(&alice.user_id, "DEHYD", &key, "p")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // More messages than one page carries: 100 addressed to the device, and one to every
    // device of alice's.
    for i in 0..100 {
        server.send_to(&bob, &alice.user_id, "DEHYD", &format!("t{i}"), json!({"n": i})).await;
    }
    server.send_to(&bob, &alice.user_id, "*", "all", json!({"n": 100})).await;

    let (status, first) = server.events(&alice, "DEHYD", None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let events = first["events"].as_array().unwrap();
    assert_eq!(events.len(), 100);
    assert_eq!(events[0], json!({"sender": bob.user_id, "type": "m.test", "content": {"n": 0}}));
    assert_eq!(events[99]["content"], json!({"n": 99}));
    let next = first["next_batch"].as_str().unwrap().to_owned();
    // Until the client sends `next_batch` back, the first page is there to be read again.
    let (_, again) = server.events(&alice, "DEHYD", None).await;
    assert_eq!(again["events"].as_array().unwrap().len(), 100);

    let (status, second) = server.events(&alice, "DEHYD", Some(&next)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["events"], json!([{"sender": bob.user_id, "type": "m.test", "content": {"n": 100}}]));
    let next = second["next_batch"].as_str().unwrap().to_owned();
    let (_, third) = server.events(&alice, "DEHYD", Some(&next)).await;
    assert_eq!(third["events"], json!([]));
    // Sending `next_batch` deleted what came before it: nothing is delivered twice.
    let (_, from_start) = server.events(&alice, "DEHYD", None).await;
    assert_eq!(from_start["events"], json!([]));

    // A message sent later comes on the next page.
    server.send_to(&bob, &alice.user_id, "DEHYD", "late", json!({"n": "late"})).await;
    let (_, late) = server.events(&alice, "DEHYD", third["next_batch"].as_str()).await;
    assert_eq!(late["events"][0]["content"], json!({"n": "late"}));

    // Replacing the device (even under the same id) drops its inbox.
    let (status, _) = server.put_dehydrated(&alice, dehydrated_upload(&alice.user_id, "DEHYD", &key, "q")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, fresh) = server.events(&alice, "DEHYD", None).await;
    assert_eq!(fresh["events"], json!([]));
}

async fn dehydrated_device_errors(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    // No dehydrated device: its events are not found.
    let (status, body) = server.events(&alice, "DEHYD", None).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));

    // Keys that name another device, or are not signed by the device's key, are refused and
    // nothing is stored.
    let key = Key::new("DEHYD");
    let mut upload = dehydrated_upload(&alice.user_id, "DEHYD", &key, "p");
    upload["device_id"] = json!("OTHER");
    let (status, body) = server.put_dehydrated(&alice, upload).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    let mut upload = dehydrated_upload(&alice.user_id, "DEHYD", &key, "p");
    upload["device_keys"]["keys"]["curve25519:DEHYD"] = json!("tampered");
    let (status, body) = server.put_dehydrated(&alice, upload).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"));
    let mut upload = dehydrated_upload(&alice.user_id, "DEHYD", &key, "p");
    upload["device_data"] = json!("not an object");
    let (status, body) = server.put_dehydrated(&alice, upload).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_BAD_JSON"));
    let (status, body) = server.put_dehydrated(&alice, json!({"device_id": "DEHYD"})).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_BAD_JSON"));
    let (status, _) = server.call(Method::GET, DEHYDRATED, &alice, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The id of one of the user's ordinary devices cannot be taken, and that device is kept.
    let own_key = Key::new(&alice.device_id);
    let (status, body) =
        server.put_dehydrated(&alice, dehydrated_upload(&alice.user_id, &alice.device_id, &own_key, "p")).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    let (status, body) = server.v3(Method::GET, &alice, "/account/whoami", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = server.put_dehydrated(&alice, dehydrated_upload(&alice.user_id, "DEHYD", &key, "p")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An ordinary device is not the dehydrated device; another user's dehydrated device is not
    // theirs to read.
    let (status, body) = server.events(&alice, &alice.device_id, None).await;
    assert_eq!((status, errcode(&body)), (StatusCode::FORBIDDEN, "M_FORBIDDEN"));
    let (status, body) = server.events(&bob, "DEHYD", None).await;
    assert_eq!((status, errcode(&body)), (StatusCode::NOT_FOUND, "M_NOT_FOUND"));
    let (status, body) = server.events(&alice, "DEHYD", Some("not a position")).await;
    assert_eq!((status, errcode(&body)), (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"));
    // Without an access token nothing is answered.
    let response = server.api.send("GET", DEHYDRATED, None, None, None).await;
    assert_eq!((response.status, errcode(&response.body)), (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"));

    // Deleting the device through `/devices` ends its life as the dehydrated device too.
    let delete = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id}, "password": "pw"}});
    let (status, body) = server.v3(Method::DELETE, &alice, "/devices/DEHYD", Some(delete.clone())).await;
    if status == StatusCode::UNAUTHORIZED {
        // A UIA session is needed first: answer with its session id.
        let mut delete = delete;
        delete["auth"]["session"] = body["session"].clone();
        let (status, body) = server.v3(Method::DELETE, &alice, "/devices/DEHYD", Some(delete)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    } else {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = server.call(Method::GET, DEHYDRATED, &alice, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

both_backends!(put_get_replace_delete, to_device_is_queued_and_paged_once, dehydrated_device_errors);
