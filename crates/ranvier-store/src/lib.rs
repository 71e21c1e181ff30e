//! Ranvier's storage: one API over two backends, SQLite (embedded default) and PostgreSQL.
//!
//! # Layout
//! - [`Store`]: the connections (sqlx `Any`, so every query is written once; reads go
//!   through [`readers`]), the backend kind, and the SQLite single-writer lock.
//! - [`migrate`]: numbered migrations per backend (`migrations/{sqlite,postgres}/NNNN_*.sql`),
//!   run at startup.
//! - [`streams`]: stream position allocation and the notifier that wakes `/sync`.
//! - [`event_cache`]: events by id in memory, in front of every read of whole events by id
//!   or by timeline position.
//! - One module per group of tables: [`accounts`] (users, devices, access tokens, filters,
//!   UIA sessions, registration tokens), [`events`] (events, the DAG, state groups, current
//!   state, memberships), [`relations`] (`m.relates_to` children), [`account_data`],
//!   [`push`] (push outcomes, unread counts, pushers),
//!   [`reports`] (content reports).
//! - [`search`]: the full-text index of event text, the one module whose SQL differs between
//!   the backends (SQLite FTS5, PostgreSQL `tsvector`).
//!
//! # Conventions
//! - SQL uses `$1, $2` placeholders, which both backends accept through sqlx `Any`.
//! - Every integer column is `BIGINT` in PostgreSQL (sqlx `Any` decodes it as `i64`); booleans
//!   are `BIGINT` 0/1 in both backends so that one decode works for both.
//! - JSON is stored as `TEXT`.
//! - Writes go through [`Store::begin_write`], which on SQLite first takes the process-wide
//!   writer lock: SQLite allows one writer, and serialising in-process avoids `SQLITE_BUSY`.

pub mod account_data;
pub mod accounts;
pub mod e2ee;
pub mod event_cache;
pub mod events;
pub mod filters;
pub mod keyed_cache;
pub mod media;
pub mod migrate;
pub mod persist;
pub mod push;
pub mod readers;
pub mod registration_tokens;
pub mod relations;
pub mod reports;
pub mod search;
pub mod social;
pub mod streams;
pub mod sync;
mod txn_filter;
pub mod uia;
mod unread_cache;

use std::{str::FromStr, sync::Arc, time::Duration};

