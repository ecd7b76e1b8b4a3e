//! The connection pool and the per-request unit of work.
//!
//! [`unit_of_work`] is the middleware stage that attaches a [`UnitOfWork`] to every request;
//! handlers reach it through the [`RequestDb`] extractor. Nothing touches the pool until a
//! handler asks:
//!
//! - reads ([`RequestDb::reader`]) run on the pool, one pooled connection per statement, with
//!   no `BEGIN`/`COMMIT` round trips (a request that only reads has nothing to commit);
//! - the first write ([`RequestDb::writer`]) begins a transaction on one pooled connection,
//!   which the request keeps until its response is ready. The middleware then commits if the
//!   status is below 400 and rolls back otherwise, *before* the response head is sent, so a
//!   failed commit becomes a 503 problem instead of a 2xx for data that was not stored;
//! - a request whose whole write is one statement ([`RequestDb::single_statement`]) runs it
//!   in autocommit: one statement is atomic by itself, so it is all-or-nothing without the
//!   `BEGIN` and `COMMIT` round trips (one round trip instead of three).
//!
//! The connection returns to the pool on every path: after commit or rollback, and — when the
//! request future is dropped because the client went away or the server is stopping — by a
//! rollback task spawned from [`UnitOfWork`]'s `Drop`.

use std::{rc::Rc, sync::Arc, time::Duration};

use actix_web::{
    FromRequest, HttpMessage, HttpRequest,
    body::{EitherBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    web,
};
use futures_util::{StreamExt, stream::LocalBoxStream};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseExecutor, DatabaseTransaction, DbBackend, DbErr, QueryResult, RuntimeErr,
    SqliteTransactionMode, Statement, StreamTrait, TransactionOptions, TransactionTrait, sqlx,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::{
    config::{Backend, Settings},
    error::ApiError,
    startup::AppState,
};
use sea_orm::sea_query::Values;
use sea_query_sqlx::SqlxValues;

/// Open the pool described by `settings` (sized per backend, SQLite in WAL mode).
pub async fn connect(settings: &Settings) -> Result<DatabaseConnection, DbErr> {
    let url = settings.database_url.expose();
    migration::database::ensure_sqlite_dir(url)
        .map_err(|e| DbErr::Custom(format!("cannot create the SQLite directory: {e}")))?;
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(settings.db_pool_max)
        .min_connections(settings.db_pool_min)
        .acquire_timeout(settings.db_acquire_timeout)
        .connect_timeout(settings.db_acquire_timeout)
        // A connection broken by a database restart is dropped instead of failing a request.
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(600))
        .sqlx_logging(false);
    if settings.database_url.backend() == Backend::Sqlite {
        // SQLite has one writer at a time whatever the pool size, so for a writer the write
        // lock is the scarce resource: it waits for it as long as for a pooled connection,
        // then answers 503 (SQLITE_BUSY), instead of queueing behind a long writer.
        let lock_timeout = settings.db_acquire_timeout;
        options.map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(lock_timeout)
                .foreign_keys(true)
        });
    }
    Database::connect(options).await
}

/// Where requests' database work runs.
#[derive(Clone, Debug)]
pub enum DbSource {
    /// Production: the pool (build it with [`DbSource::pool`]).
    Pool(DatabaseConnection, WriterGate),
    /// Tests: every request runs inside one outer transaction that the test rolls back at
    /// its end; a request's own transaction is a savepoint in it.
    Pinned(Arc<DatabaseTransaction>),
}

