//! Accounts own notes: `users.is_admin`, and `notes.user_id` (NOT NULL, → `users.id`, ON DELETE
//! CASCADE) with an index on `(user_id, id)` for each owner's keyset pages.
//!
//! Notes written before accounts existed are kept: when `notes` has rows, they are given to a
//! placeholder account, [`EARLIER_NOTES_EMAIL`] ("Notes from before accounts"), which is
//! inactive and has no password (its hash `!` is not a PHC string, so nothing verifies
//! against it); an administrator can reassign the notes or reactivate the account. The
//! account is made only when there are notes to own, and reused when it exists already (an
//! `up` after a `down`). `down` keeps every note too, and leaves that account in place.
//!
//! - PostgreSQL/MariaDB: the column is added nullable, filled, then made NOT NULL, with the
//!   index and the foreign key. The table is altered in place, never rebuilt (PostgreSQL's
//!   `notes_id_seq` stays attached; MariaDB keeps its AUTO_INCREMENT counter).
//! - SQLite (no `ALTER TABLE … ADD` of a NOT NULL foreign key column, no `DROP CONSTRAINT`):
//!   the table is rebuilt, in both directions — `notes_new` with the final schema, `INSERT …
//!   SELECT` keeping the ids, the `AUTOINCREMENT` counter carried over (so ids of deleted notes
//!   are not handed out again), `DROP TABLE notes`, `ALTER TABLE notes_new RENAME TO notes`,
//!   then the index. It is rebuilt on an empty table too, so every database ends up with the
//!   same schema text.
//!
//! The migration runs in one transaction (`use_transaction`): on PostgreSQL and SQLite it
//! applies wholly or not at all. MariaDB commits each DDL statement by itself.

use sea_orm::{ConnectionTrait, DbBackend, Statement, prelude::ChronoDateTimeUtc};
use sea_orm_migration::{prelude::*, schema::*};

use crate::utc_timestamp;

/// The placeholder owner of the notes written before accounts existed.
pub const EARLIER_NOTES_EMAIL: &str = "earlier-notes@notes.invalid";
const EARLIER_NOTES_NAME: &str = "Notes from before accounts";
/// Not a PHC string: no password verifies against it.
const NO_PASSWORD: &str = "!";