use ranvier_core::{Error, Result, error::Context};
use sqlx::{
    Any, AnyConnection, AnyPool, Connection, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use streams::{StreamKind, StreamToken, Streams};

use event_cache::EventCache;
use keyed_cache::KeyedCache;
use readers::{ReadConn, Readers};

/// The default size of the event cache: 16 MiB.
pub const DEFAULT_EVENT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The default page cache of the SQLite writer connection, in KiB (SQLite's own default is
/// 2000); each reader gets half of it.
///
/// A reader's cache is emptied whenever another connection has committed since its last read
/// (SQLite's WAL mode cannot tell which pages changed), so on a server that writes all the
/// time a reader's cache holds little more than the pages of its current read. The writer's
/// cache keeps the pages its inserts touch; pages missing from either come from the
/// operating system's file cache. 512 KiB for each (instead of 2000) took about 2 MB off the
/// benchmark's resident size with no change in its send, fan-out or sync figures. Halving
/// the readers' caches again cost nothing measurable; halving the writer's too took 0.3–1.2 MB
/// more off the peaks but made the ten-user `send` 10% slower.
pub const DEFAULT_SQLITE_CACHE_KIB: u32 = 512;

/// The values of an `IN (...)` list, padded to the next power of two by repeating the last
/// one (which an `IN` test ignores), so that lists of any length share a few statement texts.
///
/// Each connection prepares and keeps every statement text it runs, and SQLite compiles an
/// `IN` list into a program that grows with the list: a text per length filled the
/// connections' statement caches with near-copies of the same query.
pub(crate) fn in_list<T>(values: &[T]) -> Vec<&T> {
    let mut out: Vec<&T> = values.iter().collect();
    if let Some(last) = values.last() {
        out.resize(values.len().next_power_of_two(), last);
    }
    out
}

/// Which database engine is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The storage handle. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    /// The connections reads run on (on PostgreSQL, also write transactions).
    readers: Readers,
    /// The connections writes run on.
    writer: Writer,
    backend: Backend,
    streams: Streams,
    /// Events by id (see [`event_cache`]).
    events: EventCache,
    /// The key counts of devices (see [`e2ee::keys`]).
    key_counts: e2ee::keys::KeyCountCache,
    /// Users' memberships (see [`sync`]).
    memberships: sync::MembershipCache,
    /// Unread counts by user and room (see [`unread_cache`]).
    unread: unread_cache::UnreadCache,
    /// The client transaction ids devices have used (see [`txn_filter`]).
    txn_filter: txn_filter::TxnFilter,
}

/// The connections writes run on, by backend.
enum Writer {
    /// The one connection every SQLite write uses, under a lock held for the whole transaction
    /// (SQLite has one writer; serialising in-process avoids `SQLITE_BUSY`). SQLite drops a
    /// connection's page cache whenever another connection has committed since its last
    /// transaction; with one writer connection, the writer's own commits never do, so the pages
    /// each write touches stay cached. It is not pooled: a transaction takes it with no
    /// hand-over through a pool.
    Sqlite(Arc<Mutex<SqliteWriter>>),
    /// PostgreSQL: events are written on a pool of their own whose connections plan every
    /// statement generically (see [`postgres_event_writer_options`]); other writes take
    /// connections from the readers' pool.
    Postgres { events: AnyPool },
}

/// SQLite's writer connection.
struct SqliteWriter {
    conn: AnyConnection,
    /// Set before `BEGIN` is sent and cleared once the transaction committed or rolled back.
    /// While set, a transaction may be open on the connection (one cut short before its
    /// rollback ran), and the next [`Store::begin_write`] rolls it back first.
    open: bool,
}

impl SqliteWriter {
    /// Roll back what is open on the connection.
    async fn roll_back(&mut self) {
        // The error when nothing is open is expected.
        let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        self.open = false;
    }

    /// Roll back what an earlier transaction left open, then mark a new one as open (before
    /// its `BEGIN` is sent).
    async fn start(&mut self) {
        if self.open {
            self.roll_back().await;
        }
        self.open = true;
    }
}

/// The connection of a write transaction.
enum TxnConn {
    /// SQLite: the writer connection, under its lock; `BEGIN IMMEDIATE` has run on it.
    Sqlite(OwnedMutexGuard<SqliteWriter>),
    /// PostgreSQL: a pooled connection's transaction.
    Postgres(Transaction<'static, Any>),
    /// Committed.
    Done,
}

/// A write transaction, used as the connection its statements run on. On SQLite it holds the
/// writer lock until it ends. Dropped without [`WriteTxn::commit`], it is rolled back at once
/// (on SQLite by a task that keeps the writer lock until the rollback ran).
pub struct WriteTxn {
    conn: TxnConn,
}

impl WriteTxn {
    /// Commit the transaction.
    pub async fn commit(mut self) -> Result<()> {
        match std::mem::replace(&mut self.conn, TxnConn::Done) {
            TxnConn::Sqlite(mut writer) => {
                if let Err(error) = sqlx::query("COMMIT").execute(&mut writer.conn).await {
                    writer.roll_back().await;
                    return Err(error).context("commit transaction");
                }
                writer.open = false;
                Ok(())
            }
            TxnConn::Postgres(txn) => txn.commit().await.context("commit transaction"),
            TxnConn::Done => Ok(()),
        }
    }
}

impl Drop for WriteTxn {
    fn drop(&mut self) {
        if let TxnConn::Sqlite(mut writer) = std::mem::replace(&mut self.conn, TxnConn::Done) {
            // Without a runtime (at shutdown) the next `begin_write` rolls back instead.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { writer.roll_back().await });
            }
        }
    }
}

impl std::ops::Deref for WriteTxn {
    type Target = AnyConnection;
    fn deref(&self) -> &Self::Target {
        match &self.conn {
            TxnConn::Sqlite(writer) => &writer.conn,
            TxnConn::Postgres(txn) => txn,
            TxnConn::Done => unreachable!("a write transaction is used only until its commit"),
        }
    }
}

impl std::ops::DerefMut for WriteTxn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match &mut self.conn {
            TxnConn::Sqlite(writer) => &mut writer.conn,
            TxnConn::Postgres(txn) => txn,
            TxnConn::Done => unreachable!("a write transaction is used only until its commit"),
        }
    }
}