/// Run SeaORM's `$statement` on the driver behind `$pool` (a `DatabaseConnection`): `$body`
/// sees the sqlx query with the statement's values bound as `$query` and the driver's pool as
/// `$driver` — what SeaORM does inside its executor, for each backend. A backend without a
/// driver here (none is compiled in today) evaluates `$unsupported` with the error.
///
/// Fetches run on the pool itself (sqlx's executor for a pool, one boxed future that
/// acquires, runs and releases), not on a connection acquired first: `Pool::acquire`'s future
/// holds the driver's connect future inline, kilobytes that every handler awaiting it would
/// copy into its box on every request.
macro_rules! on_driver {
    ($pool:expr, $statement:expr, |$query:ident, $driver:ident| $body:expr,
        else |$error:ident| $unsupported:expr) => {{
        let Statement { sql, values, .. } = $statement;
        let values = SqlxValues(values.unwrap_or_else(|| Values(Vec::new())));
        match $pool.get_database_backend() {
            DbBackend::Postgres => {
                let $driver = $pool.get_postgres_connection_pool();
                let $query = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                $body
            }
            DbBackend::MySql => {
                let $driver = $pool.get_mysql_connection_pool();
                let $query = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                $body
            }
            DbBackend::Sqlite => {
                let $driver = $pool.get_sqlite_connection_pool();
                let $query = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                $body
            }
            #[allow(unreachable_patterns)]
            backend => {
                let $error = DbErr::BackendNotSupported {
                    db: backend.as_str(),
                    ctx: "on_driver",
                };
                $unsupported
            }
        }
    }};
}

/// Every row of a read `statement`, streamed from a connection of its own (exports).
///
/// On the pool, the connection comes from the driver's pool and counts in its budget. A
/// stream dropped midway (the client went away) leaves the driver mid-result; sqlx would
/// then "ping" it on release, and sqlx-mysql can wait forever doing so, keeping the pool
/// slot (seen as an abandoned export that never gave its connection back on MariaDB). So a
/// stream that did not finish detaches its connection from the pool and drops it — the
/// socket closes, the pool may open a replacement. Pinned to a test's transaction, the rows
/// stream through SeaORM from that transaction.
pub fn stream_rows(
    source: DbSource,
    statement: Statement,
) -> LocalBoxStream<'static, Result<QueryResult, DbErr>> {
    let pool = match source {
        DbSource::Pinned(txn) => {
            return async_stream::try_stream! {
                let mut rows = txn.stream_raw(statement).await?;
                while let Some(row) = rows.next().await {
                    yield row?;
                }
            }
            .boxed_local();
        }
        DbSource::Pool(pool, _) => pool,
    };
    on_driver!(pool, statement, |query, driver| {
        let driver = driver.clone();
        async_stream::try_stream! {
            let mut conn = Unfinished(Some(acquire(&driver).await?));
            let mut rows = query.fetch(conn.get());
            while let Some(row) = rows.next().await {
                yield QueryResult::from(row.map_err(driver_error)?);
            }
            drop(rows);
            conn.finish();
        }
        .boxed_local()
    }, else |unsupported| {
        futures_util::stream::once(std::future::ready(Err(unsupported))).boxed_local()
    })
}

/// A streaming connection: returned to the pool by [`Unfinished::finish`], detached from the
/// pool and closed if dropped before (see [`stream_rows`]).
struct Unfinished<DB: sqlx::Database>(Option<sqlx::pool::PoolConnection<DB>>);

impl<DB: sqlx::Database> Unfinished<DB> {
    fn get(&mut self) -> &mut DB::Connection {
        self.0
            .as_mut()
            .expect("the connection is taken only by finish")
    }

    /// The result was read to its end: the connection is clean, back to the pool.
    fn finish(mut self) {
        drop(self.0.take());
    }
}

impl<DB: sqlx::Database> Drop for Unfinished<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
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
pub struct Write {
    txn: DatabaseTransaction,
    _turn: Option<OwnedSemaphorePermit>,
}

impl DbSource {
    /// The pool, with a writer gate on SQLite; waiting at the gate longer than
    /// `acquire_timeout` answers 503 like waiting for a connection.
    pub fn pool(conn: DatabaseConnection, acquire_timeout: Duration) -> Self {
        let sqlite = conn.get_database_backend() == sea_orm::DbBackend::Sqlite;
        let gate = WriterGate {
            permits: sqlite.then(|| Arc::new(Semaphore::new(1))),
            timeout: acquire_timeout,
        };
        Self::Pool(conn, gate)
    }

