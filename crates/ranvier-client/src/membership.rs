//! Membership: join, invite, leave, forget, kick, ban, unban, and the member lists.

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
}
