//! The connection pool and the per-request unit of work.
//!
//! [`unit_of_work`] is a middleware that attaches a [`UnitOfWork`] to every request; handlers
//! reach it through the [`RequestDb`] extractor. Nothing touches the pool until a handler asks:
//!
//! - reads ([`RequestDb::reader`]) run on the pool, one pooled connection per statement, with
//!   no `BEGIN`/`COMMIT` round trips (a request that only reads has nothing to commit);
//! - the first write ([`RequestDb::writer`]) begins a transaction on one pooled connection,
//!   which the request keeps until its response is ready. The middleware then commits if the
//!   status is below 400 and rolls back otherwise, *before* the response head is sent, so a
//!   failed commit becomes a 503 problem instead of a 2xx for data that was not stored.
//!
//! The connection returns to the pool on every path: after commit or rollback, and — when the
//! request future is dropped because the client went away or the server is stopping — by a
//! rollback task spawned from [`UnitOfWork`]'s `Drop`.

use std::{rc::Rc, sync::Arc, time::Duration};

use actix_web::{
    FromRequest, HttpMessage, HttpRequest,
    body::{EitherBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, Database, DatabaseConnection, DatabaseExecutor,
    DatabaseTransaction, DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::{
    config::{Backend, Settings},
    error::ApiError,
    startup::AppState,
};

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
                let txn = pool.begin_with_options(options).await?;
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
            write.txn.commit().await
        } else {
            write.txn.rollback().await
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

/// Middleware: give each request a lazy [`UnitOfWork`] and settle it once the response is ready.
pub async fn unit_of_work(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Err(ApiError::Internal("application state is missing".into()).into());
    };
    let uow = Rc::new(UnitOfWork::new(state.db.clone()));
    req.extensions_mut().insert(Rc::clone(&uow));

    let result = next.call(req).await;
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

    /// The request's transaction, begun on first use and settled by the middleware.
    pub async fn writer(&self) -> Result<MappedMutexGuard<'_, DatabaseTransaction>, ApiError> {
        let mut slot = self.0.txn.lock().await;
        if slot.is_none() {
            let txn = self
                .0
                .source
                .begin_write()
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

    /// The source itself, for work that outlives the handler (streamed responses).
    pub fn source(&self) -> &DbSource {
        &self.0.source
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
