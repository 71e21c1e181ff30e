//! User-interactive authentication sessions.
//!
//! A session records the operation it was started for, the user it belongs to (none for
//! registration), the stages completed so far, and the registration token whose use it holds
//! as pending. The UIA logic itself lives in the client API; this module only keeps the rows
//! consistent: a session's pending token use is released exactly once, when the session row is
//! deleted (on expiry, or on success when the registration completes it).

use ranvier_core::{Error, Result, error::Context, util::now_ms};
use sqlx::AnyConnection;

use crate::{Store, registration_tokens};

/// How long a UIA session lives after it is created.
pub const SESSION_LIFETIME_MS: i64 = 60 * 60 * 1000;

/// One live UIA session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UiaSessionRow {
    pub session_id: String,
    pub operation: String,
    pub user_id: Option<String>,
    /// Completed stage types, in the order they were completed.
    pub completed: Vec<String>,
    pub registration_token: Option<String>,
    pub created_ts: i64,
}

/// A `uia_sessions` row as selected, with `completed` still JSON text.
type SessionTuple = (String, String, Option<String>, String, Option<String>, i64);

/// What [`Store::complete_registration_token_stage`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStage {
    /// The token was valid; one use of it is now pending on the session.
    Reserved,
    /// The token is unknown, expired or used up.
    Invalid,
    /// The session no longer exists.
    SessionGone,
}

impl Store {
    /// Start a session for `operation` (by `user_id`, if authenticated).
    pub async fn create_uia_session(&self, session_id: &str, operation: &str, user_id: Option<&str>) -> Result<()> {
        let mut txn = self.begin_write().await?;
        sqlx::query("INSERT INTO uia_sessions (session_id, operation, user_id, created_ts) VALUES ($1, $2, $3, $4)")
            .bind(session_id)
            .bind(operation)
            .bind(user_id)
            .bind(now_ms())
            .execute(&mut *txn)
            .await
            .context("create UIA session")?;
        txn.commit().await
    }

    /// A session that has not expired.
    pub async fn get_uia_session(&self, session_id: &str) -> Result<Option<UiaSessionRow>> {
        let row: Option<SessionTuple> = sqlx::query_as(
            "SELECT session_id, operation, user_id, completed, registration_token, created_ts
             FROM uia_sessions WHERE session_id = $1 AND created_ts > $2",
        )
        .bind(session_id)
        .bind(now_ms() - SESSION_LIFETIME_MS)
        .fetch_optional(self.pool())
        .await
        .context("get UIA session")?;
        row.map(|(session_id, operation, user_id, completed, registration_token, created_ts)| {
            let completed = serde_json::from_str(&completed).context("decode completed UIA stages")?;
            Ok(UiaSessionRow { session_id, operation, user_id, completed, registration_token, created_ts })
        })
        .transpose()
    }

    /// Record `stage` as completed; returns the completed stages, or `None` if the session is
    /// gone.
    pub async fn complete_uia_stage(&self, session_id: &str, stage: &str) -> Result<Option<Vec<String>>> {
        let mut txn = self.begin_write().await?;
        let completed = add_stage(&mut txn, session_id, stage).await?;
        txn.commit().await?;
        Ok(completed)
    }

    /// Check `token` and, if it is valid, hold one pending use of it for the session and
    /// record the `m.login.registration_token` stage, atomically.
    pub async fn complete_registration_token_stage(&self, session_id: &str, token: &str) -> Result<TokenStage> {
        let mut txn = self.begin_write().await?;
        let held: Option<Option<String>> =
            sqlx::query_scalar("SELECT registration_token FROM uia_sessions WHERE session_id = $1 AND created_ts > $2")
                .bind(session_id)
                .bind(now_ms() - SESSION_LIFETIME_MS)
                .fetch_optional(&mut *txn)
                .await
                .context("read UIA session token")?;
        let Some(held) = held else {
            return Ok(TokenStage::SessionGone);
        };
        // A session holds at most one pending use; a second token stage on the same session
        // keeps the first reservation.
        if held.is_none() {
            if !registration_tokens::reserve(&mut txn, token, now_ms()).await? {
                return Ok(TokenStage::Invalid);
            }
            sqlx::query("UPDATE uia_sessions SET registration_token = $1 WHERE session_id = $2")
                .bind(token)
                .bind(session_id)
                .execute(&mut *txn)
                .await
                .context("hold registration token")?;
        }
        if add_stage(&mut txn, session_id, "m.login.registration_token").await?.is_none() {
            return Ok(TokenStage::SessionGone);
        }
        txn.commit().await?;
        Ok(TokenStage::Reserved)
    }

