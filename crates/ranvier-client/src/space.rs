//! Spaces: `GET /rooms/{roomId}/hierarchy`. The body is built by
//! [`ranvier_social::hierarchy`] in the spec's shape (ruma's summary type leaves out a
//! `public` join rule, which clients expect to read).

use axum::{Json, extract::State};
use ranvier_http::{Authed, ErrorResponse, route};
use ranvier_social::hierarchy::HierarchyRequest;
use ruma::api::client::space::get_hierarchy;
use serde_json::{Value, json};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    route::<get_hierarchy::v1::Request, _, _, _>(router, hierarchy)
}

async fn hierarchy(
    State(state): State<AppState>,
    req: Authed<get_hierarchy::v1::Request>,
) -> Result<Json<Value>, ErrorResponse> {
    let body = &req.body;
    let request = HierarchyRequest {
        from: body.from.clone(),
        limit: body.limit.map(u64::from),
        max_depth: body.max_depth.map(u64::from),
        suggested_only: body.suggested_only,
    };
    let page = state.social.hierarchy(req.user_id(), &body.room_id, &request).await?;
    let mut response = json!({ "rooms": page.rooms });
    if let Some(next_batch) = page.next_batch {
        response["next_batch"] = Value::String(next_batch);
    }
    Ok(Json(response))
}
