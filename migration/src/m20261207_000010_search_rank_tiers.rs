//! PostgreSQL's search index gains each note's owner and how often each word occurs, so a
//! search reads one user's entries and its best page reads only the notes ranked highest.
//!
//! `m20261206_000008_search_notes` indexed `to_tsvector(text)` under `(user_id, search)`: a
//! common word's entries were everyone's (a typical user's search of two common words read
//! their posting trees across all users), and the rank had to be computed for every match
//! before the best 20 were known (19 500 notes for the benchmark's heavy user). Now `search`
//! holds, for a note of owner 7, `7:word` for each distinct word of 3 to 84 letters and
//! digits (lower-cased; anything else separates words, as the api's tokenizer says) and a
//! mark `7:~word~K` for its K-th occurrence, K ≥ 2 — no positions (phrases are checked on the
//! text). One plain GIN index on it serves owner and words; `api::search::sql` counts a
//! note's entries for its rank and asks for "rank ≥ S" as an index query.
//!
//! The owner is the column's input, so a note that changes hands is indexed anew. SQLite's
//! and MariaDB's indexes are left as they are.

use sea_orm::DatabaseBackend::Postgres;
use sea_orm_migration::prelude::*;

use crate::m20261206_000008_search_notes::{POSTGRES_DOWN as DROP, POSTGRES_UP as EARLIER};
use crate::script::run_on;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE FUNCTION notes_search_words(owner bigint, body text) RETURNS tsvector \
     LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ \
     SELECT array_to_tsvector(ARRAY( \
       SELECT owner || ':' || CASE WHEN k = 1 THEN c.word ELSE '~' || c.word || '~' || k END \
       FROM (SELECT word, count(*) AS times \
             FROM regexp_split_to_table(lower(body), '[^[:alnum:]]+') AS word \
             WHERE char_length(word) BETWEEN 3 AND 84 GROUP BY word) AS c, \
            generate_series(1, c.times) AS k)) $$",
    "ALTER TABLE notes ADD COLUMN search tsvector \
     GENERATED ALWAYS AS (notes_search_words(user_id, text)) STORED",
    "CREATE INDEX notes_search_idx ON notes USING gin (search)",
];
const DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS notes_search_idx",
    "ALTER TABLE notes DROP COLUMN IF EXISTS search",
    "DROP FUNCTION IF EXISTS notes_search_words(bigint, text)",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, Postgres, &[DROP, UP]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, Postgres, &[DOWN, EARLIER]).await
    }
}
