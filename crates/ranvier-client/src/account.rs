//! Accounts and sessions: `/register` (with `/register/available` and the registration-token
//! validity check), `/login`, `/logout`, `/logout/all`, `/account/whoami`,
//! `/account/password` and `/account/deactivate`.

use axum::extract::State;
use ranvier_core::{Error, Result, error::ErrorKind, util::random_string};
use ranvier_http::{ApiResult, Authed, Identity, Ruma, route};
use ranvier_rooms::MembershipAction;
use ranvier_store::accounts::{CreateAccount, NewAccount, NewDevice};
use ruma::{
    OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId,
    api::client::{
        account::{
            ThirdPartyIdRemovalStatus, change_password, check_registration_token_validity, deactivate,
            get_username_availability,
            register::{self, RegistrationKind},
            whoami,
        },
        session::{get_login_types, login, logout, logout_all},
        uiaa::{AuthType, UserIdentifier},
    },
};

use crate::{
    AppState, Services,
    auth::{self, MAX_PASSWORD_BYTES, UiaRequest},
    ratelimit::{ClientAddr, RateLimitKind},
};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<register::v3::Request, _, _, _>(router, register);
    let router = route::<get_username_availability::v3::Request, _, _, _>(router, username_available);
    let router = route::<check_registration_token_validity::v1::Request, _, _, _>(router, token_validity);
    let router = route::<get_login_types::v3::Request, _, _, _>(router, login_types);
    let router = route::<login::v3::Request, _, _, _>(router, login);
    let router = route::<logout::v3::Request, _, _, _>(router, logout);
    let router = route::<logout_all::v3::Request, _, _, _>(router, logout_all);
    let router = route::<change_password::v3::Request, _, _, _>(router, change_password);
    let router = route::<deactivate::v3::Request, _, _, _>(router, deactivate);
    route::<whoami::v3::Request, _, _, _>(router, whoami)
}

/// The operation name registration sessions are bound to.
const REGISTER_OPERATION: &str = "POST /register";

/// A fresh device id: ten upper-case letters and digits.
pub fn new_device_id() -> OwnedDeviceId {
    OwnedDeviceId::from(random_string(10).to_uppercase())
}

/// A fresh access token.
pub fn new_access_token() -> String {
    random_string(40)
}

/// `403 M_FORBIDDEN`: registration is closed.
fn registration_disabled() -> Error {
    Error::forbidden("Registration has been disabled")
}

