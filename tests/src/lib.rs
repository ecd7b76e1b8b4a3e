//! The test harness: a private, migrated database per test, the app built on it exactly as
//! production builds it, and the helpers the tests share.
//!
//! # Which mode is for what
//!
//! - **[`TestApp`] — every test that drives the app** (the contract tests in
//!   `tests/tests/{notes,users,export,operability,unit_of_work}.rs`, …). The app runs on
//!   `DbSource::pool(…)` over a database of the test's own, as in production: reads outside a
//!   transaction and single-statement autocommitted writes take the driver fast paths,
//!   writes commit for real, and the test can query the database directly ([`TestApp::conn`])
//!   and see what was committed. [`TestApp::finish`] drops the database.
//! - **[`TestDb::private`] — a private database without the app**, for tests of the
//!   migrations or of the pool itself (`migrations.rs`, `outage.rs`).
//! - **[`TestDb::rollback`] — a transaction rolled back at the test's end**, on a database
//!   the run's rollback-mode tests share, for tests that use SeaORM only (entity rules, the
//!   harness's own tests). It has no app: an app always runs on the pool, as in production.
//!
//! # Databases
//!
//! Per run (one test process), each backend gets a migrated template, named
//! `test_<name>_<pid>_<nonce>_t` (`<name>` comes from the configured URL); it is created and
//! brought to the latest schema by the `migration` crate, so every run tests the migrations.
//! A private database is a copy of it, `…_c<n>` (SQLite: a copy of the file; PostgreSQL:
//! `CREATE DATABASE … TEMPLATE`; MariaDB: the template's `SHOW CREATE TABLE` statements and
//! rows — see `run.rs`). A test's databases are dropped when it finishes, and whatever is
//! left when the process exits — after passing, failing or panicking tests alike.
//!
//! A run refuses to start while a `test_<name>_…` database of a process that is gone exists:
//! it names the leftover and how to remove it (`cargo run --release -p tests --bin
//! clean-test-dbs`), and leaves it untouched. Databases of live processes (parallel test
//! binaries, nextest) are other runs, not leftovers.
//!
//! # Backends
//!
//! Write the backends next to each test with [`backends`]: `#[tests::backends(sqlite,
//! postgres, mysql)]`, or `#[tests::backends(postgres, mysql)]` for server-only tests.
//! SQLite always runs. PostgreSQL runs when `TEST_POSTGRES_URL` is set, MySQL/MariaDB when
//! `TEST_MYSQL_URL` is set — decided when the tests are built (`build.rs`; cargo rebuilds
//! when either changes): an unconfigured backend's tests are reported as *ignored* with the
//! reason, never as passed. With `TEST_ALL_BACKENDS=1` (CI) they are not ignored and fail
//! when their URL is missing or the server unreachable. A backend test that runs without
//! its URL (a binary run by hand, `--include-ignored`) fails too.

pub mod fixtures;
pub mod http;
mod naming;
pub mod process;
pub mod proxy;
mod run;
pub mod schema;
pub mod smtp;

use std::{collections::HashMap, sync::Arc};

use actix_web::{
    body::{BoxBody, MessageBody},
    dev::{Service, ServiceResponse},
    http::Method,
    test::TestRequest,
};
use api::{config::Settings, db::DbSource, state::AppState};
use futures_util::future::LocalBoxFuture;
use sea_orm::{DatabaseConnection, DatabaseExecutor, DatabaseTransaction, TransactionTrait};
use serde_json::Value;

pub use http::{Reply, assert_json, assert_problem};
pub use naming::{is_leftover, parse_owner_pid};
pub use run::{
    Private, RunDatabase, admin_url, check_leftovers, drop_database, list_test_databases,
};
/// `#[backends(sqlite, postgres, mysql)]` on an `async fn name(backend: Backend)`: one test
/// per backend, `name::sqlite`, `name::postgres`, `name::mysql`.
pub use test_backends::backends;

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

    /// A URL to show in messages.
    pub(crate) fn example_url(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite://data/notes.db?mode=rwc",
            Backend::Postgres => "postgres://postgres@127.0.0.1:5432/notes",
            Backend::MySql => "mysql://root@127.0.0.1:3306/notes",
        }
    }

    /// Whether this build of the tests runs this backend's tests (see the crate docs): its
    /// URL was set when they were built, or `TEST_ALL_BACKENDS=1` required it.
    pub fn tested(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => cfg!(tests_postgres),
            Backend::MySql => cfg!(tests_mysql),
        }
    }
}

