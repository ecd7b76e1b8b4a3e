//! The test harness: isolated, migrated test databases, and the app built for a test.
//!
//! Per run (one test process), each backend gets a database named
//! `test_<name>_<pid>_<nonce>_r`, where `<name>` comes from the configured URL. It is created,
//! brought to the latest schema by the `migration` crate (so every run tests the migrations),
//! and dropped when the process exits — after passing, failing or panicking tests alike.
//!
//! A run refuses to start while a `test_<name>_…` database of a process that is gone exists:
//! it names the leftover and how to remove it (`cargo run --release -p tests --bin
//! clean-test-dbs`), and leaves it untouched. Databases of live processes (parallel test
//! binaries, nextest) are other runs, not leftovers.
//!
//! Per test, [`TestDb::rollback`] hands out an outer transaction on the run's database; the
//! app under test runs every request inside it (see [`api::db::DbSource::Pinned`]) and the
//! test's end rolls it back, so tests run in parallel without seeing each other's rows.
//! Tests that need real commits (races, pool behaviour) use [`TestDb::committed`], which
//! creates and migrates a database of their own.
//!
//! Backends: SQLite always; PostgreSQL when `TEST_POSTGRES_URL` is set, MySQL/MariaDB when
//! `TEST_MYSQL_URL` is set. With `TEST_ALL_BACKENDS=1` (CI) a missing or unreachable backend
//! fails the tests instead of being skipped.

pub mod http;
mod naming;
mod run;

use std::{collections::HashMap, sync::Arc};

use api::{
    config::Settings,
    db::DbSource,
    startup::{self, AppState},
};
use sea_orm::{DatabaseConnection, DatabaseExecutor, DatabaseTransaction, TransactionTrait};

pub use naming::{is_leftover, parse_owner_pid};
pub use run::{RunDatabase, admin_url, check_leftovers, drop_database, list_test_databases};

/// A database backend the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    /// The variable holding this backend's URL (SQLite needs none).
    pub fn url_var(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("TEST_POSTGRES_URL"),
            Backend::MySql => Some("TEST_MYSQL_URL"),
        }
    }

    /// The configured URL whose database name the test databases derive from.
    pub fn configured_url(self) -> Option<String> {
        match self.url_var() {
            None => Some("sqlite://data/notes.db?mode=rwc".to_owned()),
            Some(var) => std::env::var(var).ok().filter(|v| !v.trim().is_empty()),
        }
    }

    /// Whether tests should run on this backend. Panics when the backend is required
    /// (`TEST_ALL_BACKENDS=1`) but not configured: no silent skip in CI.
    pub fn enabled(self) -> bool {
        if self.configured_url().is_some() {
            return true;
        }
        let var = self.url_var().unwrap_or_default();
        if all_backends_required() {
            panic!("TEST_ALL_BACKENDS=1 but {var} is not set: {self:?} cannot be tested");
        }
        eprintln!("note: {self:?} tests skipped; set {var} to run them");
        false
    }
}

fn all_backends_required() -> bool {
    matches!(
        std::env::var("TEST_ALL_BACKENDS").as_deref(),
        Ok("1" | "true")
    )
}

/// One test's database.
pub struct TestDb {
    backend: Backend,
    url: String,
    pool: DatabaseConnection,
    /// The outer transaction, in rollback mode.
    txn: Option<Arc<DatabaseTransaction>>,
    overrides: HashMap<String, String>,
}

impl TestDb {
    /// Rollback mode: a transaction on the run's database that is rolled back at the end.
    pub async fn rollback(backend: Backend) -> Self {
        let run = RunDatabase::get(backend);
        let url = run.url_for_test();
        let settings = test_settings(&url, &HashMap::new());
        let pool = api::db::connect(&settings)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
        let txn = pool
            .begin()
            .await
            .unwrap_or_else(|e| panic!("cannot begin the test transaction: {e}"));
        Self {
            backend,
            url,
            pool,
            txn: Some(Arc::new(txn)),
            overrides: HashMap::new(),
        }
    }