    /// An executor for reads outside any request transaction.
    pub fn executor(&self) -> DatabaseExecutor<'_> {
        match self {
            Self::Pool(pool, _) => DatabaseExecutor::Connection(pool),
            Self::Pinned(txn) => DatabaseExecutor::Transaction(txn),
        }
    }

    /// Begin a write transaction. On SQLite it is `IMMEDIATE`: it takes the write lock at
    /// once (after this process's writer gate), so a read that turns into a write cannot
    /// fail with `SQLITE_BUSY`.
    pub async fn begin_write(&self) -> Result<Write, DbErr> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        let started = std::time::Instant::now();
        let write = match self {
            Self::Pool(pool, gate) => {
                let turn = gate.enter().await?;
                // `BEGIN` runs to its end on a task of its own. Cancelled midway — the
                // request dropped because its client went away — it would leave the server
                // inside a transaction the driver does not count (sqlx counts it once the
                // reply is read, so nothing rolls it back), and the connection would go back
                // to the pool inside it: the next request's autocommitted statement would run
                // in that transaction and never commit. On the task, a transaction that
                // nobody awaits any more is dropped once begun, which rolls it back.
                let pool = pool.clone();
                let txn = tokio::spawn(async move { pool.begin_with_options(options).await })
                    .await
                    .map_err(|error| DbErr::Custom(format!("BEGIN did not finish: {error}")))??;
                Write { txn, _turn: turn }
            }
            Self::Pinned(txn) => Write {
                txn: txn.begin().await?,
                _turn: None,
            },
        };
        metrics::histogram!("db_pool_acquire_seconds").record(started.elapsed().as_secs_f64());
        Ok(write)
    }
}

/// One request's database state: its source and, once a handler wrote, its transaction.
pub struct UnitOfWork {
    source: DbSource,
    txn: Mutex<Option<Write>>,
}

impl UnitOfWork {
    fn new(source: DbSource) -> Self {
        Self {
            source,
            txn: Mutex::new(None),
        }
    }

    /// Finish the request's transaction, if it began one: commit when `commit`, else roll back.
    async fn finish(&self, commit: bool) -> Result<(), DbErr> {
        let Some(write) = self.txn.lock().await.take() else {
            return Ok(());
        };
        // The writer-gate turn is released when `write` drops, after the commit/rollback.
        if commit {
            cold(write.txn.commit()).await
        } else {
            cold(write.txn.rollback()).await
        }
    }
}

impl Drop for UnitOfWork {
    /// Reached with a transaction only when the request future was dropped before the
    /// middleware finished it (client gone, server stopping). SeaORM's own `Drop` would panic
    /// if the transaction were still borrowed, so roll back explicitly on a task instead.
    fn drop(&mut self) {
        let Some(write) = self.txn.get_mut().take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let Write { txn, _turn } = write;
                    if let Err(error) = txn.rollback().await {
                        tracing::warn!(%error, "rollback of an abandoned request failed");
                    }
                });
            }
            // No runtime left: dropping queues the rollback on the connection itself.
            Err(_) => drop(write),
        }
    }
}

/// Middleware stage: give the request a lazy [`UnitOfWork`], run `inner` (the handler), and
/// settle the unit of work once the response is ready.
pub async fn unit_of_work<B: MessageBody>(
    req: ServiceRequest,
    inner: impl AsyncFnOnce(ServiceRequest) -> Result<ServiceResponse<B>, actix_web::Error>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Err(ApiError::Internal("application state is missing".into()).into());
    };
    let uow = Rc::new(UnitOfWork::new(state.db.clone()));
    req.extensions_mut().insert(Rc::clone(&uow));

    let result = inner(req).await;
    let commit = matches!(&result, Ok(response) if response.status().as_u16() < 400);
    let settled = uow.finish(commit).await;
    match (result, settled) {
        (Err(error), _) => Err(error),
        (Ok(response), Ok(())) => Ok(response.map_into_left_body()),
        (Ok(response), Err(error)) => {
            let (req, _) = response.into_parts();
            let failure = ApiError::from_db(&error, "commit");
            Ok(ServiceResponse::from_err(failure, req).map_into_right_body())
        }
    }
}

