//! Running the push rules on each accepted timeline event, for every local joined member of
//! the room except the sender and those who ignore the sender, and for a local user the event
//! invites.
//!
//! This runs on the persist path under the room's write lock, so it reads only what is in
//! memory: the room's members and power levels from the write path's own cache
//! ([`RoomState`]), and the users' rulesets from the rule cache. The event is flattened
//! once and every user's rules run over it. The only database reads are a ruleset or an
//! ignore list missing from the cache and, for an event that relates to another (a reaction, an edit), that
//! event, to learn its thread.

use ranvier_core::Result;
use ranvier_rooms::{
    hooks::{EventHook, HookFuture, NewTimelineEvent},
    room_state::RoomState,
};
use ranvier_store::push::NewPushAction;
use ruma::{
    OwnedUserId, UInt, UserId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx},
    serde::Raw,
    state_res::events::RoomCreateEvent,
};
use serde::Deserialize;
use serde_json::Value;

use crate::Push;

/// The thread id of events in the main timeline.
pub const MAIN: &str = "main";

/// The fields of a member event's content that evaluation needs.
#[derive(Deserialize)]
struct MemberContent {
    membership: Option<String>,
    displayname: Option<String>,
}

/// The [`EventHook`] that runs the push rules.
pub struct Evaluator {
    push: Push,
}

impl Evaluator {
    pub fn new(push: Push) -> Self {
        Self { push }
    }
}

impl EventHook for Evaluator {
    fn push_actions<'a>(&'a self, event: NewTimelineEvent<'a>) -> HookFuture<'a, Vec<NewPushAction>> {
        Box::pin(async move {
            match self.push.evaluate(event).await {
                Ok(actions) => actions,
                Err(error) => {
                    tracing::warn!(event_id = %event.pdu.event_id, %error, "push rules could not be evaluated");
                    Vec::new()
                }
            }
        })
    }

    fn committed(&self, _room_id: &str, stream_ordering: i64, actions: &[NewPushAction]) {
        let users = actions.iter().filter(|action| action.notify).map(|action| action.user_id.as_str());
        self.push.wake_pushers(users, stream_ordering);
    }
}

impl Push {
    /// The push outcome of `event` for each local user it concerns (only those for whom it
    /// notifies or highlights).
    pub async fn evaluate(&self, event: NewTimelineEvent<'_>) -> Result<Vec<NewPushAction>> {
        let NewTimelineEvent { room, pdu, object, .. } = event;
        let Some(room_id) = pdu.room_id.clone() else { return Ok(Vec::new()) };
        let server_suffix = format!(":{}", self.server_name());
        let sender = pdu.sender.as_str();

        // Cheap test first: is any local user other than the sender a member at all?
        let any_candidate = room.auth.keys().any(|(event_type, state_key)| {
            event_type == "m.room.member" && state_key.ends_with(server_suffix.as_str()) && state_key != sender
        });
        let invitee = invited_local_user(pdu, &server_suffix);
        if !any_candidate && invitee.is_none() {
            return Ok(Vec::new());
        }

        let mut member_count: u64 = 0;
        let mut users: Vec<(OwnedUserId, String)> = Vec::new();
        for ((event_type, state_key), member) in &room.auth {
            if event_type != "m.room.member" {
                continue;
            }
            let Ok(content) = serde_json::from_str::<MemberContent>(member.content.get()) else { continue };
            if content.membership.as_deref() != Some("join") {
                continue;
            }
            member_count += 1;
            if state_key.ends_with(&server_suffix)
                && state_key != sender
                && let Ok(user_id) = UserId::parse(state_key.as_str())
            {
                users.push((user_id, content.displayname.unwrap_or_default()));
            }
        }
        if let Some(invitee) = invitee
            && !users.iter().any(|(user_id, _)| *user_id == invitee.0)
        {
            users.push(invitee);
        }
        if users.is_empty() {
            return Ok(Vec::new());
        }

        let raw = serde_json::value::to_raw_value(object)
            .map_err(|e| ranvier_core::Error::internal(format!("serialise event for push rules: {e}")))?;
        let flattened = FlattenedJson::from_raw(&Raw::<Value>::from_json(raw));
        let power_levels = power_levels_ctx(room);
        let member_count = UInt::new(member_count).unwrap_or_default();
        let thread_id = self.thread_of(&pdu.content_value()).await?;

        let mut out = Vec::new();
        for (user_id, display_name) in users {
            if self.ignored_by(&user_id).await?.contains(sender) {
                continue;
            }
            let rules = self.user_rules(&user_id).await?;
            let mut context = PushConditionRoomCtx::new(room_id.clone(), member_count, user_id.clone(), display_name);
            if let Some(power_levels) = &power_levels {
                context = context.with_power_levels(power_levels.clone());
            }
            let actions = rules.actions(&user_id, &flattened, &context).await;
            let notify = actions.iter().any(Action::should_notify);
            let highlight = actions.iter().any(Action::is_highlight);
            if !notify && !highlight {
                continue;
            }
            out.push(NewPushAction {
                user_id: user_id.to_string(),
                thread_id: thread_id.clone(),
                notify,
                highlight,
                actions: serde_json::to_string(actions).unwrap_or_else(|_| "[]".to_owned()),
            });
        }
        Ok(out)
    }

