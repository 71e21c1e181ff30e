//! Membership: join, knock, invite, leave, forget, kick, ban, unban, and the member lists
//! (`/members`, `/joined_members`, `/joined_rooms`).
//!
//! Every membership change goes through one service call, [`ranvier_rooms::Rooms::update_membership`].

use std::collections::BTreeMap;

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ranvier_core::{Error, error::ErrorKind};
use ranvier_http::{ApiResult, Authed, RumaResponse, matrix_error, route};
use ranvier_rooms::{MembershipAction, format::client_event, read::MembersQuery};
use ruma::{
    OwnedUserId, RoomId, UserId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events, invite_user, join_room_by_id, join_room_by_id_or_alias,
            joined_members, joined_rooms, kick_user, leave_room, unban_user,
        },
    },
    serde::Raw,
};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<join_room_by_id::v3::Request, _, _, _>(router, join_by_id);
    let router = route::<join_room_by_id_or_alias::v3::Request, _, _, _>(router, join_by_id_or_alias);
    let router = route::<knock_room::v3::Request, _, _, _>(router, knock);
    let router = route::<invite_user::v3::Request, _, _, _>(router, invite);
    let router = route::<leave_room::v3::Request, _, _, _>(router, leave);
    let router = route::<forget_room::v3::Request, _, _, _>(router, forget);
    let router = route::<kick_user::v3::Request, _, _, _>(router, kick);
    let router = route::<ban_user::v3::Request, _, _, _>(router, ban);
    let router = route::<unban_user::v3::Request, _, _, _>(router, unban);
    let router = route::<get_member_events::v3::Request, _, _, _>(router, members);
    let router = route::<joined_members::v3::Request, _, _, _>(router, joined_members);
    route::<joined_rooms::v3::Request, _, _, _>(router, joined_rooms)
}

/// The one call behind every membership endpoint.
async fn change(
    state: &AppState,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    action: MembershipAction,
    reason: Option<String>,
) -> ranvier_core::Result<()> {
    state.rooms.update_membership(room_id, sender, target, action, reason).await.map(|_| ())
}

async fn join_by_id(
    State(state): State<AppState>,
    req: Authed<join_room_by_id::v3::Request>,
) -> ApiResult<join_room_by_id::v3::Response> {
    let room_id = req.body.room_id.clone();
    change(&state, &room_id, req.user_id(), req.user_id(), MembershipAction::Join, req.body.reason.clone()).await?;
    Ok(join_room_by_id::v3::Response::new(room_id).into())
}

async fn join_by_id_or_alias(
    State(state): State<AppState>,
    req: Authed<join_room_by_id_or_alias::v3::Request>,
) -> ApiResult<join_room_by_id_or_alias::v3::Response> {
    let room_id = state.social.resolve_room(&req.body.room_id_or_alias).await?;
    change(&state, &room_id, req.user_id(), req.user_id(), MembershipAction::Join, req.body.reason.clone()).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id).into())
}

async fn knock(
    State(state): State<AppState>,
    req: Authed<knock_room::v3::Request>,
) -> ApiResult<knock_room::v3::Response> {
    let room_id = state.social.resolve_room(&req.body.room_id_or_alias).await?;
    change(&state, &room_id, req.user_id(), req.user_id(), MembershipAction::Knock, req.body.reason.clone()).await?;
    Ok(knock_room::v3::Response::new(room_id).into())
}

async fn invite(
    State(state): State<AppState>,
    req: Authed<invite_user::v3::Request>,
) -> ApiResult<invite_user::v3::Response> {
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &req.body.recipient else {
        return Err(Error::matrix(ErrorKind::Unrecognized, "Third-party invites are not supported").into());
    };
    let reason = recipient.reason.clone();
    change(&state, &req.body.room_id, req.user_id(), &recipient.user_id, MembershipAction::Invite, reason).await?;
    Ok(invite_user::v3::Response::new().into())
}

async fn leave(
    State(state): State<AppState>,
    req: Authed<leave_room::v3::Request>,
) -> ApiResult<leave_room::v3::Response> {
    change(&state, &req.body.room_id, req.user_id(), req.user_id(), MembershipAction::Leave, req.body.reason.clone())
        .await?;
    Ok(leave_room::v3::Response::new().into())
}

