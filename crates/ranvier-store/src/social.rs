//! Storage of the social layer: profiles, receipts, presence, room aliases, the room and user
//! directories (the tables of `0003_social.sql`).
//!
//! # Layout
//! - [`profiles`]: profile fields of local users and the user directory rows they feed.
//! - [`receipts`]: read receipts with their receipts-stream positions.
//! - [`presence`]: the last persisted presence of each user.
//! - [`aliases`]: local room aliases.
//! - [`directory`]: published rooms and what the directories show of a room.

pub mod aliases;
pub mod directory;
pub mod presence;
pub mod profiles;
pub mod receipts;

/// `IN (...)` placeholders `$first, $first+1, ...` for `count` values.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}
