//! The hot statements' SQL, built by SeaORM once per shape and backend, then reused with each
//! request's values.
//!
//! Building a statement — an expression tree, rendered to SQL, then dropped — cost more than
//! a fifth of the instructions of `GET /notes/{id}` (bench/PERFORMANCE.md, "statement
//! cache"). The SQL of a lookup by primary key, of an insert of a given set of columns, or of
//! the token lookup every signed-in request makes, depends only on the entity, the shape and
//! the backend; the values are placeholders. So
//! each worker thread keeps the SQL SeaORM rendered the first time and binds new values to
//! it, in the order SeaORM itself binds them. The tests below hold the two equal.

use std::{any::TypeId, cell::RefCell};

use entity::session;
use sea_orm::{
    ActiveModelTrait, ActiveValue, DbBackend, EntityTrait, Iterable, PrimaryKeyTrait, QueryTrait,
    Statement, Value,
    prelude::DateTimeUtc,
    sea_query::{IntoValueTuple, Query},
};

/// What a cached SQL text is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `SELECT <every column> FROM <table> WHERE <pk> = ?`
    FindById,
    /// `INSERT INTO <table> (<the set columns>) VALUES (…) RETURNING <every column>`;
    /// bit `i` of the mask is set when the entity's column `i` is set.
    InsertReturning(u64),
    /// [`session::find_user`]: the user a bearer token signs in (every signed-in request).
    SignedInUser,
}

type Key = (TypeId, Shape, DbBackend);

thread_local! {
    /// A few entries per entity and backend: scanned, not hashed.
    static SQL: RefCell<Vec<(Key, Box<str>)>> = const { RefCell::new(Vec::new()) };
}

/// The SQL built before for `key`, if any.
fn lookup(key: Key) -> Option<String> {
    SQL.with_borrow(|cache| {
        cache
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, sql)| sql.to_string())
    })
}

/// `statement`, its SQL kept for `key`.
fn remember(key: Key, statement: Statement) -> Statement {
    SQL.with_borrow_mut(|cache| cache.push((key, statement.sql.clone().into_boxed_str())));
    statement
}

/// `E::find_by_id(id)`, built for `backend`.
pub fn find_by_id<E>(
    backend: DbBackend,
    id: <E::PrimaryKey as PrimaryKeyTrait>::ValueType,
) -> Statement
where
    E: EntityTrait,
{
    let key = (TypeId::of::<E>(), Shape::FindById, backend);
    match lookup(key) {
        Some(sql) => {
            let values: Vec<Value> = id.into_value_tuple().into_iter().collect();
            Statement::from_sql_and_values(backend, sql, values)
        }
        None => remember(key, E::find_by_id(id).build(backend)),
    }
}

/// [`session::find_user`]`(digest, now)`, built for `backend`.
pub fn signed_in_user(backend: DbBackend, digest: &str, now: DateTimeUtc) -> Statement {
    let key = (
        TypeId::of::<session::Entity>(),
        Shape::SignedInUser,
        backend,
    );
    match lookup(key) {
        // In the order `find_user` binds them: the digest, the instant, "active".
        Some(sql) => Statement::from_sql_and_values(
            backend,
            sql,
            [Value::from(digest), Value::from(now), Value::from(true)],
        ),
        None => remember(key, session::find_user(digest, now).build(backend)),
    }
}

/// `INSERT … RETURNING` every column of `model`'s entity, built for `backend`.
pub fn insert_returning<A>(backend: DbBackend, mut model: A) -> Statement
where
    A: ActiveModelTrait + 'static,
{
    let columns = || <A::Entity as EntityTrait>::Column::iter();
    if columns().count() > 64 {
        return build_insert_returning(backend, model);
    }
    let mask = columns()
        .enumerate()
        .filter(|(_, column)| !model.is_not_set(*column))
        .fold(0u64, |mask, (i, _)| mask | 1 << i);
    let key = (TypeId::of::<A>(), Shape::InsertReturning(mask), backend);
    let Some(sql) = lookup(key) else {
        return remember(key, build_insert_returning(backend, model));
    };
    let values: Vec<Value> = columns()
        .filter_map(|column| match model.take(column) {
            ActiveValue::Set(value) | ActiveValue::Unchanged(value) => Some(value),
            ActiveValue::NotSet => None,
        })
        .collect();
    Statement::from_sql_and_values(backend, sql, values)
}

fn build_insert_returning<A: ActiveModelTrait>(backend: DbBackend, model: A) -> Statement {
    let mut insert = A::Entity::insert(model);
    QueryTrait::query(&mut insert)
        .returning(Query::returning().columns(<A::Entity as EntityTrait>::Column::iter()));
    insert.build(backend)
}

#[cfg(test)]
mod tests {
    use entity::{note, user};
    use sea_orm::{ActiveModelBehavior, ActiveValue::Set};

    use super::*;

    const BACKENDS: [DbBackend; 3] = [DbBackend::Postgres, DbBackend::MySql, DbBackend::Sqlite];

    #[test]
    fn cached_lookups_by_id_equal_the_ones_seaorm_builds() {
        for backend in BACKENDS {
            for id in [1, 42, i64::MAX] {
                let fresh = note::Entity::find_by_id(id).build(backend);
                for _ in 0..2 {
                    let cached = find_by_id::<note::Entity>(backend, id);
                    assert_eq!(cached.sql, fresh.sql, "{backend:?}");
                    assert_eq!(cached.values, fresh.values, "{backend:?}");
                }
                let cached = find_by_id::<user::Entity>(backend, id);
                assert_eq!(cached.sql, user::Entity::find_by_id(id).build(backend).sql);
            }
        }
    }

    #[test]
    fn cached_token_lookups_equal_the_ones_seaorm_builds() {
        for backend in BACKENDS {
            for digest in ["a", "b"] {
                let now = entity::now();
                let fresh = session::find_user(digest, now).build(backend);
                let cached = signed_in_user(backend, digest, now);
                assert_eq!(cached.sql, fresh.sql, "{backend:?}");
                assert_eq!(cached.values, fresh.values, "{backend:?}");
            }
        }
    }

    #[test]
    fn cached_inserts_equal_the_ones_seaorm_builds_for_every_set_of_columns() {
        let now = entity::now();
        let full = note::ActiveModel {
            text: Set("milk".into()),
            completed: Set(true),
            created_at: Set(now),
            updated_at: Set(now),
            ..note::ActiveModel::new()
        };
        let with_id = note::ActiveModel {
            id: Set(7),
            ..full.clone()
        };
        let text_only = note::ActiveModel {
            text: Set("x".into()),
            ..Default::default()
        };
        for backend in BACKENDS {
            for model in [&full, &with_id, &text_only, &full] {
                let cached = insert_returning(backend, model.clone());
                let fresh = build_insert_returning(backend, model.clone());
                assert_eq!(cached.sql, fresh.sql, "{backend:?}");
                assert_eq!(cached.values, fresh.values, "{backend:?}");
            }
            let user = user::ActiveModel {
                email: Set("a@example.com".into()),
                hashed_password: Set("$argon2id$…".into()),
                ..user::ActiveModel::new()
            };
            let cached = insert_returning(backend, user.clone());
            let fresh = build_insert_returning(backend, user);
            assert_eq!((cached.sql, cached.values), (fresh.sql, fresh.values));
        }
    }
}
