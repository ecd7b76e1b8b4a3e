//! Idempotency keys are written once, with their answer, in the same transaction as the work
//! they answer: the in-flight claim (a row with no answer, and the random `claim` that owned
//! it) is gone. Rows still unanswered are claims of requests that were running (or died)
//! when the migration ran: they are deleted, so a retry of such a request starts afresh.
//!
//! `status` and `body` stay nullable on disk (SQLite cannot change a column's nullability in
//! place), but every row has them: the entity reads them as required.
//!
//! Upgrading a running fleet: instances of the previous release write `claim`, so their keyed
//! `POST`s fail until they are replaced by this release; requests without a key are unaffected.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let unanswered = Query::delete()
            .from_table(IdempotencyKeys::Table)
            .cond_where(
                Cond::any()
                    .add(Expr::col(IdempotencyKeys::Status).is_null())
                    .add(Expr::col(IdempotencyKeys::Body).is_null()),
            )
            .to_owned();
        manager.exec_stmt(unanswered).await?;
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyKeys::Table)
                    .drop_column(IdempotencyKeys::Claim)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Every row is answered, so no claim of the earlier design is needed: an empty one
        // never matches a new request's.
        manager
            .alter_table(
                Table::alter()
                    .table(IdempotencyKeys::Table)
                    .add_column(
                        ColumnDef::new(IdempotencyKeys::Claim)
                            .string_len(32)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Status,
    Body,
    Claim,
}
