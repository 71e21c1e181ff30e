//! Exact errors on the wire: each case checks the HTTP status and the `errcode` the spec
//! names, and the fuzz cases check that malformed input never earns a 5xx or kills the server.

use ranvier_test::{Backend, Method, TestServer, User, backend_tests, encode, txn_id};
use serde_json::{Value, json};

use crate::{builder, start};

/// Check that a reply is the Matrix error `errcode` with `status`, and carries an `error`
/// message as the spec's standard error body does.
#[track_caller]
fn assert_error(reply: &(u16, Value), status: u16, errcode: &str, what: &str) {
    let (got_status, body) = reply;
    assert_eq!(
        (*got_status, body["errcode"].as_str()),
        (status, Some(errcode)),
        "{what}: expected {status} {errcode}, got {got_status} {body}"
    );
    assert!(body["error"].is_string(), "{what}: a standard error body has an `error` string: {body}");
}

fn send_path(room_id: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode(room_id), txn_id())
}

/// `M_MISSING_TOKEN` without a token, `M_UNKNOWN_TOKEN` with a wrong or logged-out one.
async fn access_token_errors(backend: Backend) {
    let server = start(backend).await;
    let whoami = "/_matrix/client/v3/account/whoami";
    assert_error(&server.request(Method::GET, whoami, None, None).await, 401, "M_MISSING_TOKEN", "no token");
    assert_error(
        &server.request(Method::GET, whoami, None, Some("not-a-real-token")).await,
        401,
        "M_UNKNOWN_TOKEN",
        "unknown token",
    );
    // The query-string form of the token is checked as well.
    let reply = server.request(Method::GET, &format!("{whoami}?access_token=nope"), None, None).await;
    assert_error(&reply, 401, "M_UNKNOWN_TOKEN", "unknown token in the query string");

    let alice = server.register("alice").await;
    let reply =
        server.request(Method::POST, "/_matrix/client/v3/logout", Some(&json!({})), Some(&alice.access_token)).await;
    assert_eq!(reply.0, 200, "logout: {}", reply.1);
    let reply = server.request(Method::GET, whoami, None, Some(&alice.access_token)).await;
    assert_error(&reply, 401, "M_UNKNOWN_TOKEN", "token after logout");

    // A token-protected endpoint of every area refuses anonymous requests the same way.
    for (method, path) in [
        (Method::GET, "/_matrix/client/v3/sync".to_owned()),
        (Method::POST, "/_matrix/client/v3/createRoom".to_owned()),
        (Method::GET, "/_matrix/client/v3/joined_rooms".to_owned()),
        (Method::GET, "/_matrix/client/v3/devices".to_owned()),
        (Method::PUT, send_path("!room:localhost")),
    ] {
        let reply = server.request(method.clone(), &path, Some(&json!({})), None).await;
        assert_error(&reply, 401, "M_MISSING_TOKEN", &format!("{method} {path} without a token"));
    }
}

/// Bodies that are not JSON give `M_NOT_JSON`; JSON of the wrong shape gives `M_BAD_JSON`.
async fn not_json_and_bad_json(backend: Backend) {
    let server = start(backend).await;
    let register = "/_matrix/client/v3/register";
    for body in [&b"{\"username\":"[..], b"not json at all", b"{'single': 'quotes'}"] {
        let reply =
            server.request_raw(Method::POST, register, Some(body.to_vec()), Some("application/json"), None).await;
        assert_error(&reply, 400, "M_NOT_JSON", &format!("register with {:?}", String::from_utf8_lossy(body)));
    }
    let reply = server
        .request(Method::POST, register, Some(&json!({"username": 42, "auth": {"type": "m.login.dummy"}})), None)
        .await;
    assert_error(&reply, 400, "M_BAD_JSON", "register with a number for a username");
    let reply = server
        .request(
            Method::POST,
            "/_matrix/client/v3/login",
            Some(&json!({"type": "m.login.password", "password": ["x"]})),
            None,
        )
        .await;
    assert_error(&reply, 400, "M_BAD_JSON", "login with a list for a password");

    let alice = server.register("alice").await;
    let reply = server
        .request_raw(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(b"{".to_vec()),
            Some("application/json"),
            Some(&alice.access_token),
        )
        .await;
    assert_error(&reply, 400, "M_NOT_JSON", "createRoom with a truncated body");
    let reply = server
        .request(Method::POST, "/_matrix/client/v3/createRoom", Some(&json!({"name": 5})), Some(&alice.access_token))
        .await;
    assert_error(&reply, 400, "M_BAD_JSON", "createRoom with a number for a name");

    let room = server.create_room(&alice, json!({})).await;
    // Event content must be a JSON object.
    for content in [json!([1, 2, 3]), json!("text"), json!(7)] {
        let reply = server.request(Method::PUT, &send_path(&room), Some(&content), Some(&alice.access_token)).await;
        assert_error(&reply, 400, "M_BAD_JSON", &format!("event content {content}"));
    }
    let reply = server
        .request_raw(
            Method::PUT,
            &send_path(&room),
            Some(b"{\"body\": ".to_vec()),
            Some("application/json"),
            Some(&alice.access_token),
        )
        .await;
    assert_error(&reply, 400, "M_NOT_JSON", "truncated event content");
}

