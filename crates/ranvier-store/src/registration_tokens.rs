//! Registration tokens (`m.login.registration_token`).
//!
//! A token allows `uses_allowed` registrations (unlimited when absent) until `expiry_ts`
//! (forever when absent). A UIA session that passes the token stage holds one *pending* use
//! until the registration completes (the use becomes *completed*) or the session ends without
//! registering (the use is released). A token is valid while it has not expired and
//! `pending + completed < uses_allowed`, so that a token for one person cannot be used by two
//! people registering at the same time.

use ranvier_core::{Result, error::Context, util::now_ms};
use sqlx::AnyConnection;

use crate::Store;

/// One registration token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationTokenRow {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub pending: i64,
    pub completed: i64,
    pub expiry_ts: Option<i64>,
}

impl RegistrationTokenRow {
    /// Whether the token may start a registration at `now_ms`.
    pub fn is_valid(&self, now_ms: i64) -> bool {
        let not_expired = self.expiry_ts.is_none_or(|expiry| now_ms < expiry);
        let uses_left = self.uses_allowed.is_none_or(|allowed| self.pending + self.completed < allowed);
        not_expired && uses_left
    }
}

/// Whether `token` fits the spec's grammar: 1 to 64 characters of `[A-Za-z0-9._~-]`.
pub fn is_valid_token_string(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

type TokenTuple = (String, Option<i64>, i64, i64, Option<i64>);

fn token_row((token, uses_allowed, pending, completed, expiry_ts): TokenTuple) -> RegistrationTokenRow {
    RegistrationTokenRow { token, uses_allowed, pending, completed, expiry_ts }
}

impl Store {
    /// Add a token; returns `false` if it already exists.
    pub async fn create_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expiry_ts: Option<i64>,
    ) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES ($1, $2, $3)
             ON CONFLICT (token) DO NOTHING",
        )
        .bind(token)
        .bind(uses_allowed)
        .bind(expiry_ts)
        .execute(&mut *txn)
        .await
        .context("create registration token")?;
        txn.commit().await?;
        Ok(inserted.rows_affected() > 0)
    }

    /// Every token, in name order.
    pub async fn list_registration_tokens(&self) -> Result<Vec<RegistrationTokenRow>> {
        let rows: Vec<TokenTuple> = sqlx::query_as(
            "SELECT token, uses_allowed, pending, completed, expiry_ts FROM registration_tokens ORDER BY token",
        )
        .fetch_all(self.pool())
        .await
        .context("list registration tokens")?;
        Ok(rows.into_iter().map(token_row).collect())
    }

    /// One token.
    pub async fn get_registration_token(&self, token: &str) -> Result<Option<RegistrationTokenRow>> {
        let row: Option<TokenTuple> = sqlx::query_as(
            "SELECT token, uses_allowed, pending, completed, expiry_ts FROM registration_tokens WHERE token = $1",
        )
        .bind(token)
        .fetch_optional(self.pool())
        .await
        .context("get registration token")?;
        Ok(row.map(token_row))
    }

    /// Whether `token` may start a registration now.
    pub async fn registration_token_is_valid(&self, token: &str) -> Result<bool> {
        Ok(self.get_registration_token(token).await?.is_some_and(|row| row.is_valid(now_ms())))
    }

    /// Remove a token; returns `false` if there was none. Sessions holding a pending use of it
    /// may still complete their registration.
    pub async fn delete_registration_token(&self, token: &str) -> Result<bool> {
        let mut txn = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM registration_tokens WHERE token = $1")
            .bind(token)
            .execute(&mut *txn)
            .await
            .context("delete registration token")?;
        txn.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }
}

/// Take one pending use of `token` if it is valid at `now`. One conditional update, so two
/// concurrent registrations cannot both take the last use.
pub(crate) async fn reserve(conn: &mut AnyConnection, token: &str, now: i64) -> Result<bool> {
    let updated = sqlx::query(
        "UPDATE registration_tokens SET pending = pending + 1
         WHERE token = $1
           AND (expiry_ts IS NULL OR expiry_ts > $2)
           AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
    )
    .bind(token)
    .bind(now)
    .execute(&mut *conn)
    .await
    .context("reserve registration token")?;
    Ok(updated.rows_affected() > 0)
}

/// Give back a pending use: it becomes completed when the registration succeeded.
pub(crate) async fn release(conn: &mut AnyConnection, token: &str, succeeded: bool) -> Result<()> {
    let sql = if succeeded {
        "UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1 WHERE token = $1 AND pending > 0"
    } else {
        "UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0"
    };
    sqlx::query(sql).bind(token).execute(&mut *conn).await.context("release registration token")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(uses_allowed: Option<i64>, pending: i64, completed: i64, expiry_ts: Option<i64>) -> RegistrationTokenRow {
        RegistrationTokenRow { token: "t".into(), uses_allowed, pending, completed, expiry_ts }
    }

    #[test]
    fn validity_counts_pending_and_completed_uses() {
        let cases = [
            (row(None, 0, 0, None), true, "unlimited, no expiry"),
            (row(None, 50, 1000, None), true, "unlimited stays valid"),
            (row(Some(1), 0, 0, None), true, "one use left"),
            (row(Some(1), 1, 0, None), false, "the only use is pending"),
            (row(Some(1), 0, 1, None), false, "the only use is completed"),
            (row(Some(3), 1, 1, None), true, "one of three left"),
            (row(Some(0), 0, 0, None), false, "zero uses allowed"),
            (row(None, 0, 0, Some(1_000)), true, "before expiry"),
            (row(None, 0, 0, Some(999)), false, "at expiry"),
            (row(Some(5), 0, 0, Some(10)), false, "expired with uses left"),
        ];
        for (token, valid, what) in cases {
            assert_eq!(token.is_valid(999), valid, "{what}");
        }
    }

    #[test]
    fn token_grammar() {
        assert!(is_valid_token_string("fBVFdqVE"));
        assert!(is_valid_token_string("a.b_c~d-e"));
        assert!(is_valid_token_string(&"x".repeat(64)));
        assert!(!is_valid_token_string(&"x".repeat(65)));
        assert!(!is_valid_token_string(""));
        assert!(!is_valid_token_string("has space"));
        assert!(!is_valid_token_string("slash/"));
        assert!(!is_valid_token_string("é"));
    }
}
