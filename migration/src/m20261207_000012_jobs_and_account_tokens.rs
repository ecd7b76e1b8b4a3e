//! Account recovery and the background jobs that deliver its mail.
//!
//! - `users.email_verified`: whether the owner of the address has followed a verification
//!   link; existing accounts start unverified.
//! - `account_tokens`: the single-use tokens mailed for a password reset or an address
//!   verification — only their SHA-256 digest (unique), the address they were sent to, when
//!   they expire and when they were used. They go with their user.
//! - `jobs`: work any instance may do, queued in the same transaction as the change that
//!   causes it (a mail to send, the purge of expired rows). A worker claims a job by setting
//!   `locked_until` (a lease: a job whose instance died is claimed again once it passes),
//!   counts `attempts`, and moves it to `done` or, after its last attempt, `failed` with
//!   `last_error`. `unique_key` keeps a recurring job to one row. Workers look for due jobs
//!   by `(state, run_at)`.
//! - `throttle_events`: attempts the throttles count (failed sign-ins, reset requests), by a
//!   digest of what they count against, so that every instance sees every attempt; looked up
//!   by `(key_digest, at)`.
//!
//! `down` drops the tables and the column; the users stay.

use sea_orm_migration::{prelude::*, schema::*};

use crate::{table, utc_timestamp, utc_timestamp_null};

const TOKEN_DIGEST_INDEX: &str = "account_tokens_token_digest_key";
const TOKEN_USER_INDEX: &str = "account_tokens_user_id_idx";
const TOKEN_FOREIGN_KEY: &str = "account_tokens_user_id_fkey";
const JOB_DUE_INDEX: &str = "jobs_state_run_at_idx";
const JOB_UNIQUE_KEY_INDEX: &str = "jobs_unique_key_key";
const THROTTLE_INDEX: &str = "throttle_events_key_digest_at_idx";

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(boolean(Users::EmailVerified).default(false))
                    .to_owned(),
            )
            .await?;
        let mut user_index = Index::create()
            .name(TOKEN_USER_INDEX)
            .table(AccountTokens::Table)
            .col(AccountTokens::UserId)
            .to_owned();
        let mut tokens = table(manager, AccountTokens::Table)
            .col(big_pk_auto(AccountTokens::Id))
            .col(big_integer(AccountTokens::UserId))
            .col(string_len(AccountTokens::Purpose, 32))
            .col(string_len(AccountTokens::TokenDigest, 64))
            .col(string_len(AccountTokens::Email, 254))
            .col(utc_timestamp(manager, AccountTokens::CreatedAt))
            .col(utc_timestamp(manager, AccountTokens::ExpiresAt))
            .col(utc_timestamp_null(manager, AccountTokens::UsedAt))
            .foreign_key(
                ForeignKey::create()
                    .name(TOKEN_FOREIGN_KEY)
                    .from(AccountTokens::Table, AccountTokens::UserId)
                    .to(Users::Table, Users::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned();
        let mysql = manager.get_database_backend() == sea_orm::DatabaseBackend::MySql;
        if mysql {
            // Declared with the table, MariaDB uses it for the foreign key (as for sessions).
            tokens.index(&mut user_index);
        }
        manager.create_table(tokens).await?;
        if !mysql {
            manager.create_index(user_index).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(TOKEN_DIGEST_INDEX)
                    .table(AccountTokens::Table)
                    .col(AccountTokens::TokenDigest)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                table(manager, Jobs::Table)
                    .col(big_pk_auto(Jobs::Id))
                    .col(string_len(Jobs::Kind, 32))
                    .col(text(Jobs::Payload))
                    .col(string_len(Jobs::State, 16))
                    .col(utc_timestamp(manager, Jobs::RunAt))
                    .col(integer(Jobs::Attempts).default(0))
                    .col(utc_timestamp_null(manager, Jobs::LockedUntil))
                    .col(string_len_null(Jobs::LockedBy, 64))
                    .col(text_null(Jobs::LastError))
                    .col(string_len_null(Jobs::UniqueKey, 64))
                    .col(utc_timestamp(manager, Jobs::CreatedAt))
                    .col(utc_timestamp_null(manager, Jobs::FinishedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(JOB_DUE_INDEX)
                    .table(Jobs::Table)
                    .col(Jobs::State)
                    .col(Jobs::RunAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(JOB_UNIQUE_KEY_INDEX)
                    .table(Jobs::Table)
                    .col(Jobs::UniqueKey)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                table(manager, ThrottleEvents::Table)
                    .col(big_pk_auto(ThrottleEvents::Id))
                    .col(string_len(ThrottleEvents::KeyDigest, 64))
                    .col(utc_timestamp(manager, ThrottleEvents::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(THROTTLE_INDEX)
                    .table(ThrottleEvents::Table)
                    .col(ThrottleEvents::KeyDigest)
                    .col(ThrottleEvents::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [
            ThrottleEvents::Table.into_iden(),
            Jobs::Table.into_iden(),
            AccountTokens::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(name).if_exists().to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::EmailVerified)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    EmailVerified,
}

#[derive(DeriveIden)]
enum AccountTokens {
    Table,
    Id,
    UserId,
    Purpose,
    TokenDigest,
    Email,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Kind,
    Payload,
    State,
    RunAt,
    Attempts,
    LockedUntil,
    LockedBy,
    LastError,
    UniqueKey,
    CreatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum ThrottleEvents {
    Table,
    Id,
    KeyDigest,
    At,
}
