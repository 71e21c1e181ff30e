//! The user directory: `POST /user_directory/search`.
//!
//! A user is found by another if they share a room, or if the found user is joined to a room
//! anyone may join or read (`public` join rule or `world_readable`), as the spec requires. The
//! search starts from the names: the directory rows whose user id or display name contain the
//! longest search word (a database `LIKE`), in batches; then each candidate's rooms decide
//! whether the searcher may see them, and every search word must start a word of their name or
//! user id. The cost follows the number of name matches, not the size of rooms.
//!
//! Local users' rows follow their profiles. Remote users will get rows from their member
//! events once federation delivers them (`Store::set_user_directory_entry`).

use std::collections::{HashMap, HashSet};

use ranvier_core::Result;
use ranvier_store::social::profiles::DirectoryEntry;
use ruma::UserId;

use crate::Social;

/// Candidates read per batch.
const BATCH: i64 = 200;
/// Batches read at most per search; a search this broad answers `limited`.
const MAX_BATCHES: usize = 5;
/// The most results one search returns, whatever the client asks.
pub const MAX_LIMIT: u64 = 100;

/// The lower-case words of a search term.
pub fn search_words(term: &str) -> Vec<String> {
    // NUL matches no name, and may not reach the database.
    term.split(|c: char| c.is_whitespace() || c == '\0')
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether every search word starts a word of the display name or of the user id (split on
/// anything that is not a letter or digit), or starts the user id itself.
pub fn matches_search(words: &[String], user_id: &str, display_name: Option<&str>) -> bool {
    let user_id = user_id.to_lowercase();
    let name = display_name.unwrap_or_default().to_lowercase();
    let parts: Vec<&str> = user_id
        .split(|c: char| !c.is_alphanumeric())
        .chain(name.split(|c: char| !c.is_alphanumeric()))
        .filter(|part| !part.is_empty())
        .collect();
    words.iter().all(|word| {
        user_id.starts_with(word.as_str())
            || user_id.trim_start_matches('@').starts_with(word.as_str())
            || name.starts_with(word.as_str())
            || parts.iter().any(|part| part.starts_with(word.as_str()))
            // A word with punctuation ("alice:example") is matched against the whole strings.
            || (!word.chars().all(char::is_alphanumeric) && (user_id.contains(word.as_str()) || name.contains(word.as_str())))
    })
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundUser {
    pub user_id: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

impl Social {
    /// Search the users `searcher` may see. Returns up to `limit` users, and whether there were
    /// more. Users sharing a room with the searcher come first, then by display name.
    pub async fn search_users(&self, searcher: &UserId, term: &str, limit: u64) -> Result<(Vec<FoundUser>, bool)> {
        let words = search_words(term);
        let limit = usize::try_from(limit.min(MAX_LIMIT)).unwrap_or(0);
        let Some(needle) = words.iter().max_by_key(|word| word.len()).cloned() else {
            return Ok((Vec::new(), false));
        };
        if limit == 0 {
            return Ok((Vec::new(), false));
        }
        let my_rooms: HashSet<String> = self
            .store()
            .rooms_for_user(searcher.as_str())
            .await?
            .into_iter()
            .filter(|(_, membership, _, _)| membership == "join")
            .map(|(room_id, ..)| room_id)
            .collect();
        let public = self.public_room_set().await?;

        let mut found: Vec<(bool, DirectoryEntry)> = Vec::new();
        let mut after = String::new();
        let mut exhausted = false;
        for _ in 0..MAX_BATCHES {
            let batch = self.store().user_directory_candidates(&needle, &after, BATCH).await?;
            exhausted = (batch.len() as i64) < BATCH;
            let Some(last) = batch.last() else {
                break;
            };
            after = last.user_id.clone();
            let candidates: Vec<DirectoryEntry> = batch
                .into_iter()
                .filter(|entry| entry.user_id != searcher.as_str())
                .filter(|entry| matches_search(&words, &entry.user_id, entry.display_name.as_deref()))
                .collect();
            let ids: Vec<String> = candidates.iter().map(|entry| entry.user_id.clone()).collect();
            let mut rooms_of: HashMap<String, Vec<String>> = HashMap::new();
            for (user_id, room_id) in self.store().joined_rooms_of_users(&ids).await? {
                rooms_of.entry(user_id).or_default().push(room_id);
            }
            for entry in candidates {
                let rooms = rooms_of.get(&entry.user_id).map(Vec::as_slice).unwrap_or(&[]);
                let shares = rooms.iter().any(|room| my_rooms.contains(room));
                if shares || rooms.iter().any(|room| public.contains(room)) {
                    found.push((shares, entry));
                }
            }
            if found.len() > limit || exhausted {
                break;
            }
        }
        let limited = found.len() > limit || !exhausted;
        let sort_key =
            |entry: &DirectoryEntry| entry.display_name.clone().unwrap_or_else(|| entry.user_id.clone()).to_lowercase();
        found.sort_by(|(a_shares, a), (b_shares, b)| {
            b_shares.cmp(a_shares).then_with(|| sort_key(a).cmp(&sort_key(b))).then_with(|| a.user_id.cmp(&b.user_id))
        });
        found.truncate(limit);
        let results = found
            .into_iter()
            .map(|(_, entry)| FoundUser {
                user_id: entry.user_id,
                display_name: entry.display_name,
                avatar_url: entry.avatar_url,
            })
            .collect();
        Ok((results, limited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(term: &str, user_id: &str, name: Option<&str>) -> bool {
        matches_search(&search_words(term), user_id, name)
    }

    #[test]
    fn words_start_words() {
        assert!(matches("ali", "@alice:example.org", None));
        assert!(matches("ALI", "@alice:example.org", None));
        assert!(matches("@ali", "@alice:example.org", None));
        assert!(matches("won", "@alice:example.org", Some("Alice Wonderland")));
        assert!(matches("alice won", "@alice:example.org", Some("Alice Wonderland")));
        assert!(matches("exam", "@alice:example.org", None), "the server name is a word of the id");
        assert!(matches("alice:example", "@alice:example.org", None));
        assert!(!matches("lice", "@alice:example.org", Some("Alice Wonderland")), "not the start of a word");
        assert!(!matches("alice bob", "@alice:example.org", Some("Alice")), "every word must match");
        assert!(matches("jos", "@u1:example.org", Some("José Ñandú")));
        assert!(matches("ñan", "@u1:example.org", Some("José Ñandú")));
        assert!(search_words("  ").is_empty());
    }
}
