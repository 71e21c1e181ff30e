//! In-process tests of the room routes (createRoom, membership, send, state, redact, event):
//! requests go through the whole router with `tower::ServiceExt::oneshot`, and the tests check
//! exact statuses and errcodes.

use std::sync::Arc;

use axum::{Router, body::Body};
use http::{Method, Request, StatusCode};
use ranvier_client::{AppState, Services, router};
use ranvier_core::Config;
use ranvier_store::Store;
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};
use tower::ServiceExt;

struct TestServer {
    app: Router,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()), 4).await.unwrap();
        let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "t".to_owned()).unwrap();
        let config = Config { server_name: "test.local".to_owned(), ..Config::default() };
        let services = Services::new(config, store.clone(), key).unwrap();
        let app = router(AppState(Arc::new(services)));
        for name in ["alice", "bob"] {
            let user_id = format!("@{name}:test.local");
            store.create_user(&user_id, None, false).await.unwrap();
            store.create_device_with_token(&user_id, "DEV", None, &format!("token_{name}")).await.unwrap();
        }
        Self { app, _dir: dir }
    }

    /// Send a request as `user` and return the status and JSON body.
    async fn call(&self, user: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(format!("/_matrix/client/v3{path}"))
            .header("Authorization", format!("Bearer token_{user}"))
            .header("Content-Type", "application/json")
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    async fn create_room(&self, user: &str, body: Value) -> String {
        let (status, json) = self.call(user, Method::POST, "/createRoom", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json["room_id"].as_str().unwrap().to_owned()
    }
}

fn enc(id: &str) -> String {
    id.replace('!', "%21").replace(':', "%3A").replace('$', "%24").replace('@', "%40")
}

fn assert_error(result: (StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(result.0, status, "{}", result.1);
    assert_eq!(result.1["errcode"], errcode, "{}", result.1);
}

#[tokio::test]
async fn create_room_versions_and_errors() {
    let server = TestServer::new().await;
    let unknown = server.call("alice", Method::POST, "/createRoom", Some(json!({ "room_version": "99" }))).await;
    assert_error(unknown, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
    let bad_preset = server.call("alice", Method::POST, "/createRoom", Some(json!({ "preset": "party" }))).await;
    assert_eq!(bad_preset.0, StatusCode::BAD_REQUEST);

    // The default version is 12: a room id without a server name.
    let room = server.create_room("alice", json!({ "room_alias_name": "ignored", "name": "n" })).await;
    assert!(!room.contains(':'), "{room}");
    let v10 = server.create_room("alice", json!({ "room_version": "10", "visibility": "public" })).await;
    assert!(v10.ends_with(":test.local"));
    let (status, rules) =
        server.call("bob", Method::GET, &format!("/rooms/{}/state/m.room.join_rules", enc(&v10)), None).await;
    // bob is not in the room yet.
    assert_eq!(status, StatusCode::FORBIDDEN, "{rules}");
    let (status, _) = server.call("bob", Method::POST, &format!("/join/{}", enc(&v10)), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, rules) =
        server.call("bob", Method::GET, &format!("/rooms/{}/state/m.room.join_rules", enc(&v10)), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rules, json!({ "join_rule": "public" }));

    // Initial state and a power level override.
    let body = json!({
        "initial_state": [{ "type": "m.room.encryption", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }],
        "power_level_content_override": { "events_default": 10 },
        "invite": ["@bob:test.local"],
        "is_direct": true,
    });
    let room = server.create_room("alice", body).await;
    let path = format!("/rooms/{}/state/m.room.encryption/", enc(&room));
    let (status, encryption) = server.call("alice", Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(encryption["algorithm"], "m.megolm.v1.aes-sha2");
    let path = format!("/rooms/{}/state/m.room.power_levels", enc(&room));
    let (_, power) = server.call("alice", Method::GET, &path, None).await;
    assert_eq!(power["events_default"], 10);
    let path = format!("/rooms/{}/state/m.room.member/{}?format=event", enc(&room), enc("@bob:test.local"));
    let (status, invite) = server.call("alice", Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{invite}");
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["content"]["is_direct"], true);
    assert_eq!(invite["type"], "m.room.member");
}

#[tokio::test]
async fn send_state_and_membership_errors() {
    let server = TestServer::new().await;
    let room = server.create_room("alice", json!({ "preset": "private_chat" })).await;
    let r = enc(&room);

    // bob is not in the room: sending, reading state and joining uninvited are refused.
    let send = format!("/rooms/{r}/send/m.room.message/t1");
    let message = json!({ "msgtype": "m.text", "body": "hi" });
    assert_error(
        server.call("bob", Method::PUT, &send, Some(message.clone())).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        server.call("bob", Method::GET, &format!("/rooms/{r}/state"), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        server.call("bob", Method::POST, &format!("/rooms/{r}/join"), Some(json!({}))).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );

    // Idempotent send.
    let (status, first) = server.call("alice", Method::PUT, &send, Some(message.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let (_, again) = server.call("alice", Method::PUT, &send, Some(message.clone())).await;
    assert_eq!(first["event_id"], again["event_id"]);

    // The event route.
    let event_id = first["event_id"].as_str().unwrap();
    let (status, event) = server.call("alice", Method::GET, &format!("/rooms/{r}/event/{}", enc(event_id)), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["content"]["body"], "hi");
    assert_eq!(event["room_id"], room.as_str());
    let unknown = format!("/rooms/{r}/event/{}", enc("$nothing"));
    assert_error(server.call("alice", Method::GET, &unknown, None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Invite, join, and power levels: bob may talk but not rename the room.
    let invite = json!({ "user_id": "@bob:test.local" });
    assert_eq!(server.call("alice", Method::POST, &format!("/rooms/{r}/invite"), Some(invite)).await.0, StatusCode::OK);
    assert_eq!(server.call("bob", Method::POST, &format!("/rooms/{r}/join"), Some(json!({}))).await.0, StatusCode::OK);
    let send = format!("/rooms/{r}/send/m.room.message/t1");
    assert_eq!(server.call("bob", Method::PUT, &send, Some(message)).await.0, StatusCode::OK);
    let name = json!({ "name": "bob's room" });
    let result = server.call("bob", Method::PUT, &format!("/rooms/{r}/state/m.room.name/"), Some(name.clone())).await;
    assert_error(result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // The empty state key in its three spellings.
    let (status, _) = server.call("alice", Method::PUT, &format!("/rooms/{r}/state/m.room.name"), Some(name)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, got) = server.call("bob", Method::GET, &format!("/rooms/{r}/state/m.room.name/"), None).await;
    assert_eq!((status, got), (StatusCode::OK, json!({ "name": "bob's room" })));
    let missing = format!("/rooms/{r}/state/m.room.avatar");
    assert_error(server.call("bob", Method::GET, &missing, None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Members and joined members.
    let (status, members) = server.call("bob", Method::GET, &format!("/rooms/{r}/members?membership=join"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(members["chunk"].as_array().unwrap().len(), 2);
    let (_, joined) = server.call("bob", Method::GET, &format!("/rooms/{r}/joined_members"), None).await;
    assert!(joined["joined"]["@alice:test.local"].is_object(), "{joined}");
    let (_, rooms) = server.call("bob", Method::GET, "/joined_rooms", None).await;
    assert_eq!(rooms["joined_rooms"], json!([room]));

    // Kick and ban need power; forget needs having left.
    let kick = json!({ "user_id": "@alice:test.local" });
    assert_error(
        server.call("bob", Method::POST, &format!("/rooms/{r}/kick"), Some(kick)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_error(
        server.call("bob", Method::POST, &format!("/rooms/{r}/forget"), Some(json!({}))).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
    let ban = json!({ "user_id": "@bob:test.local", "reason": "spam" });
    assert_eq!(server.call("alice", Method::POST, &format!("/rooms/{r}/ban"), Some(ban)).await.0, StatusCode::OK);
    assert_error(
        server.call("bob", Method::POST, &format!("/rooms/{r}/join"), Some(json!({}))).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    assert_eq!(
        server.call("bob", Method::POST, &format!("/rooms/{r}/forget"), Some(json!({}))).await.0,
        StatusCode::OK
    );
    let unban = json!({ "user_id": "@bob:test.local" });
    assert_eq!(server.call("alice", Method::POST, &format!("/rooms/{r}/unban"), Some(unban)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bad_input_errors() {
    let server = TestServer::new().await;
    let room = server.create_room("alice", json!({})).await;
    let r = enc(&room);
    let bad_room = server.call("alice", Method::PUT, "/rooms/not_a_room/send/m.room.message/t", Some(json!({}))).await;
    assert_error(bad_room, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let bad_user =
        server.call("alice", Method::POST, &format!("/rooms/{r}/invite"), Some(json!({ "user_id": "bob" }))).await;
    assert_eq!(bad_user.0, StatusCode::BAD_REQUEST, "{}", bad_user.1);
    let bad_event = server.call("alice", Method::GET, &format!("/rooms/{r}/event/nope"), None).await;
    assert_error(bad_event, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let alias = server
        .call("alice", Method::POST, &format!("/join/{}", enc("#room:test.local").replace('#', "%23")), Some(json!({})))
        .await;
    assert_error(alias, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let unknown = server
        .call("alice", Method::POST, &format!("/rooms/{}/join", enc("!unknown:test.local")), Some(json!({})))
        .await;
    assert_error(unknown, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let unknown_send = format!("/rooms/{}/send/m.room.message/t", enc("!unknown:test.local"));
    assert_error(
        server.call("alice", Method::PUT, &unknown_send, Some(json!({}))).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let big = json!({ "msgtype": "m.text", "body": "x".repeat(70_000) });
    let send = format!("/rooms/{r}/send/m.room.message/big");
    assert_error(
        server.call("alice", Method::PUT, &send, Some(big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    );
    let not_object =
        server.call("alice", Method::PUT, &format!("/rooms/{r}/send/m.room.message/arr"), Some(json!([1]))).await;
    assert_eq!(not_object.0, StatusCode::BAD_REQUEST, "{}", not_object.1);

    // Redaction: content goes, redacted_because comes, on every read.
    let (_, sent) = server
        .call("alice", Method::PUT, &format!("/rooms/{r}/send/m.room.message/s"), Some(json!({ "body": "secret" })))
        .await;
    let event_id = sent["event_id"].as_str().unwrap();
    let redact = format!("/rooms/{r}/redact/{}/rt", enc(event_id));
    let (status, redaction) = server.call("alice", Method::PUT, &redact, Some(json!({ "reason": "oops" }))).await;
    assert_eq!(status, StatusCode::OK, "{redaction}");
    let (_, again) = server.call("alice", Method::PUT, &redact, Some(json!({ "reason": "oops" }))).await;
    assert_eq!(redaction["event_id"], again["event_id"]);
    let (_, event) = server.call("alice", Method::GET, &format!("/rooms/{r}/event/{}", enc(event_id)), None).await;
    assert_eq!(event["content"], json!({}));
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction["event_id"]);
    assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], "oops");
}
