use sea_orm_migration::{prelude::*, schema::*};

use crate::{table, utc_timestamp};

/// The unique index that decides e-mail conflicts (racing sign-ups included).
/// The unique index on `users.email`: a write it refuses is "e-mail address taken".
pub const EMAIL_INDEX: &str = "users_email_key";

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                table(manager, Users::Table)
                    .col(big_pk_auto(Users::Id))
                    .col(string_len(Users::Email, 254))
                    .col(string_len_null(Users::Name, 200))
                    .col(text(Users::HashedPassword))
                    .col(boolean(Users::IsActive).default(true))
                    .col(utc_timestamp(manager, Users::CreatedAt))
                    .col(utc_timestamp(manager, Users::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(EMAIL_INDEX)
                    .table(Users::Table)
                    .col(Users::Email)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping the table drops its index on every backend.
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    Name,
    HashedPassword,
    IsActive,
    CreatedAt,
    UpdatedAt,
}
