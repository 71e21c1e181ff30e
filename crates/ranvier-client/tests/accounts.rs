//! In-process API tests of accounts: registration (open, with tokens, disabled), login and
//! logout, UIA, password change, deactivation, devices, account data, shared-secret
//! registration and rate limits. Every scenario runs on SQLite and on PostgreSQL.

mod support;

use http::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestApi, login_body, password_auth};

const REGISTER: &str = "/_matrix/client/v3/register";
const LOGIN: &str = "/_matrix/client/v3/login";

both_backends!(
    open_registration,
    registration_errors,
    disabled_registration,
    registration_tokens,
    pending_token_use_completes_on_retry,
    login_and_logout,
    devices_and_uia,
    uia_sessions_are_bound_to_their_operation,
    password_change,
    deactivation,
    deactivation_leaves_rooms,
    account_data,
    shared_secret_registration,
    shared_secret_registration_disabled,
    rate_limits,
);

async fn open_registration(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };

    // The first request offers the flows in a new session.
    let body = json!({"username": "alice", "password": "pw", "initial_device_display_name": "Laptop"});
    let first = api.post(REGISTER, None, body.clone()).await;
    let session = first.assert_uia(&[&["m.login.dummy"]], &[]);
    assert!(first.body.get("errcode").is_none());

    let mut with_auth = body.clone();
    with_auth["auth"] = json!({"type": "m.login.dummy", "session": session});
    let done = api.post(REGISTER, None, with_auth.clone()).await;
    done.assert_status(StatusCode::OK);
    assert_eq!(done.body["user_id"], "@alice:example.org");
    let token = done.body["access_token"].as_str().unwrap().to_owned();
    let device_id = done.body["device_id"].as_str().unwrap().to_owned();

    let whoami = api.get("/_matrix/client/v3/account/whoami", Some(&token)).await;
    whoami.assert_status(StatusCode::OK);
    assert_eq!(whoami.body["user_id"], "@alice:example.org");
    assert_eq!(whoami.body["device_id"], json!(device_id));
    let devices = api.get("/_matrix/client/v3/devices", Some(&token)).await;
    assert_eq!(devices.body["devices"][0]["display_name"], "Laptop");

    // The session was used up by the registration.
    with_auth["username"] = json!("alice2");
    api.post(REGISTER, None, with_auth).await.assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // A stage may be sent at once, without a session.
    let direct =
        json!({"username": "Carol", "password": "pw", "device_id": "MYDEVICE", "auth": {"type": "m.login.dummy"}});
    let carol = api.post(REGISTER, None, direct).await;
    carol.assert_status(StatusCode::OK);
    assert_eq!(carol.body["user_id"], "@carol:example.org", "user names are lower-cased");
    assert_eq!(carol.body["device_id"], "MYDEVICE");

    // inhibit_login creates the account without a device.
    let inhibit =
        json!({"username": "dave", "password": "pw", "inhibit_login": true, "auth": {"type": "m.login.dummy"}});
    let dave = api.post(REGISTER, None, inhibit).await;
    dave.assert_status(StatusCode::OK);
    assert_eq!(dave.body["user_id"], "@dave:example.org");
    assert!(dave.body.get("access_token").is_none());
    assert!(dave.body["device_id"].is_null());
    assert!(api.store().list_devices("@dave:example.org").await.unwrap().is_empty());
    api.login("dave", "pw", None).await;

    // Without a username the server picks one.
    let anonymous = api.post(REGISTER, None, json!({"password": "pw", "auth": {"type": "m.login.dummy"}})).await;
    anonymous.assert_status(StatusCode::OK);
    let generated = anonymous.body["user_id"].as_str().unwrap();
    assert!(generated.starts_with('@') && generated.ends_with(":example.org"), "{generated}");

    // Availability.
    let available = api.get("/_matrix/client/v3/register/available?username=bob", None).await;
    available.assert_status(StatusCode::OK);
    assert_eq!(available.body, json!({"available": true}));
    api.get("/_matrix/client/v3/register/available?username=alice", None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    api.get("/_matrix/client/v3/register/available?username=ALICE", None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    api.get("/_matrix/client/v3/register/available?username=al%20ice", None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");

    // Token validity is only offered when tokens are required.
    api.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=x", None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

async fn registration_errors(backend: Backend) {
    let Some(api) = TestApi::start(backend, |config| config.registration.min_password_length = 8).await else {
        return;
    };
    api.register("alice", "long enough").await;
    let dummy = json!({"type": "m.login.dummy"});

    // Username problems are reported before UIA.
    for name in ["alice", "ALICE"] {
        api.post(REGISTER, None, json!({"username": name, "password": "long enough"}))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    }
    for name in ["al ice", "_bridge", "a:b", ""] {
        api.post(REGISTER, None, json!({"username": name, "password": "long enough", "auth": dummy}))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    }
    api.post(REGISTER, None, json!({"username": "bob", "password": "short"}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_WEAK_PASSWORD");
    api.post(REGISTER, None, json!({"username": "bob", "password": "x".repeat(600), "auth": dummy}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.post("/_matrix/client/v3/register?kind=guest", None, json!({}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");

    // A password is needed once UIA is done; the session survives for the retry.
    let first = api.post(REGISTER, None, json!({"username": "bob"})).await;
    let session = first.assert_uia(&[&["m.login.dummy"]], &[]);
    let auth = json!({"type": "m.login.dummy", "session": session});
    api.post(REGISTER, None, json!({"username": "bob", "auth": auth}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    api.post(REGISTER, None, json!({"username": "bob", "password": "long enough", "auth": {"session": session}}))
        .await
        .assert_status(StatusCode::OK);

    // Unknown sessions, unknown stage types, and stages outside the flows.
    api.post(
        REGISTER,
        None,
        json!({"username": "carl", "password": "long enough", "auth": {"type": "m.login.dummy", "session": "nope"}}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let odd = api
        .post(
            REGISTER,
            None,
            json!({"username": "carl", "password": "long enough", "auth": {"type": "org.example.custom"}}),
        )
        .await;
    odd.assert_uia(&[&["m.login.dummy"]], &[]);
    assert_eq!(odd.body["errcode"], "M_UNRECOGNIZED");
    let token_stage = json!({"type": "m.login.registration_token", "token": "t"});
    let wrong_flow =
        api.post(REGISTER, None, json!({"username": "carl", "password": "long enough", "auth": token_stage})).await;
    wrong_flow.assert_uia(&[&["m.login.dummy"]], &[]);
    assert_eq!(wrong_flow.body["errcode"], "M_UNRECOGNIZED");

    // Malformed bodies.
    api.send_raw("POST", REGISTER, None, Some("{".into()), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_NOT_JSON");
    api.post(REGISTER, None, json!({"username": 5})).await.assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

async fn disabled_registration(backend: Backend) {
    let Some(api) = TestApi::start(backend, |config| config.registration.enabled = false).await else { return };
    api.post(REGISTER, None, json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}}))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.post(REGISTER, None, json!({})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.get("/_matrix/client/v3/register/available?username=alice", None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=x", None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Operators can still create accounts directly, and those can log in.
    let hash = api.state.auth.hash_password("pw".into()).await.unwrap();
    assert!(api.store().create_user("@op:example.org", Some(&hash), true).await.unwrap());
    api.login("op", "pw", None).await;
}

const VALIDITY: &str = "/_matrix/client/v1/register/m.login.registration_token/validity";

async fn validity(api: &TestApi, token: &str) -> bool {
    let response = api.get(&format!("{VALIDITY}?token={token}"), None).await;
    response.assert_status(StatusCode::OK);
    response.body["valid"].as_bool().unwrap()
}

async fn registration_tokens(backend: Backend) {
    let Some(api) = TestApi::start(backend, |config| config.registration.require_token = true).await else { return };
    let store = api.store();
    assert!(store.create_registration_token("onceonly", Some(1), None).await.unwrap());
    assert!(store.create_registration_token("expired", None, Some(ranvier_core::util::now_ms() - 1000)).await.unwrap());
    assert!(validity(&api, "onceonly").await);
    assert!(!validity(&api, "expired").await);
    assert!(!validity(&api, "unknown").await);
    // The unstable path answers the same.
    let unstable = api
        .get("/_matrix/client/unstable/org.matrix.msc3231/register/org.matrix.msc3231.login.registration_token/validity?token=onceonly", None)
        .await;
    assert_eq!(unstable.body, json!({"valid": true}));

    let body = json!({"username": "alice", "password": "pw"});
    let first = api.post(REGISTER, None, body.clone()).await;
    let session = first.assert_uia(&[&["m.login.registration_token"]], &[]);

    // A wrong token fails the stage; the session stays usable.
    let mut attempt = body.clone();
    attempt["auth"] = json!({"type": "m.login.registration_token", "token": "unknown", "session": session});
    let failed = api.post(REGISTER, None, attempt.clone()).await;
    assert_eq!(failed.assert_uia(&[&["m.login.registration_token"]], &[]), session);
    assert_eq!(failed.body["errcode"], "M_UNAUTHORIZED");
    attempt["auth"]["token"] = json!("expired");
    api.post(REGISTER, None, attempt.clone()).await.assert_uia(&[&["m.login.registration_token"]], &[]);

    // The dummy stage is not a way around the token.
    let dummy = api
        .post(
            REGISTER,
            None,
            json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    dummy.assert_uia(&[&["m.login.registration_token"]], &[]);
    assert_eq!(dummy.body["errcode"], "M_UNRECOGNIZED");

    attempt["auth"]["token"] = json!("onceonly");
    let done = api.post(REGISTER, None, attempt).await;
    done.assert_status(StatusCode::OK);
    assert_eq!(done.body["user_id"], "@alice:example.org");
    let row = store.get_registration_token("onceonly").await.unwrap().unwrap();
    assert_eq!((row.pending, row.completed), (0, 1));
    assert!(!validity(&api, "onceonly").await);

    // The token is used up.
    let again = api
        .post(REGISTER, None, json!({"username": "bob", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "onceonly"}}))
        .await;
    again.assert_uia(&[&["m.login.registration_token"]], &[]);
    assert_eq!(again.body["errcode"], "M_UNAUTHORIZED");
}

async fn pending_token_use_completes_on_retry(backend: Backend) {
    let Some(api) = TestApi::start(backend, |config| config.registration.require_token = true).await else { return };
    let store = api.store();
    store.create_registration_token("tok", Some(1), None).await.unwrap();

    // The stage passes but the request lacks a password: the token use is held, not spent.
    let stage = json!({"type": "m.login.registration_token", "token": "tok"});
    let missing = api.post(REGISTER, None, json!({"username": "alice", "auth": stage})).await;
    missing.assert_error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let row = store.get_registration_token("tok").await.unwrap().unwrap();
    assert_eq!((row.pending, row.completed), (1, 0));
    assert!(!validity(&api, "tok").await, "a pending use counts against the limit");

    // Someone else cannot take the last use meanwhile.
    let other = api.post(REGISTER, None, json!({"username": "eve", "password": "pw", "auth": stage})).await;
    assert_eq!(other.body["errcode"], "M_UNAUTHORIZED");

    // The holder finds its session (the error did not say it, so look it up as a client
    // would have from the first 401: here, straight from the store) and finishes.
    let session: String = sqlx::query_scalar("SELECT session_id FROM uia_sessions WHERE registration_token = 'tok'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let done =
        api.post(REGISTER, None, json!({"username": "alice", "password": "pw", "auth": {"session": session}})).await;
    done.assert_status(StatusCode::OK);
    let row = store.get_registration_token("tok").await.unwrap().unwrap();
    assert_eq!((row.pending, row.completed), (0, 1));
}

async fn login_and_logout(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "secret").await;

    let types = api.get(LOGIN, None).await;
    types.assert_status(StatusCode::OK);
    assert_eq!(types.body["flows"][0]["type"], "m.login.password");

    // Localpart in any case, full id, and the legacy `user` field.
    for name in ["alice", "ALICE", "@alice:example.org", "@Alice:example.org"] {
        let session = api.login(name, "secret", None).await;
        assert_eq!(session.user_id, "@alice:example.org");
    }
    let legacy =
        api.post(LOGIN, None, json!({"type": "m.login.password", "user": "alice", "password": "secret"})).await;
    legacy.assert_status(StatusCode::OK);

    for (name, password) in [("alice", "wrong"), ("nobody", "secret"), ("@alice:elsewhere.org", "secret")] {
        api.post(LOGIN, None, login_body(name, password, None))
            .await
            .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    api.post(LOGIN, None, json!({"type": "m.login.token", "token": "x"}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let thirdparty = json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": "secret"});
    api.post(LOGIN, None, thirdparty).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Logging in again on a device replaces its token, also in the cache.
    let first = api.login("alice", "secret", Some("PHONE")).await;
    assert!(api.token_works(&first.access_token).await);
    let second = api.login("alice", "secret", Some("PHONE")).await;
    assert_eq!(second.device_id, "PHONE");
    assert!(!api.token_works(&first.access_token).await);
    assert!(api.token_works(&second.access_token).await);
    let phones = api.store().list_devices("@alice:example.org").await.unwrap();
    assert_eq!(phones.iter().filter(|device| device.device_id == "PHONE").count(), 1);

    // Logout ends the device.
    api.post("/_matrix/client/v3/logout", second.token(), json!({})).await.assert_status(StatusCode::OK);
    assert!(!api.token_works(&second.access_token).await);
    assert!(api.store().get_device("@alice:example.org", "PHONE").await.unwrap().is_none());
    api.post("/_matrix/client/v3/logout", second.token(), json!({}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");

    // Logout from everywhere ends every device.
    let other = api.login("alice", "secret", None).await;
    assert!(api.token_works(&alice.access_token).await && api.token_works(&other.access_token).await);
    api.post("/_matrix/client/v3/logout/all", other.token(), json!({})).await.assert_status(StatusCode::OK);
    assert!(!api.token_works(&alice.access_token).await);
    assert!(!api.token_works(&other.access_token).await);
    assert!(api.store().list_devices("@alice:example.org").await.unwrap().is_empty());

    api.get("/_matrix/client/v3/account/whoami", None).await.assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    api.get("/_matrix/client/v3/account/whoami?access_token=bogus", None)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
}

async fn devices_and_uia(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let a = api.register("alice", "secret").await;
    let b = api.login("alice", "secret", Some("DEVB")).await;
    let token = a.token();

    let devices = api.get("/_matrix/client/v3/devices", token).await;
    devices.assert_status(StatusCode::OK);
    let mut ids: Vec<&str> =
        devices.body["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    ids.sort();
    let mut expected = vec![a.device_id.as_str(), "DEVB"];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(devices.body["devices"][0]["last_seen_ts"].is_u64());

    let one = api.get("/_matrix/client/v3/devices/DEVB", token).await;
    one.assert_status(StatusCode::OK);
    assert_eq!(one.body["device_id"], "DEVB");
    api.get("/_matrix/client/v3/devices/NOPE", token).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");

    api.put("/_matrix/client/v3/devices/DEVB", token, json!({"display_name": "Phone"}))
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(api.get("/_matrix/client/v3/devices/DEVB", token).await.body["display_name"], "Phone");
    api.put("/_matrix/client/v3/devices/DEVB", token, json!({})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get("/_matrix/client/v3/devices/DEVB", token).await.body["display_name"], "Phone", "unchanged");
    api.put("/_matrix/client/v3/devices/NOPE", token, json!({"display_name": "x"}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.put("/_matrix/client/v3/devices/NOPE", token, json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.put("/_matrix/client/v3/devices/DEVB", token, json!({"display_name": "x".repeat(101)}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Deleting a device asks for the password.
    assert!(api.token_works(&b.access_token).await);
    let first = api.delete("/_matrix/client/v3/devices/DEVB", token, json!({})).await;
    let session = first.assert_uia(&[&["m.login.password"]], &[]);
    let wrong = api
        .delete(
            "/_matrix/client/v3/devices/DEVB",
            token,
            json!({"auth": password_auth("alice", "wrong", Some(&session))}),
        )
        .await;
    assert_eq!(wrong.assert_uia(&[&["m.login.password"]], &[]), session);
    assert_eq!(wrong.body["errcode"], "M_FORBIDDEN");
    assert!(wrong.body["error"].is_string());
    let bob = api.register("bob", "bobpw").await;
    let as_bob = api
        .delete(
            "/_matrix/client/v3/devices/DEVB",
            token,
            json!({"auth": password_auth("bob", "bobpw", Some(&session))}),
        )
        .await;
    as_bob.assert_uia(&[&["m.login.password"]], &[]);
    assert_eq!(as_bob.body["errcode"], "M_FORBIDDEN", "another user's password does not count");
    assert!(api.token_works(&b.access_token).await, "nothing deleted yet");

    let ok = api
        .delete(
            "/_matrix/client/v3/devices/DEVB",
            token,
            json!({"auth": password_auth("@alice:example.org", "secret", Some(&session))}),
        )
        .await;
    ok.assert_status(StatusCode::OK);
    assert!(!api.token_works(&b.access_token).await, "the deleted device's token is revoked");
    api.get("/_matrix/client/v3/devices/DEVB", token).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // The session ended with the operation.
    api.delete(
        "/_matrix/client/v3/devices/DEVB",
        token,
        json!({"auth": password_auth("alice", "secret", Some(&session))}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // Deleting an unknown device succeeds once authenticated; the password may come at once.
    api.delete("/_matrix/client/v3/devices/GONE", token, json!({"auth": password_auth("alice", "secret", None)}))
        .await
        .assert_status(StatusCode::OK);

    // Bulk deletion.
    let c = api.login("alice", "secret", Some("DEVC")).await;
    let d = api.login("alice", "secret", Some("DEVD")).await;
    assert!(api.token_works(&c.access_token).await && api.token_works(&d.access_token).await);
    let bulk = json!({"devices": ["DEVC", "DEVD"]});
    let first = api.post("/_matrix/client/v3/delete_devices", token, bulk.clone()).await;
    let session = first.assert_uia(&[&["m.login.password"]], &[]);
    let mut with_auth = bulk.clone();
    with_auth["auth"] = password_auth("alice", "secret", Some(&session));
    api.post("/_matrix/client/v3/delete_devices", token, with_auth).await.assert_status(StatusCode::OK);
    assert!(!api.token_works(&c.access_token).await);
    assert!(!api.token_works(&d.access_token).await);
    assert!(api.token_works(&a.access_token).await);
    assert!(api.token_works(&bob.access_token).await);
    let left = api.get("/_matrix/client/v3/devices", token).await;
    assert_eq!(left.body["devices"].as_array().unwrap().len(), 1);

    api.get("/_matrix/client/v3/devices", None).await.assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

async fn uia_sessions_are_bound_to_their_operation(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "secret").await;
    let bob = api.register("bob", "bobpw").await;
    api.login("alice", "secret", Some("DEVB")).await;
    api.login("alice", "secret", Some("DEVC")).await;

    let first = api.delete("/_matrix/client/v3/devices/DEVB", alice.token(), json!({})).await;
    let session = first.assert_uia(&[&["m.login.password"]], &[]);
    let auth = json!({"auth": password_auth("alice", "secret", Some(&session))});

    // Not for another device, another endpoint, or another user.
    api.delete("/_matrix/client/v3/devices/DEVC", alice.token(), auth.clone())
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let mut password_change = auth.clone();
    password_change["new_password"] = json!("hijacked");
    api.post("/_matrix/client/v3/account/password", alice.token(), password_change)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let bobs = json!({"auth": password_auth("bob", "bobpw", Some(&session))});
    api.delete("/_matrix/client/v3/devices/DEVB", bob.token(), bobs)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A registration session cannot authorise anything but a registration.
    let registration = api.post(REGISTER, None, json!({})).await.assert_uia(&[&["m.login.dummy"]], &[]);
    api.delete(
        "/_matrix/client/v3/devices/DEVB",
        alice.token(),
        json!({"auth": {"type": "m.login.dummy", "session": registration}}),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A bulk session covers exactly its devices.
    let bulk = api.post("/_matrix/client/v3/delete_devices", alice.token(), json!({"devices": ["DEVB"]})).await;
    let bulk_session = bulk.assert_uia(&[&["m.login.password"]], &[]);
    let wider = json!({"devices": ["DEVB", "DEVC"], "auth": password_auth("alice", "secret", Some(&bulk_session))});
    api.post("/_matrix/client/v3/delete_devices", alice.token(), wider)
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // A dummy stage is not accepted where a password is asked for.
    let dummy = api
        .delete(
            "/_matrix/client/v3/devices/DEVB",
            alice.token(),
            json!({"auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    dummy.assert_uia(&[&["m.login.password"]], &[]);
    assert_eq!(dummy.body["errcode"], "M_UNRECOGNIZED");

    // The session still works for what it was started for.
    api.delete("/_matrix/client/v3/devices/DEVB", alice.token(), auth).await.assert_status(StatusCode::OK);
    assert!(api.store().get_device("@alice:example.org", "DEVC").await.unwrap().is_some());
}

async fn password_change(backend: Backend) {
    let Some(api) = TestApi::start(backend, |config| config.registration.min_password_length = 6).await else {
        return;
    };
    let a = api.register("alice", "old-password").await;
    let b = api.login("alice", "old-password", None).await;
    let c = api.login("alice", "old-password", None).await;
    assert!(api.token_works(&b.access_token).await && api.token_works(&c.access_token).await);
    const PASSWORD: &str = "/_matrix/client/v3/account/password";

    api.post(PASSWORD, None, json!({"new_password": "new-password"}))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    api.post(PASSWORD, a.token(), json!({"new_password": "short"}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_WEAK_PASSWORD");
    let first = api.post(PASSWORD, a.token(), json!({"new_password": "new-password"})).await;
    let session = first.assert_uia(&[&["m.login.password"]], &[]);
    let wrong = api
        .post(
            PASSWORD,
            a.token(),
            json!({"new_password": "new-password", "auth": password_auth("alice", "nope", Some(&session))}),
        )
        .await;
    wrong.assert_uia(&[&["m.login.password"]], &[]);
    assert_eq!(wrong.body["errcode"], "M_FORBIDDEN");
    api.post(
        PASSWORD,
        a.token(),
        json!({"new_password": "new-password", "auth": password_auth("alice", "old-password", Some(&session))}),
    )
    .await
    .assert_status(StatusCode::OK);

    // Other devices are logged out by default; this one stays.
    assert!(api.token_works(&a.access_token).await);
    assert!(!api.token_works(&b.access_token).await);
    assert!(!api.token_works(&c.access_token).await);
    assert_eq!(api.store().list_devices("@alice:example.org").await.unwrap().len(), 1);
    api.post(LOGIN, None, login_body("alice", "old-password", None))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let d = api.login("alice", "new-password", None).await;

    // With logout_devices false they stay.
    let body = json!({"new_password": "newer-password", "logout_devices": false, "auth": password_auth("alice", "new-password", None)});
    api.post(PASSWORD, a.token(), body).await.assert_status(StatusCode::OK);
    assert!(api.token_works(&d.access_token).await);
    api.login("alice", "newer-password", None).await;
}

async fn deactivation(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let a = api.register("alice", "secret").await;
    let b = api.login("alice", "secret", None).await;
    assert!(api.token_works(&b.access_token).await);
    api.put("/_matrix/client/v3/user/@alice:example.org/account_data/org.example.x", a.token(), json!({"k": 1}))
        .await
        .assert_status(StatusCode::OK);
    const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";

    api.post(DEACTIVATE, None, json!({})).await.assert_error(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let first = api.post(DEACTIVATE, a.token(), json!({})).await;
    let session = first.assert_uia(&[&["m.login.password"]], &[]);
    let wrong = api.post(DEACTIVATE, a.token(), json!({"auth": password_auth("alice", "wrong", Some(&session))})).await;
    assert_eq!(wrong.body["errcode"], "M_FORBIDDEN");
    assert!(api.token_works(&a.access_token).await);

    let done = api.post(DEACTIVATE, a.token(), json!({"auth": password_auth("alice", "secret", Some(&session))})).await;
    done.assert_status(StatusCode::OK);
    assert_eq!(done.body, json!({"id_server_unbind_result": "no-support"}));
    assert!(!api.token_works(&a.access_token).await);
    assert!(!api.token_works(&b.access_token).await);
    api.post(LOGIN, None, login_body("alice", "secret", None))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_USER_DEACTIVATED");
    api.post(REGISTER, None, json!({"username": "alice", "password": "x", "auth": {"type": "m.login.dummy"}}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    let user = api.store().get_user("@alice:example.org").await.unwrap().unwrap();
    assert!(user.deactivated && user.password_hash.is_none());
    assert!(api.store().list_devices("@alice:example.org").await.unwrap().is_empty());
    assert!(api.store().get_account_data("@alice:example.org", "", "org.example.x").await.unwrap().is_none());
}

/// The user's membership in a room, from the membership table.
async fn membership(api: &TestApi, user_id: &str, room_id: &str) -> Option<String> {
    let rooms = api.store().rooms_for_user(user_id).await.unwrap();
    rooms.into_iter().find(|(room, _, _, _)| room == room_id).map(|(_, membership, _, _)| membership)
}

async fn deactivation_leaves_rooms(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "secret").await;
    let bob = api.register("bob", "bobpw").await;
    let carol = api.register("carol", "carolpw").await;
    let created = api.post("/_matrix/client/v3/createRoom", carol.token(), json!({"preset": "public_chat"})).await;
    created.assert_status(StatusCode::OK);
    let room_id = created.body["room_id"].as_str().unwrap().to_owned();
    api.post(&format!("/_matrix/client/v3/rooms/{room_id}/join"), alice.token(), json!({}))
        .await
        .assert_status(StatusCode::OK);
    api.post(&format!("/_matrix/client/v3/rooms/{room_id}/invite"), carol.token(), json!({"user_id": bob.user_id}))
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(membership(&api, &alice.user_id, &room_id).await.as_deref(), Some("join"));
    assert_eq!(membership(&api, &bob.user_id, &room_id).await.as_deref(), Some("invite"));

    for (session, password) in [(&alice, "secret"), (&bob, "bobpw")] {
        let auth = password_auth(&session.user_id, password, None);
        api.post("/_matrix/client/v3/account/deactivate", session.token(), json!({"auth": auth}))
            .await
            .assert_status(StatusCode::OK);
    }
    assert_eq!(membership(&api, &alice.user_id, &room_id).await.as_deref(), Some("leave"), "joined room left");
    assert_eq!(membership(&api, &bob.user_id, &room_id).await.as_deref(), Some("leave"), "invite rejected");
    assert_eq!(membership(&api, &carol.user_id, &room_id).await.as_deref(), Some("join"));
}

async fn account_data(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    let alice = api.register("alice", "pw").await;
    let bob = api.register("bob", "pw").await;
    let global = "/_matrix/client/v3/user/@alice:example.org/account_data/org.example.settings";
    let room = "/_matrix/client/v3/user/@alice:example.org/rooms/!room:example.org/account_data/org.example.settings";

    api.get(global, alice.token()).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let before = api.store().streams().current(ranvier_store::StreamKind::AccountData);
    api.put(global, alice.token(), json!({"theme": "dark"})).await.assert_status(StatusCode::OK);
    assert!(api.store().streams().current(ranvier_store::StreamKind::AccountData) > before, "the stream advanced");
    let read = api.get(global, alice.token()).await;
    read.assert_status(StatusCode::OK);
    assert_eq!(read.body, json!({"theme": "dark"}));
    api.put(global, alice.token(), json!({"theme": "light"})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(global, alice.token()).await.body, json!({"theme": "light"}));

    // Room data is separate from global data of the same type.
    api.get(room, alice.token()).await.assert_error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
    api.put(room, alice.token(), json!({"pinned": true})).await.assert_status(StatusCode::OK);
    assert_eq!(api.get(room, alice.token()).await.body, json!({"pinned": true}));
    assert_eq!(api.get(global, alice.token()).await.body, json!({"theme": "light"}));
    let changes = api.store().account_data_changes("@alice:example.org", 0, i64::MAX).await.unwrap();
    assert_eq!(changes.len(), 2);

    // Someone else's data.
    api.get(global, bob.token()).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(global, bob.token(), json!({"x": 1})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.get(room, bob.token()).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    api.put(room, bob.token(), json!({"x": 1})).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Content must be a JSON object.
    for bad in [json!([1, 2]), json!("text"), json!(5), Value::Null] {
        api.put(global, alice.token(), bad.clone()).await.assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
        api.put(room, alice.token(), bad).await.assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
    }
    api.send_raw("PUT", global, alice.token(), Some("{".into()), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_NOT_JSON");
    assert_eq!(api.get(global, alice.token()).await.body, json!({"theme": "light"}), "failed writes change nothing");

    // Invalid room ids, and types the server maintains itself.
    api.get("/_matrix/client/v3/user/@alice:example.org/rooms/notaroom/account_data/x", alice.token())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    api.put("/_matrix/client/v3/user/@alice:example.org/account_data/m.push_rules", alice.token(), json!({}))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");
    api.put(
        "/_matrix/client/v3/user/@alice:example.org/rooms/!room:example.org/account_data/m.fully_read",
        alice.token(),
        json!({"event_id": "$e"}),
    )
    .await
    .assert_error(StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON");
}

/// A shared-secret registration body with a correct MAC.
fn admin_registration(secret: &str, nonce: &str, username: &str, password: &str, admin: bool) -> Value {
    let mac = ranvier_client::admin::registration_mac(secret.as_bytes(), nonce, username, password, admin, None);
    json!({"nonce": nonce, "username": username, "password": password, "admin": admin, "mac": hex_encode(&mac)})
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn admin_nonce(api: &TestApi) -> String {
    let response = api.get(ADMIN_REGISTER, None).await;
    response.assert_status(StatusCode::OK);
    response.body["nonce"].as_str().unwrap().to_owned()
}

const ADMIN_REGISTER: &str = "/_synapse/admin/v1/register";

async fn shared_secret_registration(backend: Backend) {
    let secret = "s3cret";
    let Some(api) = TestApi::start(backend, |config| config.registration.shared_secret = secret.to_owned()).await
    else {
        return;
    };
    let nonce = admin_nonce(&api).await;
    let body = admin_registration(secret, &nonce, "Root", "rootpw", true);
    let created = api.post(ADMIN_REGISTER, None, body.clone()).await;
    created.assert_status(StatusCode::OK);
    assert_eq!(created.body["user_id"], "@root:example.org");
    assert_eq!(created.body["home_server"], "example.org");
    assert!(created.body["device_id"].is_string());
    assert!(api.token_works(created.body["access_token"].as_str().unwrap()).await);
    assert!(api.store().get_user("@root:example.org").await.unwrap().unwrap().admin);
    api.login("root", "rootpw", None).await;

    // Nonces are single use.
    api.post(ADMIN_REGISTER, None, body).await.assert_error(StatusCode::BAD_REQUEST, "M_UNKNOWN");

    // A wrong MAC is refused, and uses the nonce up.
    let nonce = admin_nonce(&api).await;
    let mut forged = admin_registration(secret, &nonce, "mallory", "pw", false);
    forged["admin"] = json!(true);
    api.post(ADMIN_REGISTER, None, forged.clone()).await.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    forged["admin"] = json!(false);
    api.post(ADMIN_REGISTER, None, forged).await.assert_error(StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let nonce = admin_nonce(&api).await;
    api.post(ADMIN_REGISTER, None, admin_registration("other", &nonce, "mallory", "pw", false))
        .await
        .assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert!(api.store().get_user("@mallory:example.org").await.unwrap().is_none());

    // A plain user; taken and invalid names.
    let nonce = admin_nonce(&api).await;
    let plain = api.post(ADMIN_REGISTER, None, admin_registration(secret, &nonce, "bob", "pw", false)).await;
    plain.assert_status(StatusCode::OK);
    assert!(!api.store().get_user("@bob:example.org").await.unwrap().unwrap().admin);
    let nonce = admin_nonce(&api).await;
    api.post(ADMIN_REGISTER, None, admin_registration(secret, &nonce, "bob", "pw", false))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    let nonce = admin_nonce(&api).await;
    api.post(ADMIN_REGISTER, None, admin_registration(secret, &nonce, "b b", "pw", false))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");

    // Expired nonces are refused.
    let nonce = admin_nonce(&api).await;
    sqlx::query("UPDATE shared_secret_nonces SET created_ts = created_ts - 120000")
        .execute(api.store().pool())
        .await
        .unwrap();
    api.post(ADMIN_REGISTER, None, admin_registration(secret, &nonce, "late", "pw", false))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_UNKNOWN");

    // Malformed bodies.
    api.send_raw("POST", ADMIN_REGISTER, None, Some("{".into()), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "M_NOT_JSON");
    api.post(ADMIN_REGISTER, None, json!({"nonce": "x"})).await.assert_error(StatusCode::BAD_REQUEST, "M_BAD_JSON");
}

async fn shared_secret_registration_disabled(backend: Backend) {
    let Some(api) = TestApi::start(backend, |_| {}).await else { return };
    api.get(ADMIN_REGISTER, None).await.assert_error(StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let body = admin_registration("", "n", "root", "pw", true);
    api.post(ADMIN_REGISTER, None, body).await.assert_error(StatusCode::BAD_REQUEST, "M_UNKNOWN");
}

async fn rate_limits(backend: Backend) {
    let Some(api) = TestApi::start(backend, |config| {
        let slow = ranvier_core::config::RateLimit { per_second: 0.01, burst: 2 };
        config.rate_limits.enabled = true;
        config.rate_limits.login = slow;
        config.rate_limits.registration = slow;
    })
    .await
    else {
        return;
    };
    let here: std::net::SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let there: std::net::SocketAddr = "10.0.0.2:5000".parse().unwrap();

    // Logins from one address: two go through (and fail), the third is limited.
    for name in ["u1", "u2"] {
        let response = api.send("POST", LOGIN, None, Some(&login_body(name, "pw", None)), Some(here)).await;
        response.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let limited = api.send("POST", LOGIN, None, Some(&login_body("u3", "pw", None)), Some(here)).await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let retry_ms = limited.body["retry_after_ms"].as_u64().expect("retry_after_ms in the body");
    assert!((1..=100_000).contains(&retry_ms), "{retry_ms}");
    let header = limited.headers.get("retry-after").expect("Retry-After header").to_str().unwrap();
    assert!(header.parse::<u64>().unwrap() >= 1, "{header}");
    // Another address has its own bucket.
    let response = api.send("POST", LOGIN, None, Some(&login_body("u4", "pw", None)), Some(there)).await;
    response.assert_error(StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Registration likewise, first requests included.
    let body = json!({"username": "alice", "password": "pw"});
    for _ in 0..2 {
        api.send("POST", REGISTER, None, Some(&body), Some(here)).await.assert_status(StatusCode::UNAUTHORIZED);
    }
    api.send("POST", REGISTER, None, Some(&body), Some(here))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    api.send("POST", REGISTER, None, Some(&body), Some(there)).await.assert_status(StatusCode::UNAUTHORIZED);

    // Password guesses against one account are limited wherever they come from, at login
    // and in UIA alike.
    let hash = api.state.auth.hash_password("secret".into()).await.unwrap();
    assert!(api.store().create_user("@victim:example.org", Some(&hash), false).await.unwrap());
    let third: std::net::SocketAddr = "10.0.0.3:5000".parse().unwrap();
    let login = api.send("POST", LOGIN, None, Some(&login_body("victim", "secret", None)), Some(third)).await;
    login.assert_status(StatusCode::OK);
    let token = login.body["access_token"].as_str().unwrap().to_owned();
    let guess = json!({"auth": password_auth("victim", "guess", None)});
    let first = api.delete("/_matrix/client/v3/devices/OTHER", Some(&token), guess.clone()).await;
    assert_eq!(first.body["errcode"], "M_FORBIDDEN");
    api.delete("/_matrix/client/v3/devices/OTHER", Some(&token), guess)
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let fourth: std::net::SocketAddr = "10.0.0.4:5000".parse().unwrap();
    api.send("POST", LOGIN, None, Some(&login_body("victim", "secret", None)), Some(fourth))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");

    // The limiter is open to other endpoints, e.g. sending messages per user.
    use ranvier_client::ratelimit::RateLimitKind;
    for _ in 0..50 {
        api.state.ratelimit.check(RateLimitKind::Messages, "@alice:example.org").unwrap();
    }
    let error = api.state.ratelimit.check(RateLimitKind::Messages, "@alice:example.org").unwrap_err();
    assert!(matches!(error.kind(), Some(ranvier_core::error::ErrorKind::LimitExceeded(_))), "{error}");
}
