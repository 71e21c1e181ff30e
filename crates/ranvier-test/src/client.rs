//! Raw Client-Server API helpers on [`TestServer`], so that tests read like the scenario they
//! check: `server.register("alice")`, `server.create_room(&alice, json!({}))`,
//! `server.send_text(&alice, &room, "hi")`, `server.sync(&alice, None, None)`.
//!
//! Helpers that expect success panic with the status, the body and the server's log when the
//! server answers otherwise. [`TestServer::request`] returns whatever came back, for tests of
//! exact wire behaviour.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

use crate::server::TestServer;

/// A logged-in user: what `/register` and `/login` return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

/// A whole response: status, headers and the JSON body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The JSON body; the text as a JSON string when it is not JSON; `null` when empty.
    pub body: Value,
}

/// Which way `/messages` walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// `dir=b`: newest first.
    Backward,
    /// `dir=f`: oldest first.
    Forward,
}

/// The query of a `/messages` request.
#[derive(Clone, Debug)]
pub struct MessagesQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub dir: Dir,
    pub limit: Option<u32>,
    pub filter: Option<Value>,
}

impl MessagesQuery {
    /// Walk backward from `from` (the newest events when `None`).
    pub fn backward(from: Option<&str>, limit: u32) -> Self {
        Self { from: from.map(str::to_owned), to: None, dir: Dir::Backward, limit: Some(limit), filter: None }
    }

    /// Walk forward from `from` (the oldest events when `None`).
    pub fn forward(from: Option<&str>, limit: u32) -> Self {
        Self { from: from.map(str::to_owned), to: None, dir: Dir::Forward, limit: Some(limit), filter: None }
    }

    /// Add a `RoomEventFilter`.
    pub fn filter(mut self, filter: Value) -> Self {
        self.filter = Some(filter);
        self
    }
}

/// The password `register` gives every user, so that tests can log in again.
pub fn password_for(localpart: &str) -> String {
    format!("correct horse battery staple {localpart}")
}

