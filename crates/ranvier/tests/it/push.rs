//! Push notifications: a real push gateway on loopback receives exactly the notifications it
//! should (a direct message notifies, a muted room or a disabled rule sends nothing, a mention
//! highlights, a rejected pushkey removes the pusher, a failing gateway is tried again);
//! `/pushrules` CRUD shapes and errors over raw HTTP, unread counts in `/sync` (reset by
//! receipts, per thread), `/notifications`, pusher validation, and `matrix-sdk`'s notification
//! settings and unread counts.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use matrix_sdk::{
    config::SyncSettings,
    notification_settings::RoomNotificationMode,
    ruma::{
        OwnedRoomId, api::client::room::create_room::v3::Request as CreateRoomRequest,
        events::room::message::RoomMessageEventContent,
    },
};
use ranvier_test::{Backend, Method, TestServer, User, backend_tests, encode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{builder, start};

/// How long a test waits for a notification that should come.
const ARRIVES_WITHIN: Duration = Duration::from_secs(15);
/// How long a test listens for notifications that must not come.
const QUIET_FOR: Duration = Duration::from_millis(1500);

/// What the test gateway was told to do, and what it saw.
#[derive(Default)]
struct GatewayState {
    /// Answer this many further requests with `500`.
    fail_next: AtomicUsize,
    /// Every request, answered or failed.
    attempts: AtomicUsize,
    /// Pushkeys to list as `rejected`.
    reject: Mutex<Vec<String>>,
    sender: Mutex<Option<mpsc::UnboundedSender<Value>>>,
}

/// A push gateway on a loopback port: every accepted notification is queued for the test.
struct Gateway {
    url: String,
    state: Arc<GatewayState>,
    received: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    task: tokio::task::JoinHandle<()>,
}

async fn notify(State(state): State<Arc<GatewayState>>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    if state.fail_next.load(Ordering::SeqCst) > 0 {
        state.fail_next.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": "try later" })));
    }
    let notification = body["notification"].clone();
    let reject = state.reject.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let rejected: Vec<Value> = notification["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|device| device["pushkey"].as_str())
        .filter(|pushkey| reject.iter().any(|r| r == pushkey))
        .map(|pushkey| json!(pushkey))
        .collect();
    if let Some(sender) = &*state.sender.lock().unwrap_or_else(|e| e.into_inner()) {
        let _ = sender.send(notification);
    }
    (StatusCode::OK, Json(json!({ "rejected": rejected })))
}

impl Gateway {
    async fn start() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let state = Arc::new(GatewayState { sender: Mutex::new(Some(sender)), ..Default::default() });
        let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("address: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Gateway {
            url: format!("http://{address}/_matrix/push/v1/notify"),
            state,
            received: tokio::sync::Mutex::new(receiver),
            task,
        }
    }

    /// The next notification, which must arrive.
    async fn next(&self, server: &TestServer) -> Value {
        match tokio::time::timeout(ARRIVES_WITHIN, self.received.lock().await.recv()).await {
            Ok(Some(notification)) => notification,
            _ => panic!("no notification reached the gateway within {ARRIVES_WITHIN:?}\n{}", server.log_report()),
        }
    }

    /// Nothing more arrives for a while.
    async fn expect_nothing(&self) {
        if let Ok(Some(notification)) = tokio::time::timeout(QUIET_FOR, self.received.lock().await.recv()).await {
            panic!("unexpected notification: {notification}");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The body of `POST /pushers/set` for an HTTP pusher to `url` with extra `data` keys.
fn pusher_body(url: &str, pushkey: &str, mut data: Value) -> Value {
    data["url"] = json!(url);
    json!({
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": pushkey,
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": data,
    })
}

async fn set_pusher(server: &TestServer, user: &User, url: &str, pushkey: &str, data: Value) {
    let body = pusher_body(url, pushkey, data);
    server.expect_ok(Method::POST, "/_matrix/client/v3/pushers/set", Some(&body), Some(&user.access_token)).await;
}

async fn pushers(server: &TestServer, user: &User) -> Vec<Value> {
    let body = server.expect_ok(Method::GET, "/_matrix/client/v3/pushers", None, Some(&user.access_token)).await;
    body["pushers"].as_array().cloned().unwrap_or_else(|| panic!("pushers in {body}"))
}

/// Alice and bob in a private room of two.
async fn direct_chat(server: &TestServer) -> (User, User, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat", "is_direct": true })).await;
    server.invite(&alice, &room, &bob.user_id).await;
    server.join(&bob, &room).await;
    (alice, bob, room)
}

/// Alice, bob and carol in a public room.
async fn group_chat(server: &TestServer) -> (User, User, User, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat", "name": "Group" })).await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    (alice, bob, carol, room)
}

fn mention(user: &User, body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body, "m.mentions": { "user_ids": [user.user_id] } })
}

fn rule_path(kind: &str, rule_id: &str) -> String {
    format!("/_matrix/client/v3/pushrules/global/{kind}/{}", encode(rule_id))
}

fn joined<'a>(sync: &'a Value, room_id: &str) -> &'a Value {
    &sync["rooms"]["join"][room_id]
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap_or_else(|| panic!("next_batch in {sync}")).to_owned()
}

