//! Device keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`, and the
//! cross-signing uploads `/keys/device_signing/upload` (behind UIA unless it is the first
//! master key or an identical retry) and `/keys/signatures/upload`.

use axum::extract::State;
use ranvier_e2ee::cross_signing::SigningKeysUpload;
use ranvier_http::{ApiResult, Authed, route};
use ranvier_sync::SyncService;
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};

use crate::{
    AppState,
    auth::{self, UiaRequest},
};

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<upload_keys::v3::Request, _, _, _>(router, upload);
    let router = route::<get_keys::v3::Request, _, _, _>(router, query);
    let router = route::<claim_keys::v3::Request, _, _, _>(router, claim);
    let router = route::<get_key_changes::v3::Request, _, _, _>(router, changes);
    let router = route::<upload_signing_keys::v3::Request, _, _, _>(router, upload_signing);
    route::<upload_signatures::v3::Request, _, _, _>(router, upload_signatures)
}

async fn upload(
    State(state): State<AppState>,
    req: Authed<upload_keys::v3::Request>,
) -> ApiResult<upload_keys::v3::Response> {
    let body = &req.body;
    let counts = state
        .e2ee
        .upload_keys(
            req.user_id(),
            req.device_id(),
            body.device_keys.as_ref(),
            &body.one_time_keys,
            &body.fallback_keys,
        )
        .await?;
    Ok(upload_keys::v3::Response::new(counts).into())
}

async fn query(State(state): State<AppState>, req: Authed<get_keys::v3::Request>) -> ApiResult<get_keys::v3::Response> {
    Ok(state.e2ee.query_keys(req.user_id(), &req.body.device_keys).await?.into())
}

async fn claim(
    State(state): State<AppState>,
    req: Authed<claim_keys::v3::Request>,
) -> ApiResult<claim_keys::v3::Response> {
    Ok(state.e2ee.claim_keys(&req.body.one_time_keys).await?.into())
}

async fn changes(
    State(state): State<AppState>,
    req: Authed<get_key_changes::v3::Request>,
) -> ApiResult<get_key_changes::v3::Response> {
    let from = SyncService::parse_token(&req.body.from)?;
    let to = SyncService::parse_token(&req.body.to)?;
    let update = state.e2ee.key_changes(req.user_id(), &from, &to).await?;
    Ok(get_key_changes::v3::Response::new(update.changed, update.left).into())
}

async fn upload_signing(
    State(state): State<AppState>,
    req: Authed<upload_signing_keys::v3::Request>,
) -> ApiResult<upload_signing_keys::v3::Response> {
    let body = &req.body;
    let upload = SigningKeysUpload {
        master_key: body.master_key.as_ref(),
        self_signing_key: body.self_signing_key.as_ref(),
        user_signing_key: body.user_signing_key.as_ref(),
    };
    let user_id = req.user_id();
    let passed = if state.e2ee.signing_keys_upload_needs_auth(user_id, &upload).await? {
        let request = UiaRequest::password(user_id, "POST /keys/device_signing/upload");
        Some(auth::user_interactive_auth(&state, &request, body.auth.as_ref()).await?)
    } else {
        None
    };
    state.e2ee.upload_signing_keys(user_id, &upload).await?;
    if let Some(passed) = passed {
        auth::finish_uia(&state, passed).await?;
    }
    Ok(upload_signing_keys::v3::Response::new().into())
}

async fn upload_signatures(
    State(state): State<AppState>,
    req: Authed<upload_signatures::v3::Request>,
) -> ApiResult<upload_signatures::v3::Response> {
    let mut response = upload_signatures::v3::Response::new();
    response.failures = state.e2ee.upload_signatures(req.user_id(), &req.body.signed_keys).await?;
    Ok(response.into())
}
