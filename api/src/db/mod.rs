//! The database layer: the pool, and each request's handle on it.
//!
//! Handlers reach the database only through [`RequestDb`], in SeaORM's terms: they pass
//! entities' ids, `Select`s, `ActiveModel`s and delete/update statements, and get the
//! entities' models back. Where each statement runs is decided here, once:
//!
//! - reads run on the pool, outside any transaction (a request that only reads has nothing to
//!   commit), or in the request's transaction once it has one;
//! - a request's writes form one unit of work: the first multi-statement write begins a
//!   transaction ([`RequestDb::transaction`]) that the middleware commits when the response
//!   status is below 400 and rolls back otherwise, before the response head is sent;
//! - a write that is one statement ([`RequestDb::insert`], [`RequestDb::execute`]) runs in
//!   autocommit when the request has no transaction: one statement is atomic by itself.
//!
//! A statement on the pool outside a transaction runs on the driver's pool itself
//! (`driver.rs`, measured cheaper than SeaORM's `DatabaseConnection`; export streams there also
//! close an abandoned connection instead of returning it mid-result); one in a transaction
//! runs through SeaORM's executor. The SQL of the hot statements is built by SeaORM once per
//! shape (`statements.rs`). Both paths decode through SeaORM's `FromQueryResult`: into the
//! entities' models, or a view such as `note::Listed` (lists and exports). With a read replica
//! (`replica.rs`), a request that only reads may run its reads there.

mod driver;
pub mod error;
pub mod follow;
pub mod replica;
mod request;
mod statements;

use std::{sync::Arc, time::Duration};

use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Backend, DatabaseUrl, Settings};

pub use replica::Replica;
pub use request::{Begun, RequestDb, Rows, Transaction, UnitOfWork};

/// The page cache of each SQLite connection, in KiB (SQLite's own default is 2 000).
///
/// Each of the pool's connections keeps its own cache, and the kernel keeps the file's pages
/// anyway: with SQLite's default, the 8 connections of a search-heavy api held 16 MiB of
/// copies of the same pages (peak RSS 65 against 39 MiB with 512 KiB, on a million notes,
/// with no change in requests/s — bench/RESULTS.md).
const SQLITE_PAGE_CACHE_KIB: u32 = 512;

/// Open the pool described by `settings` (sized per backend, SQLite in WAL mode; on a
/// PostgreSQL URL that lists several hosts, following the one that fits: `follow.rs`).
pub async fn connect(settings: &Settings) -> Result<DatabaseConnection, DbErr> {
    let url = &settings.database_url;
    migration::database::ensure_sqlite_dir(url.expose())
        .map_err(|e| DbErr::Custom(format!("cannot create the SQLite directory: {e}")))?;
    let sqlite = url.backend() == Backend::Sqlite;
    open("primary", url, settings, false, |url| {
        let mut options = pool_options(settings, url, settings.db_pool_min, false);
        if sqlite {
            // SQLite has one writer at a time whatever the pool size, so for a writer the write
            // lock is the scarce resource: it waits for it as long as for a pooled connection,
            // then answers 503 (SQLITE_BUSY), instead of queueing behind a long writer.
            let lock_timeout = settings.db_acquire_timeout;
            options.map_sqlx_sqlite_opts(move |o| {
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(lock_timeout)
                    .foreign_keys(true)
                    .pragma("cache_size", format!("-{SQLITE_PAGE_CACHE_KIB}"))
            });
        }
        options
    })
    .await
}

/// The options of the server's pools (the primary's and the replica's) on `url`.
fn pool_options(settings: &Settings, url: String, min: u32, lazy: bool) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(settings.db_pool_max)
        .min_connections(min)
        .acquire_timeout(settings.db_acquire_timeout)
        .connect_timeout(settings.db_acquire_timeout)
        // A connection broken by a database restart is dropped instead of failing a request.
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(600))
        .connect_lazy(lazy)
        .sqlx_logging(false);
    options
}

/// A pool on `url` with the options `build` makes for one host's URL: on a PostgreSQL URL
/// that lists several hosts, it follows the one that fits (`follow.rs`; `lazy`: the first
/// host when none fits yet).
async fn open(
    pool: &'static str,
    url: &DatabaseUrl,
    settings: &Settings,
    lazy: bool,
    build: impl FnOnce(String) -> ConnectOptions,
) -> Result<DatabaseConnection, DbErr> {
    match url.hosts() {
        Some(hosts) => {
            follow::connect(
                pool,
                hosts.clone(),
                settings.db_acquire_timeout,
                lazy,
                build,
            )
            .await
        }
        None => Database::connect(build(url.expose().to_owned())).await,
    }
}