/// Extractor: the request's database handle.
pub struct RequestDb(Rc<UnitOfWork>);

impl RequestDb {
    /// Executor for reads that need no transaction (runs on the pool).
    pub fn reader(&self) -> DatabaseExecutor<'_> {
        self.0.source.executor()
    }

    /// The database's backend (to build statements for it).
    pub fn backend(&self) -> DbBackend {
        self.reader().get_database_backend()
    }

    /// The request's transaction, begun on first use and settled by the middleware.
    pub async fn writer(&self) -> Result<MappedMutexGuard<'_, DatabaseTransaction>, ApiError> {
        let mut slot = self.0.txn.lock().await;
        if slot.is_none() {
            let txn = cold(self.0.source.begin_write())
                .await
                .map_err(|e| ApiError::from_db(&e, "begin"))?;
            *slot = Some(txn);
        }
        Ok(MutexGuard::map(slot, |write| {
            &mut write
                .as_mut()
                .expect("the transaction was set just above")
                .txn
        }))
    }

    /// Where a request whose whole write is this one statement runs it.
    ///
    /// On the pool the statement autocommits: a single statement is atomic, so the request's
    /// write is still all-or-nothing, and it saves the `BEGIN` and `COMMIT` round trips of a
    /// transaction. Call it only for the handler's last fallible step: a statement that has
    /// autocommitted is not undone by an error after it.
    ///
    /// On SQLite the statement takes the write lock for its own execution only, so it does
    /// not queue at the writer gate — queueing there serialised whole round trips and halved
    /// `POST /notes` throughput in the benchmark. It waits in SQLite's busy handler instead,
    /// up to `DB_ACQUIRE_TIMEOUT_MS`, then answers 503 like a writer at the gate.
    ///
    /// When the request already began a transaction, or the source is pinned to a test's
    /// transaction, the statement runs in the request's transaction (a failed statement must
    /// not abort the test's outer transaction) and the middleware settles it as usual.
    pub async fn single_statement(&self) -> Result<SingleStatement<'_>, ApiError> {
        let started = self.0.txn.try_lock().map(|slot| slot.is_some());
        match (&self.0.source, started) {
            (DbSource::Pool(pool, _), Ok(false)) => Ok(SingleStatement::Autocommit(pool)),
            _ => self.writer().await.map(SingleStatement::Transaction),
        }
    }

    /// The first row of a read `statement` (built by SeaORM), run on the driver's pool
    /// directly; decode it with SeaORM (`Model::from_query_result`).
    ///
    /// SeaORM's executor wraps each call in futures sized for all three backends and boxes and
    /// moves them several times; on `GET /notes/{id}` that cost a quarter of the throughput of
    /// a hand-written server in the benchmark. Running the same statement and values on the
    /// driver (as SeaORM does inside) keeps SeaORM's query building and decoding and drops
    /// that cost. Pinned to a test's transaction, it goes through SeaORM's executor as usual.
    pub async fn query_one(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.runner().first(statement).await
    }

    /// Every row of a read `statement` (built by SeaORM), run on the driver's pool directly:
    /// see [`RequestDb::query_one`].
    pub async fn query_all(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.runner().all(statement).await
    }

    fn runner(&self) -> Runner<'_> {
        match &self.0.source {
            DbSource::Pool(pool, _) => Runner::Driver(pool),
            DbSource::Pinned(_) => Runner::SeaOrm(self.reader()),
        }
    }

    /// The source itself, for work that outlives the handler (streamed responses).
    pub fn source(&self) -> &DbSource {
        &self.0.source
    }
}