impl Store {
    /// Connect to `url` (`sqlite://PATH` or `postgres://...`), run pending migrations and load
    /// the stream positions, with an event cache of [`DEFAULT_EVENT_CACHE_BYTES`] and SQLite page
    /// caches of [`DEFAULT_SQLITE_CACHE_KIB`].
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        Self::open_with_cache(url, max_connections, DEFAULT_EVENT_CACHE_BYTES, DEFAULT_SQLITE_CACHE_KIB).await
    }

    /// [`Store::open`] with an event cache of `event_cache_bytes` (0 turns it off) and, on
    /// SQLite, a page cache of `sqlite_cache_kib` KiB for the writer and half of that for each
    /// reader (at least 4).
    pub async fn open_with_cache(
        url: &str,
        max_connections: u32,
        event_cache_bytes: usize,
        sqlite_cache_kib: u32,
    ) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if ranvier_core::config::is_sqlite_url(url) {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::internal(format!("unsupported database url `{url}`")));
        };
        let url = match backend {
            // Create the file if it does not exist yet.
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url).context("parse database url")?;
        let pool_options = match backend {
            // For the migrations only.
            Backend::Sqlite => sqlite_migration_pool_options(),
            Backend::Postgres => postgres_pool_options(max_connections.max(2)),
        };
        let pool = pool_options.connect_with(options.clone()).await.context("connect to database")?;
        migrate::run(&pool, backend).await?;
        let (readers, writer) = match backend {
            // Opened after the migrations so that they start on the final schema.
            Backend::Sqlite => {
                pool.close().await;
                let mut conn = AnyConnection::connect_with(&options).await.context("connect to database (writer)")?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sqlite_setup(sqlite_cache_kib)))
                    .execute(&mut conn)
                    .await
                    .context("set up the writer connection")?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(persist::sqlite_message_writes()))
                    .execute(&mut conn)
                    .await
                    .context("set up the writer's message writes")?;
                let readers =
                    Readers::sqlite(options, sqlite_setup(sqlite_cache_kib / 2), sqlite_readers(max_connections));
                (readers, Writer::Sqlite(Arc::new(Mutex::new(SqliteWriter { conn, open: false }))))
            }
            Backend::Postgres => {
                let events = postgres_event_writer_options(event_writer_connections(max_connections))
                    .connect_lazy_with(options.clone());
                (Readers::pool(pool), Writer::Postgres { events })
            }
        };
        let streams = Streams::load(&readers).await?;
        Ok(Self {
            inner: Arc::new(StoreInner {
                readers,
                writer,
                backend,
                streams,
                events: EventCache::new(event_cache_bytes),
                key_counts: KeyedCache::new(e2ee::keys::KEY_COUNT_CAPACITY),
                memberships: KeyedCache::new(sync::MEMBERSHIP_CACHE_CAPACITY),
                unread: unread_cache::UnreadCache::new(unread_cache::UNREAD_CACHE_CAPACITY),
                txn_filter: txn_filter::TxnFilter::default(),
            }),
        })
    }

    /// The connections for reads, used as a sqlx executor.
    pub fn pool(&self) -> &Readers {
        &self.inner.readers
    }

    /// The event cache.
    pub(crate) fn event_cache(&self) -> &EventCache {
        &self.inner.events
    }

    /// The cache of devices' key counts.
    pub(crate) fn key_count_cache(&self) -> &e2ee::keys::KeyCountCache {
        &self.inner.key_counts
    }

    /// The cache of unread counts.
    pub(crate) fn unread_cache(&self) -> &unread_cache::UnreadCache {
        &self.inner.unread
    }

    /// The client transaction ids devices have used.
    pub(crate) fn txn_filter(&self) -> &txn_filter::TxnFilter {
        &self.inner.txn_filter
    }

    /// The cache of users' memberships.
    pub(crate) fn membership_cache(&self) -> &sync::MembershipCache {
        &self.inner.memberships
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The stream positions and the notifier.
    pub fn streams(&self) -> &Streams {
        &self.inner.streams
    }

    /// A connection for a sequence of reads.
    pub async fn conn(&self) -> Result<ReadConn> {
        self.inner.readers.acquire().await
    }

    /// Begin a write transaction (taking the SQLite writer lock first).
    pub async fn begin_write(&self) -> Result<WriteTxn> {
        let Writer::Sqlite(writer) = &self.inner.writer else {
            let Some(pool) = self.inner.readers.postgres_pool() else {
                return Err(Error::internal("a store without a SQLite writer has no PostgreSQL pool"));
            };
            let txn = pool.begin().await.context("begin transaction")?;
            return Ok(WriteTxn { conn: TxnConn::Postgres(txn) });
        };
        let mut writer = writer.clone().lock_owned().await;
        writer.start().await;
        // BEGIN IMMEDIATE takes SQLite's write lock up front, where the busy timeout applies.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut writer.conn).await.context("begin transaction")?;
        Ok(WriteTxn { conn: TxnConn::Sqlite(writer) })
    }
}