/// `M_FORBIDDEN`: acting in a room one is not in.
async fn forbidden(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = server.create_room(&alice, json!({"preset": "private_chat"})).await;
    let token = Some(eve.access_token.as_str());

    let reply =
        server.request(Method::PUT, &send_path(&room), Some(&json!({"msgtype": "m.text", "body": "hi"})), token).await;
    assert_error(&reply, 403, "M_FORBIDDEN", "sending to a room one is not in");
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", encode(&room));
    let reply = server.request(Method::PUT, &path, Some(&json!({"topic": "mine now"})), token).await;
    assert_error(&reply, 403, "M_FORBIDDEN", "setting state in a room one is not in");
    let path = format!("/_matrix/client/v3/rooms/{}/join", encode(&room));
    let reply = server.request(Method::POST, &path, Some(&json!({})), token).await;
    assert_error(&reply, 403, "M_FORBIDDEN", "joining an invite-only room without an invite");
    let path = format!("/_matrix/client/v3/rooms/{}/state", encode(&room));
    let reply = server.request(Method::GET, &path, None, token).await;
    assert_error(&reply, 403, "M_FORBIDDEN", "reading the state of a room one was never in");
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b", encode(&room));
    let reply = server.request(Method::GET, &path, None, token).await;
    assert_error(&reply, 403, "M_FORBIDDEN", "reading the history of a room one was never in");

    // A member without the power to change the room's name is refused too.
    let public = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&eve, &public).await;
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", encode(&public));
    let reply = server.request(Method::PUT, &path, Some(&json!({"users": {eve.user_id.clone(): 100}})), token).await;
    assert_error(&reply, 403, "M_FORBIDDEN", "raising one's own power level");
}

/// `M_NOT_FOUND`: things that do not exist, asked for by someone allowed to see them.
async fn not_found(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let room = server.create_room(&alice, json!({})).await;

    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", encode(&room));
    assert_error(&server.request(Method::GET, &path, None, token).await, 404, "M_NOT_FOUND", "unset state event");
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(&room), encode("$doesnotexist"));
    assert_error(&server.request(Method::GET, &path, None, token).await, 404, "M_NOT_FOUND", "unknown event");
    let path = format!("/_matrix/client/v3/user/{}/filter/987654", encode(&alice.user_id));
    assert_error(&server.request(Method::GET, &path, None, token).await, 404, "M_NOT_FOUND", "unknown filter");
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.unset", encode(&alice.user_id));
    assert_error(&server.request(Method::GET, &path, None, token).await, 404, "M_NOT_FOUND", "unset account data");
    let path = format!("/_matrix/client/v3/devices/{}", encode("NOSUCHDEVICE"));
    assert_error(&server.request(Method::GET, &path, None, token).await, 404, "M_NOT_FOUND", "unknown device");
}

/// Unknown endpoints are `404 M_UNRECOGNIZED`; a known endpoint with the wrong method is
/// `405 M_UNRECOGNIZED`.
async fn unrecognized(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    for token in [None, Some(alice.access_token.as_str())] {
        for path in ["/_matrix/client/v3/no_such_endpoint", "/_matrix/client/v3/rooms", "/_matrix/nothing", "/"] {
            assert_error(&server.request(Method::GET, path, None, token).await, 404, "M_UNRECOGNIZED", path);
        }
        let reply = server.request(Method::DELETE, "/_matrix/client/v3/login", None, token).await;
        assert_error(&reply, 405, "M_UNRECOGNIZED", "DELETE /login");
        let reply = server.request(Method::PUT, "/_matrix/client/v3/register", Some(&json!({})), token).await;
        assert_error(&reply, 405, "M_UNRECOGNIZED", "PUT /register");
        let reply = server.request(Method::GET, "/_matrix/client/v3/createRoom", None, token).await;
        assert_error(&reply, 405, "M_UNRECOGNIZED", "GET /createRoom");
    }
}