    /// Committed mode: a fresh, migrated database of this test's own, with real commits.
    /// `overrides` are settings variables (e.g. `DB_POOL_MAX`) for the app and its pool.
    pub async fn committed(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        let url = RunDatabase::get(backend).create_private_database().await;
        let overrides: HashMap<String, String> = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let settings = test_settings(&url, &overrides);
        let pool = api::db::connect(&settings)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
        Self {
            backend,
            url,
            pool,
            txn: None,
            overrides,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the app's requests run: the outer transaction, or the pool.
    pub fn source(&self) -> DbSource {
        match &self.txn {
            Some(txn) => DbSource::Pinned(Arc::clone(txn)),
            None => DbSource::pool(self.pool.clone(), self.settings().db_acquire_timeout),
        }
    }

    /// An executor for the test's own queries; it sees what the app wrote.
    pub fn conn(&self) -> DatabaseExecutor<'_> {
        match &self.txn {
            Some(txn) => DatabaseExecutor::Transaction(txn),
            None => DatabaseExecutor::Connection(&self.pool),
        }
    }

    /// The pool (in rollback mode, only for what must bypass the test's transaction).
    pub fn pool(&self) -> &DatabaseConnection {
        &self.pool
    }

    /// The settings the app under test gets: `TESTING=true`, this database, the overrides.
    pub fn settings(&self) -> Settings {
        test_settings(&self.url, &self.overrides)
    }

    /// The full app (same middleware, routes and config type as production), in-process.
    pub async fn app(
        &self,
    ) -> impl actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
    > {
        let state = AppState {
            db: self.source(),
            settings: Arc::new(self.settings()),
        };
        actix_web::test::init_service(startup::app(state)).await
    }

    /// The full app on a real port on 127.0.0.1, for tests that need real sockets.
    pub async fn spawn_server(&self) -> http::TestServer {
        http::TestServer::start(self.source(), self.settings())
    }

    /// End the test: roll back (rollback mode) and close the pool.
    pub async fn finish(mut self) {
        if let Some(txn) = self.txn.take() {
            match Arc::try_unwrap(txn) {
                Ok(txn) => txn
                    .rollback()
                    .await
                    .expect("rollback of the test transaction"),
                Err(_) => panic!("the test transaction is still shared: drop the app first"),
            }
        }
        // Bounded: a connection that a broken test never returned must not hang the run.
        let close = self.pool.clone().close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), close).await;
    }
}

/// Settings for the app under test: defaults, `TESTING=true`, `url`, then `overrides`.
pub fn test_settings(url: &str, overrides: &HashMap<String, String>) -> Settings {
    let url = url.to_owned();
    Settings::from_lookup(|name| {
        if let Some(value) = overrides.get(name) {
            return Some(value.clone());
        }
        match name {
            "DATABASE_URL" => Some(url.clone()),
            "TESTING" => Some("true".to_owned()),
            _ => None,
        }
    })
    .unwrap_or_else(|e| panic!("bad test settings: {e}"))
}

/// Run a test function on each backend: `each_backend!(creates_note, lists_notes);` makes
/// `sqlite::creates_note`, `postgres::creates_note` and `mysql::creates_note`, each calling
/// `creates_note(Backend)`. PostgreSQL and MySQL tests run when their URL is set.
#[macro_export]
macro_rules! each_backend {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[::actix_web::test]
                async fn $test() {
                    super::$test($crate::Backend::Sqlite).await
                }
            )+
        }
        $crate::server_backends!($($test),+);
    };
}

/// Like [`each_backend!`], for tests that only make sense on a database server (PostgreSQL
/// and MySQL/MariaDB): an outage, a database that exists beside the run's.
#[macro_export]
macro_rules! server_backends {
    ($($test:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[::actix_web::test]
                async fn $test() {
                    if $crate::Backend::Postgres.enabled() {
                        super::$test($crate::Backend::Postgres).await
                    }
                }
            )+
        }
        mod mysql {
            $(
                #[::actix_web::test]
                async fn $test() {
                    if $crate::Backend::MySql.enabled() {
                        super::$test($crate::Backend::MySql).await
                    }
                }
            )+
        }
    };
}
