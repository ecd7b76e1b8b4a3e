//! SQL built once per backend by SeaORM's query builder, then reused with new values.
//!
//! Building a statement — an expression tree, rendered to SQL, then dropped — is a visible
//! share of a request as small as `GET /notes/{id}` (the benchmark's profile). The hot
//! single-row statements are built here once per backend; a request only binds its values.
//! The driver's per-connection prepared-statement cache, keyed by the SQL, does the rest.

use std::sync::OnceLock;

use sea_orm::{DbBackend, Statement, Value};

/// A statement's SQL, built by `build` on first use for each backend.
pub struct CachedSql {
    build: fn(DbBackend) -> Statement,
    sql: [OnceLock<String>; 3],
}

impl CachedSql {
    /// `build` renders the statement for a backend; its values are placeholders, replaced by
    /// those given to [`CachedSql::with_values`] in the same order.
    pub const fn new(build: fn(DbBackend) -> Statement) -> Self {
        Self {
            build,
            sql: [OnceLock::new(), OnceLock::new(), OnceLock::new()],
        }
    }

    /// The statement for `backend` with `values` bound.
    pub fn with_values(
        &self,
        backend: DbBackend,
        values: impl IntoIterator<Item = Value>,
    ) -> Statement {
        Statement::from_sql_and_values(backend, self.sql(backend), values)
    }

    /// The SQL for `backend`.
    ///
    /// # Panics
    /// For a backend SeaORM may add later, which this service does not know.
    pub fn sql(&self, backend: DbBackend) -> &str {
        let slot = match backend {
            DbBackend::Postgres => &self.sql[0],
            DbBackend::MySql => &self.sql[1],
            DbBackend::Sqlite => &self.sql[2],
            #[allow(unreachable_patterns)]
            other => panic!("no cached SQL for {other:?}"),
        };
        slot.get_or_init(|| (self.build)(backend).sql)
    }
}

#[cfg(test)]
mod tests {
    use entity::note;
    use sea_orm::{EntityTrait, QueryTrait};

    use super::*;

    static BY_ID: CachedSql = CachedSql::new(|backend| note::Entity::find_by_id(0).build(backend));

    #[test]
    fn cached_statements_equal_freshly_built_ones() {
        for backend in [DbBackend::Postgres, DbBackend::MySql, DbBackend::Sqlite] {
            for id in [1, 42, i64::MAX] {
                let cached = BY_ID.with_values(backend, [id.into()]);
                let fresh = note::Entity::find_by_id(id).build(backend);
                assert_eq!(cached.sql, fresh.sql, "{backend:?}");
                assert_eq!(cached.values, fresh.values, "{backend:?}");
            }
        }
    }
}
