//! Test support for in-process API tests: the client router over a temporary database, and
//! request helpers that return the status, JSON body and headers.
//!
//! A test is written once as `async fn scenario(backend: Backend)` and run on both backends
//! with [`both_backends!`]. SQLite lives in a temporary directory; PostgreSQL gets a uniquely
//! named database on `postgres://postgres@127.0.0.1/postgres` (override the server with
//! `RANVIER_TEST_POSTGRES`), dropped when the test ends. When PostgreSQL is unreachable the
//! PostgreSQL variant is skipped with a note, unless `RANVIER_TEST_REQUIRE_POSTGRES=1`.

#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, body::Body, extract::ConnectInfo};
use http::{HeaderMap, Request, StatusCode};
use ranvier_client::{AppState, Services, auth::Auth};
use ranvier_core::Config;
use ranvier_store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Run each named scenario on SQLite and on PostgreSQL, as `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server name of test servers.
pub const SERVER_NAME: &str = "example.org";

/// A client API in process, over its own database.
pub struct TestApi {
    pub state: AppState,
    router: Router,
    _dir: tempfile::TempDir,
    postgres: Option<PostgresDatabase>,
}

/// A PostgreSQL database created for one test and dropped with it.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on async work: drop the
        // database from a thread with a runtime of its own. FORCE ends the pool's connections.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The defaults tests start from: open registration, no rate limits.
pub fn test_config() -> Config {
    let mut config = Config { server_name: SERVER_NAME.to_owned(), ..Config::default() };
    config.rate_limits.enabled = false;
    config
}

impl TestApi {
    /// A server with [`test_config`] changed by `configure`, or `None` when the backend is
    /// PostgreSQL and no server is reachable (and it is not required).
    pub async fn start(backend: Backend, configure: impl FnOnce(&mut Config)) -> Option<Self> {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let mut config = test_config();
        config.data_dir = dir.path().to_owned();
        configure(&mut config);
        let (url, postgres) = match backend {
            Backend::Sqlite => (format!("sqlite://{}", dir.path().join("ranvier.db").display()), None),
            Backend::Postgres => {
                let database = create_postgres_database().await?;
                let url = database.admin_url.rsplit_once('/').map(|(server, _)| server).unwrap_or_default();
                (format!("{url}/{}", database.name), Some(database))
            }
        };
        config.database.url = Some(url.clone());
        let store = Store::open(&url, 4).await.expect("open store");
        let signing_key = ranvier_rooms::keys::load_or_generate(&dir.path().join("signing.key")).expect("signing key");
        config.server_name = SERVER_NAME.to_owned();
        let mut services = Services::new(config, store, signing_key).expect("services");
        services.auth = Auth::with_fast_hashing();
        let state = AppState(Arc::new(services));
        let router = ranvier_client::router(state.clone());
        Some(Self { state, router, _dir: dir, postgres })
    }

    /// The store behind the API.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Send a request and read the response. `body` is sent as JSON; `from` sets the client
    /// address the server sees.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        from: Option<SocketAddr>,
    ) -> Response {
        let raw = body.map(|body| body.to_string());
        self.send_raw(method, path, token, raw, from).await
    }

    /// Send a request with a body that need not be valid JSON.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        from: Option<SocketAddr>,
    ) -> Response {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let mut request = request.body(Body::from(body.unwrap_or_default())).expect("build request");
        if let Some(addr) = from {
            request.extensions_mut().insert(ConnectInfo(addr));
        }
        let response = self.router.clone().oneshot(request).await.expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("read body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
        Response { status, body, headers }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.send("GET", path, token, None, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.send("POST", path, token, Some(&body), None).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.send("PUT", path, token, Some(&body), None).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.send("DELETE", path, token, Some(&body), None).await
    }

    /// Register `username` with open registration (one dummy stage) and log in.
    pub async fn register(&self, username: &str, password: &str) -> Session {
        let body = json!({"username": username, "password": password, "auth": {"type": "m.login.dummy"}});
        let response = self.post("/_matrix/client/v3/register", None, body).await;
        response.assert_status(StatusCode::OK);
        Session::from_login(&response.body)
    }

    /// Log in with a password, optionally on a given device id.
    pub async fn login(&self, username: &str, password: &str, device_id: Option<&str>) -> Session {
        let response = self.post("/_matrix/client/v3/login", None, login_body(username, password, device_id)).await;
        response.assert_status(StatusCode::OK);
        Session::from_login(&response.body)
    }

    /// Whether `token` is accepted (checked with `/account/whoami`).
    pub async fn token_works(&self, token: &str) -> bool {
        let response = self.get("/_matrix/client/v3/account/whoami", Some(token)).await;
        match response.status {
            StatusCode::OK => true,
            StatusCode::UNAUTHORIZED => {
                assert_eq!(response.body["errcode"], "M_UNKNOWN_TOKEN");
                false
            }
            other => panic!("whoami answered {other}: {}", response.body),
        }
    }
}

/// A `/login` body with an `m.id.user` identifier.
pub fn login_body(username: &str, password: &str, device_id: Option<&str>) -> Value {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": username},
        "password": password,
    });
    if let Some(device_id) = device_id {
        body["device_id"] = json!(device_id);
    }
    body
}

/// An `m.login.password` UIA auth dict.
pub fn password_auth(user: &str, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    });
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}

/// A logged-in device.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

impl Session {
    fn from_login(body: &Value) -> Self {
        let field = |name: &str| body[name].as_str().unwrap_or_else(|| panic!("no {name} in {body}")).to_owned();
        Self { user_id: field("user_id"), access_token: field("access_token"), device_id: field("device_id") }
    }

    pub fn token(&self) -> Option<&str> {
        Some(&self.access_token)
    }
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Response {
    #[track_caller]
    pub fn assert_status(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self
    }

    /// Assert a Matrix error with this status and errcode.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, errcode: &str) -> &Self {
        assert_eq!((self.status, self.body["errcode"].as_str()), (status, Some(errcode)), "body: {}", self.body);
        self
    }

    /// Assert a 401 UIA response offering exactly `flows`; returns its session id.
    #[track_caller]
    pub fn assert_uia(&self, flows: &[&[&str]], completed: &[&str]) -> String {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "body: {}", self.body);
        let expected: Vec<Value> = flows.iter().map(|stages| json!({ "stages": stages })).collect();
        assert_eq!(self.body["flows"], json!(expected), "body: {}", self.body);
        assert_eq!(self.body["params"], json!({}), "body: {}", self.body);
        assert_eq!(self.body["completed"], json!(completed), "body: {}", self.body);
        self.body["session"].as_str().unwrap_or_else(|| panic!("no session in {}", self.body)).to_owned()
    }
}

/// Create a uniquely named database, or `None` when PostgreSQL is unreachable and not required.
async fn create_postgres_database() -> Option<PostgresDatabase> {
    use sqlx::Connection;
    let admin_url =
        std::env::var("RANVIER_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1/postgres".to_owned());
    let required = std::env::var("RANVIER_TEST_REQUIRE_POSTGRES").is_ok_and(|value| value == "1");
    let connect = tokio::time::timeout(std::time::Duration::from_secs(5), sqlx::PgConnection::connect(&admin_url));
    let mut conn = match connect.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) if !required => {
            eprintln!("skipping the PostgreSQL variant: {e}");
            return None;
        }
        Err(_) if !required => {
            eprintln!("skipping the PostgreSQL variant: connection timed out");
            return None;
        }
        Ok(Err(e)) => panic!("PostgreSQL is required but unreachable: {e}"),
        Err(_) => panic!("PostgreSQL is required but the connection timed out"),
    };
    let name = format!("ranvier_test_{}", ranvier_core::util::random_string(12).to_lowercase());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    Some(PostgresDatabase { admin_url, name })
}