/// Percent-encode one path segment or query value (everything but RFC 3986 unreserved bytes).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A transaction id no other request in this process uses.
pub fn txn_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("t{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The JSON body of a response, or the raw text as a JSON string when it is not JSON.
fn parse_body(text: String) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

impl TestServer {
    /// Send `body` (as JSON) to `path` with `method`, authenticated with `token` when given;
    /// returns the status and the JSON body (a JSON string holding the text if it is not JSON).
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>, token: Option<&str>) -> (u16, Value) {
        let body = body.map(|body| body.to_string().into_bytes());
        self.request_raw(method, path, body, Some("application/json"), token).await
    }

    /// Send raw bytes, for tests of malformed input; returns the status and the body.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let reply = self.request_full(method, path, body, content_type, token).await;
        (reply.status, reply.body)
    }

    /// Send a request and return status, headers and body; panics if no response arrives.
    pub async fn request_full(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
        token: Option<&str>,
    ) -> Reply {
        match self.try_request(method.clone(), path, body, content_type, token).await {
            Ok(reply) => reply,
            Err(e) => panic!("{method} {path}: no response: {e}\n{}", self.log_report()),
        }
    }

    /// Send a request; `Err` when no complete response arrives (the server is down, or died
    /// while answering). For tests that kill the server while requests are in flight.
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
        token: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let url = format!("{}{path}", self.base_url());
        let mut request = self.http.request(method, &url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            if let Some(content_type) = content_type {
                request = request.header(reqwest::header::CONTENT_TYPE, content_type);
            }
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        Ok(Reply { status, headers, body: parse_body(text) })
    }

    /// Like [`request`](Self::request), but panics unless the status is 200; returns the body.
    pub async fn expect_ok(&self, method: Method, path: &str, body: Option<&Value>, token: Option<&str>) -> Value {
        let (status, response) = self.request(method.clone(), path, body, token).await;
        if status != StatusCode::OK.as_u16() {
            panic!(
                "{method} {path} answered {status}: {response}\nrequest body: {}\n{}",
                body.map(Value::to_string).unwrap_or_default(),
                self.log_report()
            );
        }
        response
    }

    /// Register `localpart` with the dummy UIA stage and the password [`password_for`] gives.
    pub async fn register(&self, localpart: &str) -> User {
        self.register_with_password(localpart, &password_for(localpart)).await
    }

    /// Register `localpart` with `password`, completing the dummy UIA stage.
    pub async fn register_with_password(&self, localpart: &str, password: &str) -> User {
        let body = json!({
            "username": localpart,
            "password": password,
            "auth": {"type": "m.login.dummy"},
        });
        let response = self.expect_ok(Method::POST, "/_matrix/client/v3/register", Some(&body), None).await;
        user_from(&response)
    }

    /// Log in with a password; a new device each time.
    pub async fn login(&self, localpart: &str, password: &str) -> User {
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        });
        let response = self.expect_ok(Method::POST, "/_matrix/client/v3/login", Some(&body), None).await;
        user_from(&response)
    }

    /// `POST /createRoom` with `body`; returns the room id.
    pub async fn create_room(&self, user: &User, body: Value) -> String {
        let response =
            self.expect_ok(Method::POST, "/_matrix/client/v3/createRoom", Some(&body), Some(&user.access_token)).await;
        string_field(&response, "room_id")
    }

    /// Join a room by id.
    pub async fn join(&self, user: &User, room_id: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/join", encode(room_id));
        self.expect_ok(Method::POST, &path, Some(&json!({})), Some(&user.access_token)).await;
    }

    /// Invite `invitee` (a full user id) to a room.
    pub async fn invite(&self, user: &User, room_id: &str, invitee: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/invite", encode(room_id));
        self.expect_ok(Method::POST, &path, Some(&json!({"user_id": invitee})), Some(&user.access_token)).await;
    }

    /// Leave a room.
    pub async fn leave(&self, user: &User, room_id: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/leave", encode(room_id));
        self.expect_ok(Method::POST, &path, Some(&json!({})), Some(&user.access_token)).await;
    }

    /// Send an `m.text` message; returns the event id.
    pub async fn send_text(&self, user: &User, room_id: &str, text: &str) -> String {
        self.send_event(user, room_id, "m.room.message", &json!({"msgtype": "m.text", "body": text})).await
    }

    /// Send a message event with a fresh transaction id; returns the event id.
    pub async fn send_event(&self, user: &User, room_id: &str, event_type: &str, content: &Value) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/send/{}/{}", encode(room_id), encode(event_type), txn_id());
        let response = self.expect_ok(Method::PUT, &path, Some(content), Some(&user.access_token)).await;
        string_field(&response, "event_id")
    }

    /// Set a state event; returns the event id.
    pub async fn set_state(
        &self,
        user: &User,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> String {
        let path = state_path(room_id, event_type, state_key);
        let response = self.expect_ok(Method::PUT, &path, Some(content), Some(&user.access_token)).await;
        string_field(&response, "event_id")
    }

    /// The content of one state event.
    pub async fn get_state(&self, user: &User, room_id: &str, event_type: &str, state_key: &str) -> Value {
        let path = state_path(room_id, event_type, state_key);
        self.expect_ok(Method::GET, &path, None, Some(&user.access_token)).await
    }

    /// The whole current state of a room (`GET /rooms/{id}/state`): a list of events.
    pub async fn get_all_state(&self, user: &User, room_id: &str) -> Vec<Value> {
        let path = format!("/_matrix/client/v3/rooms/{}/state", encode(room_id));
        match self.expect_ok(Method::GET, &path, None, Some(&user.access_token)).await {
            Value::Array(events) => events,
            other => panic!("GET {path} did not return a list: {other}"),
        }
    }

    /// `GET /sync` that returns at once (`timeout=0`), from `since` and with `filter` (an
    /// inline filter object or a filter id string) when given.
    pub async fn sync(&self, user: &User, since: Option<&str>, filter: Option<&Value>) -> Value {
        self.sync_with_timeout(user, since, filter, 0).await
    }

    /// `GET /sync` long-polling for up to `timeout_ms`.
    pub async fn sync_with_timeout(
        &self,
        user: &User,
        since: Option<&str>,
        filter: Option<&Value>,
        timeout_ms: u64,
    ) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={}", encode(since)));
        }
        if let Some(filter) = filter {
            let filter = match filter {
                Value::String(id) => id.clone(),
                other => other.to_string(),
            };
            path.push_str(&format!("&filter={}", encode(&filter)));
        }
        self.expect_ok(Method::GET, &path, None, Some(&user.access_token)).await
    }

    /// `GET /rooms/{id}/messages` with `query`.
    pub async fn messages(&self, user: &User, room_id: &str, query: &MessagesQuery) -> Value {
        let path = messages_path(room_id, query);
        self.expect_ok(Method::GET, &path, None, Some(&user.access_token)).await
    }

    /// Walk `/messages` from `query.from` in `query.dir` until the server says there is no
    /// more (no `end`, or an empty chunk); returns every event in the order walked.
    ///
    /// Panics if a page's `end` token repeats an earlier one, which would loop forever.
    pub async fn paginate(&self, user: &User, room_id: &str, query: &MessagesQuery) -> Vec<Value> {
        let mut query = query.clone();
        let mut events = Vec::new();
        let mut seen_tokens = std::collections::HashSet::new();
        for _page in 0..10_000 {
            let page = self.messages(user, room_id, &query).await;
            let chunk = match page.get("chunk") {
                Some(Value::Array(chunk)) => chunk.clone(),
                _ => panic!("/messages answered without a `chunk` list: {page}"),
            };
            let end = page.get("end").and_then(Value::as_str).map(str::to_owned);
            let done = chunk.is_empty() || end.is_none();
            events.extend(chunk);
            if done {
                return events;
            }
            let end = end.unwrap_or_default();
            assert!(
                seen_tokens.insert(end.clone()),
                "/messages returned the `end` token {end} twice: pagination loops"
            );
            query.from = Some(end);
        }
        panic!("/messages did not finish after 10,000 pages");
    }

    /// Upload a filter; returns its id.
    pub async fn upload_filter(&self, user: &User, filter: &Value) -> String {
        let path = format!("/_matrix/client/v3/user/{}/filter", encode(&user.user_id));
        let response = self.expect_ok(Method::POST, &path, Some(filter), Some(&user.access_token)).await;
        string_field(&response, "filter_id")
    }
}