/// Clients in browsers need CORS (the spec's "Web Browser Clients"): a preflight `OPTIONS` is
/// answered, and every answer, errors included, allows any origin.
async fn cors_headers(backend: Backend) {
    let server = start(backend).await;
    let http = reqwest::Client::new();
    let base = server.base_url();
    let origin = "https://app.example";
    let allows = |headers: &reqwest::header::HeaderMap, name: &str, wanted: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value == "*" || value.split(',').any(|item| item.trim().eq_ignore_ascii_case(wanted)))
    };
    let preflight = http
        .request(Method::OPTIONS, format!("{base}/_matrix/client/v3/sync"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .expect("preflight answered");
    assert_eq!(preflight.status().as_u16(), 200, "preflight");
    let headers = preflight.headers();
    assert!(allows(headers, "access-control-allow-origin", origin), "preflight origin: {headers:?}");
    assert!(allows(headers, "access-control-allow-methods", "GET"), "preflight methods: {headers:?}");
    assert!(allows(headers, "access-control-allow-headers", "authorization"), "preflight headers: {headers:?}");
    for (path, status) in [
        ("/_matrix/client/versions", 200),
        ("/_matrix/client/v3/account/whoami", 401),
        ("/_matrix/client/v3/no_such_endpoint", 404),
    ] {
        let reply = http.get(format!("{base}{path}")).header("Origin", origin).send().await.expect("answered");
        assert_eq!(reply.status().as_u16(), status, "{path}");
        assert!(allows(reply.headers(), "access-control-allow-origin", origin), "{path}: {:?}", reply.headers());
    }
}

/// Registration errors: a taken name, an invalid name.
async fn registration_errors(backend: Backend) {
    let server = start(backend).await;
    server.register("alice").await;
    let register = "/_matrix/client/v3/register";
    let body = json!({"username": "alice", "password": "another", "auth": {"type": "m.login.dummy"}});
    assert_error(&server.request(Method::POST, register, Some(&body), None).await, 400, "M_USER_IN_USE", "taken name");
    for name in ["bad name", "alice!", "ü", "@alice:localhost"] {
        let body = json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}});
        let reply = server.request(Method::POST, register, Some(&body), None).await;
        assert_error(&reply, 400, "M_INVALID_USERNAME", &format!("username {name:?}"));
    }
    // NUL characters are refused for every request body before any endpoint looks at it
    // (PostgreSQL text cannot hold them), so this invalid name gets M_BAD_JSON.
    let body = json!({"username": "a\u{0}b", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let reply = server.request(Method::POST, register, Some(&body), None).await;
    assert_error(&reply, 400, "M_BAD_JSON", "username with a NUL character");
    let available = |name: &str| format!("/_matrix/client/v3/register/available?username={}", encode(name));
    assert_error(
        &server.request(Method::GET, &available("alice"), None, None).await,
        400,
        "M_USER_IN_USE",
        "available(alice)",
    );
    assert_error(
        &server.request(Method::GET, &available("bad name"), None, None).await,
        400,
        "M_INVALID_USERNAME",
        "available(bad name)",
    );
    let reply = server.request(Method::GET, &available("bob"), None, None).await;
    assert_eq!((reply.0, &reply.1["available"]), (200, &json!(true)), "bob is available: {}", reply.1);
}

/// An event over 65,536 bytes is `413 M_TOO_LARGE`, whatever the request limit.
async fn event_too_large(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let token = Some(alice.access_token.as_str());
    let big = "x".repeat(70_000);
    let reply =
        server.request(Method::PUT, &send_path(&room), Some(&json!({"msgtype": "m.text", "body": big})), token).await;
    assert_error(&reply, 413, "M_TOO_LARGE", "a 70 kB message");
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", encode(&room));
    let reply = server.request(Method::PUT, &path, Some(&json!({"topic": big})), token).await;
    assert_error(&reply, 413, "M_TOO_LARGE", "a 70 kB state event");
    // Just under the limit is fine: the whole event, with its envelope, stays below 65,536.
    let reply = server
        .request(Method::PUT, &send_path(&room), Some(&json!({"msgtype": "m.text", "body": "y".repeat(60_000)})), token)
        .await;
    assert_eq!(reply.0, 200, "a 60 kB message is accepted: {}", reply.1);
}

/// A request body over `limits.max_request_bytes` is `413 M_TOO_LARGE`.
async fn request_too_large(backend: Backend) {
    let server = builder(backend).env("RANVIER_LIMITS__MAX_REQUEST_BYTES", "10000").start().await;
    let body = json!({"username": "alice", "password": "x".repeat(20_000), "auth": {"type": "m.login.dummy"}});
    let reply = server.request(Method::POST, "/_matrix/client/v3/register", Some(&body), None).await;
    assert_error(&reply, 413, "M_TOO_LARGE", "a 20 kB body over a 10 kB limit");
    // The limit is on size, not on the endpoint: a small request still works.
    server.register("alice").await;
}

/// With rate limits on, bursts are refused with `429 M_LIMIT_EXCEEDED` and a retry hint.
async fn rate_limited(backend: Backend) {
    let server = builder(backend)
        .rate_limits(true)
        .env("RANVIER_RATE_LIMITS__MESSAGES", "{ per_second = 0.2, burst = 3 }")
        .env("RANVIER_RATE_LIMITS__LOGIN", "{ per_second = 0.2, burst = 3 }")
        .env("RANVIER_RATE_LIMITS__REGISTRATION", "{ per_second = 100.0, burst = 100 }")
        .start()
        .await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..12 {
        let content = json!({"msgtype": "m.text", "body": format!("message {i}")});
        let reply = server
            .request_full(
                Method::PUT,
                &send_path(&room),
                Some(content.to_string().into_bytes()),
                Some("application/json"),
                Some(&alice.access_token),
            )
            .await;
        statuses.push(reply.status);
        if reply.status == 429 && limited.is_none() {
            limited = Some(reply);
        }
    }
    assert_eq!(statuses[0], 200, "the first message is within the burst: {statuses:?}");
    let Some(reply) = limited else {
        panic!("12 messages at once with a burst of 3 were never limited: {statuses:?}");
    };
    assert_eq!(reply.body["errcode"], "M_LIMIT_EXCEEDED", "{}", reply.body);
    let hint = reply.body["retry_after_ms"].as_u64().is_some() || reply.headers.contains_key("retry-after");
    assert!(hint, "a 429 says when to retry (retry_after_ms or Retry-After): {:?} {}", reply.headers, reply.body);
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "only 200 or 429: {statuses:?}");

    // Failed logins are limited as well.
    let mut login_statuses = Vec::new();
    for _ in 0..10 {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"});
        let reply = server.request(Method::POST, "/_matrix/client/v3/login", Some(&body), None).await;
        if reply.0 == 429 {
            assert_eq!(reply.1["errcode"], "M_LIMIT_EXCEEDED", "{}", reply.1);
        } else {
            assert_error(&reply, 403, "M_FORBIDDEN", "a wrong password");
        }
        login_statuses.push(reply.0);
    }
    assert!(
        login_statuses.contains(&429),
        "10 logins at once with a burst of 3 were never limited: {login_statuses:?}"
    );
}

