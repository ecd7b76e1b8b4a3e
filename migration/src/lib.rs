//! Every schema change of the notes service as a SeaORM migration, and a lock so that several
//! processes (server instances, the CLI) can migrate one database at the same moment.

pub use sea_orm_migration::prelude::*;

pub mod database;
pub mod hosts;
mod lock;
mod m20261123_000001_create_notes;
mod m20261123_000002_create_users;
mod m20261201_000003_add_ownership;
mod m20261201_000004_create_sessions;
mod m20261202_000005_add_versions;
mod m20261202_000006_create_idempotency_keys;
mod m20261205_000007_answered_idempotency_keys;
mod m20261206_000008_search_notes;
mod m20261207_000009_search_by_owner;
mod m20261207_000010_search_rank_tiers;
mod m20261207_000011_search_by_owner_mariadb;
mod m20261207_000012_jobs_and_account_tokens;
mod m20261207_000013_note_changes;
mod script;

/// Constraint names the applications map to answers (a unique violation on the e-mail index
/// is "e-mail address taken").
pub mod constraints {
    pub use crate::m20261123_000002_create_users::EMAIL_INDEX as USERS_EMAIL;
}

pub use lock::{migrate_up, with_migration_lock};
pub use m20261201_000003_add_ownership::EARLIER_NOTES_EMAIL;

/// The ordered list of migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_notes::Migration),
            Box::new(m20261123_000002_create_users::Migration),
            Box::new(m20261201_000003_add_ownership::Migration),
            Box::new(m20261201_000004_create_sessions::Migration),
            Box::new(m20261202_000005_add_versions::Migration),
            Box::new(m20261202_000006_create_idempotency_keys::Migration),
            Box::new(m20261205_000007_answered_idempotency_keys::Migration),
            Box::new(m20261206_000008_search_notes::Migration),
            Box::new(m20261207_000009_search_by_owner::Migration),
            Box::new(m20261207_000010_search_rank_tiers::Migration),
            Box::new(m20261207_000011_search_by_owner_mariadb::Migration),
            Box::new(m20261207_000012_jobs_and_account_tokens::Migration),
            Box::new(m20261207_000013_note_changes::Migration),
        ]
    }
}

/// A UTC timestamp column with microsecond precision on every backend.
///
/// MySQL/MariaDB's `TIMESTAMP` keeps whole seconds and ends in 2038, so it gets `DATETIME(6)`
/// (SQLx reads it as UTC); the others use their time-zone-aware type.
fn utc_timestamp<T: IntoIden>(manager: &SchemaManager, name: T) -> ColumnDef {
    utc_timestamp_type(manager, name).not_null().to_owned()
}

/// [`utc_timestamp`], nullable.
fn utc_timestamp_null<T: IntoIden>(manager: &SchemaManager, name: T) -> ColumnDef {
    utc_timestamp_type(manager, name).null().to_owned()
}

fn utc_timestamp_type<T: IntoIden>(manager: &SchemaManager, name: T) -> ColumnDef {
    let mut column = ColumnDef::new(name);
    match manager.get_database_backend() {
        sea_orm::DatabaseBackend::MySql => column.custom(Alias::new("DATETIME(6)")),
        _ => column.timestamp_with_time_zone(),
    };
    column
}

/// A `CREATE TABLE` that, on MySQL/MariaDB, asks for InnoDB and full UTF-8 whatever the
/// server's defaults are (the other backends take no such options).
fn table<T: IntoIden + 'static>(manager: &SchemaManager, name: T) -> TableCreateStatement {
    let mut create = Table::create();
    create.table(name);
    if manager.get_database_backend() == sea_orm::DatabaseBackend::MySql {
        create
            .engine("InnoDB")
            .character_set("utf8mb4")
            .collate("utf8mb4_bin");
    }
    create
}
