//! Profile fields of local users, and the user directory rows they feed.
//!
//! A profile is a set of fields (`displayname`, `avatar_url`, `m.tz`, namespaced extended
//! fields), each stored as JSON. Whenever `displayname` or `avatar_url` changes, the user's
//! `user_directory` row changes in the same transaction, so the directory never disagrees with
//! the profile.

use ranvier_core::{Result, error::Context};
use sqlx::AnyConnection;

use crate::Store;

/// The profile field names that the user directory mirrors.
const DIRECTORY_FIELDS: [&str; 2] = ["displayname", "avatar_url"];

impl Store {
    /// Every field of a user's profile as `(field, JSON value)`, in field order.
    pub async fn profile_fields(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        sqlx::query_as("SELECT field, value FROM profile_fields WHERE user_id = $1 ORDER BY field")
            .bind(user_id)
            .fetch_all(self.pool())
            .await
            .context("get profile")
    }

    /// One field of a user's profile, as JSON.
    pub async fn profile_field(&self, user_id: &str, field: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM profile_fields WHERE user_id = $1 AND field = $2")
            .bind(user_id)
            .bind(field)
            .fetch_optional(self.pool())
            .await
            .context("get profile field")
    }

    /// The display name and avatar URL of a user, when set as strings.
    pub async fn profile_name_and_avatar(&self, user_id: &str) -> Result<(Option<String>, Option<String>)> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT field, value FROM profile_fields WHERE user_id = $1 AND field IN ('displayname', 'avatar_url')",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
        .context("get display name and avatar")?;
        let mut out = (None, None);
        for (field, value) in rows {
            let value =
                serde_json::from_str::<serde_json::Value>(&value).ok().and_then(|v| v.as_str().map(str::to_owned));
            match field.as_str() {
                "displayname" => out.0 = value,
                _ => out.1 = value,
            }
        }
        Ok(out)
    }

    /// Set (`Some`) or delete (`None`) one profile field, keeping the user directory in step.
    pub async fn set_profile_field(&self, user_id: &str, field: &str, value: Option<&str>) -> Result<()> {
        let mut txn = self.begin_write().await?;
        match value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
                     ON CONFLICT (user_id, field) DO UPDATE SET value = $3",
                )
                .bind(user_id)
                .bind(field)
                .bind(value)
                .execute(&mut *txn)
                .await
                .context("set profile field")?;
            }
            None => {
                sqlx::query("DELETE FROM profile_fields WHERE user_id = $1 AND field = $2")
                    .bind(user_id)
                    .bind(field)
                    .execute(&mut *txn)
                    .await
                    .context("delete profile field")?;
            }
        }
        if DIRECTORY_FIELDS.contains(&field) {
            refresh_directory_entry(&mut txn, user_id).await?;
        }
        txn.commit().await
    }

    /// Remove every profile field of a user and their directory entry (account deactivation).
    pub async fn clear_profile(&self, user_id: &str) -> Result<()> {
        let mut txn = self.begin_write().await?;
        for sql in ["DELETE FROM profile_fields WHERE user_id = $1", "DELETE FROM user_directory WHERE user_id = $1"] {
            sqlx::query(sql).bind(user_id).execute(&mut *txn).await.context("clear profile")?;
        }
        txn.commit().await
    }
}

/// Give a new local account its first display name (inside the account-creation transaction).
pub async fn insert_initial_profile(conn: &mut AnyConnection, user_id: &str, display_name: &str) -> Result<()> {
    let value = serde_json::Value::String(display_name.to_owned()).to_string();
    sqlx::query(
        "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, 'displayname', $2)
         ON CONFLICT (user_id, field) DO NOTHING",
    )
    .bind(user_id)
    .bind(&value)
    .execute(&mut *conn)
    .await
    .context("insert initial profile")?;
    refresh_directory_entry(conn, user_id).await
}

/// Rewrite a user's directory row from their profile's `displayname` and `avatar_url`.
async fn refresh_directory_entry(conn: &mut AnyConnection, user_id: &str) -> Result<()> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT field, value FROM profile_fields WHERE user_id = $1 AND field IN ('displayname', 'avatar_url')",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await
    .context("read profile for the directory")?;
    let text = |field: &str| {
        rows.iter()
            .find(|(name, _)| name == field)
            .and_then(|(_, value)| serde_json::from_str::<serde_json::Value>(value).ok())
            .and_then(|value| value.as_str().map(str::to_owned))
    };
    let entry = DirectoryEntry {
        user_id: user_id.to_owned(),
        display_name: text("displayname"),
        avatar_url: text("avatar_url"),
    };
    write_directory_entry(conn, &entry).await
}

/// Insert or replace a user directory row.
async fn write_directory_entry(conn: &mut AnyConnection, entry: &DirectoryEntry) -> Result<()> {
    let search_name = entry.display_name.as_deref().unwrap_or_default().to_lowercase();
    sqlx::query(
        "INSERT INTO user_directory (user_id, display_name, avatar_url, search_name) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET display_name = $2, avatar_url = $3, search_name = $4",
    )
    .bind(&entry.user_id)
    .bind(&entry.display_name)
    .bind(&entry.avatar_url)
    .bind(search_name)
    .execute(&mut *conn)
    .await
    .context("update user directory")?;
    Ok(())
}

/// A user directory row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub user_id: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

impl Store {
    /// Directory entries of live accounts whose user id or display name contains `needle`
    /// (in lower case), in user id order after `after`, at most
    /// `limit`.
    pub async fn user_directory_candidates(
        &self,
        needle: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<DirectoryEntry>> {
        let pattern = format!("%{}%", escape_like(needle));
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT d.user_id, d.display_name, d.avatar_url FROM user_directory d
             LEFT JOIN users u ON u.user_id = d.user_id
             WHERE d.user_id > $1 AND COALESCE(u.deactivated, 0) = 0
               AND (LOWER(d.user_id) LIKE $2 ESCAPE '\\' OR d.search_name LIKE $2 ESCAPE '\\')
             ORDER BY d.user_id LIMIT $3",
        )
        .bind(after)
        .bind(pattern)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("search user directory")?;
        Ok(rows
            .into_iter()
            .map(|(user_id, display_name, avatar_url)| DirectoryEntry { user_id, display_name, avatar_url })
            .collect())
    }

    /// Set the directory entry of a user whose profile is not stored here (a remote user, as
    /// seen in their member events).
    pub async fn set_user_directory_entry(&self, entry: &DirectoryEntry) -> Result<()> {
        let mut txn = self.begin_write().await?;
        write_directory_entry(&mut txn, entry).await?;
        txn.commit().await
    }

    /// The rooms each of `user_ids` is joined to: `(user_id, room_id)`.
    pub async fn joined_rooms_of_users(&self, user_ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in user_ids.chunks(200).map(crate::in_list) {
            let sql = format!(
                "SELECT user_id, room_id FROM room_memberships WHERE membership = 'join' AND user_id IN ({})",
                super::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
            for user_id in chunk {
                query = query.bind(user_id);
            }
            out.extend(query.fetch_all(self.pool()).await.context("joined rooms of users")?);
        }
        Ok(out)
    }
}

/// Escape `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
