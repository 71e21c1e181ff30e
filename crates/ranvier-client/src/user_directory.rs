//! The user directory search: `POST /user_directory/search`.

use axum::extract::State;
use ranvier_http::{ApiResult, Authed, route};
use ruma::{OwnedMxcUri, UserId, api::client::user_directory::search_users};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    route::<search_users::v3::Request, _, _, _>(router, search)
}

async fn search(
    State(state): State<AppState>,
    req: Authed<search_users::v3::Request>,
) -> ApiResult<search_users::v3::Response> {
    let limit = u64::from(req.body.limit);
    let (found, limited) = state.social.search_users(req.user_id(), &req.body.search_term, limit).await?;
    let results = found
        .into_iter()
        .filter_map(|user| {
            let mut result = search_users::v3::User::new(UserId::parse(&user.user_id).ok()?);
            result.display_name = user.display_name;
            result.avatar_url = user.avatar_url.map(OwnedMxcUri::from);
            Some(result)
        })
        .collect();
    Ok(search_users::v3::Response::new(results, limited).into())
}
