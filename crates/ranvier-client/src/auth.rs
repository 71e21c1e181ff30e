//! Authentication: access tokens (with an in-memory cache), password hashing, user ids from
//! login identifiers, and user-interactive authentication (UIA).
//!
//! # UIA
//! An endpoint that needs UIA describes itself with a [`UiaRequest`] (the operation, the
//! authenticated user if any, and the flows it offers) and calls [`user_interactive_auth`]
//! with the request's `auth` dict. That either fails with the spec's 401 body (`flows`,
//! `params`, `session`, `completed`, plus `errcode`/`error` when a stage was attempted and
//! failed) or returns [`UiaPassed`]; once the operation has succeeded the endpoint closes the
//! session with [`finish_uia`] (registration closes it inside its own transaction instead).
//! Sessions live in the database, so a client may continue one on another process. A session
//! authorises exactly the operation and user it was started for.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
};
use parking_lot::Mutex;
use ranvier_core::{
    Error, Result,
    error::ErrorKind,
    util::{now_ms, random_string},
};
use ranvier_http::Identity;
use ranvier_store::{Store, uia::TokenStage};
use ruma::{
    DeviceId, OwnedUserId, ServerName, UserId,
    api::{
        client::uiaa::{AuthData, AuthType, UserIdentifier},
        error::UnknownTokenErrorData,
    },
};
use serde_json::json;

use crate::{Services, ratelimit::RateLimitKind};

/// How long a cached token is trusted before the database is asked again. Tokens revoked in
/// this process are evicted at once; this bounds how long a token revoked by another process
/// sharing the database keeps working here.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// The cache is cleared when it grows past this many tokens.
const CACHE_CAPACITY: usize = 100_000;

/// The longest password accepted: hashing cost grows with length.
pub const MAX_PASSWORD_BYTES: usize = 512;

struct CachedToken {
    identity: Identity,
    checked: Instant,
}

/// Token resolution with a cache in front of the database, and password hashing.
pub struct Auth {
    /// Token hash -> identity. Entries are removed whenever tokens are revoked.
    cache: Mutex<HashMap<String, CachedToken>>,
    /// Bumped on every eviction, so that a lookup which raced with a revocation does not put
    /// the revoked token back into the cache.
    generation: AtomicU64,
    /// argon2 cost for new password hashes (verification uses each hash's own parameters).
    password_params: Params,
    /// When expired UIA sessions were last cleaned up.
    last_uia_expiry: AtomicI64,
    /// Bounds concurrent argon2 runs to the number of cores: each run holds its working memory
    /// (7 MiB at the default cost) for its whole duration, so a burst of logins would
    /// otherwise multiply memory without finishing any sooner.
    hashing: tokio::sync::Semaphore,
}

impl Default for Auth {
    fn default() -> Self {
        Self::with_password_params(default_password_params())
    }
}

/// The argon2id cost of new password hashes: 7 MiB of memory and 5 passes, one of the
/// settings OWASP's password storage guidance lists as equivalent to its 19 MiB, 2-pass
/// first choice. The same work in a third of the memory keeps a burst of logins or
/// registrations from swelling the server's resident size.
fn default_password_params() -> Params {
    Params::new(7 * 1024, 5, 1, None).unwrap_or_default()
}

impl Auth {
    /// An `Auth` hashing new passwords with the given argon2id cost.
    pub fn with_password_params(password_params: Params) -> Self {
        Self {
            cache: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            password_params,
            last_uia_expiry: AtomicI64::new(0),
            hashing: tokio::sync::Semaphore::new(ranvier_core::util::cores()),
        }
    }

    /// An `Auth` with the cheapest argon2 cost, for tests that create many accounts.
    pub fn with_fast_hashing() -> Self {
        match Params::new(Params::MIN_M_COST, Params::MIN_T_COST, Params::MIN_P_COST, None) {
            Ok(params) => Self::with_password_params(params),
            Err(_) => Self::default(),
        }
    }

