//! Discovery: `/versions`, `/.well-known/matrix/client`, `/capabilities`.

use std::collections::BTreeMap;

use axum::{Json, extract::State, routing::get};
use ranvier_http::{ApiResult, Authed, Ruma, route};
use ruma::api::client::discovery::{get_capabilities, get_supported_versions};

use crate::AppState;

/// The spec versions we implement.
const VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12",
];

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_supported_versions::Request, _, _, _>(router, versions);
    let router = route::<get_capabilities::v3::Request, _, _, _>(router, capabilities);
    router.route("/.well-known/matrix/client", get(well_known))
}

async fn versions(_req: Ruma<get_supported_versions::Request>) -> ApiResult<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    // Clients look for these before they dehydrate a device, or ask for mutual rooms (at the
    // unstable path, or at the v1.19 path while the versions above stop short of it), and
    // before they use threads: `/threads` (MSC3440, stable), threaded read receipts (MSC3771)
    // and per-thread notification counts in `/sync` (MSC3773), as Synapse advertises them.
    response.unstable_features = BTreeMap::from([
        ("org.matrix.msc3440.stable".to_owned(), true),
        ("org.matrix.msc3771".to_owned(), true),
        ("org.matrix.msc3773".to_owned(), true),
        ("org.matrix.msc3814".to_owned(), true),
        ("uk.half-shot.msc2666.query_mutual_rooms".to_owned(), true),
        ("uk.half-shot.msc2666.query_mutual_rooms.stable".to_owned(), true),
    ]);
    Ok(response.into())
}

async fn capabilities(
    State(state): State<AppState>,
    _req: Authed<get_capabilities::v3::Request>,
) -> ApiResult<get_capabilities::v3::Response> {
    use ruma::api::client::discovery::get_capabilities::v3::{
        Capabilities, RoomVersionStability, RoomVersionsCapability,
    };
    let mut available = BTreeMap::new();
    for version in ranvier_rooms::supported_room_versions() {
        available.insert(version, RoomVersionStability::Stable);
    }
    let default = state.config.default_room_version.parse().unwrap_or(ruma::RoomVersionId::V12);
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(default, available);
    Ok(get_capabilities::v3::Response::new(capabilities).into())
}

async fn well_known(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "m.homeserver": { "base_url": state.config.public_baseurl() } }))
}
