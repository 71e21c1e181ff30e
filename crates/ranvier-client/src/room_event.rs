//! Room events: send message and state events, read state, redact, get one event.

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
}