/// A message in a two-member room reaches bob's gateway once, in the full format, with the
/// pusher's data minus the url; bob's own messages send nothing.
async fn direct_message_notifies(backend: Backend) {
    let server = start(backend).await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = direct_chat(&server).await;
    server
        .expect_ok(
            Method::PUT,
            &format!("/_matrix/client/v3/profile/{}/displayname", encode(&alice.user_id)),
            Some(&json!({ "displayname": "Alice" })),
            Some(&alice.access_token),
        )
        .await;
    set_pusher(&server, &bob, &gateway.url, "bob-key", json!({ "custom": "kept" })).await;
    let listed = pushers(&server, &bob).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["data"]["url"], gateway.url.as_str());
    assert_eq!(listed[0]["kind"], "http");

    let event_id = server.send_text(&alice, &room, "hello bob").await;
    let notification = gateway.next(&server).await;
    assert_eq!(notification["event_id"], event_id.as_str(), "{notification}");
    assert_eq!(notification["room_id"], room.as_str());
    assert_eq!(notification["type"], "m.room.message");
    assert_eq!(notification["sender"], alice.user_id.as_str());
    assert_eq!(notification["sender_display_name"], "Alice");
    assert_eq!(notification["content"]["body"], "hello bob");
    assert_eq!(notification["counts"]["unread"], 1, "one room with unread notifications");
    let device = &notification["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["pushkey"], "bob-key");
    assert!(device["pushkey_ts"].is_u64(), "{device}");
    assert_eq!(device["data"], json!({ "custom": "kept" }), "the url stays with the server");
    assert_eq!(device["tweaks"]["sound"], "default", "{device}");

    // Bob's own message notifies nobody with a pusher; alice has none.
    server.send_text(&bob, &room, "hi alice").await;
    gateway.expect_nothing().await;
}

/// A room muted with a room rule, or the default rules disabled, send nothing; once a rule
/// notifies again, the next notification is the new message (delivery is in order, so the
/// muted ones were never queued).
async fn muted_room_and_disabled_rule_send_nothing(backend: Backend) {
    let server = start(backend).await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = direct_chat(&server).await;
    set_pusher(&server, &bob, &gateway.url, "bob-key", json!({})).await;
    let token = Some(bob.access_token.as_str());

    server.expect_ok(Method::PUT, &rule_path("room", &room), Some(&json!({ "actions": [] })), token).await;
    server.send_text(&alice, &room, "muted").await;
    server.expect_ok(Method::DELETE, &rule_path("room", &room), None, token).await;

    for rule in [".m.rule.room_one_to_one", ".m.rule.message"] {
        let path = format!("{}/enabled", rule_path("underride", rule));
        server.expect_ok(Method::PUT, &path, Some(&json!({ "enabled": false })), token).await;
    }
    server.send_text(&alice, &room, "rules off").await;
    gateway.expect_nothing().await;

    let path = format!("{}/enabled", rule_path("underride", ".m.rule.message"));
    server.expect_ok(Method::PUT, &path, Some(&json!({ "enabled": true })), token).await;
    let heard = server.send_text(&alice, &room, "heard").await;
    let notification = gateway.next(&server).await;
    assert_eq!(notification["event_id"], heard.as_str(), "{notification}");
    assert_eq!(notification["prio"], "low", "a plain message without sound is low priority");
    gateway.expect_nothing().await;
}

