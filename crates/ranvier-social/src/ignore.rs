//! Ignoring users: the `m.ignored_user_list` account data (`{"ignored_users": {user: {}}}`).
//!
//! What an ignored user sends is left out of what the ignoring user reads (sync timelines,
//! `/messages`, `/context`), except state events, and their invites are not delivered. The
//! list is read once per read (one account data row); nothing is cached, so a change takes
//! effect on the next sync (push evaluation caches it, see `ranvier_push`). Reading the list
//! lives in `ranvier_rooms::ignore`, re-exported here. The content is checked when it is written, here.

use ranvier_core::{Error, Result};
use ruma::UserId;
use serde_json::Value;

pub use ranvier_rooms::ignore::{IGNORED_USER_LIST, hidden, ignored_users, parse_ignored_users};

/// Check content about to be stored as `owner`'s `m.ignored_user_list`: `ignored_users` must
/// be an object (`M_BAD_JSON`) whose keys are user ids (`M_INVALID_PARAM`), and a user cannot
/// ignore themselves (`M_INVALID_PARAM`).
pub fn check_ignored_user_list(owner: &UserId, content: &Value) -> Result<()> {
    let Some(ignored) = content.get("ignored_users") else {
        return Err(Error::bad_json("m.ignored_user_list needs an `ignored_users` object"));
    };
    let Value::Object(ignored) = ignored else {
        return Err(Error::bad_json("`ignored_users` must be an object"));
    };
    for user in ignored.keys() {
        if UserId::parse(user.as_str()).is_err() {
            return Err(Error::invalid_param(format!("`{user}` is not a valid user id")));
        }
        if user == owner.as_str() {
            return Err(Error::invalid_param("You cannot ignore yourself"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::json;

    use super::*;

    #[test]
    fn content_is_checked() {
        let alice = UserId::parse("@alice:x").unwrap();
        assert!(check_ignored_user_list(&alice, &json!({ "ignored_users": {} })).is_ok());
        assert!(check_ignored_user_list(&alice, &json!({ "ignored_users": { "@bob:y": {} } })).is_ok());
        use ranvier_core::error::ErrorKind;
        let bad_json = |content: Value| {
            matches!(check_ignored_user_list(&alice, &content), Err(Error::Matrix { kind: ErrorKind::BadJson, .. }))
        };
        let invalid = |content: Value| {
            matches!(
                check_ignored_user_list(&alice, &content),
                Err(Error::Matrix { kind: ErrorKind::InvalidParam, .. })
            )
        };
        assert!(bad_json(json!({})));
        assert!(bad_json(json!({ "ignored_users": ["@bob:y"] })));
        assert!(invalid(json!({ "ignored_users": { "bob": {} } })));
        assert!(invalid(json!({ "ignored_users": { "@alice:x": {} } })));
    }

    #[test]
    fn stored_lists_are_read_leniently() {
        assert!(parse_ignored_users(None).is_empty());
        assert!(parse_ignored_users(Some("[]")).is_empty());
        assert!(parse_ignored_users(Some(r#"{"ignored_users": []}"#)).is_empty());
        let users = parse_ignored_users(Some(r#"{"ignored_users": {"@b:x": {}, "@c:x": {}}}"#));
        assert_eq!(users, HashSet::from(["@b:x".to_owned(), "@c:x".to_owned()]));
        assert!(hidden(&users, "@b:x", false));
        assert!(!hidden(&users, "@b:x", true));
        assert!(!hidden(&users, "@d:x", false));
    }
}
