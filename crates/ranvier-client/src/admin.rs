//! Synapse-compatible shared-secret admin registration (`/_synapse/admin/v1/register`), so
//! that `register_new_matrix_user` and the tools built on it work against Ranvier, and
//! [`require_admin`], the check behind every admin endpoint that takes an access token.
//!
//! `GET` hands out a nonce; `POST` carries the nonce, the account details and a MAC: the hex
//! HMAC-SHA1, keyed by `registration.shared_secret`, of
//! `nonce NUL username NUL password NUL ("admin" | "notadmin")` (then `NUL user_type` when a
//! user type is given). Nonces are single use (a wrong MAC uses one up too) and expire after a
//! minute. With an empty secret the endpoint is disabled. It has no ruma type: the request is
//! read with serde.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use hmac::{Hmac, Mac};
use http::StatusCode;
use ranvier_core::{Error, error::ErrorKind, util::random_string};
use ranvier_http::{AuthState, Identity, error_response, extract::access_token, matrix_error};
use serde::Deserialize;
use serde_json::json;
use sha1::Sha1;

use crate::{
    AppState,
    account::{NewLogin, Registration, available_user_id, create_account},
    auth::MAX_PASSWORD_BYTES,
};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router.route("/_synapse/admin/v1/register", get(nonce).post(register))
}

/// Authenticate an admin API request: the access token must belong to a server administrator
/// (an account made with `ranvier admin create-user --admin` or registered with `admin: true`).
///
/// `401 M_MISSING_TOKEN` / `M_UNKNOWN_TOKEN` as for any authenticated endpoint, `403
/// M_FORBIDDEN` for anyone else.
pub async fn require_admin(state: &AppState, parts: &http::request::Parts) -> ranvier_core::Result<Identity> {
    let token = access_token(parts).ok_or_else(|| Error::matrix(ErrorKind::MissingToken, "Missing access token"))?;
    let identity = state.authenticate(&token).await?;
    let admin = state.store.get_user(identity.user_id.as_str()).await?.is_some_and(|user| user.admin);
    if !admin {
        return Err(Error::forbidden("You are not a server admin"));
    }
    Ok(identity)
}

/// The body of a shared-secret registration.
#[derive(Deserialize)]
struct SharedSecretRegistration {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    /// Accepted for compatibility; display names belong to profiles, which are set elsewhere.
    #[serde(default)]
    #[allow(dead_code)]
    displayname: Option<String>,
    #[serde(default)]
    user_type: Option<String>,
    mac: String,
}

/// The MAC a client computes for a registration, as raw bytes.
pub fn registration_mac(
    secret: &[u8],
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> Vec<u8> {
    let mut mac = hmac_sha1(secret);
    feed_registration(&mut mac, nonce, username, password, admin, user_type);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1(secret: &[u8]) -> Hmac<Sha1> {
    // HMAC takes keys of any length; this never fails.
    <Hmac<Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

fn feed_registration(
    mac: &mut Hmac<Sha1>,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) {
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(username.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.update(b"\0");
    mac.update(if admin { b"admin".as_slice() } else { b"notadmin".as_slice() });
    if let Some(user_type) = user_type {
        mac.update(b"\0");
        mac.update(user_type.as_bytes());
    }
}

/// Check a hex MAC in constant time.
fn mac_matches(secret: &[u8], request: &SharedSecretRegistration) -> bool {
    let Ok(given) = hex::decode(request.mac.trim()) else {
        return false;
    };
    let mut mac = hmac_sha1(secret);
    let user_type = request.user_type.as_deref();
    feed_registration(&mut mac, &request.nonce, &request.username, &request.password, request.admin, user_type);
    mac.verify_slice(&given).is_ok()
}

/// `400`, with the message Synapse gives, when no shared secret is configured.
fn disabled() -> Response {
    let message = "Shared secret registration is not enabled".to_owned();
    matrix_error(StatusCode::BAD_REQUEST, ErrorKind::Unknown, message)
}

async fn nonce(State(state): State<AppState>) -> Response {
    if state.config.registration.shared_secret.is_empty() {
        return disabled();
    }
    let nonce = random_string(32);
    match state.store.create_registration_nonce(&nonce).await {
        Ok(()) => Json(json!({ "nonce": nonce })).into_response(),
        Err(error) => error_response(error),
    }
}

async fn register(State(state): State<AppState>, body: Bytes) -> Response {
    let secret = state.config.registration.shared_secret.as_bytes();
    if secret.is_empty() {
        return disabled();
    }
    let request: SharedSecretRegistration = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return error_response(Error::matrix(ErrorKind::NotJson, format!("Content not JSON: {e}")));
        }
        Err(e) => return error_response(Error::bad_json(format!("Bad registration request: {e}"))),
    };
    match state.store.take_registration_nonce(&request.nonce).await {
        Ok(true) => {}
        Ok(false) => return matrix_error(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Unrecognised nonce".into()),
        Err(error) => return error_response(error),
    }
    if !mac_matches(secret, &request) {
        return error_response(Error::forbidden("HMAC incorrect"));
    }
    match create(&state, request).await {
        Ok(body) => Json(body).into_response(),
        Err(error) => error_response(error),
    }
}

/// Create the account with a first device, as the endpoint's response expects a login.
async fn create(state: &AppState, request: SharedSecretRegistration) -> ranvier_core::Result<serde_json::Value> {
    if request.password.contains('\0') || request.password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid_param("Invalid password"));
    }
    let user_id = available_user_id(state, &request.username).await?;
    let login = NewLogin { device_id: None, display_name: None };
    let registration =
        Registration { user_id, password: request.password, admin: request.admin, uia: None, login: Some(login) };
    let registered = create_account(state, registration).await?;
    let (token, device_id) = registered.login.ok_or_else(|| Error::internal("registration made no login"))?;
    let user_id = registered.user_id;
    Ok(json!({
        "access_token": token,
        "user_id": user_id,
        "home_server": state.server_name,
        "device_id": device_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_matches_a_known_vector() {
        // Computed independently with Python's hmac module:
        // hmac.new(b"secret", b"abc\0alice\0pw\0notadmin", hashlib.sha1).hexdigest()
        let mac = registration_mac(b"secret", "abc", "alice", "pw", false, None);
        assert_eq!(hex::encode(mac), "42e32623fe124933c326f9d2d67ff7c617915a10");
    }

    fn request(mac: String, admin: bool) -> SharedSecretRegistration {
        SharedSecretRegistration {
            nonce: "n".into(),
            username: "bob".into(),
            password: "pw".into(),
            admin,
            displayname: None,
            user_type: None,
            mac,
        }
    }

    #[test]
    fn mac_check_covers_every_field() {
        let good = hex::encode(registration_mac(b"k", "n", "bob", "pw", true, None));
        assert!(mac_matches(b"k", &request(good.clone(), true)));
        assert!(mac_matches(b"k", &request(good.to_uppercase(), true)), "hex case does not matter");
        assert!(!mac_matches(b"k", &request(good.clone(), false)), "admin flag is covered");
        assert!(!mac_matches(b"other", &request(good.clone(), true)), "key is covered");
        let mut typed = request(good.clone(), true);
        typed.user_type = Some("bot".into());
        assert!(!mac_matches(b"k", &typed), "user type is covered when present");
        typed.mac = hex::encode(registration_mac(b"k", "n", "bob", "pw", true, Some("bot")));
        assert!(mac_matches(b"k", &typed));
        assert!(!mac_matches(b"k", &request("zz".into(), true)), "not hex");
        assert!(!mac_matches(b"k", &request(String::new(), true)), "empty");
    }
}