/// A mention highlights: the gateway hears it with the highlight tweak at high priority, and
/// `/sync` counts it as a highlight as well as a notification.
async fn mention_highlights(backend: Backend) {
    let server = start(backend).await;
    let gateway = Gateway::start().await;
    let (alice, bob, _carol, room) = group_chat(&server).await;
    let since = next_batch(&server.sync(&bob, None, None).await);
    set_pusher(&server, &bob, &gateway.url, "bob-key", json!({})).await;

    let plain = server.send_text(&alice, &room, "hello all").await;
    let mentioned = server.send_event(&alice, &room, "m.room.message", &mention(&bob, "bob, look")).await;
    let first = gateway.next(&server).await;
    assert_eq!(first["event_id"], plain.as_str());
    assert!(first["devices"][0]["tweaks"].get("highlight").is_none_or(|h| h == false), "{first}");
    let second = gateway.next(&server).await;
    assert_eq!(second["event_id"], mentioned.as_str());
    assert_eq!(second["devices"][0]["tweaks"]["highlight"], true, "{second}");
    assert!(second.get("prio").is_none_or(|prio| prio == "high"), "{second}");

    let sync = server.sync(&bob, Some(&since), None).await;
    let counts = &joined(&sync, &room)["unread_notifications"];
    assert_eq!(counts["notification_count"], 2, "{sync}");
    assert_eq!(counts["highlight_count"], 1, "{sync}");
}

/// A pushkey the gateway rejects removes the pusher; nothing is sent to it afterwards.
async fn rejected_pushkey_removes_the_pusher(backend: Backend) {
    let server = start(backend).await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = direct_chat(&server).await;
    gateway.state.reject.lock().unwrap_or_else(|e| e.into_inner()).push("stale-key".to_owned());
    set_pusher(&server, &bob, &gateway.url, "stale-key", json!({})).await;

    server.send_text(&alice, &room, "one").await;
    let notification = gateway.next(&server).await;
    assert_eq!(notification["devices"][0]["pushkey"], "stale-key");
    let deadline = Instant::now() + ARRIVES_WITHIN;
    while !pushers(&server, &bob).await.is_empty() {
        assert!(Instant::now() < deadline, "the rejected pusher is still listed\n{}", server.log_report());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.send_text(&alice, &room, "two").await;
    gateway.expect_nothing().await;
}

/// A gateway that fails is tried again with backoff until it takes the notification, which
/// it then gets exactly once; `event_id_only` pushers get ids and counts only.
async fn failing_gateway_is_retried(backend: Backend) {
    let server = builder(backend).env("RANVIER_PUSH__RETRY_INITIAL_MS", "100").start().await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = direct_chat(&server).await;
    set_pusher(&server, &bob, &gateway.url, "bob-key", json!({ "format": "event_id_only" })).await;
    gateway.state.fail_next.store(2, Ordering::SeqCst);

    let event_id = server.send_text(&alice, &room, "secret").await;
    let notification = gateway.next(&server).await;
    assert_eq!(gateway.state.attempts.load(Ordering::SeqCst), 3, "two failures, then success");
    assert_eq!(notification["event_id"], event_id.as_str());
    assert_eq!(notification["room_id"], room.as_str());
    assert_eq!(notification["counts"]["unread"], 1);
    for absent in ["content", "sender", "type", "room_name"] {
        assert!(notification.get(absent).is_none(), "event_id_only leaves out {absent}: {notification}");
    }
    assert_eq!(notification["devices"][0]["data"], json!({ "format": "event_id_only" }));
    gateway.expect_nothing().await;
    assert_eq!(gateway.state.attempts.load(Ordering::SeqCst), 3, "nothing sent twice");
}

/// A notification the gateway keeps refusing is dropped after `give_up_after_ms`, and the
/// pusher goes on with the next one.
async fn undeliverable_notification_is_dropped(backend: Backend) {
    let server = builder(backend)
        .env("RANVIER_PUSH__RETRY_INITIAL_MS", "100")
        .env("RANVIER_PUSH__GIVE_UP_AFTER_MS", "250")
        .start()
        .await;
    let gateway = Gateway::start().await;
    let (alice, bob, room) = direct_chat(&server).await;
    set_pusher(&server, &bob, &gateway.url, "bob-key", json!({})).await;
    gateway.state.fail_next.store(3, Ordering::SeqCst);

    server.send_text(&alice, &room, "lost").await;
    let kept = server.send_text(&alice, &room, "kept").await;
    let notification = gateway.next(&server).await;
    assert_eq!(notification["event_id"], kept.as_str(), "the refused one was dropped: {notification}");
    assert_eq!(gateway.state.attempts.load(Ordering::SeqCst), 4, "three refusals, then the next one");
    gateway.expect_nothing().await;
}

/// Logging out removes the pushers that the session's access token set.
async fn logout_removes_pushers(backend: Backend) {
    let server = start(backend).await;
    let bob = server.register("bob").await;
    let phone = server.login("bob", &ranvier_test::password_for("bob")).await;
    set_pusher(&server, &phone, "https://push.example.org/_matrix/push/v1/notify", "phone", json!({})).await;
    set_pusher(&server, &bob, "https://push.example.org/_matrix/push/v1/notify", "laptop", json!({})).await;
    assert_eq!(pushers(&server, &bob).await.len(), 2);
    server.expect_ok(Method::POST, "/_matrix/client/v3/logout", Some(&json!({})), Some(&phone.access_token)).await;
    let left = pushers(&server, &bob).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["pushkey"], "laptop");
}