/// Where requests' database work runs: the pool, its writer gate, and the read replica, if
/// any. Cloned into every request (the clones share all three).
#[derive(Clone, Debug)]
pub struct DbSource {
    pool: DatabaseConnection,
    writer_gate: WriterGate,
    replica: Option<Arc<Replica>>,
}

impl DbSource {
    /// The pool, with a writer gate on SQLite; waiting at the gate longer than
    /// `acquire_timeout` answers 503 like waiting for a connection.
    pub fn pool(pool: DatabaseConnection, acquire_timeout: Duration) -> Self {
        let sqlite = pool.get_database_backend() == sea_orm::DbBackend::Sqlite;
        let writer_gate = WriterGate {
            permits: sqlite.then(|| Arc::new(Semaphore::new(1))),
            timeout: acquire_timeout,
        };
        Self {
            pool,
            writer_gate,
            replica: None,
        }
    }

    /// Requests that only read use `replica` when it is fit (see `replica.rs`).
    /// The primary's pool, for work outside any request (a stream's reads between events).
    pub fn primary(&self) -> &DatabaseConnection {
        &self.pool
    }

    pub fn with_replica(self, replica: Arc<Replica>) -> Self {
        Self {
            replica: Some(replica),
            ..self
        }
    }

    /// The read replica, if one is configured.
    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.replica.as_ref()
    }

    /// The primary's write position after a request's writes committed, for its client's
    /// cookie: `None` without a replica (nothing to compare it with).
    pub async fn written_position(&self) -> Option<u64> {
        self.replica.as_ref()?;
        match replica::written_position(&self.pool).await {
            Ok(position) => Some(position),
            Err(error) => {
                tracing::warn!(%error, "the write position could not be read");
                None
            }
        }
    }

    /// Begin a write transaction. On SQLite it is `IMMEDIATE`: it takes the write lock at
    /// once (after this process's writer gate), so a read that turns into a write cannot
    /// fail with `SQLITE_BUSY`.
    async fn begin_write(&self) -> Result<Write, DbErr> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        let started = std::time::Instant::now();
        let turn = self.writer_gate.enter().await?;
        // `BEGIN` runs to its end on a task of its own. Cancelled midway (the client went
        // away) it would leave the server inside a transaction the driver does not count, and
        // the connection would go back to the pool inside it. On the task, a transaction
        // nobody awaits any more is dropped once begun, which rolls it back.
        let pool = self.pool.clone();
        let txn = tokio::spawn(async move { pool.begin_with_options(options).await })
            .await
            .map_err(|error| DbErr::Custom(format!("BEGIN did not finish: {error}")))??;
        metrics::histogram!("db_pool_acquire_seconds").record(started.elapsed().as_secs_f64());
        Ok(Write { txn, _turn: turn })
    }

    /// The pool's open and idle connections.
    pub fn pool_status(&self) -> Option<(u32, usize)> {
        driver::pool_status(&self.pool)
    }

    /// `SELECT 1`, to tell whether the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.pool.execute_unprepared("SELECT 1").await.map(|_| ())
    }
}

/// SQLite has one writer at a time. Writers that all `BEGIN IMMEDIATE` at once would wait
/// in SQLite's busy handler, which polls with sleeps of up to 100 ms; queueing them here
/// instead, first come first served, hands the lock over as soon as it is free. Other
/// backends have row locks and need no gate.
#[derive(Clone, Debug)]
pub struct WriterGate {
    permits: Option<Arc<Semaphore>>,
    timeout: Duration,
}

impl WriterGate {
    async fn enter(&self) -> Result<Option<OwnedSemaphorePermit>, DbErr> {
        let Some(permits) = &self.permits else {
            return Ok(None);
        };
        match tokio::time::timeout(self.timeout, Arc::clone(permits).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            Ok(Err(_)) => Err(DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)),
            Err(_) => Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
        }
    }
}

/// A request's write transaction, with its turn at the writer gate (SQLite).
struct Write {
    txn: DatabaseTransaction,
    _turn: Option<OwnedSemaphorePermit>,
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement};

    use super::*;

    #[tokio::test]
    async fn sqlite_connections_keep_a_small_page_cache() {
        let settings = Settings::for_database("sqlite::memory:").unwrap();
        let db = connect(&settings).await.unwrap();
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "PRAGMA cache_size",
            ))
            .await
            .unwrap()
            .unwrap();
        let kib: i64 = row.try_get_by_index(0).unwrap();
        assert_eq!(kib, -i64::from(SQLITE_PAGE_CACHE_KIB));
    }
}
