//! One counted attempt — a failed sign-in, a password-reset request — for the throttles every
//! instance shares: counting them in the database means N instances do not allow N times the
//! attempts.
//!
//! `key_digest` is the SHA-256 of what is throttled together (the throttle's name, the client
//! address, the e-mail address: [`key_digest`]), so the table holds neither addresses nor
//! e-mails. Rows older than any throttle's window are purged.

use sea_orm::entity::prelude::*;
use sha2::{Digest, Sha256};

/// A row of the `throttle_events` table.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "throttle_events")]
pub struct Model {
    /// Positive, database-assigned identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// [`key_digest`] of what the attempt counts against.
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub key_digest: String,
    /// When it happened (UTC).
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The key of `parts` (a throttle's name, then what it counts per): SHA-256 in lower-case
/// hex of the parts, each ended by a NUL, so `("a", "bc")` and `("ab", "c")` differ.
pub fn key_digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Attempts before `before` (run it with `.exec(db)` to purge them).
pub fn delete_before(before: DateTimeUtc) -> sea_orm::DeleteMany<Entity> {
    Entity::delete_many().filter(Column::At.lt(before))
}