/// `/pushers/set` validates, updates in place, honours `append`, and deletes with `kind: null`.
async fn pusher_validation_and_updates(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = "/_matrix/client/v3/pushers/set";
    let url = "https://push.example.org/_matrix/push/v1/notify";
    let send = |user: &User, body: Value| {
        let token = user.access_token.clone();
        let server = &server;
        async move { server.request(Method::POST, path, Some(&body), Some(&token)).await }
    };
    let bad_path = pusher_body("https://push.example.org/notify", "k", json!({}));
    assert_eq!(send(&alice, bad_path).await.1["errcode"], "M_INVALID_PARAM");
    let mut no_url = pusher_body(url, "k", json!({}));
    no_url["data"] = json!({});
    let (status, body) = send(&alice, no_url).await;
    assert_eq!(status, 400, "{body}");
    let mut email = pusher_body(url, "a@example.org", json!({}));
    email["kind"] = json!("email");
    email["app_id"] = json!("m.email");
    let (status, body) = send(&alice, email).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "email pushers: {body}");
    let mut long_app = pusher_body(url, "k", json!({}));
    long_app["app_id"] = json!("a".repeat(65));
    assert_eq!(send(&alice, long_app).await.1["errcode"], "M_INVALID_PARAM");
    assert!(pushers(&server, &alice).await.is_empty(), "nothing invalid was stored");

    // Create, then update in place.
    assert_eq!(send(&alice, pusher_body(url, "k", json!({}))).await.0, 200);
    let mut renamed = pusher_body(url, "k", json!({}));
    renamed["device_display_name"] = json!("Tablet");
    assert_eq!(send(&alice, renamed).await.0, 200);
    let listed = pushers(&server, &alice).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["device_display_name"], "Tablet");

    // The same app id and pushkey for another user replaces alice's, unless appended.
    let mut appended = pusher_body(url, "k", json!({}));
    appended["append"] = json!(true);
    assert_eq!(send(&bob, appended).await.0, 200);
    assert_eq!(pushers(&server, &alice).await.len(), 1, "append keeps the other user's pusher");
    assert_eq!(send(&bob, pusher_body(url, "k", json!({}))).await.0, 200);
    assert!(pushers(&server, &alice).await.is_empty(), "without append the other user's pusher goes");

    let delete = json!({ "kind": null, "app_id": "org.example.app", "pushkey": "k" });
    assert_eq!(send(&bob, delete).await.0, 200);
    assert!(pushers(&server, &bob).await.is_empty());
}