    /// Resolve `token`, failing with `401 M_UNKNOWN_TOKEN`.
    pub async fn authenticate(&self, store: &Store, token: &str) -> Result<Identity> {
        let hash = ranvier_store::accounts::token_hash(token);
        if let Some(entry) = self.cache.lock().get(&hash)
            && entry.checked.elapsed() < CACHE_TTL
        {
            return Ok(entry.identity.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let owner = store.token_owner(token).await?.ok_or_else(unknown_token)?;
        let identity = Identity {
            user_id: owner.user_id.try_into().map_err(|_| Error::internal("stored user id is invalid"))?,
            device_id: owner.device_id.into(),
        };
        let mut cache = self.cache.lock();
        if self.generation.load(Ordering::SeqCst) == generation {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(hash, CachedToken { identity: identity.clone(), checked: Instant::now() });
        }
        Ok(identity)
    }

    /// Forget cached tokens of `user_id`: of every device, or of one.
    pub fn forget(&self, user_id: &UserId, device_id: Option<&DeviceId>) {
        let mut cache = self.cache.lock();
        cache.retain(|_, entry| {
            let identity = &entry.identity;
            !(identity.user_id == user_id && device_id.is_none_or(|d| identity.device_id == d))
        });
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Forget cached tokens of some devices of `user_id`.
    pub fn forget_devices(&self, user_id: &UserId, device_ids: &[String]) {
        let mut cache = self.cache.lock();
        cache.retain(|_, entry| {
            let identity = &entry.identity;
            !(identity.user_id == user_id && device_ids.iter().any(|d| identity.device_id.as_str() == d))
        });
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Hash a password with argon2id, off the async runtime.
    pub async fn hash_password(&self, password: String) -> Result<String> {
        let params = self.password_params.clone();
        let _permit = self.hashing.acquire().await.map_err(|e| Error::internal(format!("hashing permit: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let salt_bytes: [u8; 16] = rand::random();
            let salt =
                SaltString::encode_b64(&salt_bytes).map_err(|e| Error::internal(format!("password salt: {e}")))?;
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| Error::internal(format!("hash password: {e}")))
        })
        .await
        .map_err(|e| Error::internal(format!("hash password task: {e}")))?
    }

    /// Check a password against a stored argon2 hash (with that hash's own cost), off the
    /// async runtime.
    pub async fn verify_password(&self, password: String, hash: String) -> Result<bool> {
        let _permit = self.hashing.acquire().await.map_err(|e| Error::internal(format!("hashing permit: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
        })
        .await
        .map_err(|e| Error::internal(format!("verify password task: {e}")))
    }

    /// Clean up expired UIA sessions, at most once a minute. Expired sessions are ignored
    /// whether or not they have been cleaned up; cleaning releases the registration-token uses
    /// they held.
    pub async fn expire_uia_sessions(&self, store: &Store) -> Result<()> {
        let now = now_ms();
        let last = self.last_uia_expiry.load(Ordering::SeqCst);
        if now - last < 60_000
            || self.last_uia_expiry.compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst).is_err()
        {
            return Ok(());
        }
        store.expire_uia_sessions().await.map(|_| ())
    }
}

/// `401 M_UNKNOWN_TOKEN`.
pub fn unknown_token() -> Error {
    Error::matrix(ErrorKind::UnknownToken(UnknownTokenErrorData::new()), "Unknown access token")
}

/// `400 M_INVALID_USERNAME`.
fn invalid_username(message: &str) -> Error {
    Error::matrix(ErrorKind::InvalidUsername, message)
}

/// Check a localpart requested for a new account and make the full user id. Localparts are
/// lower-cased by the caller; new ones use only `a-z 0-9 . _ = - / +`, may not start with `_`
/// (the prefix bridges use for their namespaces), and the whole id fits in 255 bytes.
pub fn new_user_id(server_name: &ServerName, localpart: &str) -> Result<OwnedUserId> {
    if localpart.is_empty() {
        return Err(invalid_username("User ID cannot be empty"));
    }
    let valid_chars =
        localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
    if !valid_chars {
        return Err(invalid_username("User ID can only contain characters a-z, 0-9, or '=_-./+'"));
    }
    if localpart.starts_with('_') {
        return Err(invalid_username("User ID may not begin with '_'"));
    }
    let user_id =
        UserId::parse(format!("@{localpart}:{server_name}")).map_err(|_| invalid_username("Invalid user ID"))?;
    if user_id.as_str().len() > 255 {
        return Err(invalid_username("User ID may not be longer than 255 characters"));
    }
    Ok(user_id)
}

/// The local user named by a login identifier: a localpart or a full user id. Localparts
/// compare case-insensitively (accounts are created lower-case). `None` when the name is not
/// a valid id of this server.
pub fn local_user_from_identifier(server_name: &ServerName, name: &str) -> Option<OwnedUserId> {
    let localpart = match name.strip_prefix('@') {
        Some(_) => {
            let user_id = UserId::parse(name).ok()?;
            if user_id.server_name() != server_name {
                return None;
            }
            user_id.localpart().to_lowercase()
        }
        None => name.to_lowercase(),
    };
    UserId::parse(format!("@{localpart}:{server_name}")).ok()
}

/// A request protected by user-interactive authentication.
#[derive(Clone, Debug)]
pub struct UiaRequest<'a> {
    /// What the request does, precisely enough that a session started for one operation
    /// cannot authorise another (e.g. `"DELETE /devices/ABC"`).
    pub operation: String,
    /// The authenticated user making the request; `None` for registration.
    pub user_id: Option<&'a UserId>,
    /// The flows offered, each the stages to complete in order.
    pub flows: Vec<Vec<AuthType>>,
}

impl<'a> UiaRequest<'a> {
    /// The UIA every sensitive operation of a signed-in user asks for: their password.
    pub fn password(user_id: &'a UserId, operation: impl Into<String>) -> Self {
        Self { operation: operation.into(), user_id: Some(user_id), flows: vec![vec![AuthType::Password]] }
    }
}

/// Proof that a request completed a flow. Close the session with [`finish_uia`] once the
/// operation has succeeded.
#[derive(Debug)]
#[must_use = "close the UIA session once the operation has succeeded"]
pub struct UiaPassed {
    pub session_id: String,
}

/// Close a session whose operation succeeded, so it cannot authorise anything else.
pub async fn finish_uia(services: &Services, passed: UiaPassed) -> Result<()> {
    services.store.delete_uia_session(&passed.session_id).await
}

/// What an attempt at one stage came to.
enum Stage {
    /// The stage is done; the session's completed stages so far.
    Done(Vec<String>),
    /// The attempt failed; the client may try again in the same session.
    Failed(ErrorKind, &'static str),
}

/// Run one round of UIA for `request` with the client's `auth` dict.
pub async fn user_interactive_auth(
    services: &Services,
    request: &UiaRequest<'_>,
    auth: Option<&AuthData>,
) -> Result<UiaPassed> {
    services.auth.expire_uia_sessions(&services.store).await?;
    let user = request.user_id.map(|user| user.as_str());
    let Some(auth) = auth else {
        // The first request: offer the flows in a new session.
        let session_id = random_string(32);
        services.store.create_uia_session(&session_id, &request.operation, user).await?;
        return Err(uia_response(request, &session_id, &[], None));
    };
    let session = match auth.session() {
        Some(session_id) => {
            let session = services
                .store
                .get_uia_session(session_id)
                .await?
                .ok_or_else(|| Error::invalid_param("Unknown or expired authentication session"))?;
            if session.operation != request.operation {
                return Err(Error::forbidden("Requested operation has changed during the UI authentication session."));
            }
            if session.user_id.as_deref() != user {
                return Err(Error::forbidden("The authentication session belongs to another user"));
            }
            session
        }
        None => {
            // A stage attempted without a session (some clients send the password at once)
            // starts one.
            let session_id = random_string(32);
            services.store.create_uia_session(&session_id, &request.operation, user).await?;
            services
                .store
                .get_uia_session(&session_id)
                .await?
                .ok_or_else(|| Error::internal("new UIA session vanished"))?
        }
    };
    let mut completed = session.completed.clone();
    // `None` is the fallback acknowledgement: the client only asks where the session stands.
    if let Some(stage) = auth.auth_type()
        && !completed.iter().any(|done| done == stage.as_str())
    {
        if !is_next_stage(&request.flows, &completed, &stage) {
            let error = Some((ErrorKind::Unrecognized, "This authentication stage is not expected now"));
            return Err(uia_response(request, &session.session_id, &completed, error));
        }
        match attempt_stage(services, request, &session.session_id, auth).await? {
            Stage::Done(now_completed) => completed = now_completed,
            Stage::Failed(kind, message) => {
                return Err(uia_response(request, &session.session_id, &completed, Some((kind, message))));
            }
        }
    }
    let satisfied =
        request.flows.iter().any(|flow| flow.iter().all(|stage| completed.iter().any(|done| done == stage.as_str())));
    if satisfied {
        Ok(UiaPassed { session_id: session.session_id })
    } else {
        Err(uia_response(request, &session.session_id, &completed, None))
    }
}

/// Whether `stage` is the next stage to complete in some flow. Flows are followed in order.
fn is_next_stage(flows: &[Vec<AuthType>], completed: &[String], stage: &AuthType) -> bool {
    flows.iter().any(|flow| {
        let next = flow.iter().find(|step| !completed.iter().any(|done| done == step.as_str()));
        next == Some(stage)
    })
}

/// Check one stage and record it in the session.
async fn attempt_stage(
    services: &Services,
    request: &UiaRequest<'_>,
    session_id: &str,
    auth: &AuthData,
) -> Result<Stage> {
    let store = &services.store;
    let gone = || Error::invalid_param("Unknown or expired authentication session");
    match auth {
        AuthData::Dummy(_) => {}
        AuthData::Password(password) => {
            // Only offered to signed-in users, for their own account.
            let Some(user_id) = request.user_id else {
                return Ok(Stage::Failed(ErrorKind::Forbidden, "Password authentication is not available here"));
            };
            let UserIdentifier::Matrix(identifier) = &password.identifier else {
                return Ok(Stage::Failed(ErrorKind::Forbidden, "Only m.id.user identifiers are supported"));
            };
            if local_user_from_identifier(&services.server_name, &identifier.user).as_deref() != Some(user_id) {
                return Ok(Stage::Failed(ErrorKind::Forbidden, "The identifier does not name this account"));
            }
            // Failed guesses are limited per account, like logins.
            services.ratelimit.check(RateLimitKind::Login, user_id.as_str())?;
            let hash = store.get_user(user_id.as_str()).await?.and_then(|user| user.password_hash);
            let valid = match hash {
                Some(hash) => services.auth.verify_password(password.password.clone(), hash).await?,
                None => false,
            };
            if !valid {
                return Ok(Stage::Failed(ErrorKind::Forbidden, "Invalid password"));
            }
        }
        AuthData::RegistrationToken(token) => {
            return Ok(match store.complete_registration_token_stage(session_id, &token.token).await? {
                TokenStage::Reserved => {
                    let session = store.get_uia_session(session_id).await?.ok_or_else(gone)?;
                    Stage::Done(session.completed)
                }
                TokenStage::Invalid => Stage::Failed(ErrorKind::Unauthorized, "Invalid registration token"),
                TokenStage::SessionGone => return Err(gone()),
            });
        }
        _ => return Ok(Stage::Failed(ErrorKind::Unrecognized, "Unsupported authentication type")),
    }
    let stage = auth.auth_type().ok_or_else(|| Error::internal("UIA stage without a type"))?;
    let completed = store.complete_uia_stage(session_id, stage.as_str()).await?.ok_or_else(gone)?;
    Ok(Stage::Done(completed))
}

/// The 401 UIA body for a session, with the error of a failed attempt if there was one.
fn uia_response(
    request: &UiaRequest<'_>,
    session_id: &str,
    completed: &[String],
    error: Option<(ErrorKind, &str)>,
) -> Error {
    let flows: Vec<_> = request
        .flows
        .iter()
        .map(|stages| json!({ "stages": stages.iter().map(AuthType::as_str).collect::<Vec<_>>() }))
        .collect();
    let mut body = json!({
        "flows": flows,
        "params": {},
        "session": session_id,
        "completed": completed,
    });
    if let Some((kind, message)) = error {
        body["errcode"] = json!(kind.errcode().to_string());
        body["error"] = json!(message);
    }
    Error::Uiaa(Box::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> &'static ServerName {
        <&ServerName>::try_from("example.org").unwrap()
    }

    #[test]
    fn new_user_ids_follow_the_grammar() {
        assert_eq!(new_user_id(server(), "alice.b=c-d/e+f_g").unwrap().as_str(), "@alice.b=c-d/e+f_g:example.org");
        for bad in ["", "Alice", "al ice", "al:ice", "é", "_bridge", "a@b"] {
            let error = new_user_id(server(), bad).unwrap_err();
            assert_eq!(error.kind(), Some(&ErrorKind::InvalidUsername), "{bad:?}");
        }
        let long = "a".repeat(255 - "@:example.org".len());
        assert!(new_user_id(server(), &long).is_ok());
        assert!(new_user_id(server(), &format!("{long}a")).is_err());
    }

    #[test]
    fn identifiers_name_local_users_case_insensitively() {
        let alice = Some(UserId::parse("@alice:example.org").unwrap());
        assert_eq!(local_user_from_identifier(server(), "alice"), alice);
        assert_eq!(local_user_from_identifier(server(), "ALICE"), alice);
        assert_eq!(local_user_from_identifier(server(), "@Alice:example.org"), alice);
        assert_eq!(local_user_from_identifier(server(), "@alice:elsewhere.org"), None);
        assert_eq!(local_user_from_identifier(server(), "@alice"), None);
        assert_eq!(local_user_from_identifier(server(), "a:b"), None);
    }

    #[test]
    fn flows_are_followed_in_order() {
        let flows = vec![vec![AuthType::RegistrationToken, AuthType::Dummy], vec![AuthType::Password]];
        let none: Vec<String> = vec![];
        assert!(is_next_stage(&flows, &none, &AuthType::RegistrationToken));
        assert!(is_next_stage(&flows, &none, &AuthType::Password));
        assert!(!is_next_stage(&flows, &none, &AuthType::Dummy), "dummy comes after the token");
        let token_done = vec!["m.login.registration_token".to_owned()];
        assert!(is_next_stage(&flows, &token_done, &AuthType::Dummy));
        assert!(!is_next_stage(&flows, &token_done, &AuthType::ReCaptcha));
    }

    #[test]
    fn uia_body_has_every_field() {
        let request = UiaRequest { operation: "op".into(), user_id: None, flows: vec![vec![AuthType::Dummy]] };
        let Error::Uiaa(body) = uia_response(&request, "s1", &["m.login.dummy".into()], None) else {
            panic!("not a UIA error");
        };
        assert_eq!(
            *body,
            json!({"flows": [{"stages": ["m.login.dummy"]}], "params": {}, "session": "s1", "completed": ["m.login.dummy"]})
        );
        let Error::Uiaa(body) = uia_response(&request, "s1", &[], Some((ErrorKind::Forbidden, "Invalid password")))
        else {
            panic!("not a UIA error");
        };
        assert_eq!(body["errcode"], "M_FORBIDDEN");
        assert_eq!(body["error"], "Invalid password");
        assert_eq!(body["completed"], json!([]));
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        // The default (production) cost, hashed once.
        let auth = Auth::default();
        let hash = auth.hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(auth.verify_password("correct horse".into(), hash.clone()).await.unwrap());
        assert!(!auth.verify_password("wrong".into(), hash).await.unwrap());
        assert!(!auth.verify_password("x".into(), "not a hash".into()).await.unwrap());
    }
}
