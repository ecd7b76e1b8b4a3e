//! Running a migration's own SQL on the one backend it is written for.

use sea_orm::DatabaseBackend;
use sea_orm_migration::prelude::*;

/// Run `steps`' statements, in order, when the manager's database is `backend`; nothing
/// elsewhere.
///
/// On SQLite they go as one script, so on one connection of the pool: a trigger dropped on
/// one connection and created again on another can meet a schema the second has not re-read,
/// and "already exists". PostgreSQL and MariaDB get one statement at a time.
pub(crate) async fn run_on(
    manager: &SchemaManager<'_>,
    backend: DatabaseBackend,
    steps: &[&[&str]],
) -> Result<(), DbErr> {
    if manager.get_database_backend() != backend {
        return Ok(());
    }
    let db = manager.get_connection();
    let statements = steps.concat();
    if backend == DatabaseBackend::Sqlite {
        if !statements.is_empty() {
            db.execute_unprepared(&statements.join(";\n")).await?;
        }
        return Ok(());
    }
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}