/// `/forget` answers `400 M_UNKNOWN` while the user is still in the room, as the spec shows;
/// the shared error mapping gives `M_UNKNOWN` a 500, so this handler sets the status itself.
async fn forget(
    State(state): State<AppState>,
    req: Authed<forget_room::v3::Request>,
) -> Result<RumaResponse<forget_room::v3::Response>, Response> {
    match state.rooms.forget_room(&req.body.room_id, req.user_id()).await {
        Ok(()) => Ok(forget_room::v3::Response::new().into()),
        Err(Error::Matrix { kind: ErrorKind::Unknown, message }) => {
            Err(matrix_error(StatusCode::BAD_REQUEST, ErrorKind::Unknown, message))
        }
        Err(e) => Err(ranvier_http::ErrorResponse(e).into_response()),
    }
}

async fn kick(
    State(state): State<AppState>,
    req: Authed<kick_user::v3::Request>,
) -> ApiResult<kick_user::v3::Response> {
    let body = &req.body;
    change(&state, &body.room_id, req.user_id(), &body.user_id, MembershipAction::Kick, body.reason.clone()).await?;
    Ok(kick_user::v3::Response::new().into())
}

async fn ban(State(state): State<AppState>, req: Authed<ban_user::v3::Request>) -> ApiResult<ban_user::v3::Response> {
    let body = &req.body;
    change(&state, &body.room_id, req.user_id(), &body.user_id, MembershipAction::Ban, body.reason.clone()).await?;
    Ok(ban_user::v3::Response::new().into())
}

async fn unban(
    State(state): State<AppState>,
    req: Authed<unban_user::v3::Request>,
) -> ApiResult<unban_user::v3::Response> {
    let body = &req.body;
    change(&state, &body.room_id, req.user_id(), &body.user_id, MembershipAction::Unban, body.reason.clone()).await?;
    Ok(unban_user::v3::Response::new().into())
}

async fn members(
    State(state): State<AppState>,
    req: Authed<get_member_events::v3::Request>,
) -> ApiResult<get_member_events::v3::Response> {
    let body = &req.body;
    let query = MembersQuery {
        at: body.at.clone(),
        membership: body.membership.as_ref().map(|m| m.as_str().to_owned()),
        not_membership: body.not_membership.as_ref().map(|m| m.as_str().to_owned()),
    };
    let events = state.rooms.members(&body.room_id, req.user_id(), &query).await?;
    let chunk = events
        .iter()
        .map(|event| raw_json(&client_event(event, Default::default())).map(Raw::from_json))
        .collect::<ranvier_core::Result<Vec<_>>>()?;
    Ok(get_member_events::v3::Response::new(chunk).into())
}

async fn joined_members(
    State(state): State<AppState>,
    req: Authed<joined_members::v3::Request>,
) -> ApiResult<joined_members::v3::Response> {
    let members = state.rooms.joined_members(&req.body.room_id, req.user_id()).await?;
    let mut joined = BTreeMap::new();
    for member in members {
        let Ok(user_id) = OwnedUserId::try_from(member.user_id) else {
            continue;
        };
        let mut entry = joined_members::v3::RoomMember::new();
        entry.display_name = member.display_name;
        entry.avatar_url = member.avatar_url.map(Into::into);
        joined.insert(user_id, entry);
    }
    Ok(joined_members::v3::Response::new(joined).into())
}

async fn joined_rooms(
    State(state): State<AppState>,
    req: Authed<joined_rooms::v3::Request>,
) -> ApiResult<joined_rooms::v3::Response> {
    let rooms = state.rooms.joined_rooms(req.user_id()).await?;
    Ok(joined_rooms::v3::Response::new(rooms).into())
}

/// A JSON value as a boxed raw value, for ruma's `Raw` fields.
pub(crate) fn raw_json(value: &serde_json::Value) -> ranvier_core::Result<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(value).map_err(|e| Error::internal(format!("serialise event: {e}")))
}