/// A future kept out of line, for a path that is not the hot one.
///
/// An `async fn` is as large as the largest future it awaits, and every handler's future is
/// moved into a box per request. SeaORM's executor futures are sized for all three backends
/// (kilobytes), so one awaited inline on a fallback path — pinned test transactions, `BEGIN`
/// — made every request copy them: callgrind showed memcpy at 9 k instructions per
/// `GET /notes/{id}` (the baseline's whole request is 86 k). Boxed, they cost one allocation
/// when taken and nothing when not.
pub fn cold<'a, T>(
    future: impl Future<Output = T> + 'a,
) -> std::pin::Pin<Box<dyn Future<Output = T> + 'a>> {
    Box::pin(future)
}

/// A driver error as SeaORM reports it — a pool that had no connection to give as an acquire
/// error — so [`ApiError::from_db`] classifies both paths alike.
fn driver_error(error: sqlx::Error) -> DbErr {
    match error {
        sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        error => DbErr::Query(RuntimeErr::SqlxError(Arc::new(error))),
    }
}

/// A pooled connection of the driver's, or the acquire error as SeaORM reports it.
async fn acquire<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<sqlx::pool::PoolConnection<DB>, DbErr> {
    pool.acquire().await.map_err(|error| match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => driver_error(error),
        error => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(error))),
    })
}

/// A request's one-statement write: see [`RequestDb::single_statement`].
pub enum SingleStatement<'a> {
    /// On the pool, in autocommit.
    Autocommit(&'a DatabaseConnection),
    /// In the request's transaction.
    Transaction(MappedMutexGuard<'a, DatabaseTransaction>),
}

impl SingleStatement<'_> {
    /// The executor to run the statement on.
    pub fn executor(&self) -> DatabaseExecutor<'_> {
        match self {
            Self::Autocommit(pool) => DatabaseExecutor::Connection(pool),
            Self::Transaction(txn) => DatabaseExecutor::Transaction(txn),
        }
    }

    /// Run a statement (built by SeaORM) that returns one row — `INSERT … RETURNING` — and
    /// return that row. In autocommit it runs on the driver's pool directly, for the reason
    /// given at [`RequestDb::query_one`]; in a transaction, through SeaORM's executor.
    ///
    /// The result is read to its end, not just to its first row: in autocommit the statement
    /// commits when it completes, and the MySQL and SQLite drivers hand over the first row
    /// earlier (`fetch_optional`), which would let a 201 go out before the row is committed.
    pub async fn query_one(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        let runner = match self {
            Self::Autocommit(pool) => Runner::Driver(pool),
            Self::Transaction(_) => Runner::SeaOrm(self.executor()),
        };
        Ok(runner.all(statement).await?.into_iter().next())
    }
}

/// Where a statement built by SeaORM runs: on the driver's pool directly (the hot path), or
/// through SeaORM's executor — a transaction — boxed by [`cold`].
enum Runner<'a> {
    Driver(&'a DatabaseConnection),
    SeaOrm(DatabaseExecutor<'a>),
}

impl Runner<'_> {
    /// The first row, for a read: drivers may stop reading the result there.
    async fn first(self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        let pool = match self {
            Self::Driver(pool) => pool,
            Self::SeaOrm(executor) => return cold(executor.query_one_raw(statement)).await,
        };
        on_driver!(pool, statement, |query, driver| {
            let row = query.fetch_optional(driver).await.map_err(driver_error)?;
            Ok(row.map(Into::into))
        }, else |unsupported| Err(unsupported))
    }

    /// Every row.
    async fn all(self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let pool = match self {
            Self::Driver(pool) => pool,
            Self::SeaOrm(executor) => return cold(executor.query_all_raw(statement)).await,
        };
        on_driver!(pool, statement, |query, driver| {
            let rows = query.fetch_all(driver).await.map_err(driver_error)?;
            Ok(rows.into_iter().map(Into::into).collect())
        }, else |unsupported| Err(unsupported))
    }
}

impl FromRequest for RequestDb {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let uow = req.extensions().get::<Rc<UnitOfWork>>().cloned();
        std::future::ready(
            uow.map(RequestDb)
                .ok_or_else(|| ApiError::Internal("the unit-of-work middleware is missing".into())),
        )
    }
}
