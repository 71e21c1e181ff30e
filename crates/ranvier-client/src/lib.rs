//! The Client-Server API: axum routes over the services.
//!
//! # Layout
//! - [`AppState`]: what every handler receives; implements [`ranvier_http::AuthState`].
//! - [`router`]: the whole client API router. Each module adds its routes:
//!   [`discovery`] (versions, well-known, capabilities), [`account`] (register, login, logout,
//!   whoami, password, deactivation), [`device`], [`admin`] (shared-secret registration),
//!   [`account_data`], [`room`] (createRoom), [`membership`], [`room_event`] (send, state,
//!   redact, get event), [`message`] (`/messages`, `/context`), [`filter`], [`sync`],
//!   [`dehydrated`] (dehydrated devices, MSC3814), [`space`] (the space hierarchy),
//!   [`notices`] (server notices, admin only), [`relations`] (`/relations`, `/threads`),
//!   [`push`] (push rules, pushers, notifications),
//!   [`search`] (`/search`, mutual rooms),
//!   [`report`] (reporting content, and the admin listings of reports).
//!   [`auth`] resolves access tokens, hashes passwords and runs UIA; [`ratelimit`] holds the
//!   token buckets (`state.ratelimit.check(kind, key)`).
//!
//! Handlers are thin: parse with ruma (through the extractors), call one service function,
//! return a ruma response.

pub mod account;
pub mod account_data;
pub mod admin;
pub mod alias;
pub mod auth;
pub mod backup;
pub mod dehydrated;
pub mod device;
pub mod directory;
pub mod discovery;
pub mod federation;
pub mod filter;
pub mod keys;
pub mod media;
pub mod membership;
pub mod message;
pub mod notices;
pub mod presence;
pub mod profile;
pub mod push;
pub mod ratelimit;
pub mod receipt;
pub mod relations;
pub mod report;
pub mod room;
pub mod room_event;
pub mod search;
pub mod space;
pub mod sync;
pub mod tag;
pub mod to_device;
pub mod typing;
pub mod user_directory;

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
    pub e2ee: ranvier_e2ee::E2ee,
    pub social: ranvier_social::Social,
    pub media: ranvier_media::Media,
    /// Federation transport (keys, signing, the outbound client); inert unless enabled.
    pub federation: ranvier_federation::Federation,
    /// Server notices; `None` when they are disabled.
    pub notices: Option<Arc<ranvier_social::notices::ServerNotices>>,
    pub push: ranvier_push::Push,
    pub auth: auth::Auth,
    pub ratelimit: ratelimit::RateLimiter,
}

impl Services {
    /// Wire every service over one store. The one place that knows how services depend on
    /// each other; `ranvier serve` and tests both build their state here.
    pub fn new(
        config: Config,
        store: Store,
        signing_key: ruma::signatures::Ed25519KeyPair,
    ) -> ranvier_core::Result<Self> {
        let server_name: OwnedServerName = config
            .server_name
            .as_str()
            .try_into()
            .map_err(|_| ranvier_core::Error::internal("server_name is not a valid server name"))?;
        let rooms = Rooms::new(store.clone(), server_name.clone(), signing_key);
        let e2ee = ranvier_e2ee::E2ee::new(store.clone(), server_name.clone());
        let social = ranvier_social::Social::new(store.clone(), rooms.clone(), config.presence.clone());
        let push = ranvier_push::Push::new(store.clone(), rooms.clone(), server_name.clone(), config.push.clone());
        push.attach();
        let sync =
            SyncService::wired(store.clone(), rooms.clone(), e2ee.clone(), social.clone()).with_push(push.clone());
        let media = ranvier_media::Media::new(store.clone(), server_name.clone(), &config)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            media.start_background_tasks();
        }
        let federation = ranvier_federation::Federation::new(&config, server_name.clone(), rooms.clone())?;
        if federation.enabled() {
            media.set_federation(federation.clone());
        }
        let ratelimit = ratelimit::RateLimiter::new(&config.rate_limits);
        let notices =
            ranvier_social::notices::ServerNotices::new(social.clone(), &config.server_notices)?.map(Arc::new);
        Ok(Self {
            config,
            server_name,
            store,
            rooms,
            sync,
            e2ee,
            social,
            media,
            federation,
            notices,
            push,
            auth: Default::default(),
            ratelimit,
        })
    }
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
    let router = keys::routes(router);
    let router = to_device::routes(router);
    let router = backup::routes(router);
    let router = dehydrated::routes(router);
    let router = media::routes(router);
    let router = alias::routes(router);
    let router = directory::routes(router);
    let router = presence::routes(router);
    let router = profile::routes(router);
    let router = push::routes(router);
    let router = receipt::routes(router);
    let router = relations::routes(router);
    let router = tag::routes(router);
    let router = typing::routes(router);
    let router = user_directory::routes(router);
    let router = space::routes(router);
    let router = notices::routes(router);
    let router = search::routes(router);
    let router = report::routes(router);
    router
        .fallback(ranvier_http::fallback)
        .method_not_allowed_fallback(ranvier_http::route::method_not_allowed)
        .with_state(state)
}
