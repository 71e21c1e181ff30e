//! Who must hear of whose device-list changes, between two sync tokens: for `/sync`'s
//! `device_lists` and for `/keys/changes`.
//!
//! A user is told about another user ("shares a room" means both are joined to it):
//! - `changed` — the other user's devices or cross-signing keys changed (a row in the
//!   device-list stream) and they share a room now; the user's own changes always; changes
//!   addressed to the user alone (signatures they made of someone's keys); and anyone who
//!   started sharing a room with them (they joined a room of the user's, or the user joined a
//!   room of theirs), since the user may have missed changes while they shared none.
//! - `left` — someone who shared a room with the user before the window (left one of the
//!   user's rooms, or was in a room the user left) and now shares none.
//!
//! Joins and leaves come from the member events in the window of the events stream, so the
//! cost follows what happened in the window; nothing is read when neither stream moved.

use std::collections::{BTreeMap, BTreeSet};

use ranvier_core::Result;
use ranvier_store::{StreamKind, StreamToken};
use ruma::{OwnedUserId, UserId};

use crate::E2ee;

/// The device-list part of a sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceListUpdate {
    pub changed: Vec<String>,
    pub left: Vec<String>,
}

/// `/keys/changes`: the same, as user ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyChanges {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

/// How a membership looked before and after the window.
struct MembershipSpan {
    joined_before: bool,
    joined_after: bool,
}

impl E2ee {
    /// The device-list changes `user_id` must hear of between `since` and `until`.
    pub async fn device_list_changes(
        &self,
        user_id: &str,
        since: &StreamToken,
        until: &StreamToken,
    ) -> Result<DeviceListUpdate> {
        self.device_list_changes_with(user_id, since, until, true).await
    }

    /// [`Self::device_list_changes`], where the caller may already know that no member event
    /// at all lies in the window of events (`member_events` false): the read of the window's
    /// membership changes is then skipped.
    pub async fn device_list_changes_with(
        &self,
        user_id: &str,
        since: &StreamToken,
        until: &StreamToken,
        member_events: bool,
    ) -> Result<DeviceListUpdate> {
        let store = self.store();
        let (lists_from, lists_to) = (since.get(StreamKind::DeviceLists), until.get(StreamKind::DeviceLists));
        let (events_from, events_to) = (since.get(StreamKind::Events), until.get(StreamKind::Events));
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let mut left_candidates: BTreeSet<String> = BTreeSet::new();
        let mut own_change = false;

        if lists_to > lists_from {
            let mut others = Vec::new();
            for change in store.device_list_changes_for(user_id, lists_from, lists_to).await? {
                if change.addressed || change.user_id == user_id {
                    own_change |= change.user_id == user_id;
                    changed.insert(change.user_id);
                } else {
                    others.push(change.user_id);
                }
            }
            if !others.is_empty() {
                changed.extend(store.users_sharing_a_room(user_id, &others).await?);
            }
        }

        if member_events && events_to > events_from {
            let member_changes = store.member_changes_for(user_id, events_from, events_to).await?;
            if !member_changes.is_empty() {
                // The net effect of the window on each (room, member).
                let mut spans: BTreeMap<(String, String), MembershipSpan> = BTreeMap::new();
                for change in member_changes {
                    let joined_after = change.membership == "join";
                    spans
                        .entry((change.room_id, change.user_id))
                        .and_modify(|span| span.joined_after = joined_after)
                        .or_insert(MembershipSpan {
                            joined_before: change.prev_membership.as_deref() == Some("join"),
                            joined_after,
                        });
                }
                let joined_rooms = store.joined_room_ids(user_id).await?;
                for ((room_id, member), span) in spans {
                    match (span.joined_before, span.joined_after) {
                        (false, true) if member == user_id && joined_rooms.contains(&room_id) => {
                            changed.extend(store.joined_member_ids(&room_id).await?);
                        }
                        (true, false) if member == user_id => {
                            left_candidates.extend(store.joined_member_ids(&room_id).await?);
                        }
                        (false, true) if joined_rooms.contains(&room_id) => {
                            changed.insert(member);
                        }
                        (true, false) if joined_rooms.contains(&room_id) => {
                            left_candidates.insert(member);
                        }
                        _ => {}
                    }
                }
            }
        }

        left_candidates.remove(user_id);
        let mut left = Vec::new();
        if !left_candidates.is_empty() {
            let candidates: Vec<String> = left_candidates.into_iter().collect();
            let still_sharing = store.users_sharing_a_room(user_id, &candidates).await?;
            left = candidates.into_iter().filter(|user| !still_sharing.contains(user)).collect();
        }
        // Someone who shares no room any more is reported as left, not changed.
        for user in &left {
            changed.remove(user);
        }
        // The user's own devices are news when they change, not when the user joins a room
        // (which lists every member, the user included).
        if !own_change {
            changed.remove(user_id);
        }
        Ok(DeviceListUpdate { changed: changed.into_iter().collect(), left })
    }

    /// `/keys/changes`: the device-list changes `user_id` must hear of between two sync
    /// tokens. A `to` ahead of the server is read as the current position.
    pub async fn key_changes(&self, user_id: &UserId, from: &StreamToken, to: &StreamToken) -> Result<KeyChanges> {
        let current = self.store().streams().current_token();
        let mut until = *to;
        for kind in StreamKind::ALL {
            until.set(kind, to.get(kind).min(current.get(kind)));
        }
        let update = self.device_list_changes(user_id.as_str(), from, &until).await?;
        let ids = |users: Vec<String>| users.into_iter().filter_map(|user| OwnedUserId::try_from(user).ok()).collect();
        Ok(KeyChanges { changed: ids(update.changed), left: ids(update.left) })
    }
}
