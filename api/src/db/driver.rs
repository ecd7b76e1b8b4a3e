//! The fast executor: a statement built by SeaORM, run on the driver's connection itself.
//!
//! Used for statements outside a transaction (reads, autocommitted one-statement writes, on
//! the request's own connection: [`RequestConnection`]) and export streams. Through SeaORM's
//! `DatabaseConnection` the same statement cost `GET /notes/{id}` 18 k more instructions per
//! request, most of it copying its futures (bench/PERFORMANCE.md, "executor"). Here the same
//! SQL and values go to the same driver, and the rows come back as SeaORM `QueryResult`s,
//! which the caller decodes into the entities' models. A connection dropped in the middle of
//! a statement is closed instead of returned to the pool mid-result ([`Checked`]).

use std::sync::Arc;

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use futures_util::{StreamExt, stream::LocalBoxStream};
use sea_orm::{
    ConnAcquireErr, DatabaseConnection, DbBackend, DbErr, QueryResult, RuntimeErr, Statement,
    sea_query::Values, sqlx,
};
use sea_query_sqlx::SqlxValues;

/// Run `$body` with `$query` (the statement's SQL with its values bound, as a sqlx query) and
/// `$driver` (the backend's sqlx pool behind `$pool`). A backend this service does not know
/// (SeaORM's enum is non-exhaustive) evaluates `$unsupported` with the error.
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
            backend => {
                let $error = DbErr::BackendNotSupported {
                    db: backend.as_str(),
                    ctx: "driver",
                };
                $unsupported
            }
        }
    }};
}

/// Run `$body` with `$query` (the statement's SQL with its values bound, as a sqlx query) on
/// `$conn` (the driver's connection inside a [`Connection`]), marked as mid-statement while
/// `$body` runs; the driver's error as SeaORM reports it.
macro_rules! on_connection {
    ($connection:expr, $statement:expr, |$query:ident, $conn:ident| $body:expr) => {{
        let Statement { sql, values, .. } = $statement;
        let values = SqlxValues(values.unwrap_or_else(|| Values(Vec::new())));
        match $connection {
            Connection::Postgres(checked) => on_connection!(@run checked, sql, values, $query, $conn, $body),
            Connection::MySql(checked) => on_connection!(@run checked, sql, values, $query, $conn, $body),
            Connection::Sqlite(checked) => on_connection!(@run checked, sql, values, $query, $conn, $body),
        }
        .map_err(driver_error)
    }};
    (@run $checked:ident, $sql:ident, $values:ident, $query:ident, $conn:ident, $body:expr) => {{
        let $query = sqlx::query_with(sqlx::AssertSqlSafe($sql), $values);
        $checked.mid_statement = true;
        let $conn = $checked.get();
        let result = $body;
        $checked.mid_statement = false;
        result
    }};
}

/// The connection a request's statements outside a transaction run on: taken from the pool
/// at the first statement, kept for the ones after it, and given back when the request
/// settles ([`RequestConnection::release`]) — one connection per request, whatever the number
/// of statements. Each release costs sqlx a round trip to the database (it pings the
/// connection it takes back), so a signed-in read — the token lookup, then the notes — pays
/// it once, not twice.
///
/// A statement whose future was dropped midway (the client went away, the request timed out)
/// leaves the driver mid-result: that connection is closed, not returned (see [`stream`]).
#[derive(Default)]
pub struct RequestConnection(Mutex<Option<Connection>>);

impl RequestConnection {
    /// The first row of a read; the driver may stop reading the result there.
    pub async fn first(
        &self,
        pool: &DatabaseConnection,
        statement: Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        let mut conn = self.get(pool).await?;
        on_connection!(&mut *conn, statement, |query, conn| {
            query
                .fetch_optional(conn)
                .await
                .map(|row| row.map(Into::into))
        })
    }

    /// Every row, the result read to its end.
    ///
    /// A write that returns rows (`INSERT … RETURNING`) must come here rather than to
    /// [`RequestConnection::first`]: in autocommit it commits when it completes, and the MySQL
    /// and SQLite drivers hand over the first row before that — a 201 could go out for a row
    /// not yet committed, and SQLite runs its WAL checkpoint only from a statement that steps
    /// to its end.
    pub async fn all(
        &self,
        pool: &DatabaseConnection,
        statement: Statement,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let mut conn = self.get(pool).await?;
        on_connection!(&mut *conn, statement, |query, conn| {
            query
                .fetch_all(conn)
                .await
                .map(|rows| rows.into_iter().map(Into::into).collect())
        })
    }

    /// Run a statement that returns no rows; the number of rows it affected.
    pub async fn execute(
        &self,
        pool: &DatabaseConnection,
        statement: Statement,
    ) -> Result<u64, DbErr> {
        let mut conn = self.get(pool).await?;
        on_connection!(&mut *conn, statement, |query, conn| {
            query.execute(conn).await.map(|done| done.rows_affected())
        })
    }

    /// The connection, taken out of the request (for a stream that outlives it), if it has
    /// one and is not using it.
    pub fn take(&self) -> Option<Connection> {
        self.0.try_lock().ok().and_then(|mut slot| slot.take())
    }

    /// Give the connection back to the pool, if the request took one.
    pub async fn release(&self) {
        drop(self.0.lock().await.take());
    }

    /// The request's connection, taken from the pool if it has none yet.
    async fn get(
        &self,
        pool: &DatabaseConnection,
    ) -> Result<MappedMutexGuard<'_, Connection>, DbErr> {
        let mut slot = self.0.lock().await;
        if slot.is_none() {
            *slot = Some(Connection::acquire(pool).await?);
        }
        Ok(MutexGuard::map(slot, |conn| {
            conn.as_mut().expect("the connection was set just above")
        }))
    }
}

