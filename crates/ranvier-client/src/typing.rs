//! Typing notifications: `PUT /rooms/{roomId}/typing/{userId}`.

use axum::extract::State;
use ranvier_core::Error;
use ranvier_http::{ApiResult, Authed, route};
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    route::<create_typing_event::v3::Request, _, _, _>(router, typing)
}

async fn typing(
    State(state): State<AppState>,
    req: Authed<create_typing_event::v3::Request>,
) -> ApiResult<create_typing_event::v3::Response> {
    if req.body.user_id != req.identity.user_id {
        return Err(Error::forbidden("Cannot set another user's typing state").into());
    }
    let timeout = match req.body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    state.social.set_typing(&req.body.room_id, req.user_id(), timeout).await?;
    Ok(create_typing_event::v3::Response::new().into())
}
