//! Sign-in sessions: a token's SHA-256 digest (unique: a token is looked up by it), its
//! user (→ `users.id`, ON DELETE CASCADE) and its expiry (indexed for the purge of expired
//! sessions).

use sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::{table, utc_timestamp};

const TOKEN_INDEX: &str = "sessions_token_digest_key";
const USER_INDEX: &str = "sessions_user_id_idx";
const EXPIRY_INDEX: &str = "sessions_expires_at_idx";
const FOREIGN_KEY: &str = "sessions_user_id_fkey";

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut create = table(manager, Sessions::Table)
            .col(big_pk_auto(Sessions::Id))
            .col(big_integer(Sessions::UserId))
            .col(string_len(Sessions::TokenDigest, 64))
            .col(utc_timestamp(manager, Sessions::CreatedAt))
            .col(utc_timestamp(manager, Sessions::ExpiresAt))
            .foreign_key(
                ForeignKey::create()
                    .name(FOREIGN_KEY)
                    .from(Sessions::Table, Sessions::UserId)
                    .to(Users::Table, Users::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned();
        let mut separate = vec![user_index()];
        if manager.get_database_backend() == DbBackend::MySql {
            // Declared with the table, MariaDB uses it for the foreign key instead of making
            // an index of its own (named after the key) beside it.
            create.index(&mut user_index());
            separate.clear();
        }
        manager.create_table(create).await?;
        separate.push(
            Index::create()
                .name(TOKEN_INDEX)
                .table(Sessions::Table)
                .col(Sessions::TokenDigest)
                .unique()
                .to_owned(),
        );
        separate.push(
            Index::create()
                .name(EXPIRY_INDEX)
                .table(Sessions::Table)
                .col(Sessions::ExpiresAt)
                .to_owned(),
        );
        for index in separate {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Its indexes and foreign key go with it.
        manager
            .drop_table(Table::drop().table(Sessions::Table).to_owned())
            .await
    }
}

fn user_index() -> IndexCreateStatement {
    Index::create()
        .name(USER_INDEX)
        .table(Sessions::Table)
        .col(Sessions::UserId)
        .to_owned()
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    TokenDigest,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
