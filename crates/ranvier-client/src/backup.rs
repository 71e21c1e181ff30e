//! Server-side key backup: `/room_keys/version` and `/room_keys/keys`.

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
}