    /// Delete a session, releasing its pending token use.
    pub async fn delete_uia_session(&self, session_id: &str) -> Result<()> {
        let mut txn = self.begin_write().await?;
        close_session(&mut txn, session_id, false).await?;
        txn.commit().await
    }

    /// Delete sessions older than their lifetime, releasing their pending token uses.
    /// Returns how many were deleted.
    pub async fn expire_uia_sessions(&self) -> Result<u64> {
        let mut txn = self.begin_write().await?;
        let expired: Vec<Option<String>> =
            sqlx::query_scalar("DELETE FROM uia_sessions WHERE created_ts <= $1 RETURNING registration_token")
                .bind(now_ms() - SESSION_LIFETIME_MS)
                .fetch_all(&mut *txn)
                .await
                .context("expire UIA sessions")?;
        for token in expired.iter().flatten() {
            registration_tokens::release(&mut txn, token, false).await?;
        }
        txn.commit().await?;
        Ok(expired.len() as u64)
    }
}

/// Append `stage` to a session's completed list (once). `None` if the session is gone.
async fn add_stage(conn: &mut AnyConnection, session_id: &str, stage: &str) -> Result<Option<Vec<String>>> {
    // The no-op update takes the row lock on PostgreSQL, so two stages completed concurrently
    // on one session cannot overwrite each other's read-modify-write.
    let locked = sqlx::query("UPDATE uia_sessions SET completed = completed WHERE session_id = $1")
        .bind(session_id)
        .execute(&mut *conn)
        .await
        .context("lock UIA session")?;
    if locked.rows_affected() == 0 {
        return Ok(None);
    }
    let text: String = sqlx::query_scalar("SELECT completed FROM uia_sessions WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(&mut *conn)
        .await
        .context("read UIA stages")?;
    let mut completed: Vec<String> = serde_json::from_str(&text).context("decode completed UIA stages")?;
    if !completed.iter().any(|done| done == stage) {
        completed.push(stage.to_owned());
    }
    let text = serde_json::to_string(&completed).map_err(|e| Error::internal(format!("encode UIA stages: {e}")))?;
    sqlx::query("UPDATE uia_sessions SET completed = $1 WHERE session_id = $2")
        .bind(text)
        .bind(session_id)
        .execute(&mut *conn)
        .await
        .context("record UIA stage")?;
    Ok(Some(completed))
}

/// Delete a live session inside a transaction; its pending token use becomes completed when
/// `succeeded` (a registration used it), or is released otherwise. Returns `false` if there
/// was no live session. Concurrent callers cannot both see the row: exactly one deletes it.
pub(crate) async fn close_session(conn: &mut AnyConnection, session_id: &str, succeeded: bool) -> Result<bool> {
    let row: Option<Option<String>> = sqlx::query_scalar(
        "DELETE FROM uia_sessions WHERE session_id = $1 AND created_ts > $2 RETURNING registration_token",
    )
    .bind(session_id)
    .bind(now_ms() - SESSION_LIFETIME_MS)
    .fetch_optional(&mut *conn)
    .await
    .context("close UIA session")?;
    match row {
        None => Ok(false),
        Some(token) => {
            if let Some(token) = token {
                registration_tokens::release(conn, &token, succeeded).await?;
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{CreateAccount, NewAccount};

    async fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&format!("sqlite://{}", dir.path().join("test.db").display()), 2).await.unwrap()
    }

    async fn counts(store: &Store, token: &str) -> (i64, i64) {
        let row = store.get_registration_token(token).await.unwrap().unwrap();
        (row.pending, row.completed)
    }

    #[tokio::test]
    async fn token_uses_are_held_by_sessions_and_completed_by_registration() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        assert!(store.create_registration_token("tok", Some(1), None).await.unwrap());
        assert!(!store.create_registration_token("tok", Some(5), None).await.unwrap(), "duplicate");
        for session in ["a", "b", "c"] {
            store.create_uia_session(session, "register", None).await.unwrap();
        }

        assert_eq!(store.complete_registration_token_stage("a", "tok").await.unwrap(), TokenStage::Reserved);
        assert_eq!(counts(&store, "tok").await, (1, 0));
        // Retrying the stage on the same session does not take a second use.
        assert_eq!(store.complete_registration_token_stage("a", "tok").await.unwrap(), TokenStage::Reserved);
        assert_eq!(counts(&store, "tok").await, (1, 0));
        assert!(!store.registration_token_is_valid("tok").await.unwrap());
        assert_eq!(store.complete_registration_token_stage("b", "tok").await.unwrap(), TokenStage::Invalid);
        assert_eq!(store.complete_registration_token_stage("b", "nope").await.unwrap(), TokenStage::Invalid);
        assert_eq!(store.complete_registration_token_stage("zz", "tok").await.unwrap(), TokenStage::SessionGone);

        // Abandoning session a gives the use back.
        store.delete_uia_session("a").await.unwrap();
        assert_eq!(counts(&store, "tok").await, (0, 0));
        assert!(store.registration_token_is_valid("tok").await.unwrap());
        assert_eq!(store.complete_registration_token_stage("b", "tok").await.unwrap(), TokenStage::Reserved);
        let session = store.get_uia_session("b").await.unwrap().unwrap();
        assert_eq!(session.completed, vec!["m.login.registration_token".to_owned()]);
        assert_eq!(session.registration_token.as_deref(), Some("tok"));

        // Registering with session b completes the use and closes the session.
        let account = NewAccount {
            user_id: "@b:example.org",
            password_hash: None,
            admin: false,
            uia_session: Some("b"),
            device: None,
        };
        assert_eq!(store.create_account(account).await.unwrap(), CreateAccount::Created);
        assert_eq!(counts(&store, "tok").await, (0, 1));
        assert!(store.get_uia_session("b").await.unwrap().is_none());
        // The session cannot authorise a second account.
        let again = NewAccount { user_id: "@b2:example.org", ..account };
        assert_eq!(store.create_account(again).await.unwrap(), CreateAccount::SessionGone);
        assert!(store.get_user("@b2:example.org").await.unwrap().is_none());
        assert_eq!(store.complete_registration_token_stage("c", "tok").await.unwrap(), TokenStage::Invalid);
        assert_eq!(counts(&store, "tok").await, (0, 1));
    }

    #[tokio::test]
    async fn expired_sessions_release_their_token_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.create_registration_token("tok", Some(1), None).await.unwrap();
        store.create_uia_session("old", "register", None).await.unwrap();
        store.create_uia_session("new", "register", None).await.unwrap();
        assert_eq!(store.complete_registration_token_stage("old", "tok").await.unwrap(), TokenStage::Reserved);
        sqlx::query("UPDATE uia_sessions SET created_ts = $1 WHERE session_id = 'old'")
            .bind(now_ms() - SESSION_LIFETIME_MS - 1)
            .execute(store.pool())
            .await
            .unwrap();
        // An expired session is invisible at once, even before it is cleaned up.
        assert!(store.get_uia_session("old").await.unwrap().is_none());
        assert_eq!(store.expire_uia_sessions().await.unwrap(), 1);
        assert_eq!(counts(&store, "tok").await, (0, 0));
        assert!(store.get_uia_session("new").await.unwrap().is_some());
        assert_eq!(store.complete_registration_token_stage("new", "tok").await.unwrap(), TokenStage::Reserved);
    }

    #[tokio::test]
    async fn expired_and_deleted_tokens_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.create_registration_token("past", None, Some(now_ms() - 1)).await.unwrap();
        store.create_registration_token("future", None, Some(now_ms() + 60_000)).await.unwrap();
        assert!(!store.registration_token_is_valid("past").await.unwrap());
        assert!(store.registration_token_is_valid("future").await.unwrap());
        assert!(!store.registration_token_is_valid("unknown").await.unwrap());
        store.create_uia_session("s", "register", None).await.unwrap();
        assert_eq!(store.complete_registration_token_stage("s", "past").await.unwrap(), TokenStage::Invalid);
        assert!(store.delete_registration_token("future").await.unwrap());
        assert!(!store.delete_registration_token("future").await.unwrap());
        assert_eq!(store.list_registration_tokens().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn stages_accumulate_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.create_uia_session("s", "POST /account/password", Some("@u:example.org")).await.unwrap();
        assert_eq!(store.complete_uia_stage("s", "m.login.dummy").await.unwrap().unwrap(), vec!["m.login.dummy"]);
        assert_eq!(
            store.complete_uia_stage("s", "m.login.password").await.unwrap().unwrap(),
            vec!["m.login.dummy", "m.login.password"]
        );
        assert_eq!(store.complete_uia_stage("s", "m.login.dummy").await.unwrap().unwrap().len(), 2);
        assert!(store.complete_uia_stage("missing", "m.login.dummy").await.unwrap().is_none());
        let session = store.get_uia_session("s").await.unwrap().unwrap();
        assert_eq!(session.operation, "POST /account/password");
        assert_eq!(session.user_id.as_deref(), Some("@u:example.org"));
    }
}