/// `/pushrules` shapes and errors, and the `m.push_rules` account data kept in step.
async fn push_rules_crud(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());

    // Defaults, before anything changed: from the API, account data and the first sync.
    let all = server.expect_ok(Method::GET, "/_matrix/client/v3/pushrules/", None, token).await;
    let overrides = all["global"]["override"].as_array().unwrap_or_else(|| panic!("override rules in {all}"));
    assert_eq!(overrides[0]["rule_id"], ".m.rule.master");
    assert_eq!(overrides[0]["enabled"], false);
    for id in [".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.suppress_notices"] {
        assert!(overrides.iter().any(|rule| rule["rule_id"] == id && rule["default"] == true), "{id} in {all}");
    }
    let underrides = all["global"]["underride"].as_array().unwrap_or_else(|| panic!("underride rules in {all}"));
    for id in [".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"] {
        assert!(underrides.iter().any(|rule| rule["rule_id"] == id), "{id} in {all}");
    }
    let global = server.expect_ok(Method::GET, "/_matrix/client/v3/pushrules/global/", None, token).await;
    assert_eq!(global, all["global"]);
    let account_data = format!("/_matrix/client/v3/user/{}/account_data/m.push_rules", encode(&alice.user_id));
    assert_eq!(server.expect_ok(Method::GET, &account_data, None, token).await, all);
    let sync = server.sync(&alice, None, None).await;
    let event = sync["account_data"]["events"]
        .as_array()
        .and_then(|events| events.iter().find(|event| event["type"] == "m.push_rules"))
        .unwrap_or_else(|| panic!("m.push_rules in the first sync: {sync}"));
    assert_eq!(event["content"], all);
    let since = next_batch(&sync);

    // One rule.
    let master = server.expect_ok(Method::GET, &rule_path("override", ".m.rule.master"), None, token).await;
    assert_eq!(master["rule_id"], ".m.rule.master");
    assert_eq!(master["default"], true);
    let (status, body) = server.request(Method::GET, &rule_path("override", "nope"), None, token).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");

    // Add a content rule and two override rules, placed with `before`.
    let cake = json!({ "pattern": "cake*lie", "actions": ["notify"] });
    server.expect_ok(Method::PUT, &rule_path("content", "cake"), Some(&cake), token).await;
    let rule = server.expect_ok(Method::GET, &rule_path("content", "cake"), None, token).await;
    assert_eq!(
        rule,
        json!({ "rule_id": "cake", "pattern": "cake*lie", "actions": ["notify"], "enabled": true, "default": false })
    );
    let empty = json!({ "conditions": [], "actions": [] });
    server.expect_ok(Method::PUT, &rule_path("override", "first"), Some(&empty), token).await;
    let before = format!("{}?before=first", rule_path("override", "second"));
    server.expect_ok(Method::PUT, &before, Some(&empty), token).await;
    let all = server.expect_ok(Method::GET, "/_matrix/client/v3/pushrules/", None, token).await;
    let ids: Vec<&str> =
        all["global"]["override"].as_array().into_iter().flatten().filter_map(|r| r["rule_id"].as_str()).collect();
    assert_eq!(ids[..3], [".m.rule.master", "second", "first"], "{ids:?}");

    // Errors.
    let cases = [
        (format!("{}?before=unknown", rule_path("override", "third")), empty.clone(), 400, "M_UNKNOWN"),
        (format!("{}?after=.m.rule.master", rule_path("override", "third")), empty.clone(), 400, "M_INVALID_PARAM"),
        (rule_path("override", ".m.rule.mine"), empty.clone(), 400, "M_INVALID_PARAM"),
        (rule_path("override", "no-actions"), json!({ "conditions": [] }), 400, "M_BAD_JSON"),
        (rule_path("content", "no-pattern"), json!({ "actions": [] }), 400, "M_BAD_JSON"),
    ];
    for (path, body, status, errcode) in cases {
        let (got, response) = server.request(Method::PUT, &path, Some(&body), token).await;
        assert_eq!((got, response["errcode"].as_str()), (status, Some(errcode)), "PUT {path}: {response}");
    }

    // `enabled` and `actions`.
    let enabled = format!("{}/enabled", rule_path("content", "cake"));
    server.expect_ok(Method::PUT, &enabled, Some(&json!({ "enabled": false })), token).await;
    assert_eq!(server.expect_ok(Method::GET, &enabled, None, token).await, json!({ "enabled": false }));
    let actions = format!("{}/actions", rule_path("content", "cake"));
    let new_actions = json!(["notify", { "set_tweak": "sound", "value": "default" }]);
    server.expect_ok(Method::PUT, &actions, Some(&json!({ "actions": new_actions })), token).await;
    assert_eq!(server.expect_ok(Method::GET, &actions, None, token).await, json!({ "actions": new_actions }));
    let master_enabled = format!("{}/enabled", rule_path("override", ".m.rule.master"));
    assert_eq!(server.expect_ok(Method::GET, &master_enabled, None, token).await, json!({ "enabled": false }));
    let missing = format!("{}/enabled", rule_path("content", "missing"));
    let (status, body) = server.request(Method::PUT, &missing, Some(&json!({ "enabled": true })), token).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");

    // The account data follows, and an incremental sync delivers it.
    let sync = server.sync(&alice, Some(&since), None).await;
    let event = sync["account_data"]["events"]
        .as_array()
        .and_then(|events| events.iter().rev().find(|event| event["type"] == "m.push_rules"))
        .unwrap_or_else(|| panic!("m.push_rules in {sync}"));
    let content_rules = event["content"]["global"]["content"].as_array().cloned().unwrap_or_default();
    let cake = content_rules.iter().find(|rule| rule["rule_id"] == "cake").unwrap_or_else(|| panic!("cake in {event}"));
    assert_eq!(cake["enabled"], false);
    assert_eq!(cake["actions"], new_actions);

    // Deleting.
    server.expect_ok(Method::DELETE, &rule_path("content", "cake"), None, token).await;
    let (status, body) = server.request(Method::GET, &rule_path("content", "cake"), None, token).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = server.request(Method::DELETE, &rule_path("content", "cake"), None, token).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = server.request(Method::DELETE, &rule_path("override", ".m.rule.master"), None, token).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
}

