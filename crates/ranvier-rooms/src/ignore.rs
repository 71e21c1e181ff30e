//! Reading a user's ignore list (the `m.ignored_user_list` account data,
//! `{"ignored_users": {user: {}}}`), for every read path that leaves out what ignored users
//! send: timelines, `/event`, `/relations`, `/threads`, bundled aggregations, search, the
//! notifications list. Writing and checking the list is `ranvier_social::ignore`'s.

use std::collections::HashSet;

use ranvier_core::Result;
use ranvier_store::Store;
use serde_json::Value;

/// The account data type holding the list.
pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

/// The users in stored `m.ignored_user_list` content (empty if absent or malformed).
pub fn parse_ignored_users(content: Option<&str>) -> HashSet<String> {
    content
        .and_then(|content| serde_json::from_str::<Value>(content).ok())
        .and_then(|content| {
            content.get("ignored_users").and_then(Value::as_object).map(|users| users.keys().cloned().collect())
        })
        .unwrap_or_default()
}

/// The users `user_id` ignores (one account data row).
pub async fn ignored_users(store: &Store, user_id: &str) -> Result<HashSet<String>> {
    let content = store.get_account_data(user_id, "", IGNORED_USER_LIST).await?;
    Ok(parse_ignored_users(content.as_deref()))
}

/// Whether an event from `sender` is hidden from a user who ignores `ignored`: every event but
/// state events.
pub fn hidden(ignored: &HashSet<String>, sender: &str, is_state: bool) -> bool {
    !is_state && !ignored.is_empty() && ignored.contains(sender)
}
