use sea_orm_migration::{prelude::*, schema::*};

use crate::{table, utc_timestamp};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                table(manager, Notes::Table)
                    .col(big_pk_auto(Notes::Id))
                    .col(text(Notes::Text))
                    .col(boolean(Notes::Completed).default(false))
                    .col(utc_timestamp(manager, Notes::CreatedAt))
                    .col(utc_timestamp(manager, Notes::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Notes::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Notes {
    Table,
    Id,
    Text,
    Completed,
    CreatedAt,
    UpdatedAt,
}
