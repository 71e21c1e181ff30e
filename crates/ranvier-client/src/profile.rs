//! Profiles: displayname, avatar_url and extended profile fields.

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
}
