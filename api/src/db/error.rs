//! What a database error means, whatever the backend: the connection is unavailable, a
//! concurrent transaction won, or a unique constraint refused the row. The HTTP layer turns
//! these into statuses; the data layer retries a replica read on the primary when the replica
//! is unavailable.

use sea_orm::{
    DbErr, RuntimeErr, SqlErr,
    sqlx::{self, sqlite::SqliteError},
};

/// SQLite's primary result codes for "the database file is locked".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

/// True when no pooled connection came within the acquire timeout.
pub fn is_pool_timeout(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(e.as_ref(), sqlx::Error::PoolTimedOut),
        _ => false,
    }
}

/// True when the database gave up a transaction for another one: a deadlock or a
/// serialisation failure (PostgreSQL 40001/40P01, MySQL 1213, a lock wait timeout 1205).
pub fn is_lost_race(error: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = error
    else {
        return false;
    };
    match e.as_ref() {
        sqlx::Error::Database(db) if db.try_downcast_ref::<SqliteError>().is_none() => db
            .code()
            .is_some_and(|code| matches!(code.as_ref(), "40001" | "40P01" | "1213" | "1205")),
        _ => false,
    }
}

/// True for errors that mean "no usable connection" rather than a bad statement.
pub fn is_unavailable(error: &DbErr) -> bool {
    let runtime = match error {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return false,
    };
    let RuntimeErr::SqlxError(sqlx_error) = runtime else {
        return false;
    };
    match sqlx_error.as_ref() {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) if db.try_downcast_ref::<SqliteError>().is_some() => {
            // SQLITE_BUSY, SQLITE_LOCKED and their extended codes: the write lock stayed
            // taken for longer than the busy timeout.
            db.code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
        }
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: connection exceptions (08xxx), shutdown/starting up (57P0x), a
            // write on a server that does not take them any more (25006: a primary demoted
            // in a failover, on a connection opened before it);
            // MySQL/MariaDB: server gone away or lost, too many connections.
            code.starts_with("08")
                || code.starts_with("57P0")
                || matches!(code.as_ref(), "25006" | "2006" | "2013" | "1040" | "1053")
        }),
        _ => false,
    }
}

/// True when `error` is a unique violation of the index or constraint `name` (PostgreSQL and
/// MariaDB name it in the message) or, on SQLite, which names the columns instead, of
/// `columns` (`"users.email"`).
pub fn violates_unique(error: &DbErr, name: &str, columns: &str) -> bool {
    match error.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => {
            message.contains(name) || message.contains(columns)
        }
        _ => false,
    }
}