/// The path of `GET /rooms/{id}/messages` for `query`.
pub fn messages_path(room_id: &str, query: &MessagesQuery) -> String {
    let dir = match query.dir {
        Dir::Backward => "b",
        Dir::Forward => "f",
    };
    let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir={dir}", encode(room_id));
    if let Some(from) = &query.from {
        path.push_str(&format!("&from={}", encode(from)));
    }
    if let Some(to) = &query.to {
        path.push_str(&format!("&to={}", encode(to)));
    }
    if let Some(limit) = query.limit {
        path.push_str(&format!("&limit={limit}"));
    }
    if let Some(filter) = &query.filter {
        path.push_str(&format!("&filter={}", encode(&filter.to_string())));
    }
    path
}

/// The path of a state event.
pub fn state_path(room_id: &str, event_type: &str, state_key: &str) -> String {
    let mut path = format!("/_matrix/client/v3/rooms/{}/state/{}", encode(room_id), encode(event_type));
    if !state_key.is_empty() {
        path.push('/');
        path.push_str(&encode(state_key));
    }
    path
}

fn string_field(response: &Value, field: &str) -> String {
    match response.get(field).and_then(Value::as_str) {
        Some(value) => value.to_owned(),
        None => panic!("response has no string `{field}`: {response}"),
    }
}

fn user_from(response: &Value) -> User {
    User {
        user_id: string_field(response, "user_id"),
        access_token: string_field(response, "access_token"),
        device_id: string_field(response, "device_id"),
    }
}