/// One test's database, and a pool on it.
pub struct TestDb {
    backend: Backend,
    url: String,
    pool: DatabaseConnection,
    /// The outer transaction, in rollback mode.
    txn: Option<Arc<DatabaseTransaction>>,
    /// The private database, dropped by [`TestDb::finish`].
    private: Option<Private>,
    overrides: HashMap<String, String>,
    /// The read replica the app reads on (`DATABASE_READ_URL` = [`REPLICA`]).
    replica: Option<Arc<api::db::Replica>>,
}

/// The `DATABASE_READ_URL` override that means "this test's database on the replica of
/// `TEST_POSTGRES_REPLICA_URL`" (PostgreSQL only); `replica:PORT` reaches it through
/// 127.0.0.1:PORT instead (a [`proxy::Proxy`]).
pub const REPLICA: &str = "replica";

/// The replica of the PostgreSQL test server (`TEST_POSTGRES_REPLICA_URL`), if configured.
pub fn replica_url() -> Option<String> {
    std::env::var("TEST_POSTGRES_REPLICA_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

impl TestDb {
    /// Rollback mode, for tests that use SeaORM only: a transaction on the database the run's
    /// rollback-mode tests share, rolled back by [`TestDb::finish`].
    pub async fn rollback(backend: Backend) -> Self {
        boxed(Self::begin_rollback(backend)).await
    }

    async fn begin_rollback(backend: Backend) -> Self {
        let url = RunDatabase::get(backend).url_for_test();
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
            private: None,
            overrides: HashMap::new(),
            replica: None,
        }
    }

    /// A migrated database of this test's own, with real commits, and a pool on it built as
    /// the server builds it. `overrides` are settings variables (e.g. `DB_POOL_MAX`) for the
    /// pool and the app.
    pub async fn private(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        boxed(Self::create_private(backend, overrides)).await
    }

    async fn create_private(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        let private = RunDatabase::get(backend).private_database().await;
        let mut overrides: HashMap<String, String> = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let url = private.url().to_owned();
        let via = overrides
            .get("DATABASE_READ_URL")
            .and_then(|read| read.strip_prefix(REPLICA))
            .map(|port| {
                port.strip_prefix(':')
                    .map(|p| p.parse::<u16>().expect("a port"))
            });
        let wants_replica = via.is_some();
        if let Some(port) = via {
            assert_eq!(backend, Backend::Postgres, "replicas are PostgreSQL's");
            let mut replica =
                url::Url::parse(&replica_url().expect("TEST_POSTGRES_REPLICA_URL is not set"))
                    .expect("TEST_POSTGRES_REPLICA_URL is a URL");
            replica.set_path(url::Url::parse(&url).expect("a URL").path());
            if let Some(port) = port {
                replica.set_port(Some(port)).expect("a port");
            }
            overrides.insert("DATABASE_READ_URL".into(), replica.to_string());
        }
        let settings = test_settings(&url, &overrides);
        let pool = api::db::connect(&settings)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
        let replica = if wants_replica {
            Some(
                api::db::Replica::start(&settings, pool.clone())
                    .await
                    .expect("the replica's pool"),
            )
        } else {
            None
        };
        Self {
            backend,
            url,
            pool,
            txn: None,
            private: Some(private),
            overrides,
            replica,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the app's requests run: the pool, as in production. A rollback-mode database
    /// has no app: its tests use SeaORM on [`TestDb::conn`] directly.
    pub fn source(&self) -> DbSource {
        assert!(
            self.txn.is_none(),
            "a rollback-mode database has no app: use TestDb::private"
        );
        let source = DbSource::pool(self.pool.clone(), self.settings().db_acquire_timeout);
        match &self.replica {
            Some(replica) => source.with_replica(Arc::clone(replica)),
            None => source,
        }
    }

    /// Another instance's view of this database: the same pool, and a replica monitor of
    /// its own (instances share nothing but the databases).
    pub async fn other_instance_source(&self) -> DbSource {
        let source = DbSource::pool(self.pool.clone(), self.settings().db_acquire_timeout);
        if self.replica.is_none() {
            return source;
        }
        let replica = api::db::Replica::start(&self.settings(), self.pool.clone())
            .await
            .expect("the replica's pool");
        source.with_replica(replica)
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

    /// The full app on a real port on 127.0.0.1, for tests that need real sockets.
    pub async fn spawn_server(&self) -> http::TestServer {
        http::TestServer::start(self.source(), self.settings())
    }

    /// Another instance of the app on a real port, sharing nothing with the first but the
    /// databases ([`TestDb::other_instance_source`]).
    pub async fn spawn_other_server(&self) -> http::TestServer {
        http::TestServer::start(self.other_instance_source().await, self.settings())
    }

    /// The read replica the app reads on, if it has one.
    pub fn replica(&self) -> Option<&Arc<api::db::Replica>> {
        self.replica.as_ref()
    }

    /// End the test: roll back (rollback mode), close the pool, and drop the private database
    /// (in the background: see [`Private::drop_soon`]).
    pub async fn finish(self) {
        boxed(self.end()).await;
    }

    async fn end(mut self) {
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
        if let Some(private) = self.private.take() {
            private.drop_soon();
        }
    }
}

/// The app under test, as a boxed service (its body type boxed).
type AppService = Box<
    dyn Service<
            actix_http::Request,
            Response = ServiceResponse<BoxBody>,
            Error = actix_web::Error,
            Future = LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>,
        >,
>;

/// The full app (same middleware, routes and configuration type as production) on
/// `DbSource::pool(…)` over a private, migrated database, called in-process.
///
/// ```text
/// #[tests::backends(sqlite, postgres, mysql)]
/// async fn deleted_note_is_gone(backend: Backend) {
///     let app = TestApp::spawn(backend).await;
///     let id = app.post_json("/notes", &json!({"text": "x"})).await.json()["id"].clone();
///
///     let reply = app.delete(&format!("/notes/{id}")).await;
///
///     assert_eq!(reply.status, StatusCode::NO_CONTENT);
///     app.finish().await;
/// }
/// ```
pub struct TestApp {
    service: AppService,
    db: TestDb,
    /// The state the app was built with: tests build a second app on the same limits.
    state: AppState,
    /// The token [`TestApp::send`] adds to requests that carry no `Authorization`.
    token: Option<String>,
    /// The job workers a test started ([`TestApp::start_jobs`]), stopped by `finish`.
    jobs: Vec<JobWorker>,
}

/// A second instance of the app under test ([`TestApp::other_instance`]).
pub struct Instance {
    service: AppService,
}

impl Instance {
    /// Send `request` as it is (no token added) and read the whole response.
    pub async fn send(&self, request: TestRequest) -> Reply {
        http::send(&self.service, request).await
    }
}

/// A job worker running beside the app under test, as every instance runs one.
struct JobWorker {
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

/// A signed-up, signed-in user of the app under test.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub id: i64,
    pub email: String,
    pub password: String,
    pub token: String,
}

/// The password every user the harness signs up gets.
pub const TEST_PASSWORD: &str = "correct horse battery";

static USER_SEQUENCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A new e-mail address, unique within the run: `<tag>-<n>@example.com`.
pub fn unique_email(tag: &str) -> String {
    let n = USER_SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{n}@example.com")
}

impl TestApp {
    /// The app with default settings (plus `TESTING=true`) on a new private database.
    pub async fn spawn(backend: Backend) -> Self {
        Self::with_settings(backend, &[]).await
    }

    /// The app with settings `overrides` (e.g. `DB_POOL_MAX`), on a new private database.
    pub async fn with_settings(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        // Boxed, like every deep set-up future here: awaited inline, SeaORM's and actix's
        // futures would make each test's future too deep for the compiler's layout queries.
        boxed(async {
            let db = TestDb::private(backend, overrides).await;
            let state = AppState::new(db.source(), Arc::new(db.settings()));
            let service = app_service(state.clone()).await;
            Self {
                service,
                db,
                state,
                token: None,
                jobs: Vec::new(),
            }
        })
        .await
    }

    /// The app with default settings, and a user signed in whose token every request
    /// carries unless it has an `Authorization` of its own ([`TestApp::user`] says who).
    pub async fn signed_in(backend: Backend) -> (Self, SignedIn) {
        Self::with_settings_signed_in(backend, &[]).await
    }

    /// [`TestApp::with_settings`], signed in as [`TestApp::signed_in`] is.
    pub async fn with_settings_signed_in(
        backend: Backend,
        overrides: &[(&str, &str)],
    ) -> (Self, SignedIn) {
        let mut app = Self::with_settings(backend, overrides).await;
        let user = app.sign_up_and_in("user").await;
        app.token = Some(user.token.clone());
        (app, user)
    }

    /// [`TestApp::signed_in`] as alice, and a second user, bob, signed in too (his requests
    /// name his token).
    pub async fn alice_and_bob(backend: Backend) -> (Self, SignedIn, SignedIn) {
        let (app, alice) = Self::signed_in(backend).await;
        let bob = app.sign_up_and_in("bob").await;
        (app, alice, bob)
    }

    /// [`TestApp::signed_in`], and an admin ([`TestApp::admin`]) whose requests name their
    /// token.
    pub async fn signed_in_with_admin(backend: Backend) -> (Self, SignedIn, SignedIn) {
        let (app, user) = Self::signed_in(backend).await;
        let admin = app.admin().await;
        (app, user, admin)
    }

    /// The app with default settings and a signed-in admin ([`TestApp::admin`]); requests
    /// carry no token unless given one.
    pub async fn with_admin(backend: Backend) -> (Self, SignedIn) {
        let app = Self::spawn(backend).await;
        let admin = app.admin().await;
        (app, admin)
    }

    /// Sign up a new user (`<tag>-<n>@example.com`, [`TEST_PASSWORD`]) through the API and
    /// sign them in.
    pub async fn sign_up_and_in(&self, tag: &str) -> SignedIn {
        let email = unique_email(tag);
        let body = serde_json::json!({"email": email, "password": TEST_PASSWORD});
        let reply = self
            .send_anonymous(http::json_request(Method::POST, "/users", &body))
            .await;
        assert_eq!(reply.status.as_u16(), 201, "sign-up: {reply:?}");
        let id = reply.json()["id"].as_i64().expect("a user id");
        let token = self.sign_in(&email, TEST_PASSWORD).await;
        SignedIn {
            id,
            email,
            password: TEST_PASSWORD.to_owned(),
            token,
        }
    }

    /// Sign up a new user and make them an admin (directly in the database, as
    /// `api create-admin` does), signed in.
    pub async fn admin(&self) -> SignedIn {
        let user = self.sign_up_and_in("admin").await;
        api::seed::create_admin(
            self.conn(),
            &self.state.hasher,
            &user.email,
            api::account::password::Password::new(TEST_PASSWORD.to_owned()),
        )
        .await
        .expect("make the user an admin");
        // Making an admin sets the password, which ends the user's sessions: sign in again.
        let token = self.sign_in(&user.email, TEST_PASSWORD).await;
        SignedIn { token, ..user }
    }

    /// `POST /sessions`: the token for `email` and `password` (panics unless 201).
    pub async fn sign_in(&self, email: &str, password: &str) -> String {
        let body = serde_json::json!({"email": email, "password": password});
        let reply = self
            .send_anonymous(http::json_request(Method::POST, "/sessions", &body))
            .await;
        assert_eq!(reply.status.as_u16(), 201, "sign-in: {reply:?}");
        reply.json()["token"].as_str().expect("a token").to_owned()
    }

    /// The process-wide state the app runs with (its limits), e.g. to build a second app.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The test's database: its URL, pool, settings.
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// The pool the app runs on, for the test's own SeaORM queries: they see what the app
    /// committed.
    pub fn conn(&self) -> &DatabaseConnection {
        self.db.pool()
    }

    /// Send `request` — with the signed-in user's token, unless it carries an
    /// `Authorization` of its own — and read the whole response.
    pub async fn send(&self, request: TestRequest) -> Reply {
        match &self.token {
            Some(token) => http::send_with_token(&self.service, request, token).await,
            None => http::send(&self.service, request).await,
        }
    }

    /// Send `request` as it is, without the signed-in user's token.
    pub async fn send_anonymous(&self, request: TestRequest) -> Reply {
        http::send(&self.service, request).await
    }

    /// Send `request` with `token` as the bearer token.
    pub async fn send_as(&self, token: &str, request: TestRequest) -> Reply {
        http::send_with_token(&self.service, request, token).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(http::get(path)).await
    }

    /// `GET path` as `token`'s user.
    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        self.send_as(token, http::get(path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(http::json_request(Method::POST, path, body))
            .await
    }

    /// `POST path` without a body.
    pub async fn post(&self, path: &str) -> Reply {
        self.send(TestRequest::post().uri(path)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch_json(&self, path: &str, body: &Value) -> Reply {
        self.send(http::json_request(Method::PATCH, path, body))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(TestRequest::delete().uri(path)).await
    }

    /// `DELETE path` as `token`'s user.
    pub async fn delete_as(&self, token: &str, path: &str) -> Reply {
        self.send_as(token, TestRequest::delete().uri(path)).await
    }

    /// Another instance of the app on this database: its own state (throttles in memory,
    /// session cache, job wake-up), sharing only the databases, in process.
    pub async fn other_instance(&self) -> Instance {
        let state = AppState::new(
            self.db.other_instance_source().await,
            Arc::new(self.db.settings()),
        );
        Instance {
            service: app_service(state).await,
        }
    }

    /// The same app on a real port on 127.0.0.1 (same pool), for tests that need sockets.
    pub async fn serve(&self) -> http::TestServer {
        self.db.spawn_server().await
    }

    /// Start a job worker on the app's database, as every instance runs one beside its
    /// server: it delivers mail to `smtp_url` (a [`smtp::SmtpReceiver`]'s), or into `.eml`
    /// files under the app's `MAIL_DIR` when `None`. Woken by the app's requests; call it
    /// twice for two instances' workers.
    pub fn start_jobs(&mut self, smtp_url: Option<&str>) {
        let settings = &self.state.settings;
        let delivery = api::mail::Delivery::new(smtp_url, &settings.mail.dir)
            .unwrap_or_else(|e| panic!("mail delivery for the test: {e}"));
        let worker = api::jobs::Worker::new(
            self.db.pool().clone(),
            delivery,
            settings,
            self.state.jobs.clone(),
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let done = actix_web::rt::spawn(worker.run(stopped));
        self.jobs.push(JobWorker { stop, done });
    }

    /// Stop the job workers (each finishes its job and hands its batch back).
    pub async fn stop_jobs(&mut self) {
        for worker in self.jobs.drain(..) {
            let _ = worker.stop.send(true);
            let _ = worker.done.await;
        }
    }

    /// End the test: stop the app, close the pool, drop the database.
    pub async fn finish(mut self) {
        self.stop_jobs().await;
        drop(self.service);
        boxed(self.db.finish()).await;
    }
}

/// `future`, boxed: a test's future holds a pointer to it instead of all its state.
fn boxed<'a, T>(future: impl Future<Output = T> + 'a) -> LocalBoxFuture<'a, T> {
    Box::pin(future)
}

async fn app_service(state: AppState) -> AppService {
    let service = actix_web::test::init_service(api::startup::app(state)).await;
    Box::new(Boxed(service))
}

/// A service whose future and body are boxed, so the app's type can be named.
struct Boxed<S>(S);

impl<S, B> Service<actix_http::Request> for Boxed<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&self, request: actix_http::Request) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move { response.await.map(ServiceResponse::map_into_boxed_body) })
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
