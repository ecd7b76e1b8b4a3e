//! A full-text index over the notes' text, in each database's own engine, built for the notes
//! already there and kept by the database in the same transaction as every write.
//!
//! Every engine indexes the text with punctuation turned into blanks and in lower case, with
//! no stemming and no stop words, so that the three find the same words (the `api`'s
//! `search` module decides on the text; the index only has to find every candidate):
//!
//! - PostgreSQL: a generated `search tsvector` column (`to_tsvector('simple', …)`, kept out of
//!   the entity) and a GIN index on `(user_id, search)` — `btree_gin` lets one index serve the
//!   owner and the words, so one user's search never walks everyone's matches.
//! - MariaDB: a generated `search_text` column (the text, lower-cased, punctuation replaced) with
//!   a `FULLTEXT` index, created with the built-in stop-word list off (`with`, `about`, `www`
//!   are searchable). Words shorter than `innodb_ft_min_token_size` (3) are not indexed.
//! - SQLite: an FTS5 table with external content (`notes_search`, tokenizer `unicode61`
//!   without diacritics removal) kept by triggers on `notes`.
//!
//! `down` drops the index and what feeds it; the notes stay.

use sea_orm::DatabaseBackend::{MySql, Postgres, Sqlite};
use sea_orm_migration::prelude::*;

use crate::script::run_on;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What `up` runs, statement by statement, per backend.
pub(crate) const POSTGRES_UP: &[&str] = &[
    "CREATE EXTENSION IF NOT EXISTS btree_gin",
    "ALTER TABLE notes ADD COLUMN search tsvector GENERATED ALWAYS AS \
     (to_tsvector('simple'::regconfig, regexp_replace(text, '[^[:alnum:]]+', ' ', 'g'))) STORED",
    "CREATE INDEX notes_search_idx ON notes USING gin (user_id, search)",
];
pub(crate) const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS notes_search_idx",
    "ALTER TABLE notes DROP COLUMN IF EXISTS search",
];

pub(crate) const MARIADB_UP: &[&str] = &[
    "ALTER TABLE notes ADD COLUMN search_text TEXT \
     AS (LOWER(REGEXP_REPLACE(text, '[^[:alnum:]]+', ' '))) STORED",
    // One round trip, so that the session setting holds for the index it is meant for: the
    // stop-word list is attached to a FULLTEXT index when the index is created.
    "SET SESSION innodb_ft_enable_stopword = OFF; \
     CREATE FULLTEXT INDEX notes_search_idx ON notes (search_text); \
     SET SESSION innodb_ft_enable_stopword = DEFAULT",
];
pub(crate) const MARIADB_DOWN: &[&str] = &[
    "DROP INDEX notes_search_idx ON notes",
    "ALTER TABLE notes DROP COLUMN search_text",
];

/// The insert and update triggers run only for a note whose owner exists. SQLite checks the
/// owner's foreign key at the end of the statement, after the triggers: a note insert refused
/// for want of an owner would roll back a statement that wrote to FTS5, and an FTS5 write
/// undone that way, outside a transaction, leaves the connection holding a read of an older
/// snapshot — every later write on it fails with "database is locked" (SQLITE_BUSY_SNAPSHOT)
/// until FTS5 is used there again (`tests/tests/migrations.rs`,
/// `migrated_schema_matches_the_entities`, inserts such a note and writes on).
pub(crate) const SQLITE_UP: &[&str] = &[
    "CREATE VIRTUAL TABLE notes_search USING fts5(text, content='notes', content_rowid='id', \
     tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER notes_search_insert AFTER INSERT ON notes \
     WHEN EXISTS (SELECT 1 FROM users WHERE id = new.user_id) BEGIN \
     INSERT INTO notes_search (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER notes_search_delete AFTER DELETE ON notes BEGIN \
     INSERT INTO notes_search (notes_search, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER notes_search_update AFTER UPDATE OF text ON notes \
     WHEN EXISTS (SELECT 1 FROM users WHERE id = new.user_id) BEGIN \
     INSERT INTO notes_search (notes_search, rowid, text) VALUES ('delete', old.id, old.text); \
     INSERT INTO notes_search (rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO notes_search (notes_search) VALUES ('rebuild')",
];
pub(crate) const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS notes_search_insert",
    "DROP TRIGGER IF EXISTS notes_search_delete",
    "DROP TRIGGER IF EXISTS notes_search_update",
    "DROP TABLE IF EXISTS notes_search",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, Postgres, &[POSTGRES_UP]).await?;
        run_on(manager, MySql, &[MARIADB_UP]).await?;
        run_on(manager, Sqlite, &[SQLITE_UP]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, Postgres, &[POSTGRES_DOWN]).await?;
        run_on(manager, MySql, &[MARIADB_DOWN]).await?;
        run_on(manager, Sqlite, &[SQLITE_DOWN]).await
    }
}
