//! The connections reads run on ([`Readers`]): on PostgreSQL sqlx's pool, on SQLite a small
//! pool of our own.
//!
//! sqlx's pool checks every connection when it is given back (a round trip to the
//! connection), which a SQLite connection does not need: it is a file on this machine, and a
//! statement cut short is reset by the connection's thread as soon as nobody waits for its
//! rows. On SQLite every statement already costs a hand-over to the connection's thread and
//! back; the check doubled that for each read. [`SqliteReaders`] hands connections out and
//! takes them back without it.

use std::sync::Arc;

use futures_util::{
    StreamExt, TryStreamExt,
    future::BoxFuture,
    stream::{self, BoxStream},
};
use ranvier_core::{Result, error::Context};
use sqlx::{
    Any, AnyConnection, AnyPool, Connection, Database, Either, Execute, Executor, SqlStr,
    any::{AnyConnectOptions, AnyQueryResult, AnyRow},
    pool::PoolConnection,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a read waits for a SQLite connection before it fails (sqlx's pool waits as long).
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The connections for reads. Cheap to clone; used as a sqlx executor (`&Readers`).
#[derive(Clone)]
pub struct Readers {
    kind: Arc<Kind>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.kind {
            Kind::Pool(pool) => f.debug_tuple("Readers").field(pool).finish(),
            Kind::Sqlite(readers) => f.debug_struct("Readers").field("sqlite", &readers.permits).finish(),
        }
    }
}

enum Kind {
    Pool(AnyPool),
    Sqlite(Arc<SqliteReaders>),
}

/// Up to a fixed number of SQLite connections, opened when first needed and kept open.
struct SqliteReaders {
    options: AnyConnectOptions,
    /// Settings run on each connection once it is open.
    setup: String,
    /// Connections not in use.
    idle: parking_lot::Mutex<Vec<AnyConnection>>,
    /// One permit per connection that may be in use.
    permits: Arc<Semaphore>,
}

/// A connection of [`Readers`], given back when dropped.
pub struct ReadConn {
    conn: Option<Conn>,
}

enum Conn {
    Pooled(PoolConnection<Any>),
    Sqlite { conn: AnyConnection, readers: Arc<SqliteReaders>, _permit: OwnedSemaphorePermit },
}

impl Readers {
    /// Reads through sqlx's pool.
    pub(crate) fn pool(pool: AnyPool) -> Self {
        Self { kind: Arc::new(Kind::Pool(pool)) }
    }

    /// Reads on up to `max` SQLite connections opened with `options`, each set up with the
    /// statements in `setup`.
    pub(crate) fn sqlite(options: AnyConnectOptions, setup: String, max: usize) -> Self {
        let readers = SqliteReaders {
            options,
            setup,
            idle: parking_lot::Mutex::new(Vec::with_capacity(max)),
            permits: Arc::new(Semaphore::new(max)),
        };
        Self { kind: Arc::new(Kind::Sqlite(Arc::new(readers))) }
    }

    /// PostgreSQL's pool (`None` on SQLite).
    pub(crate) fn postgres_pool(&self) -> Option<&AnyPool> {
        match &*self.kind {
            Kind::Pool(pool) => Some(pool),
            Kind::Sqlite(_) => None,
        }
    }

    /// A connection for a sequence of reads.
    pub async fn acquire(&self) -> Result<ReadConn> {
        self.take().await.context("acquire database connection")
    }

    async fn take(&self) -> sqlx::Result<ReadConn> {
        let conn = match &*self.kind {
            Kind::Pool(pool) => Conn::Pooled(pool.acquire().await?),
            Kind::Sqlite(readers) => {
                // As sqlx's pool does: an error after a while rather than a wait without end.
                let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, readers.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?
                    .map_err(|_| sqlx::Error::PoolClosed)?;
                let idle = readers.idle.lock().pop();
                let conn = match idle {
                    Some(conn) => conn,
                    None => readers.open().await?,
                };
                Conn::Sqlite { conn, readers: readers.clone(), _permit: permit }
            }
        };
        Ok(ReadConn { conn: Some(conn) })
    }

    /// Close every connection (those in use close when given back).
    pub async fn close(&self) {
        match &*self.kind {
            Kind::Pool(pool) => pool.close().await,
            Kind::Sqlite(readers) => {
                readers.permits.close();
                let idle = std::mem::take(&mut *readers.idle.lock());
                for conn in idle {
                    let _ = conn.close().await;
                }
            }
        }
    }
}

impl SqliteReaders {
    async fn open(&self) -> sqlx::Result<AnyConnection> {
        let mut conn = AnyConnection::connect_with(&self.options).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(self.setup.clone())).execute(&mut conn).await?;
        Ok(conn)
    }
}

impl Drop for ReadConn {
    fn drop(&mut self) {
        if let Some(Conn::Sqlite { conn, readers, _permit }) = self.conn.take()
            && !readers.permits.is_closed()
        {
            // Given back before the permit (dropped after this) lets another task in.
            readers.idle.lock().push(conn);
        }
    }
}

impl std::ops::Deref for ReadConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self.conn.as_ref().expect("present until dropped") {
            Conn::Pooled(conn) => conn,
            Conn::Sqlite { conn, .. } => conn,
        }
    }
}

impl std::ops::DerefMut for ReadConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self.conn.as_mut().expect("present until dropped") {
            Conn::Pooled(conn) => conn,
            Conn::Sqlite { conn, .. } => conn,
        }
    }
}

impl<'p> Executor<'p> for &'_ Readers {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, sqlx::Result<Either<AnyQueryResult, AnyRow>>>
    where
        E: 'q + Execute<'q, Any>,
    {
        if let Kind::Pool(pool) = &*self.kind {
            return pool.fetch_many(query);
        }
        // The rows are collected before they are handed on: a stream would have to hold the
        // connection it borrows from.
        let readers = self.clone();
        let rows = async move {
            let mut conn = readers.take().await?;
            conn.fetch_many(query).try_collect::<Vec<_>>().await
        };
        stream::once(rows).map_ok(|rows| stream::iter(rows.into_iter().map(Ok))).try_flatten().boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Option<AnyRow>>>
    where
        E: 'q + Execute<'q, Any>,
    {
        if let Kind::Pool(pool) = &*self.kind {
            return pool.fetch_optional(query);
        }
        let readers = self.clone();
        Box::pin(async move {
            let mut conn = readers.take().await?;
            conn.fetch_optional(query).await
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [<Any as Database>::TypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<<Any as Database>::Statement>>
    where
        'p: 'e,
    {
        let readers = self.clone();
        Box::pin(async move {
            let mut conn = readers.take().await?;
            conn.prepare_with(sql, parameters).await
        })
    }
}