    /// The thread an event with `content` belongs to: the root of an `m.thread` relation, the
    /// thread of the event it relates to otherwise (one hop), or the main timeline.
    async fn thread_of(&self, content: &Value) -> Result<String> {
        let relation = &content["m.relates_to"];
        let Some(parent) = relation["event_id"].as_str() else { return Ok(MAIN.to_owned()) };
        if relation["rel_type"] == "m.thread" {
            return Ok(parent.to_owned());
        }
        if relation["rel_type"].is_null() || parent.contains('\0') {
            return Ok(MAIN.to_owned());
        }
        let Some(parent) = self.store().get_event(parent).await? else { return Ok(MAIN.to_owned()) };
        let parent: Value = serde_json::from_str(&parent.pdu).unwrap_or_default();
        let relation = &parent["content"]["m.relates_to"];
        match (relation["rel_type"].as_str(), relation["event_id"].as_str()) {
            (Some("m.thread"), Some(root)) => Ok(root.to_owned()),
            _ => Ok(MAIN.to_owned()),
        }
    }
}

/// The local user an `m.room.member` invite event invites, with their display name.
fn invited_local_user(pdu: &ranvier_rooms::pdu::Pdu, server_suffix: &str) -> Option<(OwnedUserId, String)> {
    if pdu.event_type.to_string() != "m.room.member" {
        return None;
    }
    let state_key = pdu.state_key.as_deref().filter(|key| key.ends_with(server_suffix))?;
    let content = serde_json::from_str::<MemberContent>(pdu.content.get()).ok()?;
    if content.membership.as_deref() != Some("invite") || state_key == pdu.sender.as_str() {
        return None;
    }
    Some((UserId::parse(state_key).ok()?, content.displayname.unwrap_or_default()))
}

/// The power levels the `sender_notification_permission` condition checks.
fn power_levels_ctx(room: &RoomState) -> Option<PushConditionPowerLevelsCtx> {
    let rules = &room.rules.authorization;
    let creators = room
        .create_event()
        .and_then(|create| RoomCreateEvent::new(create.clone()).creators(rules).ok())
        .unwrap_or_default();
    let source = match room.auth_event("m.room.power_levels", "") {
        Some(event) => match serde_json::from_str::<RoomPowerLevelsEventContent>(event.content.get()) {
            Ok(content) => RoomPowerLevelsSource::Original(content),
            Err(_) => return None,
        },
        None => RoomPowerLevelsSource::None,
    };
    Some(RoomPowerLevels::new(source, rules, creators).into())
}
