//! Numbered schema migrations, one SQL file per backend and version, run at startup.
//!
//! `schema_version` holds one row per applied migration. Each migration runs in its own
//! transaction together with the row that records it, so a crash leaves either all of a
//! migration or none of it. Add a migration by appending to [`MIGRATIONS`] with the next
//! number and writing both files; never edit a migration that has shipped.

use ranvier_core::{Result, error::Context};
use sqlx::{AnyPool, AssertSqlSafe};

use crate::Backend;

/// A migration: its number, name, and the SQL for each backend.
struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../migrations/postgres/", $name, ".sql")),
        }
    };
}

const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_init"),
    migration!(2, "0002_e2ee"),
    migration!(3, "0003_social"),
    migration!(4, "0004_media"),
    migration!(5, "0005_dehydrated"),
    migration!(6, "0006_relations"),
    migration!(7, "0007_push"),
    migration!(8, "0008_search"),
    migration!(10, "0010_media_more"),
];

/// Apply every migration newer than the database's version.
pub async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .context("create schema_version")?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
        .fetch_one(pool)
        .await
        .context("read schema version")?;
    let current = current.unwrap_or(0);
    if let Some(latest) = MIGRATIONS.last()
        && current > latest.version
    {
        return Err(ranvier_core::Error::internal(format!(
            "database schema version {current} is newer than this binary knows ({}); refusing to start",
            latest.version
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tracing::info!(version = migration.version, name = migration.name, "applying migration");
        let sql = match backend {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        let mut txn = pool.begin().await.context("begin migration")?;
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *txn).await.with_context_name(migration.name)?;
        sqlx::query("INSERT INTO schema_version (version, name, applied_ts) VALUES ($1, $2, $3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(ranvier_core::util::now_ms())
            .execute(&mut *txn)
            .await
            .context("record migration")?;
        txn.commit().await.context("commit migration")?;
    }
    Ok(())
}

trait WithContextName<T> {
    fn with_context_name(self, name: &str) -> Result<T>;
}

impl<T> WithContextName<T> for std::result::Result<T, sqlx::Error> {
    fn with_context_name(self, name: &str) -> Result<T> {
        self.map_err(|e| ranvier_core::Error::internal(format!("migration {name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements of a migration, without its comment lines.
    fn statements(sql: &str) -> Vec<&str> {
        sql.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with("--")).collect()
    }

    /// Both backends run the same SQL today; a difference must be deliberate. Should a
    /// migration ever need dialect-specific SQL, list its number here with the reason.
    #[test]
    fn backends_run_the_same_statements() {
        // 6: the backfill of `event_relations` reads the stored PDUs' JSON (`json_extract` on
        // SQLite, `jsonb` operators on PostgreSQL).
        // 8: the full-text index is an FTS5 virtual table on SQLite and a tsvector column with
        // a GIN index on PostgreSQL; its reports table is the same in both.
        const DIALECT_SPECIFIC: &[i64] = &[6, 8];
        for migration in MIGRATIONS.iter().filter(|m| !DIALECT_SPECIFIC.contains(&m.version)) {
            assert_eq!(
                statements(migration.sqlite),
                statements(migration.postgres),
                "migration {} differs between sqlite/ and postgres/",
                migration.name
            );
        }
    }

    /// Numbers are handed out to areas of work ahead of time, so one may land before a lower
    /// one: versions must increase but need not be contiguous until the lower ones land (all
    /// of them before any release, since the runner only applies versions above the
    /// database's).
    #[test]
    fn versions_are_numbered_in_order() {
        let mut previous = 0;
        for migration in MIGRATIONS {
            assert!(migration.version > previous, "{} comes after version {previous}", migration.name);
            assert!(migration.name.starts_with(&format!("{:04}_", migration.version)), "{}", migration.name);
            previous = migration.version;
        }
    }
}
