//! A database-wide lock around migrations.
//!
//! sea-orm-migration takes no lock: two `up` runs at once race (on PostgreSQL the loser fails,
//! on MariaDB both run the migration bodies). Every migration run here — the CLI, the server's
//! auto-migration, the test harness — holds this lock, so several processes started at the
//! same moment apply each migration exactly once and all end cleanly.
//!
//! - PostgreSQL: a session advisory lock, on a connection detached from the pool so a pool of
//!   one connection can still run the migrations. The server releases it if the process dies.
//! - MySQL/MariaDB: a named lock (`GET_LOCK`), likewise on a detached connection.
//! - SQLite: an exclusive lock on a file beside the database file (in-memory databases are
//!   private to their process and need none).

use std::{fs::File, path::PathBuf, sync::Arc};

use sea_orm::{
    DatabaseBackend, DatabaseConnection, DbErr, RuntimeErr,
    sqlx::{self, Connection, MySqlConnection, PgConnection},
};
use sea_orm_migration::MigratorTrait;

use crate::Migrator;

/// Key of the PostgreSQL advisory lock (any constant shared by all instances).
const PG_LOCK_KEY: i64 = 0x6e6f_7465_735f_6d69; // "notes_mi"
/// Name of the MySQL/MariaDB lock.
const MYSQL_LOCK_NAME: &str = "notes_api_migrations";
/// How long a MySQL/MariaDB process waits for another one's migrations, in seconds.
const MYSQL_LOCK_WAIT_S: i64 = 600;

/// Bring the schema up to date, holding the migration lock.
pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    with_migration_lock(db, async || Migrator::up(db, None).await).await
}

/// Run `work` while holding the database-wide migration lock.
pub async fn with_migration_lock<T, E>(
    db: &DatabaseConnection,
    work: impl AsyncFnOnce() -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbErr>,
{
    let held = Held::acquire(db).await?;
    let result = work().await;
    held.release().await?;
    result
}

enum Held {
    Postgres(PgConnection),
    MySql(MySqlConnection),
    /// The locked file; closing it releases the lock.
    Sqlite(Option<File>),
}

impl Held {
    async fn acquire(db: &DatabaseConnection) -> Result<Self, DbErr> {
        match db.get_database_backend() {
            DatabaseBackend::Postgres => {
                let pool = db.get_postgres_connection_pool();
                let mut conn = pool.acquire().await.map_err(conn_err)?.detach();
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(PG_LOCK_KEY)
                    .execute(&mut conn)
                    .await
                    .map_err(conn_err)?;
                Ok(Self::Postgres(conn))
            }
            DatabaseBackend::MySql => {
                let pool = db.get_mysql_connection_pool();
                let mut conn = pool.acquire().await.map_err(conn_err)?.detach();
                let (got,): (Option<i64>,) = sqlx::query_as("SELECT GET_LOCK(?, ?)")
                    .bind(MYSQL_LOCK_NAME)
                    .bind(MYSQL_LOCK_WAIT_S)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(conn_err)?;
                if got != Some(1) {
                    return Err(DbErr::Custom(format!(
                        "timed out after {MYSQL_LOCK_WAIT_S}s waiting for the migration lock"
                    )));
                }
                Ok(Self::MySql(conn))
            }
            DatabaseBackend::Sqlite => {
                let options = db.get_sqlite_connection_pool().connect_options();
                let Some(path) = lock_file_path(options.get_filename().into()) else {
                    return Ok(Self::Sqlite(None));
                };
                let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
                    let file = File::options()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)?;
                    file.lock()?;
                    Ok(file)
                })
                .await
                .map_err(|e| DbErr::Custom(format!("migration lock task failed: {e}")))?
                .map_err(|e| DbErr::Custom(format!("cannot lock the migration lock file: {e}")))?;
                Ok(Self::Sqlite(Some(file)))
            }
            #[allow(unreachable_patterns)]
            other => Err(DbErr::BackendNotSupported {
                db: other.as_str(),
                ctx: "migration lock",
            }),
        }
    }

    async fn release(self) -> Result<(), DbErr> {
        match self {
            Self::Postgres(mut conn) => {
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(PG_LOCK_KEY)
                    .execute(&mut conn)
                    .await
                    .map_err(conn_err)?;
                conn.close().await.map_err(conn_err)
            }
            Self::MySql(mut conn) => {
                sqlx::query("SELECT RELEASE_LOCK(?)")
                    .bind(MYSQL_LOCK_NAME)
                    .execute(&mut conn)
                    .await
                    .map_err(conn_err)?;
                conn.close().await.map_err(conn_err)
            }
            Self::Sqlite(file) => {
                drop(file);
                Ok(())
            }
        }
    }
}

/// `notes.db` → `notes.db.migrate-lock`; `None` for in-memory databases.
fn lock_file_path(database: PathBuf) -> Option<PathBuf> {
    let name = database.to_str()?;
    if name.is_empty() || name.starts_with(":memory:") || name.starts_with("file::memory:") {
        return None;
    }
    let mut lock = database.into_os_string();
    lock.push(".migrate-lock");
    Some(lock.into())
}

fn conn_err(error: sqlx::Error) -> DbErr {
    DbErr::Conn(RuntimeErr::SqlxError(Arc::new(error)))
}

#[cfg(test)]
mod tests {
    use super::lock_file_path;
    use std::path::PathBuf;

    #[test]
    fn lock_file_sits_beside_the_database_file() {
        assert_eq!(
            lock_file_path(PathBuf::from("data/notes.db")),
            Some(PathBuf::from("data/notes.db.migrate-lock"))
        );
    }

    #[test]
    fn in_memory_databases_need_no_lock_file() {
        assert_eq!(lock_file_path(PathBuf::from(":memory:")), None);
    }
}
