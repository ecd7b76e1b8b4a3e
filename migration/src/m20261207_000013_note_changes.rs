//! The change log behind `GET /notes/changes` and `GET /notes/events`.
//!
//! - `change_counters`: one row per user (made by a trigger on `users`, and here for the users
//!   there are): `last_seq`, the number of the user's latest change, and `kept_after`, the
//!   highest number the purge has removed (a `since` below it is answered 410).
//! - `note_changes`: one row per change of a note, `(user_id, seq)`: the note as the change left
//!   it, or `deleted` (a tombstone) with no note. `changed_at` is what the purge goes by.
//!
//! The database writes the log itself, with triggers on `notes`, in the statement that changes
//! the note: whoever writes a note (the api, the CLI, another program using `entity`) writes its
//! change, in the same transaction, and a rolled-back write leaves none. Each trigger first adds
//! one to the owner's counter row: that row stays locked until the transaction ends, so two
//! writes of one user take their numbers in the order they commit — a reader that has seen
//! change N never later finds an N or lower it had not seen.
//!
//! On PostgreSQL the trigger also notifies the channel `note_changes` with the owner's id:
//! PostgreSQL delivers it at commit (never for a rolled-back change) and folds the identical
//! ones of a transaction, so a bulk create wakes listeners once.
//!
//! A counter row that is gone (its user is being deleted, and the cascade reached it first)
//! makes the triggers write nothing: the user's log goes with the user.
//!
//! `down` drops both tables and the triggers.

use sea_orm::DatabaseBackend::{MySql, Postgres, Sqlite};
use sea_orm_migration::prelude::*;

use crate::script::run_on;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &[&str] = &[
    "CREATE TABLE change_counters (
        user_id BIGINT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        last_seq BIGINT NOT NULL DEFAULT 0,
        kept_after BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE note_changes (
        user_id BIGINT NOT NULL REFERENCES change_counters (user_id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        note_id BIGINT NOT NULL,
        deleted BOOLEAN NOT NULL,
        text TEXT,
        completed BOOLEAN,
        created_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ,
        version BIGINT,
        changed_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (user_id, seq))",
    "CREATE INDEX note_changes_changed_at_idx ON note_changes (changed_at)",
    "INSERT INTO change_counters (user_id) SELECT id FROM users",
    "CREATE FUNCTION users_change_counter() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        INSERT INTO change_counters (user_id) VALUES (NEW.id);
        RETURN NULL;
     END $$",
    "CREATE TRIGGER users_change_counter AFTER INSERT ON users
     FOR EACH ROW EXECUTE FUNCTION users_change_counter()",
    "CREATE FUNCTION notes_change() RETURNS trigger LANGUAGE plpgsql AS $$
     DECLARE
        n BIGINT;
     BEGIN
        IF TG_OP = 'DELETE' THEN
            UPDATE change_counters SET last_seq = last_seq + 1 WHERE user_id = OLD.user_id
            RETURNING last_seq INTO n;
            IF FOUND THEN
                INSERT INTO note_changes (user_id, seq, note_id, deleted, changed_at)
                VALUES (OLD.user_id, n, OLD.id, TRUE, now());
                PERFORM pg_notify('note_changes', OLD.user_id::text);
            END IF;
        ELSE
            UPDATE change_counters SET last_seq = last_seq + 1 WHERE user_id = NEW.user_id
            RETURNING last_seq INTO n;
            IF FOUND THEN
                INSERT INTO note_changes (user_id, seq, note_id, deleted, text, completed,
                    created_at, updated_at, version, changed_at)
                VALUES (NEW.user_id, n, NEW.id, FALSE, NEW.text, NEW.completed,
                    NEW.created_at, NEW.updated_at, NEW.version, now());
                PERFORM pg_notify('note_changes', NEW.user_id::text);
            END IF;
        END IF;
        RETURN NULL;
     END $$",
    "CREATE TRIGGER notes_change AFTER INSERT OR UPDATE OR DELETE ON notes
     FOR EACH ROW EXECUTE FUNCTION notes_change()",
];

const POSTGRES_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS notes_change ON notes",
    "DROP FUNCTION IF EXISTS notes_change()",
    "DROP TRIGGER IF EXISTS users_change_counter ON users",
    "DROP FUNCTION IF EXISTS users_change_counter()",
    "DROP TABLE IF EXISTS note_changes",
    "DROP TABLE IF EXISTS change_counters",
];

