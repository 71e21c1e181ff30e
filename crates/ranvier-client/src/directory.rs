//! The public room directory: `GET`/`PUT /directory/list/room/{roomId}` and
//! `GET`/`POST /publicRooms`.

use axum::extract::State;
use ranvier_core::{Error, Result};
use ranvier_http::{ApiResult, Authed, Ruma, route};
use ranvier_social::directory::{PublicRoomsPage, PublicRoomsQuery, RoomSummary};
use ruma::{
    OwnedMxcUri, RoomAliasId, RoomId, ServerName, UInt,
    api::client::{
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
        room::Visibility,
    },
    directory::{PublicRoomsChunk, PublicRoomsChunkInit, RoomTypeFilter},
    room::{JoinRuleKind, RoomType},
};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_room_visibility::v3::Request, _, _, _>(router, get_visibility);
    let router = route::<set_room_visibility::v3::Request, _, _, _>(router, set_visibility);
    let router = route::<get_public_rooms::v3::Request, _, _, _>(router, public_rooms);
    route::<get_public_rooms_filtered::v3::Request, _, _, _>(router, public_rooms_filtered)
}

async fn get_visibility(
    State(state): State<AppState>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> ApiResult<get_room_visibility::v3::Response> {
    let published = state.social.room_published(&req.body.room_id).await?;
    let visibility = if published { Visibility::Public } else { Visibility::Private };
    Ok(get_room_visibility::v3::Response::new(visibility).into())
}

async fn set_visibility(
    State(state): State<AppState>,
    req: Authed<set_room_visibility::v3::Request>,
) -> ApiResult<set_room_visibility::v3::Response> {
    let published = match &req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        other => return Err(Error::invalid_param(format!("Unknown visibility {}", other.as_str())).into()),
    };
    state.social.set_room_published(req.user_id(), &req.body.room_id, published).await?;
    Ok(set_room_visibility::v3::Response::new().into())
}

/// Only this server's directory is served; other servers' will come over federation.
fn check_server(state: &AppState, server: Option<&ServerName>) -> Result<()> {
    match server {
        Some(server) if server != state.server_name => {
            Err(Error::not_found(format!("The room directory of {server} is not reachable from here")))
        }
        _ => Ok(()),
    }
}

async fn public_rooms(
    State(state): State<AppState>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> ApiResult<get_public_rooms::v3::Response> {
    let body = req.body;
    check_server(&state, body.server.as_deref())?;
    let query = PublicRoomsQuery { limit: body.limit.map(u64::from), since: body.since, ..Default::default() };
    let page = state.social.public_rooms(&query).await?;
    let (chunk, next_batch, prev_batch, total) = page_parts(page);
    let mut response = get_public_rooms::v3::Response::new(chunk);
    response.next_batch = next_batch;
    response.prev_batch = prev_batch;
    response.total_room_count_estimate = Some(total);
    Ok(response.into())
}

async fn public_rooms_filtered(
    State(state): State<AppState>,
    req: Authed<get_public_rooms_filtered::v3::Request>,
) -> ApiResult<get_public_rooms_filtered::v3::Response> {
    let body = req.body;
    check_server(&state, body.server.as_deref())?;
    let room_types = (!body.filter.room_types.is_empty()).then(|| {
        body.filter
            .room_types
            .iter()
            .map(|filter| match filter {
                RoomTypeFilter::Default => None,
                other => other.as_str().map(str::to_owned),
            })
            .collect()
    });
    let query = PublicRoomsQuery {
        limit: body.limit.map(u64::from),
        since: body.since,
        generic_search_term: body.filter.generic_search_term,
        room_types,
    };
    let page = state.social.public_rooms(&query).await?;
    let (chunk, next_batch, prev_batch, total) = page_parts(page);
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = chunk;
    response.next_batch = next_batch;
    response.prev_batch = prev_batch;
    response.total_room_count_estimate = Some(total);
    Ok(response.into())
}

fn page_parts(page: PublicRoomsPage) -> (Vec<PublicRoomsChunk>, Option<String>, Option<String>, UInt) {
    let chunk = page.chunk.into_iter().filter_map(chunk_of).collect();
    let total = UInt::try_from(page.total_room_count_estimate).unwrap_or(UInt::MAX);
    (chunk, page.next_batch, page.prev_batch, total)
}

/// A room summary in ruma's shape (a room whose id does not parse is left out).
fn chunk_of(summary: RoomSummary) -> Option<PublicRoomsChunk> {
    let room_id = RoomId::parse(&summary.room_id).ok()?;
    let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::try_from(summary.num_joined_members).unwrap_or(UInt::MAX),
        room_id,
        world_readable: summary.world_readable,
        guest_can_join: summary.guest_can_join,
    }
    .into();
    chunk.name = summary.name;
    chunk.topic = summary.topic;
    chunk.avatar_url = summary.avatar_url.map(OwnedMxcUri::from);
    chunk.canonical_alias = summary.canonical_alias.and_then(|alias| RoomAliasId::parse(alias).ok());
    chunk.join_rule = JoinRuleKind::from(summary.join_rule.as_str());
    chunk.room_type = summary.room_type.map(|kind| RoomType::from(kind.as_str()));
    Some(chunk)
}
