//! SeaORM entities for the notes service, with their domain rules.
//!
//! This crate has no web, HTTP or async-runtime dependency: a worker, a CLI or another
//! service can depend on it alone. The rules live in each entity's
//! [`ActiveModelBehavior`](sea_orm::ActiveModelBehavior) implementation, so every program that
//! saves a model through SeaORM applies them:
//!
//! - `created_at` is stamped on insert and `updated_at` on every insert and update;
//! - a user's e-mail address is trimmed and lower-cased before it is stored.
//!
//! Bulk inserts (`Entity::insert_many`) bypass `ActiveModelBehavior` in SeaORM; call
//! [`prepare_insert`] on each model first so they follow the same rules.

pub mod note;
pub mod prelude;
pub mod user;

use sea_orm::{ActiveModelBehavior, ConnectionTrait, DbErr};

/// Apply an entity's insert rules to a model that is about to be inserted in bulk.
///
/// `insert_many` does not call [`ActiveModelBehavior::before_save`]; this does, exactly as a
/// single `insert` would.
pub async fn prepare_insert<A, C>(model: A, db: &C) -> Result<A, DbErr>
where
    A: ActiveModelBehavior + Send,
    C: ConnectionTrait,
{
    model.before_save(db, true).await
}

/// The current time at the precision every supported database stores (microseconds), so a
/// value read back equals the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{SubsecRound, Utc};
    Utc::now().trunc_subsecs(6)
}