const FOREIGN_KEY: &str = "notes_user_id_fkey";
const OWNER_INDEX: &str = "notes_user_id_id_idx";
/// The SQLite rebuild's new table, renamed to `notes` once filled.
const REBUILT: &str = "notes_new";

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // First a write: on SQLite the transaction takes the write lock before it reads.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(boolean(Users::IsAdmin).default(false))
                    .to_owned(),
            )
            .await?;
        let owner = earlier_notes_owner(manager).await?;
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                let copy = format!(
                    r#"INSERT INTO "{REBUILT}"
                       ("id", "text", "completed", "created_at", "updated_at", "user_id")
                       SELECT "id", "text", "completed", "created_at", "updated_at", ?
                       FROM "notes""#
                );
                // With no notes there is no owner, and nothing to copy.
                let values = [owner.unwrap_or(0).into()];
                rebuild_sqlite(manager, notes_with_owner(manager), &copy, values).await?;
                manager.create_index(owner_index()).await
            }
            DbBackend::Postgres => {
                execute(
                    manager,
                    r#"ALTER TABLE "notes" ADD COLUMN "user_id" bigint NULL"#,
                    [],
                )
                .await?;
                if let Some(owner) = owner {
                    execute(
                        manager,
                        r#"UPDATE "notes" SET "user_id" = $1"#,
                        [owner.into()],
                    )
                    .await?;
                }
                execute(
                    manager,
                    &format!(
                        r#"ALTER TABLE "notes" ALTER COLUMN "user_id" SET NOT NULL,
                           ADD CONSTRAINT "{FOREIGN_KEY}" FOREIGN KEY ("user_id")
                           REFERENCES "users" ("id") ON DELETE CASCADE"#
                    ),
                    [],
                )
                .await?;
                manager.create_index(owner_index()).await
            }
            _ => {
                execute(
                    manager,
                    "ALTER TABLE `notes` ADD COLUMN `user_id` bigint NULL",
                    [],
                )
                .await?;
                if let Some(owner) = owner {
                    execute(manager, "UPDATE `notes` SET `user_id` = ?", [owner.into()]).await?;
                }
                // One statement, one table copy. The index comes with the foreign key, so
                // MariaDB uses it for the key rather than creating one of its own.
                execute(
                    manager,
                    &format!(
                        "ALTER TABLE `notes` MODIFY COLUMN `user_id` bigint NOT NULL, \
                         ADD INDEX `{OWNER_INDEX}` (`user_id`, `id`), \
                         ADD CONSTRAINT `{FOREIGN_KEY}` FOREIGN KEY (`user_id`) \
                         REFERENCES `users` (`id`) ON DELETE CASCADE"
                    ),
                    [],
                )
                .await
            }
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                // The index goes with the old table.
                let copy = format!(
                    r#"INSERT INTO "{REBUILT}"
                       ("id", "text", "completed", "created_at", "updated_at")
                       SELECT "id", "text", "completed", "created_at", "updated_at"
                       FROM "notes""#
                );
                rebuild_sqlite(manager, notes_without_owner(manager), &copy, []).await?;
            }
            DbBackend::Postgres => {
                execute(manager, &format!(r#"DROP INDEX "{OWNER_INDEX}""#), []).await?;
                execute(
                    manager,
                    &format!(
                        r#"ALTER TABLE "notes" DROP CONSTRAINT "{FOREIGN_KEY}",
                           DROP COLUMN "user_id""#
                    ),
                    [],
                )
                .await?;
            }
            _ => {
                // The key first: MariaDB refuses to drop the index a foreign key uses.
                execute(
                    manager,
                    &format!("ALTER TABLE `notes` DROP FOREIGN KEY `{FOREIGN_KEY}`"),
                    [],
                )
                .await?;
                execute(
                    manager,
                    &format!(
                        "ALTER TABLE `notes` DROP INDEX `{OWNER_INDEX}`, DROP COLUMN `user_id`"
                    ),
                    [],
                )
                .await?;
            }
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::IsAdmin)
                    .to_owned(),
            )
            .await
    }

    /// PostgreSQL and SQLite: all or nothing, the migration's record included (a half-done
    /// SQLite rebuild would leave `notes_new` behind).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// The placeholder owner's id, made if needed — or `None` when there are no notes to own.
async fn earlier_notes_owner(manager: &SchemaManager<'_>) -> Result<Option<i64>, DbErr> {
    let db = manager.get_connection();
    let any_note = db
        .query_one(
            Query::select()
                .column(Notes::Id)
                .from(Notes::Table)
                .limit(1),
        )
        .await?;
    if any_note.is_none() {
        return Ok(None);
    }
    if let Some(id) = user_id_by_email(manager, EARLIER_NOTES_EMAIL).await? {
        return Ok(Some(id));
    }
    let now = now();
    db.execute(
        Query::insert()
            .into_table(Users::Table)
            .columns([
                Users::Email,
                Users::Name,
                Users::HashedPassword,
                Users::IsActive,
                Users::IsAdmin,
                Users::CreatedAt,
                Users::UpdatedAt,
            ])
            .values_panic([
                EARLIER_NOTES_EMAIL.into(),
                EARLIER_NOTES_NAME.into(),
                NO_PASSWORD.into(),
                false.into(),
                false.into(),
                now.into(),
                now.into(),
            ]),
    )
    .await?;
    user_id_by_email(manager, EARLIER_NOTES_EMAIL)
        .await?
        .map(Some)
        .ok_or_else(|| DbErr::Migration(format!("the user {EARLIER_NOTES_EMAIL} was not saved")))
}

