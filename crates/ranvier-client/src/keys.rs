//! Device keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`, cross-signing uploads.

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
}
