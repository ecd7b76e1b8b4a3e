//! A `version` on notes and users: 1 when the row is inserted, one more on every update. It
//! is what a strong `ETag` is made of, and what a conditional write compares (`UPDATE … WHERE
//! id = ? AND version = ?`), so a change is never lost to a concurrent one. Existing rows
//! start at 1. `down` drops the columns and keeps every row.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [Versioned::Notes, Versioned::Users] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(
                            ColumnDef::new(Versioned::Version)
                                .big_integer()
                                .not_null()
                                .default(1),
                        )
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [Versioned::Notes, Versioned::Users] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .drop_column(Versioned::Version)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Versioned {
    Notes,
    Users,
    Version,
}
