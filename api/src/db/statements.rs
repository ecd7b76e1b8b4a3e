//! The hot statements' SQL, built by SeaORM once per shape and backend, then reused with each
//! request's values.
//!
//! Building a statement — an expression tree, rendered to SQL, then dropped — cost more than
//! a fifth of the instructions of `GET /notes/{id}` (bench/PERFORMANCE.md, "statement
//! cache"). The SQL of a lookup by primary key, or of an insert of a given set of columns,
//! depends only on the entity, the shape and the backend; the values are placeholders. So
//! each worker thread keeps the SQL SeaORM rendered the first time and binds new values to
//! it, in the order SeaORM itself binds them. The tests below hold the two equal.

use std::{any::TypeId, cell::RefCell};

use sea_orm::{
    ActiveModelTrait, ActiveValue, DbBackend, EntityTrait, Iterable, PrimaryKeyTrait, QueryTrait,
    Statement, Value, sea_query::Query,
};

/// What a cached SQL text is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `SELECT <every column> FROM <table> WHERE <pk> = ?`
    FindById,
    /// `INSERT INTO <table> (<the set columns>) VALUES (…) RETURNING <every column>`;
    /// bit `i` of the mask is set when the entity's column `i` is set.
    InsertReturning(u64),
}

type Key = (TypeId, Shape, DbBackend);

thread_local! {
    /// A few entries per entity and backend: scanned, not hashed.
    static SQL: RefCell<Vec<(Key, Box<str>)>> = const { RefCell::new(Vec::new()) };
}

/// `build()`'s SQL, or the one built before for `key`, with `values` bound.
fn cached(key: Key, values: Vec<Value>, build: impl FnOnce() -> Statement) -> Statement {
    let backend = key.2;
    let sql = SQL.with_borrow(|cache| {
        cache
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, sql)| sql.to_string())
    });
    let sql = sql.unwrap_or_else(|| {
        let sql = build().sql;
        SQL.with_borrow_mut(|cache| cache.push((key, sql.clone().into_boxed_str())));
        sql
    });
    Statement::from_sql_and_values(backend, sql, values)
}

/// `E::find_by_id(id)`, built for `backend`.
pub fn find_by_id<E>(
    backend: DbBackend,
    id: <E::PrimaryKey as PrimaryKeyTrait>::ValueType,
) -> Statement
where
    E: EntityTrait,
{
    use sea_orm::sea_query::{FromValueTuple, IntoValueTuple};
    let tuple = id.into_value_tuple();
    let values: Vec<Value> = tuple.clone().into_iter().collect();
    let key = (TypeId::of::<E>(), Shape::FindById, backend);
    cached(key, values, || {
        let id = <E::PrimaryKey as PrimaryKeyTrait>::ValueType::from_value_tuple(tuple);
        E::find_by_id(id).build(backend)
    })
}

/// `INSERT … RETURNING` every column of `model`'s entity, built for `backend`.
pub fn insert_returning<A>(backend: DbBackend, mut model: A) -> Statement
where
    A: ActiveModelTrait + 'static,
{
    let columns: Vec<_> = <A::Entity as EntityTrait>::Column::iter().collect();
    if columns.len() > 64 {
        return build_insert_returning(backend, model);
    }
    let mut mask = 0u64;
    let mut values = Vec::with_capacity(columns.len());
    let template = model.clone();
    for (i, column) in columns.into_iter().enumerate() {
        match model.take(column) {
            ActiveValue::Set(value) | ActiveValue::Unchanged(value) => {
                mask |= 1 << i;
                values.push(value);
            }
            ActiveValue::NotSet => {}
        }
    }
    let key = (TypeId::of::<A>(), Shape::InsertReturning(mask), backend);
    cached(key, values, || build_insert_returning(backend, template))
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
