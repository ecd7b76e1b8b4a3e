//! SQLite's full-text index learns each note's owner, so one user's search reads only that
//! user's entries of a word rather than every note holding it.
//!
//! FTS5 knows no owner: `m20261206_000008_search_notes` indexed the text alone, and a search
//! found a word in everyone's notes, then kept the caller's (a word in half the notes cost a
//! typical user 114 ms on a million notes). Here `notes_search` indexes `user_id` as a second
//! column, and a search asks for `user_id:"ID" AND text:(…)`: FTS5 steps through the owner's
//! short list and skips ahead in the word's long one.
//!
//! PostgreSQL's index is on `(user_id, search)` already; InnoDB's `FULLTEXT` cannot take a
//! second column of another type: both are left as they are.

use sea_orm::DatabaseBackend::Sqlite;
use sea_orm_migration::prelude::*;

use crate::m20261206_000008_search_notes::{SQLITE_DOWN as DROP, SQLITE_UP as EARLIER};
use crate::script::run_on;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The index with the owner, and its triggers (guarded as the earlier migration explains).
const UP: &[&str] = &[
    "CREATE VIRTUAL TABLE notes_search USING fts5(text, user_id, content='notes', \
     content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER notes_search_insert AFTER INSERT ON notes \
     WHEN EXISTS (SELECT 1 FROM users WHERE id = new.user_id) BEGIN \
     INSERT INTO notes_search (rowid, text, user_id) VALUES (new.id, new.text, new.user_id); END",
    "CREATE TRIGGER notes_search_delete AFTER DELETE ON notes BEGIN \
     INSERT INTO notes_search (notes_search, rowid, text, user_id) \
     VALUES ('delete', old.id, old.text, old.user_id); END",
    "CREATE TRIGGER notes_search_update AFTER UPDATE OF text, user_id ON notes \
     WHEN EXISTS (SELECT 1 FROM users WHERE id = new.user_id) BEGIN \
     INSERT INTO notes_search (notes_search, rowid, text, user_id) \
     VALUES ('delete', old.id, old.text, old.user_id); \
     INSERT INTO notes_search (rowid, text, user_id) VALUES (new.id, new.text, new.user_id); END",
    "INSERT INTO notes_search (notes_search) VALUES ('rebuild')",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, Sqlite, &[DROP, UP]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, Sqlite, &[DROP, EARLIER]).await
    }
}
