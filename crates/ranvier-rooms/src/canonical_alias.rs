//! `m.room.canonical_alias` checks: every alias an event newly names must be a valid alias that
//! points at the room, as Synapse requires (`400 M_BAD_ALIAS` otherwise).
//!
//! Only this server's aliases can be resolved here; naming a remote alias fails the same way
//! until directory queries over federation exist.

use ranvier_core::{Error, Result, error::ErrorKind};
use ruma::{RoomAliasId, RoomId};
use serde_json::Value;

use crate::Rooms;

/// The aliases a canonical alias content names: `alias` first, then `alt_aliases`.
/// `400 M_INVALID_PARAM` when the content is malformed.
pub fn named_aliases(content: &Value) -> Result<(Option<String>, Vec<String>)> {
    let invalid = |what: &str| Error::invalid_param(format!("Invalid {what} in m.room.canonical_alias"));
    let alias = match content.get("alias") {
        None | Some(Value::Null) => None,
        Some(Value::String(alias)) => {
            RoomAliasId::parse(alias).map_err(|_| invalid("alias"))?;
            Some(alias.clone())
        }
        Some(_) => return Err(invalid("alias")),
    };
    let alt_aliases = match content.get("alt_aliases") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(alias) if RoomAliasId::parse(alias).is_ok() => Ok(alias.clone()),
                _ => Err(invalid("alt_aliases")),
            })
            .collect::<Result<Vec<_>>>()?,
        Some(_) => return Err(invalid("alt_aliases")),
    };
    Ok((alias, alt_aliases))
}

impl Rooms {
    /// Check a new `m.room.canonical_alias` content for `room_id` against the `previous` one:
    /// `alias` and every alternative alias not already listed must point at the room.
    pub(crate) async fn check_canonical_alias(
        &self,
        room_id: &RoomId,
        previous: Option<&Value>,
        content: &Value,
    ) -> Result<()> {
        let (alias, alt_aliases) = named_aliases(content)?;
        let known_alt: Vec<String> = previous
            .and_then(|previous| previous.get("alt_aliases"))
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let to_check = alias.into_iter().chain(alt_aliases.into_iter().filter(|alias| !known_alt.contains(alias)));
        for alias in to_check {
            let target = self.store().alias(&alias).await?.map(|(room, _)| room);
            if target.as_deref() != Some(room_id.as_str()) {
                return Err(Error::matrix(
                    ErrorKind::BadAlias,
                    format!("Room alias {alias} does not point to the room"),
                ));
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
    fn named_aliases_parse_and_reject() {
        let content = json!({ "alias": "#a:x.org", "alt_aliases": ["#b:x.org", "#c:y.org"] });
        assert_eq!(
            named_aliases(&content).unwrap(),
            (Some("#a:x.org".to_owned()), vec!["#b:x.org".to_owned(), "#c:y.org".to_owned()])
        );
        assert_eq!(named_aliases(&json!({})).unwrap(), (None, vec![]));
        assert_eq!(named_aliases(&json!({ "alias": null })).unwrap(), (None, vec![]));
        for bad in [
            json!({ "alias": "nope" }),
            json!({ "alias": 3 }),
            json!({ "alt_aliases": "#a:x.org" }),
            json!({ "alt_aliases": ["#a:x.org", "b"] }),
        ] {
            assert_eq!(named_aliases(&bad).unwrap_err().kind(), Some(&ErrorKind::InvalidParam), "{bad}");
        }
    }
}
