//! History visibility: which events a user may see (`m.room.history_visibility`).
//!
//! Every read path (`/event`, `/messages`, `/context`, `/sync`) filters through
//! [`filter_visible`], so the rules live in one place.

use ranvier_core::Result;
use ranvier_store::{Store, events::StoredEvent};

/// Keep only the events of `room_id` that `user_id` may see.
///
/// This first version is conservative: a user currently joined to the room sees its events,
/// anyone sees a `world_readable` room's events, and nobody else sees anything.
pub async fn filter_visible(
    store: &Store,
    user_id: &str,
    room_id: &str,
    events: Vec<StoredEvent>,
) -> Result<Vec<StoredEvent>> {
    let state = store.current_state_ids(room_id).await?;
    let joined = match state.get(&("m.room.member".to_owned(), user_id.to_owned())) {
        Some(member_event_id) => {
            let member = store.get_event(member_event_id).await?;
            member.is_some_and(|event| membership_of(&event) == Some("join"))
        }
        None => false,
    };
    if joined {
        return Ok(events);
    }
    let world_readable = match state.get(&("m.room.history_visibility".to_owned(), String::new())) {
        Some(id) => store.get_event(id).await?.is_some_and(|event| {
            content_field(&event, "history_visibility").as_deref() == Some("world_readable")
        }),
        None => false,
    };
    Ok(if world_readable { events } else { Vec::new() })
}

/// The `membership` of a member event.
pub fn membership_of(event: &StoredEvent) -> Option<&'static str> {
    match content_field(event, "membership")?.as_str() {
        "join" => Some("join"),
        "invite" => Some("invite"),
        "leave" => Some("leave"),
        "ban" => Some("ban"),
        "knock" => Some("knock"),
        _ => None,
    }
}

fn content_field(event: &StoredEvent, field: &str) -> Option<String> {
    let pdu: serde_json::Value = serde_json::from_str(&event.pdu).ok()?;
    pdu.get("content")?.get(field)?.as_str().map(str::to_owned)
}
