//! Accounts and sessions: `/register`, `/login`, `/logout`, `/logout/all`, `/account/whoami`.

use axum::extract::State;
use ranvier_core::{Error, Result, error::ErrorKind, util::random_string};
use ranvier_http::{ApiResult, Authed, Ruma, route};
use ruma::{
    OwnedDeviceId, OwnedUserId, UserId,
    api::client::{
        account::{register, whoami},
        session::{get_login_types, login, logout, logout_all},
        uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo},
    },
};

use crate::{AppState, auth};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<register::v3::Request, _, _, _>(router, register);
    let router = route::<get_login_types::v3::Request, _, _, _>(router, login_types);
    let router = route::<login::v3::Request, _, _, _>(router, login);
    let router = route::<logout::v3::Request, _, _, _>(router, logout);
    let router = route::<logout_all::v3::Request, _, _, _>(router, logout_all);
    route::<whoami::v3::Request, _, _, _>(router, whoami)
}

/// The 401 UIA response listing `flows`, for a new session.
fn uia_required(flows: Vec<AuthFlow>, completed: Vec<AuthType>, session: String) -> Error {
    let mut info = UiaaInfo::new(flows);
    info.completed = completed;
    info.session = Some(session);
    match serde_json::to_value(&info) {
        Ok(body) => Error::Uiaa(Box::new(body)),
        Err(e) => Error::internal(format!("serialise UIA info: {e}")),
    }
}

/// Validate a requested localpart and make the full user id.
fn user_id_for(state: &AppState, localpart: &str) -> Result<OwnedUserId> {
    let valid = !localpart.is_empty()
        && localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
    if !valid {
        return Err(Error::matrix(
            ErrorKind::InvalidUsername,
            "User ID can only contain characters a-z, 0-9, or '=_-./+'",
        ));
    }
    let user_id = UserId::parse(format!("@{localpart}:{}", state.server_name))
        .map_err(|_| Error::matrix(ErrorKind::InvalidUsername, "Invalid user id"))?;
    if user_id.as_str().len() > 255 {
        return Err(Error::matrix(ErrorKind::InvalidUsername, "User ID is too long"));
    }
    Ok(user_id)
}

async fn register(
    State(state): State<AppState>,
    req: Ruma<register::v3::Request>,
) -> ApiResult<register::v3::Response> {
    let body = req.body;
    if !state.config.registration.enabled {
        return Err(Error::forbidden("Registration has been disabled").into());
    }
    let localpart = match &body.username {
        Some(name) => name.to_lowercase(),
        None => random_string(12).to_lowercase(),
    };
    let user_id = user_id_for(&state, &localpart)?;
    if state.store.get_user(user_id.as_str()).await?.is_some() {
        return Err(Error::matrix(ErrorKind::UserInUse, "User ID already taken.").into());
    }
    // UIA: one stage, m.login.dummy.
    match &body.auth {
        Some(AuthData::Dummy(_)) => {}
        Some(_) => {
            return Err(Error::matrix(ErrorKind::Unrecognized, "Unsupported authentication type").into());
        }
        None => {
            let flows = vec![AuthFlow::new(vec![AuthType::Dummy])];
            return Err(uia_required(flows, vec![], random_string(24)).into());
        }
    }
    let password_hash = match body.password {
        Some(password) => Some(auth::hash_password(password).await?),
        None => None,
    };
    if !state.store.create_user(user_id.as_str(), password_hash.as_deref(), false).await? {
        return Err(Error::matrix(ErrorKind::UserInUse, "User ID already taken.").into());
    }
    let mut response = register::v3::Response::new(user_id.clone());
    if !body.inhibit_login {
        let device_id = body.device_id.unwrap_or_else(|| OwnedDeviceId::from(random_string(10).to_uppercase()));
        let token = random_string(32);
        state
            .store
            .create_device_with_token(
                user_id.as_str(),
                device_id.as_str(),
                body.initial_device_display_name.as_deref(),
                &token,
            )
            .await?;
        response.access_token = Some(token);
        response.device_id = Some(device_id);
    }
    Ok(response.into())
}

async fn login_types(_req: Ruma<get_login_types::v3::Request>) -> ApiResult<get_login_types::v3::Response> {
    use get_login_types::v3::{LoginType, PasswordLoginType};
    Ok(get_login_types::v3::Response::new(vec![LoginType::Password(PasswordLoginType::new())]).into())
}

async fn login(State(state): State<AppState>, req: Ruma<login::v3::Request>) -> ApiResult<login::v3::Response> {
    use login::v3::LoginInfo;
    use ruma::api::client::uiaa::UserIdentifier;
    let body = req.body;
    let LoginInfo::Password(password) = body.login_info else {
        return Err(Error::matrix(ErrorKind::Unknown, "Unsupported login type").into());
    };
    let forbidden = || Error::forbidden("Invalid username or password");
    #[allow(deprecated)]
    let name = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (None, Some(user)) => user.clone(),
        _ => return Err(Error::matrix(ErrorKind::Unknown, "Unsupported identifier type").into()),
    };
    let user_id = if name.starts_with('@') {
        UserId::parse(name.to_lowercase()).map_err(|_| forbidden())?
    } else {
        user_id_for(&state, &name.to_lowercase()).map_err(|_| forbidden())?
    };
    let user = state.store.get_user(user_id.as_str()).await?.ok_or_else(forbidden)?;
    if user.deactivated {
        return Err(Error::matrix(ErrorKind::UserDeactivated, "This account has been deactivated").into());
    }
    let hash = user.password_hash.ok_or_else(forbidden)?;
    if !auth::verify_password(password.password, hash).await? {
        return Err(forbidden().into());
    }
    let device_id = body.device_id.unwrap_or_else(|| OwnedDeviceId::from(random_string(10).to_uppercase()));
    let token = random_string(32);
    state
        .store
        .create_device_with_token(
            user_id.as_str(),
            device_id.as_str(),
            body.initial_device_display_name.as_deref(),
            &token,
        )
        .await?;
    state.auth.forget(&user_id, Some(&device_id));
    Ok(login::v3::Response::new(user_id, token, device_id).into())
}

async fn logout(State(state): State<AppState>, req: Authed<logout::v3::Request>) -> ApiResult<logout::v3::Response> {
    state.store.delete_device(req.user_id().as_str(), req.device_id().as_str()).await?;
    state.auth.forget(req.user_id(), Some(req.device_id()));
    Ok(logout::v3::Response::new().into())
}

async fn logout_all(
    State(state): State<AppState>,
    req: Authed<logout_all::v3::Request>,
) -> ApiResult<logout_all::v3::Response> {
    for device in state.store.list_devices(req.user_id().as_str()).await? {
        state.store.delete_device(req.user_id().as_str(), &device.device_id).await?;
    }
    state.auth.forget(req.user_id(), None);
    Ok(logout_all::v3::Response::new().into())
}

async fn whoami(_state: State<AppState>, req: Authed<whoami::v3::Request>) -> ApiResult<whoami::v3::Response> {
    let mut response = whoami::v3::Response::new(req.identity.user_id.clone(), false);
    response.device_id = Some(req.identity.device_id.clone());
    Ok(response.into())
}
