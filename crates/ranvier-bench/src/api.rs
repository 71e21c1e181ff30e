//! A small Client-Server API client used by the scenarios: JSON requests against one
//! homeserver base URL, honouring `429 M_LIMIT_EXCEEDED`, and the handful of calls the
//! benchmark needs (register, login, createRoom, join, send, sync).

use std::fmt;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode, Url};
use serde_json::{Value, json};

/// How many times a rate-limited request is retried before giving up.
const MAX_RATE_LIMIT_RETRIES: u32 = 20;
/// Longest single wait asked for by a `retry_after_ms`, after which we wait this long.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
/// Time limit for any request that is not a long-poll.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed request: transport trouble or a non-success status with its Matrix error.
#[derive(Debug)]
pub struct ApiError {
    pub what: String,
    pub status: Option<u16>,
    pub errcode: Option<String>,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.what)?;
        if let Some(status) = self.status {
            write!(f, "HTTP {status} ")?;
        }
        if let Some(code) = &self.errcode {
            write!(f, "{code} ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ApiError {}

/// One answered request: status, parsed JSON body (`Null` if not JSON) and body size.
pub struct Response {
    pub status: StatusCode,
    pub body: Value,
    pub bytes: usize,
}

/// An account the benchmark can act as.
#[derive(Clone, Debug)]
pub struct User {
    pub localpart: String,
    pub password: String,
    pub user_id: String,
    pub token: String,
}

/// Percent-encodes one path segment (room IDs, transaction IDs).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Handle on one homeserver; cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Api {
    http: Client,
    base: Url,
}

impl Api {
    pub fn new(base: &str) -> Result<Self, String> {
        let base = Url::parse(base).map_err(|e| format!("bad --url {base}: {e}"))?;
        let http = Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Self { http, base })
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, ApiError> {
        let mut url = self.base.join(path).map_err(|e| ApiError {
            what: path.to_owned(),
            status: None,
            errcode: None,
            message: e.to_string(),
        })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends one request and returns whatever the server answered (any status), retrying
    /// only on `429`, after the wait the server asked for.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Response, ApiError> {
        let url = self.url(path, query)?;
        let what = format!("{method} {path}");
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), url.clone()).timeout(timeout);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.map_err(|e| ApiError {
                what: what.clone(),
                status: None,
                errcode: None,
                message: e.to_string(),
            })?;
            let status = resp.status();
            let header_wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(|s| s * 1000);
            let bytes = resp.bytes().await.map_err(|e| ApiError {
                what: what.clone(),
                status: Some(status.as_u16()),
                errcode: None,
                message: format!("reading body: {e}"),
            })?;
            let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status == StatusCode::TOO_MANY_REQUESTS && attempt < MAX_RATE_LIMIT_RETRIES {
                attempt += 1;
                let ms = parsed.get("retry_after_ms").and_then(Value::as_u64).or(header_wait).unwrap_or(500);
                tokio::time::sleep(Duration::from_millis(ms).min(MAX_RETRY_WAIT)).await;
                continue;
            }
            return Ok(Response { status, body: parsed, bytes: bytes.len() });
        }
    }

    /// Like [`Api::raw`] but turns any non-success status into an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Response, ApiError> {
        let resp = self.raw(method.clone(), path, token, query, body, REQUEST_TIMEOUT).await?;
        check(&format!("{method} {path}"), resp)
    }

    /// Registers `localpart` with the dummy auth stage, following the user-interactive
    /// auth dance if the server first answers 401 with a session.
    pub async fn register(&self, localpart: &str, password: &str) -> Result<User, ApiError> {
        let path = "/_matrix/client/v3/register";
        let mut body = json!({
            "username": localpart,
            "password": password,
            "auth": {"type": "m.login.dummy"},
            "initial_device_display_name": "bench",
        });
        let mut resp = self.raw(Method::POST, path, None, &[], Some(&body), REQUEST_TIMEOUT).await?;
        if resp.status == StatusCode::UNAUTHORIZED
            && let Some(session) = resp.body.get("session").and_then(Value::as_str)
        {
            body["auth"]["session"] = Value::String(session.to_owned());
            resp = self.raw(Method::POST, path, None, &[], Some(&body), REQUEST_TIMEOUT).await?;
        }
        let resp = check(&format!("POST {path}"), resp)?;
        let user_id = field(&resp.body, "user_id", path)?;
        let token = field(&resp.body, "access_token", path)?;
        Ok(User { localpart: localpart.to_owned(), password: password.to_owned(), user_id, token })
    }

    /// Password login; returns a fresh access token.
    pub async fn login(&self, localpart: &str, password: &str) -> Result<String, ApiError> {
        let path = "/_matrix/client/v3/login";
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
            "initial_device_display_name": "bench",
        });
        let resp = self.call(Method::POST, path, None, &[], Some(&body)).await?;
        field(&resp.body, "access_token", path)
    }

    /// Creates a room with the given request body; returns its room ID.
    pub async fn create_room(&self, user: &User, body: &Value) -> Result<String, ApiError> {
        let path = "/_matrix/client/v3/createRoom";
        let resp = self.call(Method::POST, path, Some(&user.token), &[], Some(body)).await?;
        field(&resp.body, "room_id", path)
    }

    /// Joins a room by ID, using `/rooms/{id}/join` and falling back to `/join/{id}`
    /// for servers that only have the latter.
    pub async fn join(&self, user: &User, room_id: &str) -> Result<(), ApiError> {
        let seg = encode_segment(room_id);
        let path = format!("/_matrix/client/v3/rooms/{seg}/join");
        let body = json!({});
        let resp = self.raw(Method::POST, &path, Some(&user.token), &[], Some(&body), REQUEST_TIMEOUT).await?;
        if resp.status == StatusCode::NOT_FOUND || resp.status == StatusCode::METHOD_NOT_ALLOWED {
            let unrecognized =
                resp.body.get("errcode").and_then(Value::as_str) == Some("M_UNRECOGNIZED") || resp.body.is_null();
            if unrecognized {
                let path = format!("/_matrix/client/v3/join/{seg}");
                self.call(Method::POST, &path, Some(&user.token), &[], Some(&body)).await?;
                return Ok(());
            }
        }
        check(&format!("POST {path}"), resp).map(|_| ())
    }

    /// Sends one `m.room.message` text event; returns its event ID.
    pub async fn send_text(&self, user: &User, room_id: &str, txn: &str, text: &str) -> Result<String, ApiError> {
        let path =
            format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", encode_segment(room_id), encode_segment(txn));
        let body = json!({"msgtype": "m.text", "body": text});
        let resp = self.call(Method::PUT, &path, Some(&user.token), &[], Some(&body)).await?;
        field(&resp.body, "event_id", &path)
    }

    /// One `/sync` call. `timeout_ms` is the long-poll timeout given to the server.
    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        filter: Option<&str>,
        timeout_ms: u64,
    ) -> Result<Response, ApiError> {
        let path = "/_matrix/client/v3/sync";
        let timeout = timeout_ms.to_string();
        let mut query: Vec<(&str, &str)> = vec![("timeout", &timeout)];
        if let Some(since) = since {
            query.push(("since", since));
        }
        if let Some(filter) = filter {
            query.push(("filter", filter));
        }
        let limit = REQUEST_TIMEOUT + Duration::from_millis(timeout_ms);
        let resp = self.raw(Method::GET, path, Some(&user.token), &query, None, limit).await?;
        check(&format!("GET {path}"), resp)
    }

    /// `GET /_matrix/client/versions`, to see whether the server answers at all.
    pub async fn versions(&self) -> Result<Value, ApiError> {
        let resp = self.call(Method::GET, "/_matrix/client/versions", None, &[], None).await?;
        Ok(resp.body)
    }
}

fn check(what: &str, resp: Response) -> Result<Response, ApiError> {
    if resp.status.is_success() {
        return Ok(resp);
    }
    let errcode = resp.body.get("errcode").and_then(Value::as_str).map(str::to_owned);
    let message = resp.body.get("error").and_then(Value::as_str).unwrap_or("").to_owned();
    Err(ApiError { what: what.to_owned(), status: Some(resp.status.as_u16()), errcode, message })
}

fn field(body: &Value, name: &str, what: &str) -> Result<String, ApiError> {
    body.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| ApiError {
        what: what.to_owned(),
        status: None,
        errcode: None,
        message: format!("response lacks `{name}`"),
    })
}

/// Extracts `next_batch` from a sync response.
pub fn next_batch(resp: &Response) -> Result<String, ApiError> {
    field(&resp.body, "next_batch", "GET /_matrix/client/v3/sync")
}
