//! `GET /sync`.
//!
//! The body is built by [`ranvier_sync::SyncResponse`] (every section present, as clients
//! expect) rather than by ruma's response type.

use axum::{Json, extract::State};
use ranvier_http::{Authed, ErrorResponse, route};
use ranvier_sync::{SyncRequest, SyncResponse, SyncService, effective_timeout};
use ruma::api::client::{filter::FilterDefinition, sync::sync_events::v3};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    route::<v3::Request, _, _, _>(router, sync)
}

async fn sync(State(state): State<AppState>, req: Authed<v3::Request>) -> Result<Json<SyncResponse>, ErrorResponse> {
    let user_id = req.user_id().as_str().to_owned();
    let body = req.body;
    let filter = match body.filter {
        None => FilterDefinition::default(),
        Some(v3::Filter::FilterDefinition(definition)) => definition,
        Some(v3::Filter::FilterId(id)) => state.sync.stored_or_inline_filter(&user_id, &id).await?,
        Some(_) => FilterDefinition::default(),
    };
    let since = body.since.as_deref().map(SyncService::parse_token).transpose()?;
    // `set_presence` is accepted; presence itself is not tracked yet.
    let request = SyncRequest {
        user_id,
        device_id: req.identity.device_id.as_str().to_owned(),
        filter,
        since,
        full_state: body.full_state,
        timeout: effective_timeout(body.timeout, state.config.limits.max_sync_timeout_ms),
    };
    Ok(Json(state.sync.sync(request).await?))
}
