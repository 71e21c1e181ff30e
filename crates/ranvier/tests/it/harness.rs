//! The harness itself: servers start on either backend, keep their data across a restart and
//! a `kill -9`, and keep the test process's own settings out of the server's configuration.

use ranvier_test::{Backend, Method, backend_tests, password_for};
use serde_json::Value;

use crate::{builder, start};

/// A server answers `/versions` and logs to its own stderr file.
async fn starts_and_logs(backend: Backend) {
    let server = start(backend).await;
    let (status, body) = server.request(Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, 200);
    let versions = body["versions"].as_array().expect("versions is a list");
    assert!(versions.iter().any(|v| v == "v1.1"), "versions: {body}");
    assert!(server.log().contains("listening"), "the log captures stderr:\n{}", server.log());
    assert_eq!(server.backend(), backend);
    assert_eq!(server.database_url().is_some(), backend == Backend::Postgres);
}

/// Accounts survive a graceful restart and a `kill -9`, and the port stays the same.
async fn data_survives_restart_and_kill(backend: Backend) {
    let mut server = start(backend).await;
    let alice = server.register("alice").await;
    let url = server.base_url();

    server.restart().await;
    assert_eq!(server.base_url(), url, "restart keeps the port");
    let (status, body) =
        server.request(Method::GET, "/_matrix/client/v3/account/whoami", None, Some(&alice.access_token)).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some(alice.user_id.as_str())), "{body}");

    server.kill_9();
    assert!(!server.is_running());
    server.restart().await;
    let again = server.login("alice", &password_for("alice")).await;
    assert_eq!(again.user_id, alice.user_id);
    assert_ne!(again.device_id, alice.device_id, "a login makes a new device");
}

/// `RANVIER_*` overrides given to the builder reach the server.
async fn builder_env_reaches_server(backend: Backend) {
    let server =
        builder(backend).server_name("example.test").env("RANVIER_REGISTRATION__ENABLED", "false").start().await;
    assert_eq!(server.server_name(), "example.test");
    let body = serde_json::json!({"username": "bob", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let (status, response) = server.request(Method::POST, "/_matrix/client/v3/register", Some(&body), None).await;
    assert_eq!(status, 403, "registration is disabled: {response}");
    assert_eq!(response["errcode"], Value::from("M_FORBIDDEN"));
}

/// `RANVIER_CONFIG` (the environment form of `--config`) is not mistaken for a setting: with
/// it set, the server still starts. The harness passes `--config` too, which takes precedence,
/// so the value here is never read as a path.
async fn config_variable_is_not_a_setting(backend: Backend) {
    let server = builder(backend).env("RANVIER_CONFIG", "/nonexistent/ranvier.toml").start().await;
    let (status, _) = server.request(Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, 200);
}

backend_tests!(
    starts_and_logs,
    data_survives_restart_and_kill,
    builder_env_reaches_server,
    config_variable_is_not_a_setting
);