/// Counts in `/sync`: the sync that delivers events counts them; threaded receipts clear
/// their thread, `main` the main timeline, an unthreaded receipt everything; per-thread counts
/// only when the filter asks.
async fn counts_in_sync(backend: Backend) {
    let server = start(backend).await;
    let (alice, bob, room) = direct_chat(&server).await;
    let threads = json!({ "room": { "timeline": { "unread_thread_notifications": true } } });
    let since = next_batch(&server.sync(&bob, None, None).await);

    let root = server.send_text(&alice, &room, "root").await;
    server.send_text(&alice, &room, "main two").await;
    let thread_message = |body: &str| json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": { "event_id": root } } });
    server.send_event(&alice, &room, "m.room.message", &thread_message("in thread 1")).await;
    let last_in_thread = server.send_event(&alice, &room, "m.room.message", &thread_message("in thread 2")).await;

    let sync = server.sync(&bob, Some(&since), None).await;
    let section = joined(&sync, &room);
    assert_eq!(section["timeline"]["events"].as_array().map(Vec::len), Some(4), "{sync}");
    assert_eq!(section["unread_notifications"], json!({ "notification_count": 4, "highlight_count": 0 }), "{sync}");
    assert!(section.get("unread_thread_notifications").is_none(), "only on request: {sync}");
    let since = next_batch(&sync);

    let sync = server.sync(&bob, None, Some(&threads)).await;
    let section = joined(&sync, &room);
    assert_eq!(section["unread_notifications"]["notification_count"], 2, "main timeline only: {sync}");
    assert_eq!(section["unread_thread_notifications"][&root]["notification_count"], 2, "{sync}");

    // A receipt in the thread clears the thread only.
    let receipt = |event_id: &str, thread: Option<&str>| {
        let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", encode(&room), encode(event_id));
        let body = match thread {
            Some(thread) => json!({ "thread_id": thread }),
            None => json!({}),
        };
        let token = bob.access_token.clone();
        let server = &server;
        async move { server.expect_ok(Method::POST, &path, Some(&body), Some(&token)).await }
    };
    receipt(&last_in_thread, Some(&root)).await;
    let sync = server.sync(&bob, Some(&since), Some(&threads)).await;
    let section = joined(&sync, &room);
    assert_eq!(section["unread_notifications"]["notification_count"], 2, "{sync}");
    assert!(section["unread_thread_notifications"].get(&root).is_none(), "thread read: {sync}");
    let since = next_batch(&sync);

    // `main` clears the main timeline.
    receipt(&root, Some("main")).await;
    let sync = server.sync(&bob, Some(&since), Some(&threads)).await;
    assert_eq!(
        joined(&sync, &room)["unread_notifications"]["notification_count"],
        1,
        "one main message after the root: {sync}"
    );
    let since = next_batch(&sync);

    // New messages count again; an unthreaded receipt on the latest clears everything.
    server.send_event(&alice, &room, "m.room.message", &thread_message("in thread 3")).await;
    let latest = server.send_text(&alice, &room, "main three").await;
    let sync = server.sync(&bob, Some(&since), Some(&threads)).await;
    let section = joined(&sync, &room);
    assert_eq!(section["unread_notifications"]["notification_count"], 2, "{sync}");
    assert_eq!(section["unread_thread_notifications"][&root]["notification_count"], 1, "{sync}");
    let since = next_batch(&sync);
    receipt(&latest, None).await;
    let sync = server.sync(&bob, Some(&since), Some(&threads)).await;
    let section = joined(&sync, &room);
    assert_eq!(section["unread_notifications"], json!({ "notification_count": 0, "highlight_count": 0 }), "{sync}");
    assert!(
        section.get("unread_thread_notifications").is_none_or(|t| t.as_object().is_some_and(|t| t.is_empty())),
        "{sync}"
    );
}

