//! Shared state of one benchmark run: the API handle, the pool of registered users that
//! scenarios reuse for setup, unique names, bounded-concurrency helpers and JSON output.

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::api::{Api, ApiError, User, next_batch};
use crate::resources::Probe;

/// Concurrency used for setup work (registering pool users, joining members).
pub const SETUP_CONCURRENCY: usize = 8;

/// Result of one measured case: its figures, or why it could not be measured.
pub type CaseResult = Result<Map<String, Value>, String>;

pub struct Bench {
    pub api: Api,
    pub label: String,
    pub scale: f64,
    pub pid: Option<u32>,
    pub case_timeout: Duration,
    run_id: String,
    seq: AtomicU64,
    pool: Mutex<Vec<User>>,
}

impl Bench {
    pub fn new(api: Api, label: String, scale: f64, pid: Option<u32>, case_timeout: Duration) -> Self {
        let run_id = format!("{:08x}", rand::rng().random::<u32>());
        Self { api, label, scale, pid, case_timeout, run_id, seq: AtomicU64::new(0), pool: Mutex::new(Vec::new()) }
    }

    /// `base` multiplied by the scale, at least 1.
    pub fn scaled(&self, base: usize) -> usize {
        ((base as f64 * self.scale).round() as usize).max(1)
    }

    /// A name unique to this run (user localparts, transaction IDs, filter nonces).
    pub fn unique(&self, prefix: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{}x{n}", self.run_id)
    }

    pub fn probe(&self) -> Probe {
        Probe::start(self.pid)
    }

    /// Registers one new account that is not part of the shared pool.
    pub async fn fresh_user(&self) -> Result<User, ApiError> {
        let name = self.unique("bench");
        self.api.register(&name, &format!("pw-{name}")).await
    }

    /// Adds already registered accounts to the pool.
    pub async fn add_to_pool(&self, users: Vec<User>) {
        self.pool.lock().await.extend(users);
    }

    /// Returns the first `n` pool users, registering as many as are missing.
    pub async fn pool(&self, n: usize) -> Result<Vec<User>, String> {
        let mut pool = self.pool.lock().await;
        if pool.len() < n {
            let names: Vec<String> = (pool.len()..n).map(|_| self.unique("bench")).collect();
            let api = self.api.clone();
            let users = bounded(SETUP_CONCURRENCY, names, move |name| {
                let api = api.clone();
                async move { api.register(&name, &format!("pw-{name}")).await }
            })
            .await
            .map_err(|e| format!("setup: registering pool users: {e}"))?;
            pool.extend(users);
        }
        Ok(pool[..n].to_vec())
    }

    /// Creates a public room owned by `creator`; returns its ID.
    pub async fn public_room(&self, creator: &User, name: &str) -> Result<String, ApiError> {
        let body = json!({"preset": "public_chat", "name": name, "visibility": "private"});
        self.api.create_room(creator, &body).await
    }

    /// Makes every user join the room, a few at a time.
    pub async fn join_all(&self, users: Vec<User>, room_id: &str) -> Result<(), ApiError> {
        let api = self.api.clone();
        let room = room_id.to_owned();
        bounded(SETUP_CONCURRENCY, users, move |user| {
            let api = api.clone();
            let room = room.clone();
            async move { api.join(&user, &room).await }
        })
        .await
        .map(|_| ())
    }

    /// A `since` token for the user, from an initial sync that asks for little.
    pub async fn since_token(&self, user: &User) -> Result<String, ApiError> {
        let filter = r#"{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}"#;
        let resp = self.api.sync(user, None, Some(filter), 0).await?;
        next_batch(&resp)
    }

    /// Runs one case under the case time limit and prints its JSON line.
    pub async fn case<F>(&self, scenario: &str, case: &str, params: Value, body: F)
    where
        F: Future<Output = CaseResult>,
    {
        let result = match tokio::time::timeout(self.case_timeout, body).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} s", self.case_timeout.as_secs())),
        };
        self.emit(scenario, case, params, result);
    }

    /// Prints one JSON line for a case.
    pub fn emit(&self, scenario: &str, case: &str, params: Value, result: CaseResult) {
        let mut line = json!({
            "scenario": scenario,
            "case": case,
            "label": self.label,
            "scale": self.scale,
            "params": params,
        });
        match result {
            Ok(figures) => line["figures"] = Value::Object(figures),
            Err(e) => line["error"] = Value::String(e),
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Runs `f` on every item in its own tokio task, at most `limit` at once, and returns
/// the results in item order; stops at (and returns) the first error.
pub async fn bounded<T, R, E, F, Fut>(limit: usize, items: Vec<T>, f: F) -> Result<Vec<R>, E>
where
    T: Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    let total = items.len();
    let mut out: Vec<Option<R>> = (0..total).map(|_| None).collect();
    let mut set = JoinSet::new();
    let mut items = items.into_iter().enumerate();
    loop {
        while set.len() < limit.max(1) {
            let Some((i, item)) = items.next() else { break };
            let fut = f(item);
            set.spawn(async move { (i, fut.await) });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (i, r) = joined.expect("benchmark task panicked");
        out[i] = Some(r?);
    }
    Ok(out.into_iter().map(|r| r.expect("every task ran")).collect())
}