async fn user_id_by_email(manager: &SchemaManager<'_>, email: &str) -> Result<Option<i64>, DbErr> {
    let row = manager
        .get_connection()
        .query_one(
            Query::select()
                .column(Users::Id)
                .from(Users::Table)
                .and_where(Expr::col(Users::Email).eq(email)),
        )
        .await?;
    row.map(|row| row.try_get::<i64>("", "id")).transpose()
}

/// Now, with microsecond precision (what every backend's timestamp columns keep).
fn now() -> ChronoDateTimeUtc {
    let now = sea_orm::prelude::ChronoUtc::now();
    ChronoDateTimeUtc::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// SQLite: replace `notes` by `create` (a table named [`REBUILT`]) filled by `copy`, keeping
/// the ids and the `AUTOINCREMENT` counter.
async fn rebuild_sqlite<const N: usize>(
    manager: &SchemaManager<'_>,
    create: TableCreateStatement,
    copy: &str,
    values: [sea_orm::Value; N],
) -> Result<(), DbErr> {
    manager.create_table(create).await?;
    execute(manager, copy, values).await?;
    // The old table's counter is at least its largest id, and higher when the newest notes
    // were deleted: carried over, no id is used twice.
    execute(
        manager,
        &format!(r#"DELETE FROM "sqlite_sequence" WHERE "name" = '{REBUILT}'"#),
        [],
    )
    .await?;
    execute(
        manager,
        &format!(
            r#"INSERT INTO "sqlite_sequence" ("name", "seq")
               SELECT '{REBUILT}', "seq" FROM "sqlite_sequence" WHERE "name" = 'notes'"#
        ),
        [],
    )
    .await?;
    // No table refers to `notes`, so dropping it deletes nothing elsewhere; the rename
    // moves the counter along.
    manager
        .drop_table(Table::drop().table(Notes::Table).to_owned())
        .await?;
    manager
        .rename_table(
            Table::rename()
                .table(Alias::new(REBUILT), Notes::Table)
                .to_owned(),
        )
        .await
}

/// `notes` as `m20261123_000001_create_notes` made it, named [`REBUILT`].
fn notes_without_owner(manager: &SchemaManager) -> TableCreateStatement {
    Table::create()
        .table(Alias::new(REBUILT))
        .col(big_pk_auto(Notes::Id))
        .col(text(Notes::Text))
        .col(boolean(Notes::Completed).default(false))
        .col(utc_timestamp(manager, Notes::CreatedAt))
        .col(utc_timestamp(manager, Notes::UpdatedAt))
        .to_owned()
}

/// `notes` with its owner, named [`REBUILT`]: the columns of [`notes_without_owner`], then
/// `user_id` last, as `ALTER TABLE … ADD COLUMN` puts it on the other backends.
fn notes_with_owner(manager: &SchemaManager) -> TableCreateStatement {
    notes_without_owner(manager)
        .col(big_integer(Notes::UserId))
        .foreign_key(
            ForeignKey::create()
                .name(FOREIGN_KEY)
                .from(Alias::new(REBUILT), Notes::UserId)
                .to(Users::Table, Users::Id)
                .on_delete(ForeignKeyAction::Cascade),
        )
        .to_owned()
}

fn owner_index() -> IndexCreateStatement {
    Index::create()
        .name(OWNER_INDEX)
        .table(Notes::Table)
        .col(Notes::UserId)
        .col(Notes::Id)
        .to_owned()
}

async fn execute<const N: usize>(
    manager: &SchemaManager<'_>,
    sql: &str,
    values: [sea_orm::Value; N],
) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    manager
        .get_connection()
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map(|_| ())
}

#[derive(DeriveIden)]
enum Notes {
    Table,
    Id,
    UserId,
    Text,
    Completed,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    Name,
    HashedPassword,
    IsActive,
    IsAdmin,
    CreatedAt,
    UpdatedAt,
}