/// Parameters with the wrong value are `400 M_INVALID_PARAM`; an unknown room version is
/// `400 M_UNSUPPORTED_ROOM_VERSION`.
async fn invalid_params(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let room = server.create_room(&alice, json!({})).await;
    let messages = format!("/_matrix/client/v3/rooms/{}/messages", encode(&room));
    for query in ["?dir=sideways", "?dir=b&limit=many", "?dir=b&limit=-3"] {
        let reply = server.request(Method::GET, &format!("{messages}{query}"), None, token).await;
        assert_error(&reply, 400, "M_INVALID_PARAM", &format!("/messages{query}"));
    }
    let reply = server.request(Method::GET, "/_matrix/client/v3/sync?timeout=soon", None, token).await;
    assert_error(&reply, 400, "M_INVALID_PARAM", "/sync?timeout=soon");
    let reply = server.request(Method::PUT, &send_path("not-a-room-id"), Some(&json!({"body": "x"})), token).await;
    assert_error(&reply, 400, "M_INVALID_PARAM", "a malformed room id in the path");
    let reply = server
        .request(Method::POST, "/_matrix/client/v3/createRoom", Some(&json!({"room_version": "999"})), token)
        .await;
    assert_error(&reply, 400, "M_UNSUPPORTED_ROOM_VERSION", "createRoom with room version 999");
}

