//! The fast executor: a statement built by SeaORM, run on the driver's pool itself.
//!
//! Used for statements on the pool outside a transaction (reads, autocommitted one-statement
//! writes, export streams). Through SeaORM's `DatabaseConnection` the same statement cost
//! `GET /notes/{id}` 18 k more instructions per request, most of it copying its futures
//! (bench/PERFORMANCE.md, "executor"). Here the same SQL and values go to the same driver,
//! and the rows come back as SeaORM `QueryResult`s, which the caller decodes into the
//! entities' models. Export streams also close an abandoned connection instead of returning
//! it to the pool mid-result ([`stream`]).

use std::sync::Arc;

use futures_util::{StreamExt, stream::LocalBoxStream};
use sea_orm::{
    ConnAcquireErr, DatabaseConnection, DbBackend, DbErr, QueryResult, RuntimeErr, Statement,
    sea_query::Values, sqlx,
};
use sea_query_sqlx::SqlxValues;

/// Run `$body` with `$query` (the statement's SQL with its values bound, as a sqlx query) and
/// `$driver` (the backend's sqlx pool behind `$pool`). A backend this service does not know
/// (SeaORM's enum is non-exhaustive) evaluates `$unsupported` with the error.
///
/// Fetches run on the pool itself (sqlx's executor for a pool), not on a connection acquired
/// first: `Pool::acquire`'s future holds the driver's connect future inline, kilobytes that
/// every handler awaiting it would copy into its box on every request.
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

/// The first row of a read; the driver may stop reading the result there.
pub async fn first(
    pool: &DatabaseConnection,
    statement: Statement,
) -> Result<Option<QueryResult>, DbErr> {
    on_driver!(pool, statement, |query, driver| {
        let row = query.fetch_optional(driver).await.map_err(driver_error)?;
        Ok(row.map(Into::into))
    }, else |unsupported| Err(unsupported))
}

/// Every row, the result read to its end.
///
/// A write that returns rows (`INSERT … RETURNING`) must come here rather than to [`first`]:
/// in autocommit it commits when it completes, and the MySQL and SQLite drivers hand over the
/// first row before that — a 201 could go out for a row not yet committed, and SQLite runs
/// its WAL checkpoint only from a statement that steps to its end.
pub async fn all(
    pool: &DatabaseConnection,
    statement: Statement,
) -> Result<Vec<QueryResult>, DbErr> {
    on_driver!(pool, statement, |query, driver| {
        let rows = query.fetch_all(driver).await.map_err(driver_error)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }, else |unsupported| Err(unsupported))
}

/// Run a statement that returns no rows; the number of rows it affected.
pub async fn execute(pool: &DatabaseConnection, statement: Statement) -> Result<u64, DbErr> {
    on_driver!(pool, statement, |query, driver| {
        let done = query.execute(driver).await.map_err(driver_error)?;
        Ok(done.rows_affected())
    }, else |unsupported| Err(unsupported))
}

/// Every row of a read, streamed from a pooled connection of its own.
///
/// A stream dropped midway (the client went away) leaves the driver mid-result. Returned to
/// the pool that way — as SeaORM's stream does — sqlx "pings" the connection on release, and
/// sqlx-mysql can wait forever doing so, keeping the pool slot (an abandoned export on
/// MariaDB never gave its connection back). So a stream that did not finish detaches its
/// connection from the pool and drops it: the socket closes, and the pool may open a
/// replacement. The statement is SeaORM's, its values bound as SeaORM binds them.
pub fn stream(
    pool: &DatabaseConnection,
    statement: Statement,
) -> LocalBoxStream<'static, Result<QueryResult, DbErr>> {
    on_driver!(pool, statement, |query, driver| rows(driver.clone(), query), else |unsupported| {
        futures_util::stream::once(std::future::ready(Err(unsupported))).boxed_local()
    })
}

fn rows<DB>(
    driver: sqlx::Pool<DB>,
    query: sqlx::query::Query<'static, DB, SqlxValues>,
) -> LocalBoxStream<'static, Result<QueryResult, DbErr>>
where
    DB: sqlx::Database,
    SqlxValues: sqlx::IntoArguments<DB>,
    QueryResult: From<DB::Row>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
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

/// A streaming connection: returned to the pool by [`Unfinished::finish`], detached from the
/// pool and closed if dropped before (see [`stream`]).
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
        let Some(conn) = self.0.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(conn.detach());
        } else {
            // Dropped after the runtime stopped (a stream still in flight at shutdown): the
            // pool's bookkeeping would spawn a task and panic without a runtime. The process
            // is ending; its socket closes with it.
            std::mem::forget(conn);
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
