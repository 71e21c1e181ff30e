//! Synapse-compatible shared-secret admin registration (`/_synapse/admin/v1/register`).

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
}
