//! The Client-Server API: axum routes over the services.
//!
//! # Layout
//! - [`AppState`]: what every handler receives; implements [`ranvier_http::AuthState`].
//! - [`router`]: the whole client API router. Each module adds its routes:
//!   [`discovery`] (versions, well-known, capabilities), [`account`] (register, login, logout,
//!   whoami, password, deactivation), [`device`], [`admin`] (shared-secret registration),
//!   [`account_data`], [`room`] (createRoom), [`membership`], [`room_event`] (send, state,
//!   redact, get event), [`message`] (`/messages`, `/context`), [`filter`], [`sync`].
//!   [`auth`] resolves access tokens, hashes passwords and runs UIA; [`ratelimit`] holds the
//!   token buckets (`state.ratelimit.check(kind, key)`).
//!
//! Handlers are thin: parse with ruma (through the extractors), call one service function,
//! return a ruma response.

pub mod account;
pub mod account_data;
pub mod admin;
pub mod auth;
pub mod device;
pub mod discovery;
pub mod filter;
pub mod membership;
pub mod message;
pub mod ratelimit;
pub mod room;
pub mod room_event;
pub mod sync;

use std::sync::Arc;

use axum::Router;
use ranvier_core::Config;
use ranvier_rooms::Rooms;
use ranvier_store::Store;
use ranvier_sync::SyncService;
use ruma::OwnedServerName;

/// The services behind the client API.
pub struct Services {
    pub config: Config,
    pub server_name: OwnedServerName,
    pub store: Store,
    pub rooms: Rooms,
    pub sync: SyncService,
    pub auth: auth::Auth,
    pub ratelimit: ratelimit::RateLimiter,
}

/// The axum state: a shared handle on [`Services`].
#[derive(Clone)]
pub struct AppState(pub Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

impl ranvier_http::AuthState for AppState {
    async fn authenticate(&self, token: &str) -> ranvier_core::Result<ranvier_http::Identity> {
        self.auth.authenticate(&self.store, token).await
    }

    fn max_body_bytes(&self) -> usize {
        self.config.limits.max_request_bytes
    }
}

/// The client API router over `state`.
pub fn router(state: AppState) -> Router {
    let router = Router::new();
    let router = discovery::routes(router);
    let router = account::routes(router);
    let router = account_data::routes(router);
    let router = admin::routes(router);
    let router = device::routes(router);
    let router = filter::routes(router);
    let router = membership::routes(router);
    let router = message::routes(router);
    let router = room::routes(router);
    let router = room_event::routes(router);
    let router = sync::routes(router);
    router
        .fallback(ranvier_http::fallback)
        .method_not_allowed_fallback(ranvier_http::route::method_not_allowed)
        .with_state(state)
}
