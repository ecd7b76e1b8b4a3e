//! SeaORM entities for the notes service, with their domain rules.
//!
//! This crate has no web, HTTP or async-runtime dependency: a worker, a CLI or another
//! service can depend on it alone. The rules live in each entity's
//! [`ActiveModelBehavior`](sea_orm::ActiveModelBehavior) implementation, so every program that
//! saves a model through SeaORM applies them:
//!
//! - `created_at` is stamped on insert and `updated_at` on every insert and update;
//! - notes and users carry a `version`: 1 on insert, one more on every update;
//! - a user's e-mail address is trimmed and lower-cased before it is stored;
//! - a session stores only its token's digest ([`session::Token`], [`session::digest`]).
//!
//! Bulk inserts (`Entity::insert_many`) bypass `ActiveModelBehavior` in SeaORM; call
//! [`prepare_insert`] on each model first so they follow the same rules.

pub mod account_token;
pub mod change_counter;
pub mod idempotency_key;
pub mod job;
pub mod note;
pub mod note_change;
pub mod prelude;
pub mod session;
pub mod throttle_event;
pub mod user;

use sea_orm::{ActiveModelBehavior, ActiveValue, ConnectionTrait, DbErr};

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

/// The new `updated_at` for a row last updated at `previous`: now, but always later than
/// `previous`, so "updated" is visible even when two saves land in the same microsecond or the
/// clock steps back.
pub fn next_update_time(
    previous: Option<chrono::DateTime<chrono::Utc>>,
) -> chrono::DateTime<chrono::Utc> {
    let now = now();
    match previous {
        Some(previous) if previous >= now => previous + chrono::Duration::microseconds(1),
        _ => now,
    }
}

/// A row's `version` after a save: 1 for an insert; for an update, one more than the version
/// the model was read with. A model built without its version (`NotSet`) leaves the column
/// alone, so a partial update by hand must advance it itself:
/// `col_expr(Column::Version, Expr::col(Column::Version).add(1))`.
pub fn next_version(current: &ActiveValue<i64>, insert: bool) -> ActiveValue<i64> {
    if insert {
        return ActiveValue::Set(1);
    }
    match current.try_as_ref() {
        Some(version) => ActiveValue::Set(version + 1),
        None => ActiveValue::NotSet,
    }
}

/// The current time at the precision every supported database stores (microseconds), so a
/// value read back equals the value written.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::{SubsecRound, Utc};
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_starts_at_one_and_advances_by_one() {
        assert_eq!(
            next_version(&ActiveValue::NotSet, true),
            ActiveValue::Set(1)
        );
        assert_eq!(
            next_version(&ActiveValue::Set(9), true),
            ActiveValue::Set(1)
        );
        assert_eq!(
            next_version(&ActiveValue::Unchanged(4), false),
            ActiveValue::Set(5)
        );
        assert_eq!(
            next_version(&ActiveValue::NotSet, false),
            ActiveValue::NotSet
        );
    }

    #[test]
    fn update_time_always_advances() {
        let future = now() + chrono::Duration::seconds(60);
        assert_eq!(
            next_update_time(Some(future)),
            future + chrono::Duration::microseconds(1)
        );
        let past = now() - chrono::Duration::seconds(60);
        assert!(next_update_time(Some(past)) > past + chrono::Duration::seconds(59));
        assert!(next_update_time(None) <= now());
    }
}
