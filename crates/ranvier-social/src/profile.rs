//! Profiles: `displayname`, `avatar_url` and extended fields (`m.tz`, namespaced custom keys).
//!
//! Only local profiles are stored here; a remote user's profile will be asked of their server
//! over federation. A change of `displayname` or `avatar_url` is carried into the user's member
//! event in every room they are joined to, through the room service's one membership path.

use ranvier_core::{Error, Result, error::ErrorKind};
use ranvier_rooms::MembershipAction;
use ruma::{MxcUri, UserId};
use serde_json::{Map, Value};

use crate::{Social, without_nul};

/// The largest a whole profile may be, as JSON (the spec's limit).
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;
/// The longest profile field name, in bytes (the spec's limit).
pub const MAX_KEY_BYTES: usize = 255;
/// The longest display name, in characters.
pub const MAX_DISPLAYNAME_CHARS: usize = 256;
/// The longest avatar URL, in bytes.
pub const MAX_AVATAR_URL_BYTES: usize = 1000;

/// The fields that member events carry.
const MEMBER_FIELDS: [&str; 2] = ["displayname", "avatar_url"];

/// Check a profile field name: `M_KEY_TOO_LARGE` past 255 bytes, `M_INVALID_PARAM` unless it is
/// `displayname`, `avatar_url`, `m.tz` or a namespaced identifier such as `org.example.pronouns`.
pub fn validate_field_name(name: &str) -> Result<()> {
    if name.len() > MAX_KEY_BYTES {
        return Err(Error::matrix(
            ErrorKind::KeyTooLarge,
            format!("Profile field names are at most {MAX_KEY_BYTES} bytes"),
        ));
    }
    let known = matches!(name, "displayname" | "avatar_url" | "m.tz");
    let segment_ok = |segment: &str| {
        let mut chars = segment.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let namespaced = name.split('.').count() >= 2 && name.split('.').all(segment_ok);
    if known || namespaced { Ok(()) } else { Err(Error::invalid_param(format!("Invalid profile field name `{name}`"))) }
}

/// Check the value of a field. Returns `None` when the value clears the field (an empty
/// display name or avatar URL, as clients send to remove them).
pub fn validate_field_value(name: &str, value: Value) -> Result<Option<Value>> {
    match name {
        "displayname" | "avatar_url" | "m.tz" => {
            let Value::String(text) = &value else {
                return Err(Error::bad_json(format!("`{name}` must be a string")));
            };
            if text.is_empty() && name != "m.tz" {
                return Ok(None);
            }
            without_nul(text, || Error::invalid_param(format!("`{name}` must not contain NUL")))?;
            if name == "displayname" && text.chars().count() > MAX_DISPLAYNAME_CHARS {
                return Err(Error::bad_json(format!("Display names are at most {MAX_DISPLAYNAME_CHARS} characters")));
            }
            if name == "avatar_url" {
                if text.len() > MAX_AVATAR_URL_BYTES {
                    return Err(Error::bad_json(format!("Avatar URLs are at most {MAX_AVATAR_URL_BYTES} bytes")));
                }
                if <&MxcUri>::from(text.as_str()).validate().is_err() {
                    return Err(Error::invalid_param("`avatar_url` must be an mxc:// URI"));
                }
            }
            Ok(Some(value))
        }
        _ => Ok(Some(value)),
    }
}

fn profile_not_found() -> Error {
    Error::not_found("Profile was not found")
}

impl Social {
    /// Fail with `404 M_NOT_FOUND` unless `user_id` is an account of this server.
    async fn ensure_local_account(&self, user_id: &UserId) -> Result<()> {
        // Remote profiles will come over federation; until then they are unknown here.
        without_nul(user_id.as_str(), profile_not_found)?;
        if !self.is_local(user_id) || self.store().get_user(user_id.as_str()).await?.is_none() {
            return Err(profile_not_found());
        }
        Ok(())
    }

    /// A user's whole profile (`GET /profile/{userId}`).
    pub async fn profile(&self, user_id: &UserId) -> Result<Map<String, Value>> {
        self.ensure_local_account(user_id).await?;
        let mut profile = Map::new();
        for (field, value) in self.store().profile_fields(user_id.as_str()).await? {
            if let Ok(value) = serde_json::from_str(&value) {
                profile.insert(field, value);
            }
        }
        Ok(profile)
    }

    /// One field of a user's profile; `404 M_NOT_FOUND` when the user or the field is unknown.
    pub async fn profile_field(&self, user_id: &UserId, field: &str) -> Result<Value> {
        self.ensure_local_account(user_id).await?;
        without_nul(field, profile_not_found)?;
        let value = self.store().profile_field(user_id.as_str(), field).await?;
        value.and_then(|value| serde_json::from_str(&value).ok()).ok_or_else(profile_not_found)
    }

    /// Set one field of `target`'s profile on behalf of `requester` (only themselves).
    pub async fn set_profile_field(
        &self,
        requester: &UserId,
        target: &UserId,
        field: &str,
        value: Value,
    ) -> Result<()> {
        validate_field_name(field)?;
        if requester != target {
            return Err(Error::forbidden("Cannot change the profile of another user"));
        }
        self.ensure_local_account(target).await?;
        let Some(value) = validate_field_value(field, value)? else {
            return self.delete_profile_field(requester, target, field).await;
        };
        let mut profile = self.profile(target).await?;
        let unchanged = profile.get(field) == Some(&value);
        profile.insert(field.to_owned(), value.clone());
        if Value::Object(profile).to_string().len() > MAX_PROFILE_BYTES {
            return Err(Error::matrix(
                ErrorKind::ProfileTooLarge,
                format!("A profile is at most {MAX_PROFILE_BYTES} bytes"),
            ));
        }
        if unchanged {
            return Ok(());
        }
        self.store().set_profile_field(target.as_str(), field, Some(&value.to_string())).await?;
        if MEMBER_FIELDS.contains(&field) {
            self.propagate_profile(target).await?;
        }
        Ok(())
    }

    /// Remove one field of `target`'s profile on behalf of `requester` (only themselves). Removing
    /// a field that is not set succeeds.
    pub async fn delete_profile_field(&self, requester: &UserId, target: &UserId, field: &str) -> Result<()> {
        validate_field_name(field)?;
        if requester != target {
            return Err(Error::forbidden("Cannot change the profile of another user"));
        }
        self.ensure_local_account(target).await?;
        if self.store().profile_field(target.as_str(), field).await?.is_none() {
            return Ok(());
        }
        self.store().set_profile_field(target.as_str(), field, None).await?;
        if MEMBER_FIELDS.contains(&field) {
            self.propagate_profile(target).await?;
        }
        Ok(())
    }

    /// Send a fresh join event carrying the new profile into every room `user_id` is joined
    /// to. A room that refuses (the user may no longer have the right) is logged and skipped:
    /// the profile itself has changed either way.
    async fn propagate_profile(&self, user_id: &UserId) -> Result<()> {
        for room_id in self.rooms().joined_rooms(user_id).await? {
            let result = self.rooms().update_membership(&room_id, user_id, user_id, MembershipAction::Join, None).await;
            if let Err(error) = result {
                tracing::warn!(user = %user_id, room = %room_id, %error, "could not update the member event after a profile change");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn field_names() {
        for ok in ["displayname", "avatar_url", "m.tz", "org.example.pronouns", "a.b", "io.x_y.z9"] {
            assert!(validate_field_name(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "custom", "Org.example", "org..example", "org.example.", ".org", "org.9x", "m.tz ", "org.ex-ample"]
        {
            assert_eq!(validate_field_name(bad).unwrap_err().kind(), Some(&ErrorKind::InvalidParam), "{bad}");
        }
        let long = format!("org.{}", "a".repeat(252));
        assert_eq!(validate_field_name(&long).unwrap_err().kind(), Some(&ErrorKind::KeyTooLarge));
        assert!(validate_field_name(&format!("org.{}", "a".repeat(251))).is_ok());
    }

    #[test]
    fn field_values() {
        assert_eq!(validate_field_value("displayname", json!("Alice")).unwrap(), Some(json!("Alice")));
        assert_eq!(validate_field_value("displayname", json!("")).unwrap(), None);
        assert_eq!(validate_field_value("avatar_url", json!("")).unwrap(), None);
        assert!(validate_field_value("avatar_url", json!("mxc://example.org/abc")).unwrap().is_some());
        let kind = |name: &str, value: Value| validate_field_value(name, value).unwrap_err().kind().cloned();
        assert_eq!(kind("avatar_url", json!("https://example.org/a.png")), Some(ErrorKind::InvalidParam));
        assert_eq!(kind("displayname", json!(5)), Some(ErrorKind::BadJson));
        assert_eq!(kind("displayname", json!("x".repeat(257))), Some(ErrorKind::BadJson));
        assert_eq!(kind("m.tz", json!(null)), Some(ErrorKind::BadJson));
        assert_eq!(validate_field_value("org.example.any", json!({"a": [1]})).unwrap(), Some(json!({"a": [1]})));
    }
}
