//! MariaDB's search index learns each note's owner, so one user's search reads only that
//! user's entries of a word rather than every note holding it.
//!
//! InnoDB's `FULLTEXT` index takes text columns only, and `m20261206_000008_search_notes`
//! indexed the words alone: a search for a word in half the notes read half a million
//! entries and then kept the caller's (6.7 s for a typical user's two common words on a
//! million notes). Here each word of `search_text` of three letters or more carries its
//! owner, `7xword` for owner 7 (the digits end at the first `x`, so no two owners' words
//! meet), and `api::search::sql` asks for `+7xword`. A word can hold 64 letters beside the
//! longest owner (19 digits and the `x`) within `innodb_ft_max_token_size` (84): the api
//! looks words up to 64 letters long in every backend's index.
//!
//! The owner is an input of the generated column, so a note that changes hands is indexed
//! anew. Down restores the earlier column and index.

use sea_orm::DatabaseBackend::MySql;
use sea_orm_migration::prelude::*;

use crate::m20261206_000008_search_notes::{MARIADB_DOWN as DROP, MARIADB_UP as EARLIER};
use crate::script::run_on;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    r"ALTER TABLE notes ADD COLUMN search_text TEXT AS (REGEXP_REPLACE(
        LOWER(REGEXP_REPLACE(text, '[^[:alnum:]]+', ' ')),
        '(?<![^ ])([^ ]{3,})', CONCAT(user_id, 'x\\1'))) STORED",
    // As in the earlier migration: the stop-word list is attached when the index is created.
    "SET SESSION innodb_ft_enable_stopword = OFF; \
     CREATE FULLTEXT INDEX notes_search_idx ON notes (search_text); \
     SET SESSION innodb_ft_enable_stopword = DEFAULT",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, MySql, &[DROP, UP]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, MySql, &[DROP, EARLIER]).await
    }
}
