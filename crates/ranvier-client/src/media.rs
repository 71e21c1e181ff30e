//! Media: authenticated `/_matrix/client/v1/media/…` and legacy `/_matrix/media/v3/…` endpoints.

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
}