/// Check a new password against the configured policy.
pub fn check_new_password(services: &Services, password: &str) -> Result<()> {
    if password.chars().count() < services.config.registration.min_password_length {
        return Err(Error::matrix(ErrorKind::WeakPassword, "Password is too short"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid_param(format!("Password is longer than {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// The id a new account would get for `username`, if it is valid and free.
pub async fn available_user_id(services: &Services, username: &str) -> Result<OwnedUserId> {
    let user_id = auth::new_user_id(&services.server_name, &username.to_lowercase())?;
    if services.store.get_user(user_id.as_str()).await?.is_some() {
        return Err(Error::matrix(ErrorKind::UserInUse, "User ID already taken."));
    }
    Ok(user_id)
}

/// The 401 `M_MISSING_TOKEN` of endpoints whose token is optional in ruma but required here.
fn require_identity(identity: Option<Identity>) -> Result<Identity> {
    identity.ok_or_else(|| Error::matrix(ErrorKind::MissingToken, "Missing access token"))
}

async fn register(
    State(state): State<AppState>,
    client: ClientAddr,
    req: Ruma<register::v3::Request>,
) -> ApiResult<register::v3::Response> {
    state.ratelimit.check(RateLimitKind::Registration, &client.key())?;
    let body = req.body;
    if matches!(body.kind, RegistrationKind::Guest) {
        return Err(Error::matrix(ErrorKind::GuestAccessForbidden, "Guest access is disabled").into());
    }
    if !state.config.registration.enabled {
        return Err(registration_disabled().into());
    }
    // Check what the client sent before asking it to authenticate, so that a bad username or
    // password is reported before the user spends a registration token on it.
    if let Some(password) = &body.password {
        check_new_password(&state, password)?;
    }
    let requested = match &body.username {
        Some(username) => Some(available_user_id(&state, username).await?),
        None => None,
    };
    let stage = if state.config.registration.require_token { AuthType::RegistrationToken } else { AuthType::Dummy };
    let uia = UiaRequest { operation: REGISTER_OPERATION.to_owned(), user_id: None, flows: vec![vec![stage]] };
    let passed = auth::user_interactive_auth(&state, &uia, body.auth.as_ref()).await?;

    let password = body.password.ok_or_else(|| Error::missing_param("Missing password"))?;
    let user_id = match requested {
        Some(user_id) => user_id,
        None => generated_user_id(&state).await?,
    };
    let first_device = NewLogin { device_id: body.device_id, display_name: body.initial_device_display_name };
    let account = Registration {
        user_id,
        password,
        admin: false,
        uia: Some(passed),
        login: (!body.inhibit_login).then_some(first_device),
    };
    let registered = create_account(&state, account).await?;
    let mut response = register::v3::Response::new(registered.user_id);
    if let Some((token, device_id)) = registered.login {
        response.access_token = Some(token);
        response.device_id = Some(device_id);
    }
    Ok(response.into())
}

/// A device to log in on, as a client asks for it.
pub struct NewLogin {
    /// The device id to use; a new one when `None`.
    pub device_id: Option<OwnedDeviceId>,
    pub display_name: Option<String>,
}

/// A new account, ready to be written.
pub struct Registration {
    /// A valid user id of this server (see [`available_user_id`]).
    pub user_id: OwnedUserId,
    pub password: String,
    pub admin: bool,
    /// The UIA that authorised the registration; its session closes with it.
    pub uia: Option<auth::UiaPassed>,
    /// Log the new account in on a first device, unless `None` (`inhibit_login`).
    pub login: Option<NewLogin>,
}

/// A created account, with the access token and device id of its first login.
pub struct Registered {
    pub user_id: OwnedUserId,
    pub login: Option<(String, OwnedDeviceId)>,
}

/// Create an account (and its first device), closing the UIA session that allowed it.
pub async fn create_account(services: &Services, registration: Registration) -> Result<Registered> {
    let password_hash = services.auth.hash_password(registration.password).await?;
    let login = registration
        .login
        .map(|login| (login.device_id.unwrap_or_else(new_device_id), login.display_name, new_access_token()));
    let account = NewAccount {
        user_id: registration.user_id.as_str(),
        password_hash: Some(&password_hash),
        admin: registration.admin,
        uia_session: registration.uia.as_ref().map(|passed| passed.session_id.as_str()),
        device: login.as_ref().map(|(device_id, display_name, token)| NewDevice {
            device_id: device_id.as_str(),
            display_name: display_name.as_deref(),
            access_token: token,
        }),
    };
    match services.store.create_account(account).await? {
        CreateAccount::Created => {}
        CreateAccount::UserExists => return Err(Error::matrix(ErrorKind::UserInUse, "User ID already taken.")),
        CreateAccount::SessionGone => {
            return Err(Error::forbidden("The authentication session has ended; start the registration again"));
        }
    }
    tracing::info!(user = %registration.user_id, admin = registration.admin, "registered a new account");
    Ok(Registered { user_id: registration.user_id, login: login.map(|(device_id, _, token)| (token, device_id)) })
}

/// A random free user id, for registrations that name none.
async fn generated_user_id(services: &Services) -> Result<OwnedUserId> {
    for _ in 0..10 {
        let localpart = random_string(12).to_lowercase();
        if let Ok(user_id) = available_user_id(services, &localpart).await {
            return Ok(user_id);
        }
    }
    Err(Error::internal("could not generate a free user id"))
}

async fn username_available(
    State(state): State<AppState>,
    req: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<get_username_availability::v3::Response> {
    if !state.config.registration.enabled {
        return Err(registration_disabled().into());
    }
    available_user_id(&state, &req.body.username).await?;
    Ok(get_username_availability::v3::Response::new(true).into())
}

async fn token_validity(
    State(state): State<AppState>,
    client: ClientAddr,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<check_registration_token_validity::v1::Response> {
    state.ratelimit.check(RateLimitKind::Registration, &client.key())?;
    let registration = &state.config.registration;
    if !registration.enabled || !registration.require_token {
        return Err(Error::forbidden("Registration tokens are not enabled on this homeserver").into());
    }
    state.auth.expire_uia_sessions(&state.store).await?;
    let valid = state.store.registration_token_is_valid(&req.body.token).await?;
    Ok(check_registration_token_validity::v1::Response::new(valid).into())
}

async fn login_types(_req: Ruma<get_login_types::v3::Request>) -> ApiResult<get_login_types::v3::Response> {
    use get_login_types::v3::{LoginType, PasswordLoginType};
    Ok(get_login_types::v3::Response::new(vec![LoginType::Password(PasswordLoginType::new())]).into())
}

async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    req: Ruma<login::v3::Request>,
) -> ApiResult<login::v3::Response> {
    use login::v3::LoginInfo;
    state.ratelimit.check(RateLimitKind::Login, &client.key())?;
    let body = req.body;
    let LoginInfo::Password(password) = body.login_info else {
        return Err(Error::invalid_param("Unsupported login type").into());
    };
    let forbidden = || Error::forbidden("Invalid username or password");
    #[allow(deprecated)]
    let name = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (None, Some(user)) => user.clone(),
        // No third-party identifiers are bound to accounts here, so none can log in.
        (Some(_), _) => return Err(forbidden().into()),
        (None, None) => return Err(Error::missing_param("Missing identifier").into()),
    };
    let user_id = auth::local_user_from_identifier(&state.server_name, &name).ok_or_else(forbidden)?;
    // Guesses against one account are limited wherever they come from.
    state.ratelimit.check(RateLimitKind::Login, user_id.as_str())?;
    let user = state.store.get_user(user_id.as_str()).await?.ok_or_else(forbidden)?;
    if user.deactivated {
        return Err(Error::matrix(ErrorKind::UserDeactivated, "This account has been deactivated").into());
    }
    let hash = user.password_hash.ok_or_else(forbidden)?;
    if password.password.len() > MAX_PASSWORD_BYTES || !state.auth.verify_password(password.password, hash).await? {
        return Err(forbidden().into());
    }
    let device_id = body.device_id.unwrap_or_else(new_device_id);
    let token = new_access_token();
    state
        .store
        .create_device_with_token(
            user_id.as_str(),
            device_id.as_str(),
            body.initial_device_display_name.as_deref(),
            &token,
        )
        .await?;
    // Logging in with an existing device id revoked that device's old tokens.
    state.auth.forget(&user_id, Some(&device_id));
    Ok(login::v3::Response::new(user_id, token, device_id).into())
}

async fn logout(State(state): State<AppState>, req: Authed<logout::v3::Request>) -> ApiResult<logout::v3::Response> {
    state.store.delete_device(req.user_id().as_str(), req.device_id().as_str()).await?;
    crate::device::devices_removed(&state, req.user_id(), &[req.device_id().to_string()]).await?;
    Ok(logout::v3::Response::new().into())
}

async fn logout_all(
    State(state): State<AppState>,
    req: Authed<logout_all::v3::Request>,
) -> ApiResult<logout_all::v3::Response> {
    let user_id = req.user_id();
    let devices = state.store.list_devices(user_id.as_str()).await?;
    let device_ids: Vec<&str> = devices.iter().map(|device| device.device_id.as_str()).collect();
    state.store.delete_devices(user_id.as_str(), &device_ids).await?;
    state.auth.forget(user_id, None);
    let device_ids: Vec<String> = devices.into_iter().map(|device| device.device_id).collect();
    crate::device::devices_removed(&state, user_id, &device_ids).await?;
    Ok(logout_all::v3::Response::new().into())
}

async fn whoami(_state: State<AppState>, req: Authed<whoami::v3::Request>) -> ApiResult<whoami::v3::Response> {
    let mut response = whoami::v3::Response::new(req.identity.user_id.clone(), false);
    response.device_id = Some(req.identity.device_id.clone());
    Ok(response.into())
}

async fn change_password(
    State(state): State<AppState>,
    req: Ruma<change_password::v3::Request>,
) -> ApiResult<change_password::v3::Response> {
    let identity = require_identity(req.identity)?;
    let body = req.body;
    let user_id = &identity.user_id;
    check_new_password(&state, &body.new_password)?;
    let uia = UiaRequest::password(user_id, "POST /account/password");
    let passed = auth::user_interactive_auth(&state, &uia, body.auth.as_ref()).await?;
    let password_hash = state.auth.hash_password(body.new_password).await?;
    let keep_device = body.logout_devices.then_some(identity.device_id.as_str());
    let logged_out = state.store.change_password(user_id.as_str(), Some(&password_hash), keep_device).await?;
    crate::device::devices_removed(&state, user_id, &logged_out).await?;
    auth::finish_uia(&state, passed).await?;
    Ok(change_password::v3::Response::new().into())
}

async fn deactivate(
    State(state): State<AppState>,
    req: Ruma<deactivate::v3::Request>,
) -> ApiResult<deactivate::v3::Response> {
    let identity = require_identity(req.identity)?;
    let user_id = &identity.user_id;
    let uia = UiaRequest::password(user_id, "POST /account/deactivate");
    let passed = auth::user_interactive_auth(&state, &uia, req.body.auth.as_ref()).await?;
    let rooms = deactivate_account(&state, user_id).await?;
    leave_rooms_after_deactivation(&state, user_id, rooms).await;
    // Deactivation already removed the user's sessions; this is for symmetry.
    auth::finish_uia(&state, passed).await?;
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport).into())
}

/// Deactivate an account: it can no longer log in, its devices, tokens, UIA sessions and
/// account data are gone, and its id stays taken. Returns the rooms the user is still joined
/// to, invited to or knocking on, which the caller must leave on the user's behalf.
pub async fn deactivate_account(services: &Services, user_id: &UserId) -> Result<Vec<OwnedRoomId>> {
    services.store.deactivate_user(user_id.as_str()).await?;
    services.auth.forget(user_id, None);
    services.e2ee.user_deactivated(user_id).await?;
    services.push.user_deactivated(user_id).await?;
    tracing::info!(user = %user_id, "deactivated account");
    let memberships = services.store.rooms_for_user(user_id.as_str()).await?;
    Ok(memberships
        .into_iter()
        .filter(|(_, membership, _, _)| matches!(membership.as_str(), "join" | "invite" | "knock"))
        .filter_map(|(room_id, _, _, _)| OwnedRoomId::try_from(room_id).ok())
        .collect())
}

/// Leave the rooms of a deactivated account (rejecting invites, rescinding knocks), so that
/// it no longer counts as a member anywhere. A room that refuses is logged and skipped: the
/// account is deactivated either way.
async fn leave_rooms_after_deactivation(services: &Services, user_id: &UserId, rooms: Vec<OwnedRoomId>) {
    for room_id in rooms {
        let left = services.rooms.update_membership(&room_id, user_id, user_id, MembershipAction::Leave, None).await;
        if let Err(error) = left {
            tracing::warn!(user = %user_id, room = %room_id, %error, "deactivated account could not leave a room");
        }
    }
}