/// Bodies that are malformed in every way we can think of.
fn malformed_bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "",
        "{",
        "}",
        "[]",
        "null",
        "\"a string\"",
        "123",
        "1e999",
        "{\"a\":",
        "{\"a\": 1,}",
        "{\"username\": [], \"password\": {}, \"auth\": 5, \"type\": null}",
        "{\"user_id\": null, \"room_id\": 12, \"reason\": {}, \"limit\": -1}",
        "{\"auth\": {\"type\": \"m.login.dummy\", \"session\": 5}}",
        "{\"filter\": \"{\", \"room\": {\"timeline\": {\"limit\": \"ten\"}}}",
        "{\"visibility\": \"sideways\", \"preset\": 3, \"initial_state\": [{}], \"invite\": [\"nobody\"]}",
        "{\"identifier\": {\"type\": \"m.id.user\"}, \"type\": \"m.login.password\"}",
        "{\"\\u0000\": \"\\u0000\"}",
        "{\"type\": \"m.login.password\", \"identifier\": {\"type\": \"m.id.user\", \"user\": \"a\\u0000\"}, \"password\": \"x\"}",
        "{\"room_alias_name\": \"a\\u0000\", \"name\": \"\\u0000\", \"user_id\": \"@a\\u0000:localhost\"}",
        "{\"room\": {\"rooms\": [\"!a\\u0000\"]}, \"device_id\": \"D\\u0000\", \"display_name\": \"\\u0000\"}",
    ]
    .iter()
    .map(|body| body.as_bytes().to_vec())
    .collect();
    bodies.push(vec![0xff, 0xfe, 0x00, 0x7b]);
    bodies.push(b"{\"a\": \"\xff\"}".to_vec());
    bodies.push(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes());
    bodies.push(format!("{{\"k\": \"{}\"}}", "z".repeat(100_000)).into_bytes());
    bodies
}

