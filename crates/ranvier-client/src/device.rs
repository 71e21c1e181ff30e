//! Devices: list, get, rename, delete, bulk delete.

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
}
