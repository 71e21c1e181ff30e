//! Reading history: `/messages`, `/context`, `/timestamp_to_event`.

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
}
