//! Which storage backends the tests run on, and the throwaway databases they use.
//!
//! `RANVIER_TEST_BACKENDS` (a comma-separated list, default `sqlite,postgres`) chooses the
//! backends. PostgreSQL databases are created fresh on `RANVIER_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1/postgres`) under a unique name and dropped afterwards, so
//! tests never see each other's data and can run in parallel.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
};

use rand::Rng;
use sqlx::{Connection, postgres::PgConnection};
use tempfile::TempDir;

/// The environment variable listing the backends to test.
pub const BACKENDS_VAR: &str = "RANVIER_TEST_BACKENDS";
/// The environment variable giving the PostgreSQL maintenance database to connect to.
pub const POSTGRES_URL_VAR: &str = "RANVIER_TEST_POSTGRES_URL";
/// Where PostgreSQL is expected when nothing else is said.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1/postgres";

/// A storage backend of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The name used in `RANVIER_TEST_BACKENDS` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Whether this backend is in `RANVIER_TEST_BACKENDS`.
    pub fn enabled(self) -> bool {
        configured_backends().contains(&self)
    }
}

/// The backends listed in `RANVIER_TEST_BACKENDS`, or both when it is unset.
///
/// An unknown name panics: a typo must not quietly skip a whole backend.
pub fn configured_backends() -> Vec<Backend> {
    let Ok(list) = std::env::var(BACKENDS_VAR) else {
        return vec![Backend::Sqlite, Backend::Postgres];
    };
    let mut backends = Vec::new();
    for name in list.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        let backend = match name.to_ascii_lowercase().as_str() {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" | "pg" => Backend::Postgres,
            other => panic!("{BACKENDS_VAR} names an unknown backend `{other}` (use sqlite and/or postgres)"),
        };
        if !backends.contains(&backend) {
            backends.push(backend);
        }
    }
    backends
}

/// Run `scenario` on `backend` if that backend is configured; otherwise say so and return.
///
/// The [`backend_tests!`](crate::backend_tests) macro calls this once per backend, so that each
/// backend is a test of its own with its own name in the report.
pub async fn run_on<F, Fut>(backend: Backend, scenario: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    if !backend.enabled() {
        eprintln!("skipped: {} is not listed in {BACKENDS_VAR}", backend.name());
        return;
    }
    scenario(backend).await;
}

fn postgres_admin_url() -> String {
    std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A unique lowercase name for a throwaway database.
fn unique_database_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let suffix: u32 = rand::rng().random();
    format!("ranvier_test_{}_{}_{suffix:08x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Replace the database name at the end of a PostgreSQL URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    // The database is the path after the authority: `postgres://user@host:port/db`.
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// A freshly created PostgreSQL database, dropped (with any lingering connections) on drop.
pub struct PostgresDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl PostgresDatabase {
    /// Create a new, empty, uniquely named database.
    pub async fn create() -> PostgresDatabase {
        let admin_url = postgres_admin_url();
        let name = unique_database_name();
        let mut conn = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "cannot connect to PostgreSQL at {admin_url}: {e}\n\
                 Start PostgreSQL on 127.0.0.1:5432 (see .ci/run), set {POSTGRES_URL_VAR}, \
                 or run only SQLite with {BACKENDS_VAR}=sqlite"
            )
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name);
        PostgresDatabase { name, url, admin_url }
    }

    /// The URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived thread
        // with its own runtime does the asynchronous work and is joined before returning.
        let dropper = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => return Err(format!("start runtime: {e}")),
            };
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&admin_url).await.map_err(|e| format!("connect: {e}"))?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| format!("drop: {e}"))?;
                let _ = conn.close().await;
                Ok(())
            })
        });
        match dropper.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// A throwaway database for either backend: a SQLite file in a temporary directory, or a fresh
/// PostgreSQL database.
pub enum TestDatabase {
    Sqlite { dir: TempDir, path: PathBuf },
    Postgres(PostgresDatabase),
}

impl TestDatabase {
    /// Create an empty database on `backend`.
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("ranvier-test-db-")
                    .tempdir()
                    .unwrap_or_else(|e| panic!("create temporary directory: {e}"));
                let path = dir.path().join("ranvier.db");
                TestDatabase::Sqlite { dir, path }
            }
            Backend::Postgres => TestDatabase::Postgres(PostgresDatabase::create().await),
        }
    }

    /// The database URL, as `database.url` takes it.
    pub fn url(&self) -> String {
        match self {
            TestDatabase::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            TestDatabase::Postgres(db) => db.url().to_owned(),
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            TestDatabase::Sqlite { .. } => Backend::Sqlite,
            TestDatabase::Postgres(_) => Backend::Postgres,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_in_urls() {
        assert_eq!(with_database("postgres://postgres@127.0.0.1/postgres", "x"), "postgres://postgres@127.0.0.1/x");
        assert_eq!(
            with_database("postgres://u:p@h:5433/db?sslmode=disable", "y"),
            "postgres://u:p@h:5433/y?sslmode=disable"
        );
        assert_eq!(with_database("postgres://postgres@127.0.0.1", "z"), "postgres://postgres@127.0.0.1/z");
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_database_name(), unique_database_name());
    }
}
