//! Who may register, as docs/running.md tells operators to set it up: closed registration with
//! accounts made through the shared-secret admin endpoint, and registration tokens.

use hmac::{Hmac, Mac};
use ranvier_test::{Backend, Method, backend_tests};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::builder;

const ADMIN_REGISTER: &str = "/_synapse/admin/v1/register";

/// The MAC `register_new_matrix_user` sends: HMAC-SHA1 over the NUL-separated fields.
fn registration_mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(e) => panic!("HMAC key: {e}"),
    };
    let role: &str = if admin { "admin" } else { "notadmin" };
    for (i, part) in [nonce, user, password, role].iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

/// With registration closed, `/register` is refused, and the shared-secret endpoint creates
/// accounts that can log in.
async fn closed_registration_with_shared_secret(backend: Backend) {
    let secret = "a shared secret for tests";
    let server = builder(backend)
        .env("RANVIER_REGISTRATION__ENABLED", "false")
        .env("RANVIER_REGISTRATION__SHARED_SECRET", secret)
        .start()
        .await;
    let body = json!({"username": "mallory", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let (status, reply) = server.request(Method::POST, "/_matrix/client/v3/register", Some(&body), None).await;
    assert_eq!((status, reply["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{reply}");

    let nonce = server.expect_ok(Method::GET, ADMIN_REGISTER, None, None).await;
    let nonce = nonce["nonce"].as_str().unwrap_or_else(|| panic!("no nonce: {nonce}")).to_owned();
    let password = "a long password";
    let body = json!({
        "nonce": nonce,
        "username": "alice",
        "password": password,
        "admin": false,
        "mac": registration_mac(secret, &nonce, "alice", password, false),
    });
    let created = server.expect_ok(Method::POST, ADMIN_REGISTER, Some(&body), None).await;
    assert_eq!(created["user_id"], server.user_id("alice").as_str(), "{created}");
    let token = created["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {created}"));
    let whoami = server.expect_ok(Method::GET, "/_matrix/client/v3/account/whoami", None, Some(token)).await;
    assert_eq!(whoami["user_id"], server.user_id("alice").as_str());
    server.login("alice", password).await;

    let (status, reply) = server.request(Method::POST, ADMIN_REGISTER, Some(&body), None).await;
    assert_eq!(status, 400, "a nonce is single use: {reply}");

    let nonce = server.expect_ok(Method::GET, ADMIN_REGISTER, None, None).await["nonce"].clone();
    let nonce = nonce.as_str().unwrap_or_default();
    let forged = json!({
        "nonce": nonce,
        "username": "bob",
        "password": "pw",
        "admin": true,
        "mac": registration_mac("not the secret", nonce, "bob", "pw", true),
    });
    let (status, reply) = server.request(Method::POST, ADMIN_REGISTER, Some(&forged), None).await;
    assert_eq!((status, reply["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "a wrong MAC: {reply}");
}

/// With tokens required, a token added in the database (as docs/running.md describes) allows
/// exactly as many registrations as it says.
async fn registration_tokens_from_the_database(backend: Backend) {
    let server = builder(backend).env("RANVIER_REGISTRATION__REQUIRE_TOKEN", "true").start().await;
    server
        .execute_sql("INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES ('welcome', 1, NULL)")
        .await;
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token=welcome";
    assert_eq!(server.expect_ok(Method::GET, validity, None, None).await["valid"], true);

    let register = "/_matrix/client/v3/register";
    let attempt = |name: &'static str, auth: Option<Value>| {
        let mut body = json!({"username": name, "password": "a long password"});
        if let Some(auth) = auth {
            body["auth"] = auth;
        }
        body
    };
    let (status, challenge) = server.request(Method::POST, register, Some(&attempt("alice", None)), None).await;
    assert_eq!(status, 401, "{challenge}");
    let offers_token = challenge["flows"]
        .as_array()
        .is_some_and(|flows| flows.iter().any(|flow| flow["stages"] == json!(["m.login.registration_token"])));
    assert!(offers_token, "the flows ask for a registration token: {challenge}");
    let session = challenge["session"].as_str().unwrap_or_else(|| panic!("no session: {challenge}"));
    let dummy = json!({"type": "m.login.dummy", "session": session});
    let (status, reply) = server.request(Method::POST, register, Some(&attempt("alice", Some(dummy))), None).await;
    assert_ne!(status, 200, "the dummy stage does not replace the token: {reply}");

    let auth = json!({"type": "m.login.registration_token", "token": "welcome", "session": session});
    let done = server.expect_ok(Method::POST, register, Some(&attempt("alice", Some(auth))), None).await;
    assert_eq!(done["user_id"], server.user_id("alice").as_str(), "{done}");
    assert!(done["access_token"].is_string());
    assert_eq!(server.expect_ok(Method::GET, validity, None, None).await["valid"], false, "its one use is spent");

    let (_, challenge) = server.request(Method::POST, register, Some(&attempt("bob", None)), None).await;
    let session = challenge["session"].as_str().unwrap_or_default();
    let auth = json!({"type": "m.login.registration_token", "token": "welcome", "session": session});
    let (status, reply) = server.request(Method::POST, register, Some(&attempt("bob", Some(auth))), None).await;
    assert_eq!(status, 401, "a spent token registers no one: {reply}");
    assert!(reply.get("access_token").is_none());
}

backend_tests!(closed_registration_with_shared_secret, registration_tokens_from_the_database);