/// Every endpoint we know, with `{room}`, `{user}`, `{event}`, `{device}` placeholders.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/_matrix/client/versions"),
    ("GET", "/.well-known/matrix/client"),
    ("GET", "/_matrix/client/v3/capabilities"),
    ("POST", "/_matrix/client/v3/register"),
    ("GET", "/_matrix/client/v3/register/available?username={user}"),
    ("GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token={event}"),
    ("GET", "/_matrix/client/v3/login"),
    ("POST", "/_matrix/client/v3/login"),
    ("GET", "/_matrix/client/v3/account/whoami"),
    ("POST", "/_matrix/client/v3/account/password"),
    ("POST", "/_matrix/client/v3/account/deactivate"),
    ("GET", "/_matrix/client/v3/devices"),
    ("GET", "/_matrix/client/v3/devices/{device}"),
    ("PUT", "/_matrix/client/v3/devices/{device}"),
    ("DELETE", "/_matrix/client/v3/devices/{device}"),
    ("POST", "/_matrix/client/v3/delete_devices"),
    ("POST", "/_matrix/client/v3/user/{user}/filter"),
    ("GET", "/_matrix/client/v3/user/{user}/filter/{event}"),
    ("PUT", "/_matrix/client/v3/user/{user}/account_data/{event}"),
    ("GET", "/_matrix/client/v3/user/{user}/account_data/{event}"),
    ("PUT", "/_matrix/client/v3/user/{user}/rooms/{room}/account_data/{event}"),
    ("GET", "/_matrix/client/v3/user/{user}/rooms/{room}/account_data/{event}"),
    ("POST", "/_matrix/client/v3/createRoom"),
    ("GET", "/_matrix/client/v3/joined_rooms"),
    ("POST", "/_matrix/client/v3/join/{room}"),
    ("POST", "/_matrix/client/v3/rooms/{room}/join"),
    ("POST", "/_matrix/client/v3/rooms/{room}/invite"),
    ("GET", "/_matrix/client/v3/rooms/{room}/members"),
    ("GET", "/_matrix/client/v3/rooms/{room}/joined_members"),
    ("PUT", "/_matrix/client/v3/rooms/{room}/send/m.room.message/{event}"),
    ("PUT", "/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
    ("PUT", "/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}"),
    ("GET", "/_matrix/client/v3/rooms/{room}/state"),
    ("GET", "/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
    ("PUT", "/_matrix/client/v3/rooms/{room}/redact/{event}/{device}"),
    ("GET", "/_matrix/client/v3/rooms/{room}/event/{event}"),
    ("GET", "/_matrix/client/v3/rooms/{room}/messages?dir=b"),
    ("GET", "/_matrix/client/v3/rooms/{room}/context/{event}"),
    ("GET", "/_matrix/client/v3/sync?timeout=0"),
    ("POST", "/_synapse/admin/v1/register"),
    ("GET", "/_matrix/client/v1/rooms/{room}/relations/{event}"),
    ("GET", "/_matrix/client/v1/rooms/{room}/relations/{event}/m.thread"),
    ("GET", "/_matrix/client/v1/rooms/{room}/relations/{event}/m.thread/m.room.message"),
    ("GET", "/_matrix/client/v1/rooms/{room}/threads"),
    ("GET", "/_matrix/client/v1/rooms/{room}/hierarchy"),
    ("POST", "/_matrix/client/v3/search"),
    ("POST", "/_matrix/client/v3/search?next_batch=%FF%00"),
    ("GET", "/_matrix/client/v3/notifications"),
    ("GET", "/_matrix/client/v3/pushrules/"),
    ("GET", "/_matrix/client/v3/pushrules"),
    ("GET", "/_matrix/client/v3/pushrules/global/"),
    ("PUT", "/_matrix/client/v3/pushrules/global/override/{event}"),
    ("GET", "/_matrix/client/v3/pushrules/global/override/{event}"),
    ("PUT", "/_matrix/client/v3/pushrules/global/content/{event}/actions"),
    ("PUT", "/_matrix/client/v3/pushrules/global/room/{room}/enabled"),
    ("DELETE", "/_matrix/client/v3/pushrules/global/sender/{user}"),
    ("PUT", "/_matrix/client/v3/pushrules/device/override/{event}"),
    ("GET", "/_matrix/client/v3/pushers"),
    ("POST", "/_matrix/client/v3/pushers/set"),
    ("POST", "/_matrix/client/v3/rooms/{room}/report/{event}"),
    ("POST", "/_matrix/client/v3/rooms/{room}/report"),
    ("POST", "/_matrix/client/v3/users/{user}/report"),
    ("GET", "/_matrix/client/v1/user/mutual_rooms?user_id={user}"),
    // Last, because they may take the user out of the room the endpoints above use.
    ("POST", "/_matrix/client/v3/rooms/{room}/leave"),
    ("POST", "/_matrix/client/v3/rooms/{room}/forget"),
    ("POST", "/_matrix/client/v3/rooms/{room}/kick"),
    ("POST", "/_matrix/client/v3/rooms/{room}/ban"),
    ("POST", "/_matrix/client/v3/rooms/{room}/unban"),
];

/// Queries that are wrong in value or form.
const MALFORMED_QUERIES: &[&str] = &[
    "/_matrix/client/v3/sync?timeout=-1",
    "/_matrix/client/v3/sync?timeout=0&since=garbage",
    "/_matrix/client/v3/sync?timeout=0&since=s99999999_99999999_0_0_0_0_0",
    "/_matrix/client/v3/sync?timeout=0&since=s-1",
    "/_matrix/client/v3/sync?timeout=0&filter=%7B",
    "/_matrix/client/v3/sync?timeout=0&filter=%5B%5D",
    "/_matrix/client/v3/sync?timeout=0&filter=999999",
    "/_matrix/client/v3/sync?timeout=0&full_state=maybe",
    "/_matrix/client/v3/sync?timeout=0&set_presence=asleep",
    "/_matrix/client/v3/sync?timeout=99999999999999999999999",
    "/_matrix/client/v3/rooms/{room}/messages?dir=x",
    "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=99999999999999999999",
    "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=0",
    "/_matrix/client/v3/rooms/{room}/messages?dir=b&from=%FF%FE",
    "/_matrix/client/v3/rooms/{room}/messages?dir=b&from=s-5",
    "/_matrix/client/v3/rooms/{room}/messages?dir=f&from=t99999999999-99999",
    "/_matrix/client/v3/rooms/{room}/messages?dir=b&to=nonsense",
    "/_matrix/client/v3/rooms/{room}/messages?dir=b&filter=%7B%22limit%22%3A%22x%22%7D",
    "/_matrix/client/v3/rooms/{room}/messages?dir=b&filter=notjson",
    "/_matrix/client/v3/rooms/{room}/context/{event}?limit=-1",
    "/_matrix/client/v3/register/available?username=",
    "/_matrix/client/v3/register/available",
    "/_matrix/client/v1/rooms/{room}/relations/{event}?limit=-1",
    "/_matrix/client/v1/rooms/{room}/relations/{event}?from=garbage",
    "/_matrix/client/v1/rooms/{room}/relations/{event}?dir=x",
    "/_matrix/client/v1/rooms/{room}/relations/{event}?to=s-1&recurse=maybe",
    "/_matrix/client/v1/rooms/{room}/relations/{event}?from=s99999999999999999999&limit=99999999999999999999",
    "/_matrix/client/v1/rooms/{room}/relations/{event}?dir=f&from=s0_0_0_0_0_0_0_0&to=s-99",
    "/_matrix/client/v1/rooms/{room}/threads?include=some",
    "/_matrix/client/v1/rooms/{room}/threads?from=%FF&limit=0",
    "/_matrix/client/v1/rooms/{room}/threads?from=s-1&limit=99999999999999999999",
    "/_matrix/client/v1/rooms/{room}/hierarchy?max_depth=-1",
    "/_matrix/client/v1/rooms/{room}/hierarchy?from=garbage&limit=0",
    "/_matrix/client/v1/rooms/{room}/hierarchy?suggested_only=maybe&limit=99999999999999999999",
    "/_matrix/client/v3/notifications?from=-5&limit=0",
    "/_matrix/client/v3/notifications?from=99999999999999999999999&only=%FF",
    "/_matrix/client/v1/user/mutual_rooms?user_id=garbage&from=x",
    "/_matrix/client/v1/user/mutual_rooms",
];

/// Values for the path placeholders that are malformed ids.
const MALFORMED_SEGMENTS: &[&str] =
    &["!", "%00", "not-an-id", "%F0%28%8C%BC", "..%2F..%2Fetc", "@", "$", "!x:", "%2F", "%25%25"];

fn fill(template: &str, room: &str, user: &str, event: &str, device: &str) -> String {
    template.replace("{room}", room).replace("{user}", user).replace("{event}", event).replace("{device}", device)
}

#[track_caller]
fn assert_not_server_error(status: u16, body: &Value, what: &str) {
    assert!(status < 500, "{what}: bad input must not give {status}: {body}");
    // A user-interactive authentication challenge is the one 4xx body without an errcode.
    let uia_challenge = status == 401 && body["flows"].is_array();
    if status >= 400 && !uia_challenge {
        assert!(body["errcode"].is_string(), "{what}: an error answer is a Matrix error: {status} {body}");
    }
}

async fn fuzz_one(server: &TestServer, method: &str, path: &str, body: Option<Vec<u8>>, token: Option<&str>) {
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let shown = body.as_ref().map(|b| String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned());
    let what = format!("{method} {path} token={} body={shown:?}", token.is_some());
    match server.try_request(method, path, body, Some("application/json"), token).await {
        Ok(reply) => assert_not_server_error(reply.status, &reply.body, &what),
        Err(e) => panic!("{what}: no answer ({e})\n{}", server.log_report()),
    }
}

/// Malformed bodies, paths and queries through every endpoint, with and without a token, never
/// give a 5xx and never take the server down.
async fn fuzz_never_500(backend: Backend) {
    let mut server = start(backend).await;
    let alice: User = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let event = server.send_text(&alice, &room, "target").await;
    let (room_e, user_e, event_e, device_e) =
        (encode(&room), encode(&alice.user_id), encode(&event), encode(&alice.device_id));
    let bodies = malformed_bodies();

    for (method, template) in ENDPOINTS {
        let path = fill(template, &room_e, &user_e, &event_e, &device_e);
        for token in [None, Some(alice.access_token.as_str()), Some("bogus-token")] {
            for body in &bodies {
                fuzz_one(&server, method, &path, Some(body.clone()), token).await;
            }
            fuzz_one(&server, method, &path, None, token).await;
        }
        for segment in MALFORMED_SEGMENTS {
            let path = fill(template, segment, segment, segment, segment);
            if path == fill(template, "", "", "", "") {
                continue;
            }
            fuzz_one(&server, method, &path, Some(b"{}".to_vec()), Some(&alice.access_token)).await;
        }
    }
    for template in MALFORMED_QUERIES {
        let path = fill(template, &room_e, &user_e, &event_e, &device_e);
        fuzz_one(&server, "GET", &path, None, Some(&alice.access_token)).await;
    }

    // A wrong Content-Type or a method nobody uses is refused politely as well.
    let (status, body) = server
        .request_raw(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(b"name=x".to_vec()),
            Some("application/x-www-form-urlencoded"),
            Some(&alice.access_token),
        )
        .await;
    assert_not_server_error(status, &body, "createRoom with a form body");
    let weird = Method::from_bytes(b"BREW").unwrap_or(Method::OPTIONS);
    let (status, body) = server.request(weird, "/_matrix/client/v3/sync", None, Some(&alice.access_token)).await;
    assert_not_server_error(status, &body, "an unknown method");

    // A panic in a handler shows as a 500 above, but one inside request parsing is turned
    // into a 400 by the extractor; the log is where either would still show.
    assert!(server.is_running(), "the server survived the fuzzing\n{}", server.log_report());
    assert!(!server.log().contains("panicked"), "the server panicked\n{}", server.log_report());
    // And it still works.
    let body =
        server.expect_ok(Method::GET, "/_matrix/client/v3/account/whoami", None, Some(&alice.access_token)).await;
    assert_eq!(body["user_id"].as_str(), Some(alice.user_id.as_str()), "{body}");
}

/// A login body without `type` is a client error, not a crash of the request.
async fn login_without_type(backend: Backend) {
    let server = start(backend).await;
    for body in ["{}", "{\"identifier\": {\"type\": \"m.id.user\", \"user\": \"a\"}, \"password\": \"x\"}"] {
        let what = format!("POST /login with {body}");
        let login = "/_matrix/client/v3/login";
        match server
            .try_request(Method::POST, login, Some(body.as_bytes().to_vec()), Some("application/json"), None)
            .await
        {
            Ok(reply) => {
                assert_not_server_error(reply.status, &reply.body, &what);
                assert_eq!(reply.status, 400, "{what}: {}", reply.body);
            }
            Err(e) => panic!("{what}: no answer ({e})\n{}", server.log_report()),
        }
    }
}

/// NUL characters are valid in JSON strings and in percent-encoded paths, but not in every
/// database's text columns; they must never turn into a 500.
async fn nul_characters_are_not_server_errors(backend: Backend) {
    let server = start(backend).await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let device = format!("/_matrix/client/v3/devices/{}", encode(&alice.device_id));
    let cases = [
        (Method::PUT, device.clone(), json!({"display_name": "nul\u{0}here"})),
        (Method::GET, "/_matrix/client/v3/devices/%00".to_owned(), Value::Null),
        (Method::PUT, format!("/_matrix/client/v3/user/{}/account_data/a%00b", encode(&alice.user_id)), json!({})),
        (Method::GET, format!("/_matrix/client/v3/user/{}/filter/%00", encode(&alice.user_id)), Value::Null),
        (Method::POST, "/_matrix/client/v3/createRoom".to_owned(), json!({"name": "\u{0}", "topic": "a\u{0}"})),
    ];
    for (method, path, body) in cases {
        let what = format!("{method} {path} {body}");
        let body = (!body.is_null()).then(|| body.to_string().into_bytes());
        match server.try_request(method, &path, body, Some("application/json"), token).await {
            Ok(reply) => assert_not_server_error(reply.status, &reply.body, &what),
            Err(e) => panic!("{what}: no answer ({e})\n{}", server.log_report()),
        }
    }
}

backend_tests!(
    login_without_type,
    nul_characters_are_not_server_errors,
    access_token_errors,
    not_json_and_bad_json,
    forbidden,
    not_found,
    unrecognized,
    cors_headers,
    registration_errors,
    event_too_large,
    request_too_large,
    rate_limited,
    invalid_params,
    fuzz_never_500,
);
