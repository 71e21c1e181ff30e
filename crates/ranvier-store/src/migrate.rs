//! Numbered schema migrations, one SQL file per backend and version, run at startup.
//!
//! `schema_version` holds one row per applied migration. Each migration runs in its own
//! transaction together with the row that records it, so a crash leaves either all of a
//! migration or none of it. Every migration not yet recorded is applied, in order of number,
//! so numbers reserved ahead of time may land out of order. Add a migration by appending to
//! [`MIGRATIONS`] with its number and writing both files; never edit a migration that has
//! shipped.

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
    migration!(11, "0011_write_path"),
    migration!(12, "0012_push_actions"),
    migration!(13, "0013_lean_indexes"),
];

/// Apply every migration the database has not recorded yet, in order of number.
///
/// Numbers are reserved ahead of time for areas of work, so a higher number may land (and be
/// applied somewhere) before a lower one; the lower one is still applied when it arrives.
/// A recorded version this binary does not know means the database belongs to a newer
/// Ranvier, and startup is refused.
pub async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .context("create schema_version")?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
        .fetch_all(pool)
        .await
        .context("read schema versions")?;
    if let Some(unknown) = applied.iter().find(|version| !MIGRATIONS.iter().any(|m| m.version == **version)) {
        return Err(ranvier_core::Error::internal(format!(
            "database schema version {unknown} is unknown to this binary (it knows up to {}); refusing to start",
            MIGRATIONS.last().map_or(0, |m| m.version)
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
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
        // 11: SQLite rebuilds tables (WITHOUT ROWID, `INTEGER PRIMARY KEY`) where PostgreSQL
        // only changes a key and drops indexes.
        // 12: SQLite rebuilds `event_push_actions` as a rowid table; PostgreSQL swaps an index.
        // 13: SQLite also widens the push-action key to cover unread counts.
        const DIALECT_SPECIFIC: &[i64] = &[6, 8, 11, 12, 13];
        for migration in MIGRATIONS.iter().filter(|m| !DIALECT_SPECIFIC.contains(&m.version)) {
            assert_eq!(
                statements(migration.sqlite),
                statements(migration.postgres),
                "migration {} differs between sqlite/ and postgres/",
                migration.name
            );
        }
    }

    /// Numbers are handed out to areas of work ahead of time, so there may be gaps; the list
    /// must still be in increasing order, since the runner applies it in that order.
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