/// `GET /notifications`: newest first, paginated with `from`, `only=highlight`, and `read`
/// following the receipts.
async fn notifications_list(backend: Backend) {
    let server = start(backend).await;
    let (alice, bob, _carol, room) = group_chat(&server).await;
    let token = Some(bob.access_token.as_str());
    let first = server.send_text(&alice, &room, "first").await;
    let second = server.send_event(&alice, &room, "m.room.message", &mention(&bob, "bob!")).await;
    let third = server.send_text(&alice, &room, "third").await;
    server.send_text(&bob, &room, "bob's own").await;

    let list = server.expect_ok(Method::GET, "/_matrix/client/v3/notifications", None, token).await;
    let notifications = list["notifications"].as_array().cloned().unwrap_or_else(|| panic!("notifications in {list}"));
    let ids: Vec<&str> = notifications.iter().filter_map(|n| n["event"]["event_id"].as_str()).collect();
    assert_eq!(ids, [third.as_str(), second.as_str(), first.as_str()], "{list}");
    for notification in &notifications {
        assert_eq!(notification["room_id"], room.as_str());
        assert_eq!(notification["read"], false);
        assert!(notification["ts"].is_u64(), "{notification}");
        assert_eq!(notification["event"]["room_id"], room.as_str());
        assert_eq!(notification["event"]["sender"], alice.user_id.as_str());
        assert!(notification["actions"].as_array().is_some_and(|a| a.iter().any(|a| a == "notify")), "{notification}");
    }
    assert_eq!(notifications[1]["event"]["content"]["body"], "bob!");
    assert!(list.get("next_token").is_none(), "everything fit: {list}");

    let highlights =
        server.expect_ok(Method::GET, "/_matrix/client/v3/notifications?only=highlight", None, token).await;
    let ids: Vec<&str> = highlights["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    assert_eq!(ids, [second.as_str()], "{highlights}");

    let page = server.expect_ok(Method::GET, "/_matrix/client/v3/notifications?limit=2", None, token).await;
    assert_eq!(page["notifications"].as_array().map(Vec::len), Some(2), "{page}");
    let from = page["next_token"].as_str().unwrap_or_else(|| panic!("next_token in {page}"));
    let rest = server
        .expect_ok(Method::GET, &format!("/_matrix/client/v3/notifications?limit=2&from={from}"), None, token)
        .await;
    let ids: Vec<&str> = rest["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    assert_eq!(ids, [first.as_str()], "{rest}");

    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", encode(&room), encode(&second));
    server.expect_ok(Method::POST, &path, Some(&json!({})), token).await;
    let list = server.expect_ok(Method::GET, "/_matrix/client/v3/notifications", None, token).await;
    let read: Vec<bool> = list["notifications"].as_array().into_iter().flatten().map(|n| n["read"] == true).collect();
    assert_eq!(read, [false, true, true], "{list}");

    let (status, body) =
        server.request(Method::GET, "/_matrix/client/v3/notifications?from=nonsense", None, token).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
}

/// An event from a user the recipient ignores gives them no push action: nothing reaches
/// their gateway, their counts leave it out, and `/notifications` lists none of the ignored
/// user's events (not even those from before).
async fn ignored_sender_notifies_nobody(backend: Backend) {
    let server = start(backend).await;
    let gateway = Gateway::start().await;
    let (alice, bob, carol, room) = group_chat(&server).await;
    set_pusher(&server, &bob, &gateway.url, "bob-key", json!({})).await;
    let token = Some(bob.access_token.as_str());
    let before = server.send_text(&carol, &room, "before").await;
    assert_eq!(gateway.next(&server).await["event_id"], before.as_str());

    let path = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", encode(&bob.user_id));
    let list = json!({ "ignored_users": { carol.user_id.clone(): {} } });
    server.expect_ok(Method::PUT, &path, Some(&list), token).await;
    let since = next_batch(&server.sync(&bob, None, None).await);
    server.send_event(&carol, &room, "m.room.message", &mention(&bob, "bob, hear me")).await;
    let from_alice = server.send_text(&alice, &room, "from alice").await;
    // Delivery is in order: the ignored mention was never queued.
    assert_eq!(gateway.next(&server).await["event_id"], from_alice.as_str());
    gateway.expect_nothing().await;

    let sync = server.sync(&bob, Some(&since), None).await;
    assert_eq!(
        joined(&sync, &room)["unread_notifications"],
        json!({ "notification_count": 2, "highlight_count": 0 }),
        "before and alice's message: {sync}"
    );
    let list = server.expect_ok(Method::GET, "/_matrix/client/v3/notifications", None, token).await;
    let ids: Vec<&str> = list["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    assert_eq!(ids, [from_alice.as_str()], "{list}");

    // Alice ignores nobody: carol's mention of bob counts for her.
    let sync = server.sync(&alice, None, None).await;
    assert_eq!(joined(&sync, &room)["unread_notifications"]["notification_count"], 2, "{sync}");

    // Un-ignored, carol notifies again.
    server.expect_ok(Method::PUT, &path, Some(&json!({ "ignored_users": {} })), token).await;
    let again = server.send_text(&carol, &room, "again").await;
    assert_eq!(gateway.next(&server).await["event_id"], again.as_str());
}

/// One `matrix-sdk` sync pass.
async fn sdk_sync(client: &matrix_sdk::Client, server: &TestServer) {
    let pass = client.sync_once(SyncSettings::default().timeout(Duration::ZERO));
    match tokio::time::timeout(Duration::from_secs(30), pass).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("sync_once: {e}\n{}", server.log_report()),
        Err(_) => panic!("sync_once timed out\n{}", server.log_report()),
    }
}

/// `matrix-sdk`'s notification settings mute a room and unmute it, which the server's counts
/// follow, and the SDK's unread counts show notifications and highlights.
async fn sdk_notification_settings(backend: Backend) {
    let server = start(backend).await;
    server.register("alice").await;
    server.register("bob").await;
    let alice = crate::e2ee::login(&server, "alice").await;
    let bob = crate::e2ee::login(&server, "bob").await;
    sdk_sync(&alice, &server).await;
    let room = alice.create_room(CreateRoomRequest::new()).await.unwrap_or_else(|e| panic!("create room: {e}"));
    let bob_id = bob.user_id().unwrap_or_else(|| panic!("bob is logged in")).to_owned();
    room.invite_user_by_id(&bob_id).await.unwrap_or_else(|e| panic!("invite: {e}"));
    sdk_sync(&bob, &server).await;
    let room_id: OwnedRoomId = room.room_id().to_owned();
    bob.join_room_by_id(&room_id).await.unwrap_or_else(|e| panic!("join: {e}\n{}", server.log_report()));
    sdk_sync(&bob, &server).await;
    sdk_sync(&alice, &server).await;
    let bob_room = bob.get_room(&room_id).unwrap_or_else(|| panic!("bob has the room"));

    room.send(RoomMessageEventContent::text_plain("one")).await.unwrap_or_else(|e| panic!("send: {e}"));
    sdk_sync(&bob, &server).await;
    assert_eq!(bob_room.unread_notification_counts().notification_count, 1);

    let settings = bob.notification_settings().await;
    settings
        .set_room_notification_mode(&room_id, RoomNotificationMode::Mute)
        .await
        .unwrap_or_else(|e| panic!("mute: {e}\n{}", server.log_report()));
    sdk_sync(&bob, &server).await;
    // A fresh view of the settings is built from the synced `m.push_rules` account data.
    let synced = bob.notification_settings().await;
    assert_eq!(synced.get_user_defined_room_notification_mode(&room_id).await, Some(RoomNotificationMode::Mute));
    room.send(RoomMessageEventContent::text_plain("muted")).await.unwrap_or_else(|e| panic!("send: {e}"));
    sdk_sync(&bob, &server).await;
    assert_eq!(bob_room.unread_notification_counts().notification_count, 1, "a muted room counts nothing new");

    settings
        .set_room_notification_mode(&room_id, RoomNotificationMode::AllMessages)
        .await
        .unwrap_or_else(|e| panic!("unmute: {e}\n{}", server.log_report()));
    let mut content = RoomMessageEventContent::text_plain("bob, look");
    content.mentions = Some(matrix_sdk::ruma::events::Mentions::with_user_ids([bob_id.clone()]));
    room.send(content).await.unwrap_or_else(|e| panic!("send: {e}"));
    sdk_sync(&bob, &server).await;
    let counts = bob_room.unread_notification_counts();
    assert_eq!((counts.notification_count, counts.highlight_count), (2, 1), "{counts:?}");
}

backend_tests!(
    direct_message_notifies,
    muted_room_and_disabled_rule_send_nothing,
    mention_highlights,
    rejected_pushkey_removes_the_pusher,
    failing_gateway_is_retried,
    undeliverable_notification_is_dropped,
    logout_removes_pushers,
    pusher_validation_and_updates,
    push_rules_crud,
    counts_in_sync,
    notifications_list,
    sdk_notification_settings,
    ignored_sender_notifies_nobody,
);