/// How long a PostgreSQL connection may sit idle in the pool and still be handed out without
/// first checking that the server is there.
const POSTGRES_PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Pool options of a PostgreSQL pool of up to `max_connections` connections.
fn postgres_pool_options(max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        // A round trip to the server before every use of a connection costs as much as a
        // query. A connection that was in use less than a second ago is handed out as it is;
        // one idle for longer (when the server may have restarted or closed it) is checked
        // first and replaced if it is dead.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < POSTGRES_PING_AFTER_IDLE {
                    return Ok(true);
                }
                Ok(sqlx::Connection::ping(conn).await.is_ok())
            })
        })
}

/// How many connections PostgreSQL's event writer gets for `max_connections` asked for: a
/// quarter, at least two. Events of one room commit one group at a time, so these serve
/// different rooms at once.
fn event_writer_connections(max_connections: u32) -> u32 {
    (max_connections / 4).max(2)
}

/// Pool options of PostgreSQL's event writer: [`postgres_pool_options`], each connection set
/// to plan every prepared statement generically. A group's statement is one of many texts
/// (one per count of rows in each table), and PostgreSQL otherwise plans a prepared statement
/// afresh at each of its first five runs on each connection before it settles on a generic
/// plan. Inserts of given values have nothing a plan could fit to the values, so the generic
/// plan is the same plan, made once.
fn postgres_event_writer_options(max_connections: u32) -> AnyPoolOptions {
    postgres_pool_options(max_connections).after_connect(|conn, _meta| {
        Box::pin(async move {
            sqlx::raw_sql("SET plan_cache_mode = force_generic_plan").execute(conn).await?;
            Ok(())
        })
    })
}

/// How many read connections SQLite gets for `max_connections` asked for: at least two, and
/// at most one per core. A SQLite read runs on the CPU of its connection's thread (the file is
/// in the page cache), so more connections only add threads, page caches (each up to 2 MB) and
/// prepared statements (each connection prepares its own) without reading faster.
fn sqlite_readers(max_connections: u32) -> usize {
    usize::try_from(max_connections).unwrap_or(usize::MAX).clamp(2, ranvier_core::util::cores().max(2))
}

/// The settings of every SQLite connection. WAL lets readers run beside the writer; FULL
/// makes every commit durable before it is acknowledged. Temporary B-trees and statement
/// journals stay in memory rather than in a file created and deleted for each.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; \
     PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;";

/// [`SQLITE_PRAGMAS`] and a page cache of `cache_kib` KiB (a negative `cache_size` is in KiB).
fn sqlite_setup(cache_kib: u32) -> String {
    format!("{SQLITE_PRAGMAS} PRAGMA cache_size=-{};", cache_kib.max(4))
}

/// Pool options of the one-connection SQLite pool the migrations run on (closed once they
/// have run; reads then go through [`readers`]).
fn sqlite_migration_pool_options() -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(1).acquire_timeout(Duration::from_secs(30)).after_connect(|conn, _meta| {
        Box::pin(async move {
            sqlx::raw_sql(SQLITE_PRAGMAS).execute(conn).await?;
            Ok(())
        })
    })
}

/// Convert a stored 0/1 integer into a bool.
pub fn flag(value: i64) -> bool {
    value != 0
}

#[cfg(test)]
mod tests {
    use super::in_list;

    #[test]
    fn in_lists_are_padded_with_their_last_value_to_a_power_of_two() {
        let values = ["a", "b", "c", "d", "e"];
        assert_eq!(in_list(&values), [&"a", &"b", &"c", &"d", &"e", &"e", &"e", &"e"]);
        assert_eq!(in_list(&values[..4]), [&"a", &"b", &"c", &"d"]);
        assert_eq!(in_list(&values[..1]), [&"a"]);
        assert!(in_list::<&str>(&[]).is_empty());
        let lengths: std::collections::BTreeSet<usize> = (1..=200).map(|n| in_list(&vec![0; n]).len()).collect();
        assert_eq!(lengths.into_iter().collect::<Vec<_>>(), [1, 2, 4, 8, 16, 32, 64, 128, 256]);
    }
}