/// A pooled connection of the request's backend.
pub enum Connection {
    Postgres(Checked<sqlx::Postgres>),
    MySql(Checked<sqlx::MySql>),
    Sqlite(Checked<sqlx::Sqlite>),
}

/// A driver backend whose connection a [`Connection`] may hold.
trait Backend: sqlx::Database {
    /// The connection, if it is of this backend.
    fn checked(conn: Connection) -> Option<Checked<Self>>;
}

macro_rules! backend {
    ($driver:ty, $variant:ident) => {
        impl Backend for $driver {
            fn checked(conn: Connection) -> Option<Checked<Self>> {
                match conn {
                    Connection::$variant(checked) => Some(checked),
                    _ => None,
                }
            }
        }
    };
}

backend!(sqlx::Postgres, Postgres);
backend!(sqlx::MySql, MySql);
backend!(sqlx::Sqlite, Sqlite);

impl Connection {
    async fn acquire(pool: &DatabaseConnection) -> Result<Self, DbErr> {
        // Boxed: the driver's acquire future holds its connect future inline, kilobytes
        // every handler awaiting it would otherwise carry.
        Ok(match pool.get_database_backend() {
            DbBackend::Postgres => Self::Postgres(Checked::new(
                Box::pin(acquire(pool.get_postgres_connection_pool())).await?,
            )),
            DbBackend::MySql => Self::MySql(Checked::new(
                Box::pin(acquire(pool.get_mysql_connection_pool())).await?,
            )),
            DbBackend::Sqlite => Self::Sqlite(Checked::new(
                Box::pin(acquire(pool.get_sqlite_connection_pool())).await?,
            )),
            backend => {
                return Err(DbErr::BackendNotSupported {
                    db: backend.as_str(),
                    ctx: "driver",
                });
            }
        })
    }
}

/// Every row of a read, streamed on the request's connection (`held`, taken out of the
/// request: the stream outlives it) or, when the request has none yet, one from the pool.
///
/// A stream dropped midway (the client went away) leaves the driver mid-result. Returned to
/// the pool that way — as SeaORM's stream does — sqlx "pings" the connection on release, and
/// sqlx-mysql can wait forever doing so, keeping the pool slot (an abandoned export on
/// MariaDB never gave its connection back). So a stream that did not finish detaches its
/// connection from the pool and drops it: the socket closes, and the pool may open a
/// replacement. The statement is SeaORM's, its values bound as SeaORM binds them.
pub fn stream(
    pool: &DatabaseConnection,
    held: Option<Connection>,
    statement: Statement,
) -> LocalBoxStream<'static, Result<QueryResult, DbErr>> {
    on_driver!(pool, statement, |query, driver| rows(driver.clone(), held, query), else |unsupported| {
        futures_util::stream::once(std::future::ready(Err(unsupported))).boxed_local()
    })
}

fn rows<DB>(
    driver: sqlx::Pool<DB>,
    held: Option<Connection>,
    query: sqlx::query::Query<'static, DB, SqlxValues>,
) -> LocalBoxStream<'static, Result<QueryResult, DbErr>>
where
    DB: Backend,
    SqlxValues: sqlx::IntoArguments<DB>,
    QueryResult: From<DB::Row>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    async_stream::try_stream! {
        let mut conn = match held.and_then(DB::checked) {
            Some(conn) => conn,
            None => Checked::new(acquire(&driver).await?),
        };
        conn.mid_statement = true;
        let mut rows = query.fetch(conn.get());
        while let Some(row) = rows.next().await {
            yield QueryResult::from(row.map_err(driver_error)?);
        }
        drop(rows);
        // The result was read to its end: the connection is clean, back to the pool.
        conn.mid_statement = false;
    }
    .boxed_local()
}

/// The pool's open and idle connections.
pub fn pool_status(pool: &DatabaseConnection) -> Option<(u32, usize)> {
    match pool.get_database_backend() {
        DbBackend::Postgres => {
            let p = pool.get_postgres_connection_pool();
            Some((p.size(), p.num_idle()))
        }
        DbBackend::MySql => {
            let p = pool.get_mysql_connection_pool();
            Some((p.size(), p.num_idle()))
        }
        DbBackend::Sqlite => {
            let p = pool.get_sqlite_connection_pool();
            Some((p.size(), p.num_idle()))
        }
        _ => None,
    }
}

/// A pooled connection that knows whether it is in the middle of a statement. Dropped
/// between statements it goes back to the pool; dropped midway, it is detached from the pool
/// and closed (see [`stream`]).
pub struct Checked<DB: sqlx::Database> {
    conn: Option<sqlx::pool::PoolConnection<DB>>,
    mid_statement: bool,
}

impl<DB: sqlx::Database> Checked<DB> {
    fn new(conn: sqlx::pool::PoolConnection<DB>) -> Self {
        Self {
            conn: Some(conn),
            mid_statement: false,
        }
    }

    fn get(&mut self) -> &mut DB::Connection {
        self.conn
            .as_mut()
            .expect("the connection is taken only on drop")
    }
}

impl<DB: sqlx::Database> Drop for Checked<DB> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            // Dropped after the runtime stopped (a stream still in flight at shutdown): the
            // pool's bookkeeping would spawn a task and panic without a runtime. The process
            // is ending; its socket closes with it.
            std::mem::forget(conn);
        } else if self.mid_statement {
            drop(conn.detach());
        }
    }
}

/// A driver error as SeaORM reports it (a pool that had no connection to give is an acquire
/// error), so errors are classified alike whichever way they came.
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
