//! Idempotency keys: the first answer to a `POST` sent with an `Idempotency-Key`, kept for
//! replaying it to retries. A key is unique within its scope (a user, or sign-up); a row with
//! no `status` is a request still in flight; a sign-up's row keeps the password's argon2id
//! hash, to compare a repeat's password with. Rows go with their user (ON DELETE CASCADE) and
//! are purged after `expires_at` (indexed).

use sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

use crate::{table, utc_timestamp};

const KEY_INDEX: &str = "idempotency_keys_scope_key_key";
const USER_INDEX: &str = "idempotency_keys_user_id_idx";
const EXPIRY_INDEX: &str = "idempotency_keys_expires_at_idx";
const FOREIGN_KEY: &str = "idempotency_keys_user_id_fkey";

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mysql = manager.get_database_backend() == DbBackend::MySql;
        let mut body = ColumnDef::new(IdempotencyKeys::Body);
        if mysql {
            // TEXT stops at 64 KiB there; a bulk answer is larger.
            body.custom(Alias::new("LONGTEXT"));
        } else {
            body.text();
        }
        body.null();
        let mut create = table(manager, IdempotencyKeys::Table)
            .col(big_pk_auto(IdempotencyKeys::Id))
            .col(string_len(IdempotencyKeys::Scope, 40))
            .col(big_integer_null(IdempotencyKeys::UserId))
            .col(string_len(IdempotencyKeys::Key, 255))
            .col(string_len(IdempotencyKeys::Fingerprint, 64))
            .col(string_len(IdempotencyKeys::Claim, 32))
            .col(integer_null(IdempotencyKeys::Status))
            .col(string_len_null(IdempotencyKeys::Location, 255))
            .col(string_len_null(IdempotencyKeys::Etag, 64))
            .col(body)
            .col(text_null(IdempotencyKeys::PasswordHash))
            .col(utc_timestamp(manager, IdempotencyKeys::CreatedAt))
            .col(utc_timestamp(manager, IdempotencyKeys::ExpiresAt))
            .foreign_key(
                ForeignKey::create()
                    .name(FOREIGN_KEY)
                    .from(IdempotencyKeys::Table, IdempotencyKeys::UserId)
                    .to(Users::Table, Users::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned();
        let mut separate = vec![user_index()];
        if mysql {
            // Declared with the table, MariaDB uses it for the foreign key (as for sessions).
            create.index(&mut user_index());
            separate.clear();
        }
        manager.create_table(create).await?;
        separate.push(
            Index::create()
                .name(KEY_INDEX)
                .table(IdempotencyKeys::Table)
                .col(IdempotencyKeys::Scope)
                .col(IdempotencyKeys::Key)
                .unique()
                .to_owned(),
        );
        separate.push(
            Index::create()
                .name(EXPIRY_INDEX)
                .table(IdempotencyKeys::Table)
                .col(IdempotencyKeys::ExpiresAt)
                .to_owned(),
        );
        for index in separate {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}

fn user_index() -> IndexCreateStatement {
    Index::create()
        .name(USER_INDEX)
        .table(IdempotencyKeys::Table)
        .col(IdempotencyKeys::UserId)
        .to_owned()
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Id,
    Scope,
    UserId,
    Key,
    Fingerprint,
    Claim,
    Status,
    Location,
    Etag,
    Body,
    PasswordHash,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