const MYSQL_UP: &[&str] = &[
    "CREATE TABLE change_counters (
        user_id BIGINT NOT NULL PRIMARY KEY,
        last_seq BIGINT NOT NULL DEFAULT 0,
        kept_after BIGINT NOT NULL DEFAULT 0,
        CONSTRAINT change_counters_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
            ON DELETE CASCADE
     ) ENGINE=InnoDB CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    "CREATE TABLE note_changes (
        user_id BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        note_id BIGINT NOT NULL,
        deleted BOOL NOT NULL,
        text TEXT,
        completed BOOL,
        created_at DATETIME(6),
        updated_at DATETIME(6),
        version BIGINT,
        changed_at DATETIME(6) NOT NULL,
        PRIMARY KEY (user_id, seq),
        KEY note_changes_changed_at_idx (changed_at),
        CONSTRAINT note_changes_user_id_fkey FOREIGN KEY (user_id)
            REFERENCES change_counters (user_id) ON DELETE CASCADE
     ) ENGINE=InnoDB CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    "INSERT INTO change_counters (user_id) SELECT id FROM users",
    "CREATE TRIGGER users_change_counter AFTER INSERT ON users FOR EACH ROW
     INSERT INTO change_counters (user_id) VALUES (NEW.id)",
    "CREATE TRIGGER notes_change_insert AFTER INSERT ON notes FOR EACH ROW BEGIN
        UPDATE change_counters SET last_seq = last_seq + 1 WHERE user_id = NEW.user_id;
        INSERT INTO note_changes (user_id, seq, note_id, deleted, text, completed, created_at,
            updated_at, version, changed_at)
        SELECT user_id, last_seq, NEW.id, FALSE, NEW.text, NEW.completed, NEW.created_at,
            NEW.updated_at, NEW.version, UTC_TIMESTAMP(6)
        FROM change_counters WHERE user_id = NEW.user_id;
     END",
    "CREATE TRIGGER notes_change_update AFTER UPDATE ON notes FOR EACH ROW BEGIN
        UPDATE change_counters SET last_seq = last_seq + 1 WHERE user_id = NEW.user_id;
        INSERT INTO note_changes (user_id, seq, note_id, deleted, text, completed, created_at,
            updated_at, version, changed_at)
        SELECT user_id, last_seq, NEW.id, FALSE, NEW.text, NEW.completed, NEW.created_at,
            NEW.updated_at, NEW.version, UTC_TIMESTAMP(6)
        FROM change_counters WHERE user_id = NEW.user_id;
     END",
    "CREATE TRIGGER notes_change_delete AFTER DELETE ON notes FOR EACH ROW BEGIN
        UPDATE change_counters SET last_seq = last_seq + 1 WHERE user_id = OLD.user_id;
        INSERT INTO note_changes (user_id, seq, note_id, deleted, changed_at)
        SELECT user_id, last_seq, OLD.id, TRUE, UTC_TIMESTAMP(6)
        FROM change_counters WHERE user_id = OLD.user_id;
     END",
];

const MYSQL_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS notes_change_insert",
    "DROP TRIGGER IF EXISTS notes_change_update",
    "DROP TRIGGER IF EXISTS notes_change_delete",
    "DROP TRIGGER IF EXISTS users_change_counter",
    "DROP TABLE IF EXISTS note_changes",
    "DROP TABLE IF EXISTS change_counters",
];

/// SQLite writes timestamps as the api does (RFC 3339, `T`, `+00:00`), so they compare as text.
const SQLITE_UP: &[&str] = &[
    "CREATE TABLE change_counters (
        user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        last_seq INTEGER NOT NULL DEFAULT 0,
        kept_after INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE note_changes (
        user_id INTEGER NOT NULL REFERENCES change_counters (user_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        note_id INTEGER NOT NULL,
        deleted BOOLEAN NOT NULL,
        text TEXT,
        completed BOOLEAN,
        created_at TEXT,
        updated_at TEXT,
        version INTEGER,
        changed_at TEXT NOT NULL,
        PRIMARY KEY (user_id, seq)) WITHOUT ROWID",
    "CREATE INDEX note_changes_changed_at_idx ON note_changes (changed_at)",
    "INSERT INTO change_counters (user_id) SELECT id FROM users",
    "CREATE TRIGGER users_change_counter AFTER INSERT ON users BEGIN
        INSERT INTO change_counters (user_id) VALUES (new.id);
     END",
    "CREATE TRIGGER notes_change_insert AFTER INSERT ON notes BEGIN
        UPDATE change_counters SET last_seq = last_seq + 1 WHERE user_id = new.user_id;
        INSERT INTO note_changes (user_id, seq, note_id, deleted, text, completed, created_at,
            updated_at, version, changed_at)
        SELECT user_id, last_seq, new.id, 0, new.text, new.completed, new.created_at,
            new.updated_at, new.version, strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
        FROM change_counters WHERE user_id = new.user_id;
     END",
    "CREATE TRIGGER notes_change_update AFTER UPDATE ON notes BEGIN
        UPDATE change_counters SET last_seq = last_seq + 1 WHERE user_id = new.user_id;
        INSERT INTO note_changes (user_id, seq, note_id, deleted, text, completed, created_at,
            updated_at, version, changed_at)
        SELECT user_id, last_seq, new.id, 0, new.text, new.completed, new.created_at,
            new.updated_at, new.version, strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
        FROM change_counters WHERE user_id = new.user_id;
     END",
    "CREATE TRIGGER notes_change_delete AFTER DELETE ON notes BEGIN
        UPDATE change_counters SET last_seq = last_seq + 1 WHERE user_id = old.user_id;
        INSERT INTO note_changes (user_id, seq, note_id, deleted, changed_at)
        SELECT user_id, last_seq, old.id, 1, strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')
        FROM change_counters WHERE user_id = old.user_id;
     END",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS notes_change_insert",
    "DROP TRIGGER IF EXISTS notes_change_update",
    "DROP TRIGGER IF EXISTS notes_change_delete",
    "DROP TRIGGER IF EXISTS users_change_counter",
    "DROP TABLE IF EXISTS note_changes",
    "DROP TABLE IF EXISTS change_counters",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, Postgres, &[POSTGRES_UP]).await?;
        run_on(manager, MySql, &[MYSQL_UP]).await?;
        run_on(manager, Sqlite, &[SQLITE_UP]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on(manager, Postgres, &[POSTGRES_DOWN]).await?;
        run_on(manager, MySql, &[MYSQL_DOWN]).await?;
        run_on(manager, Sqlite, &[SQLITE_DOWN]).await
    }
}
