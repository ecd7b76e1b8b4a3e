//! The run's databases: a migrated template per backend, created once per test process, and
//! the private databases cloned from it for each test; all dropped at the process's exit at
//! the latest.
//!
//! - SQLite: the template is a migrated file in a temporary directory; a private database is
//!   a copy of the file.
//! - PostgreSQL: the template is a migrated database that accepts no connections once
//!   migrated (`ALLOW_CONNECTIONS false`), so `CREATE DATABASE … TEMPLATE …` can always copy
//!   it; a private database is such a copy.
//! - MySQL/MariaDB (no templates): the template is a migrated database too; its tables are
//!   read back once (`SHOW CREATE TABLE`, which keeps foreign keys, unlike
//!   `CREATE TABLE … LIKE`) and a private database is `CREATE DATABASE`, those statements
//!   and a copy of the template's rows (the migrations table), in one round trip. The
//!   harness's own tests compare a clone's schema with a freshly migrated database's.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, Statement,
    sqlx::{self, AssertSqlSafe},
};

use crate::{Backend, naming};

/// Everything this process created and has not dropped yet, dropped by the `atexit` hook.
static CREATED: Mutex<Vec<Created>> = Mutex::new(Vec::new());
static HOOK: OnceLock<()> = OnceLock::new();
static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
/// Background work not finished: drops started by [`Private::drop_soon`], spares being
/// created. The exit hook waits for it, so nothing is created after it made its list.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Set by the exit hook: no more spares.
static EXITING: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Created {
    Database { admin_url: String, name: String },
    Directory(PathBuf),
}

/// A database made for one test (or for the run's rollback-mode tests).
#[derive(Debug)]
pub struct Private {
    backend: Backend,
    url: String,
    /// The database's name (servers) or file (SQLite).
    name: String,
}

impl Private {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drop the database now (after its pools are closed) rather than at the process's exit.
    pub async fn drop_now(self) {
        if let Some(dropping) = self.start_drop() {
            let _ = dropping.await;
        }
    }

    /// Start dropping the database (after its pools are closed), without waiting for it.
    ///
    /// On PostgreSQL, `DROP DATABASE` waits for a checkpoint — every dirty buffer of every
    /// test written out — so a test that waited for it would wait for the others' writes
    /// (100 ms and more while tests run, against a few ms alone). In the background, drops
    /// overlap the next tests and share checkpoints. The exit hook waits for the drops still
    /// running and drops what was not dropped.
    pub fn drop_soon(self) {
        drop(self.start_drop());
    }

    fn start_drop(self) -> Option<tokio::task::JoinHandle<()>> {
        let run = RunDatabase::get(self.backend);
        let Some(server) = &run.server else {
            // The file, and the WAL and shared-memory files beside it.
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.name));
            }
            return None;
        };
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Some(harness_runtime().spawn(async move {
            let dropped = match server.admin().await {
                Ok(admin) => drop_on(&admin, &self.name).await,
                Err(e) => Err(e),
            };
            match dropped {
                Ok(()) => forget(&Created::Database {
                    admin_url: server.admin_url.clone(),
                    name: self.name,
                }),
                // Left to the exit hook, which tries again.
                Err(e) => eprintln!("test harness: {e}"),
            }
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        }))
    }
}

/// The run's template per backend: SQLite, PostgreSQL, MySQL.
static RUNS: [OnceLock<RunDatabase>; 3] = [const { OnceLock::new() }; 3];

/// A backend's template database for this run.
pub struct RunDatabase {
    backend: Backend,
    base: String,
    nonce: String,
    /// SQLite: the directory holding the migrated template file.
    sqlite_dir: Option<PathBuf>,
    /// PostgreSQL/MySQL.
    server: Option<Server>,
    /// The database rollback-mode tests share, made on first use.
    rollback: OnceLock<Private>,
    /// Private databases made ahead of the tests that will take them (servers).
    spares: Mutex<Spares>,
}

/// Creating a PostgreSQL database costs a copy of the template's catalogs and an fsync:
/// around 100 ms one after the other, but several at once cost little more than one. So
/// while tests run, the next tests' databases are being created, a few at a time.
#[derive(Default)]
struct Spares {
    ready: Vec<Private>,
    /// Being created.
    pending: usize,
    /// How many to keep ready or pending: one more per database asked for, up to the
    /// backend's most, so a test binary with one test on this backend wastes at most one.
    wanted: usize,
}

impl Backend {
    /// How many private databases to make ahead of the tests (see [`Spares`]).
    fn spares(self) -> usize {
        match self {
            Backend::Postgres => 4,
            // A MariaDB database costs a few milliseconds, a SQLite one a file copy.
            Backend::MySql | Backend::Sqlite => 0,
        }
    }
}

struct Server {
    admin_url: String,
    /// The template's name.
    template: String,
    /// MySQL/MariaDB: the statements that make a database like the template, after its
    /// `CREATE DATABASE` and `USE`.
    mysql_script: String,
    /// A connection pool to the maintenance database, on the harness runtime.
    admin: tokio::sync::OnceCell<DatabaseConnection>,
}

impl Server {
    async fn admin(&self) -> Result<DatabaseConnection, String> {
        self.admin
            .get_or_try_init(|| async {
                // Room for the spares being created at once, and a test's own.
                let mut options = sea_orm::ConnectOptions::new(&self.admin_url);
                options
                    .max_connections(8)
                    .min_connections(0)
                    .connect_timeout(Duration::from_secs(5))
                    .acquire_timeout(Duration::from_secs(30))
                    .sqlx_logging(false);
                sea_orm::Database::connect(options).await.map_err(|e| {
                    format!(
                        "cannot connect to {}: {}",
                        migration::database::redact(&self.admin_url),
                        migration::database::scrub(&e.to_string(), &self.admin_url)
                    )
                })
            })
            .await
            .cloned()
    }
}

impl RunDatabase {
    /// The run's template for `backend`, created and migrated on first use.
    ///
    /// Panics with the reason when the backend is not configured or not reachable: a test
    /// that asked for it must fail, never pass without having run.
    pub fn get(backend: Backend) -> &'static RunDatabase {
        let [sqlite, postgres, mysql] = &RUNS;
        let cell = match backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
            Backend::MySql => mysql,
        };
        cell.get_or_init(|| {
            // Blocking: this thread may be inside a test's runtime, which cannot block on
            // another; a thread of its own can.
            std::thread::spawn(move || harness_runtime().block_on(RunDatabase::create(backend)))
                .join()
                .unwrap_or_else(|_| std::process::abort())
                .unwrap_or_else(|message| panic!("{message}"))
        })
    }

    async fn create(backend: Backend) -> Result<Self, String> {
        let configured = backend.configured_url().ok_or_else(|| {
            let var = backend.url_var().unwrap_or_default();
            format!(
                "{var} is not set: the {backend:?} tests cannot run. Set it (e.g. \
                 {var}={}), or leave both it and TEST_ALL_BACKENDS unset when the tests \
                 are built to have these tests reported as ignored",
                backend.example_url()
            )
        })?;
        let base = naming::base_name(&configured);
        let nonce = format!("{:06x}", uuid::Uuid::new_v4().as_u128() & 0xff_ffff);
        register_exit_hook();
        let mut run = Self {
            backend,
            base,
            nonce,
            sqlite_dir: None,
            server: None,
            rollback: OnceLock::new(),
            spares: Mutex::default(),
        };
        if backend == Backend::Sqlite {
            let dir = std::env::temp_dir().join(format!(
                "{}{}_{}",
                naming::prefix(&run.base),
                std::process::id(),
                run.nonce
            ));
            if dir.exists() {
                return Err(format!(
                    "the test directory {} already exists; remove it (rm -r) and run again",
                    dir.display()
                ));
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
            remember(Created::Directory(dir.clone()));
            migrate(&sqlite_url(&dir.join("template.db"))).await?;
            run.sqlite_dir = Some(dir);
            return Ok(run);
        }
        let admin_url = admin_url(&configured)?;
        check_leftovers(&admin_url, &run.base).await?;
        let template = run.name("t");
        let admin = connect(&admin_url).await?;
        let url = create_empty(&admin, &admin_url, &template).await?;
        migrate(&url).await?;
        let mysql_script = match admin.get_database_backend() {
            DbBackend::MySql => mysql_clone_script(&admin, &template).await?,
            _ => {
                // Nobody may stay connected to a template: CREATE DATABASE … TEMPLATE
                // refuses to copy a database that has sessions.
                admin
                    .execute_unprepared(&format!(
                        "ALTER DATABASE \"{template}\" WITH ALLOW_CONNECTIONS false"
                    ))
                    .await
                    .map_err(|e| format!("cannot close the template {template}: {e}"))?;
                String::new()
            }
        };
        let _ = admin.close().await;
        run.server = Some(Server {
            admin_url,
            template,
            mysql_script,
            admin: tokio::sync::OnceCell::new(),
        });
        Ok(run)
    }

    /// The templates made so far.
    fn started() -> impl Iterator<Item = &'static RunDatabase> {
        RUNS.iter().filter_map(OnceLock::get)
    }

    fn name(&self, kind: &str) -> String {
        naming::database_name(&self.base, std::process::id(), &self.nonce, kind)
    }

    /// The database rollback-mode tests share (SQLite: a copy of the template per test, as
    /// SQLite has one writer per file and open transactions would queue behind each other).
    pub fn url_for_test(&'static self) -> String {
        match &self.server {
            None => self.copy_template().url,
            Some(_) => {
                let shared = self.rollback.get_or_init(|| {
                    std::thread::spawn(move || {
                        harness_runtime().block_on(self.create_private("r".to_owned()))
                    })
                    .join()
                    .unwrap_or_else(|_| std::process::abort())
                    .unwrap_or_else(|message| panic!("{message}"))
                });
                shared.url.clone()
            }
        }
    }

    /// A new database of this test's own, with the template's schema and rows.
    pub async fn private_database(&'static self) -> Private {
        if self.server.is_none() {
            return self.copy_template();
        }
        let spare = self
            .spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready
            .pop();
        self.make_spares();
        match spare {
            Some(private) => private,
            None => on_harness_runtime(self.create_private(self.private_kind()))
                .await
                .unwrap_or_else(|message| panic!("{message}")),
        }
    }

    /// A private database made now, not taken from the spares (what one costs).
    pub async fn cloned_database(&'static self) -> Private {
        if self.server.is_none() {
            return self.copy_template();
        }
        on_harness_runtime(self.create_private(self.private_kind()))
            .await
            .unwrap_or_else(|message| panic!("{message}"))
    }

    fn private_kind(&self) -> String {
        format!("c{}", SEQUENCE.fetch_add(1, Ordering::Relaxed))
    }

    /// Start creating spares until as many are ready or pending as wanted (one more wanted
    /// each time, up to the backend's most).
    fn make_spares(&'static self) {
        let most = self.backend.spares();
        let start = {
            let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
            if EXITING.load(Ordering::SeqCst) {
                return;
            }
            spares.wanted = (spares.wanted + 1).min(most);
            let start = spares
                .wanted
                .saturating_sub(spares.ready.len() + spares.pending);
            spares.pending += start;
            // Counted before the lock is released: the exit hook sets EXITING under it.
            IN_FLIGHT.fetch_add(start, Ordering::SeqCst);
            start
        };
        for _ in 0..start {
            harness_runtime().spawn(async move {
                let made = self.create_private(self.private_kind()).await;
                let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
                spares.pending -= 1;
                match made {
                    Ok(private) => spares.ready.push(private),
                    // A test that creates its own will report it.
                    Err(message) => eprintln!("test harness: {message}"),
                }
                drop(spares);
                IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// A new database migrated by the `migration` crate, not cloned: what a clone must equal.
    pub async fn migrated_database(&'static self) -> Private {
        let private = self.new_database("m").await;
        let url = private.url().to_owned();
        on_harness_runtime(async move { migrate(&url).await })
            .await
            .unwrap_or_else(|message| panic!("{message}"));
        private
    }

    /// A new database with nothing in it (not even the migrations' table), for the tests of
    /// the binaries and of the migrations themselves; dropped by [`Private::drop_now`], or at
    /// the process's exit (SQLite: a file path, created by whoever opens it with `mode=rwc`).
    pub async fn empty_database(&'static self) -> Private {
        self.new_database("e").await
    }

    /// A new empty database, `…_<kind><n>`.
    async fn new_database(&'static self, kind: &str) -> Private {
        let kind = format!("{kind}{}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let Some(server) = &self.server else {
            return self.sqlite_private(self.file(&kind));
        };
        let name = self.name(&kind);
        let url = on_harness_runtime({
            let name = name.clone();
            async move { create_empty(&server.admin().await?, &server.admin_url, &name).await }
        })
        .await
        .unwrap_or_else(|message| panic!("{message}"));
        Private {
            backend: self.backend,
            url,
            name,
        }
    }

    /// Make `test_…_<kind>` like the template. Refuses if it exists.
    async fn create_private(&self, kind: String) -> Result<Private, String> {
        let server = self.server.as_ref().expect("a database server");
        let name = self.name(&kind);
        let admin = server.admin().await?;
        if admin.get_database_backend() == DbBackend::MySql {
            let mut conn = admin
                .get_mysql_connection_pool()
                .acquire()
                .await
                .map_err(|e| format!("cannot reach the MySQL server: {e}"))?;
            let script = format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; \
                 USE `{name}`; {}",
                server.mysql_script
            );
            let created = sqlx::raw_sql(AssertSqlSafe(script))
                .execute(&mut *conn)
                .await;
            if let Err(e) = created {
                // Its session state (current database, FOREIGN_KEY_CHECKS) is unknown.
                drop(conn.detach());
                if e.to_string().contains("database exists") {
                    return Err(refusal(&name));
                }
                // Created, then a table failed: the exit hook drops what was made.
                remember(Created::Database {
                    admin_url: server.admin_url.clone(),
                    name: name.clone(),
                });
                return Err(format!("cannot create test database {name}: {e}"));
            }
            remember(Created::Database {
                admin_url: server.admin_url.clone(),
                name: name.clone(),
            });
        } else {
            let template = &server.template;
            let created = admin
                .execute_unprepared(&format!(
                    "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
                ))
                .await;
            if let Err(e) = created {
                return Err(if e.to_string().contains("already exists") {
                    refusal(&name)
                } else {
                    format!("cannot create test database {name}: {e}")
                });
            }
            remember(Created::Database {
                admin_url: server.admin_url.clone(),
                name: name.clone(),
            });
        }
        Ok(Private {
            backend: self.backend,
            url: with_database(&server.admin_url, &name)?,
            name,
        })
    }

    fn file(&self, stem: &str) -> PathBuf {
        self.sqlite_dir
            .as_ref()
            .expect("a SQLite run")
            .join(format!("{stem}.db"))
    }

    fn copy_template(&self) -> Private {
        let file = self.file(&format!("t{}", SEQUENCE.fetch_add(1, Ordering::Relaxed)));
        std::fs::copy(self.file("template"), &file)
            .unwrap_or_else(|e| panic!("cannot copy the SQLite template: {e}"));
        self.sqlite_private(file)
    }

    fn sqlite_private(&self, file: PathBuf) -> Private {
        Private {
            backend: self.backend,
            url: sqlite_url(&file),
            name: file.display().to_string(),
        }
    }
}

/// The statements that recreate the template's tables, foreign keys included, copy its rows
/// (the migrations table's) and recreate its triggers, to run after `USE <new database>`.
async fn mysql_clone_script(admin: &DatabaseConnection, template: &str) -> Result<String, String> {
    let error = |e: sea_orm::DbErr| format!("cannot read the template {template}: {e}");
    // Tables (with their rows) and triggers are copied: anything else would be silently
    // missing from the clones.
    let others = admin
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT CONCAT('routine ', ROUTINE_NAME) AS what FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = ? \
             UNION ALL SELECT CONCAT('event ', EVENT_NAME) FROM information_schema.EVENTS \
             WHERE EVENT_SCHEMA = ? \
             UNION ALL SELECT CONCAT('view ', TABLE_NAME) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE <> 'BASE TABLE'",
            [template.into(), template.into(), template.into()],
        ))
        .await
        .map_err(error)?;
    if let Some(row) = others.first() {
        let what: String = row.try_get("", "what").unwrap_or_default();
        return Err(format!(
            "the migrations created a {what}: the MySQL test databases copy tables and \
             triggers only; teach tests/src/run.rs to copy it"
        ));
    }
    let triggers = admin
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = ? ORDER BY TRIGGER_NAME",
            [template.into()],
        ))
        .await
        .map_err(error)?;
    let tables = admin
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT TABLE_NAME AS name FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
            [template.into()],
        ))
        .await
        .map_err(error)?;
    // FULLTEXT indexes take the session's stop-word setting when created: the migration
    // makes the notes' index without stop words, and so must the copy.
    let mut script = String::from(
        "SET SESSION FOREIGN_KEY_CHECKS = 0; SET SESSION innodb_ft_enable_stopword = OFF; ",
    );
    let mut copies = String::new();
    for row in tables {
        let table: String = row.try_get("", "name").map_err(error)?;
        let shown = admin
            .query_one_raw(Statement::from_string(
                DbBackend::MySql,
                format!("SHOW CREATE TABLE `{template}`.`{table}`"),
            ))
            .await
            .map_err(error)?
            .ok_or_else(|| format!("no definition for {template}.{table}"))?;
        let create: String = shown.try_get_by_index(1).map_err(error)?;
        script.push_str(&create);
        script.push_str("; ");
        copies.push_str(&format!(
            "INSERT INTO `{table}` SELECT * FROM `{template}`.`{table}`; "
        ));
    }
    script.push_str(&copies);
    // After the rows: a trigger on `users` would otherwise fire for each copied user.
    for row in triggers {
        let trigger: String = row.try_get("", "name").map_err(error)?;
        let shown = admin
            .query_one_raw(Statement::from_string(
                DbBackend::MySql,
                format!("SHOW CREATE TRIGGER `{template}`.`{trigger}`"),
            ))
            .await
            .map_err(error)?
            .ok_or_else(|| format!("no definition for the trigger {template}.{trigger}"))?;
        // Unqualified names: it is created in (and acts on) the clone.
        let create: String = shown.try_get_by_index(2).map_err(error)?;
        script.push_str(&create);
        script.push_str("; ");
    }
    script.push_str(
        "SET SESSION FOREIGN_KEY_CHECKS = 1; SET SESSION innodb_ft_enable_stopword = DEFAULT",
    );
    Ok(script)
}

/// `CREATE DATABASE name` (empty), remembered for the exit hook; its URL.
async fn create_empty(
    admin: &DatabaseConnection,
    admin_url: &str,
    name: &str,
) -> Result<String, String> {
    if list_on(admin, name).await?.iter().any(|n| n == name) {
        return Err(refusal(name));
    }
    let create = match admin.get_database_backend() {
        DbBackend::MySql => {
            format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        }
        _ => format!("CREATE DATABASE \"{name}\""),
    };
    admin
        .execute_unprepared(&create)
        .await
        .map_err(|e| format!("cannot create test database {name}: {e}"))?;
    remember(Created::Database {
        admin_url: admin_url.to_owned(),
        name: name.to_owned(),
    });
    with_database(admin_url, name)
}

/// The URL of the server's maintenance database, from a configured URL.
pub fn admin_url(configured: &str) -> Result<String, String> {
    let maintenance = if configured.starts_with("postgres") {
        "postgres"
    } else {
        ""
    };
    with_database(configured, maintenance)
}

fn with_database(url: &str, database: &str) -> Result<String, String> {
    let mut parsed =
        url::Url::parse(url).map_err(|_| "the test database URL is not a URL".to_owned())?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

fn refusal(name: &str) -> String {
    format!(
        "test database {name} already exists (left by a run that did not finish). It was \
         left untouched. Remove it with `cargo run --release -p tests --bin clean-test-dbs` \
         or DROP DATABASE {name}, then run the tests again."
    )
}

/// Refuse to run while a test database of a process that is gone exists.
pub async fn check_leftovers(admin_url: &str, base: &str) -> Result<(), String> {
    let admin = connect(admin_url).await?;
    let names = list_on(&admin, &naming::prefix(base)).await;
    let _ = admin.close().await;
    match names?.into_iter().find(|name| naming::is_leftover(name)) {
        Some(leftover) => Err(refusal(&leftover)),
        None => Ok(()),
    }
}

/// Every database whose name starts with `prefix`.
pub async fn list_test_databases(admin_url: &str, prefix: &str) -> Result<Vec<String>, String> {
    let admin = connect(admin_url).await?;
    let names = list_on(&admin, prefix).await;
    let _ = admin.close().await;
    names
}

async fn list_on(admin: &DatabaseConnection, prefix: &str) -> Result<Vec<String>, String> {
    let backend = admin.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "SELECT datname AS name FROM pg_database",
        _ => "SELECT schema_name AS name FROM information_schema.schemata",
    };
    let rows = admin
        .query_all_raw(Statement::from_string(backend, sql))
        .await
        .map_err(|e| format!("cannot list databases: {e}"))?;
    Ok(rows
        .iter()
        .filter_map(|row| row.try_get::<String>("", "name").ok())
        .filter(|name| name.starts_with(prefix))
        .collect())
}

/// Drop a database, first closing other sessions on it (a session left in a transaction
/// would otherwise make the drop wait for its locks).
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    let admin = connect(admin_url).await?;
    let result = drop_on(&admin, name).await;
    let _ = admin.close().await;
    result
}

async fn drop_on(admin: &DatabaseConnection, name: &str) -> Result<(), String> {
    let sql = match admin.get_database_backend() {
        DbBackend::MySql => {
            kill_mysql_sessions(admin, name).await;
            format!("DROP DATABASE IF EXISTS `{name}`")
        }
        _ => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    };
    admin
        .execute_unprepared(&sql)
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot drop {name}: {e}"))
}

async fn kill_mysql_sessions(admin: &DatabaseConnection, name: &str) {
    let sessions = admin
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
            [name.into()],
        ))
        .await
        .unwrap_or_default();
    for session in sessions {
        if let Ok(id) = session.try_get::<u64>("", "id") {
            // The session may have ended meanwhile: nothing to do then.
            let _ = admin
                .execute_unprepared(&format!("KILL CONNECTION {id}"))
                .await;
        }
    }
}

async fn connect(url: &str) -> Result<DatabaseConnection, String> {
    migration::database::connect_for_tool(url)
        .await
        .map_err(|e| {
            format!(
                "cannot connect to {}: {}",
                migration::database::redact(url),
                migration::database::scrub(&e.to_string(), url)
            )
        })
}

async fn migrate(url: &str) -> Result<(), String> {
    let db = connect(url).await?;
    let result = migration::migrate_up(&db).await;
    let _ = db.close().await;
    result.map_err(|e| format!("migrating the test database failed: {e}"))
}

/// The runtime the harness's own connections live on. Each test has a runtime of its own,
/// and a connection must not outlive the runtime that opened it; this one lives as long as
/// the process, so the admin connections are opened once per run.
fn harness_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-harness")
            .enable_all()
            .build()
            .expect("the test harness's runtime")
    })
}

/// Run `work` on the harness runtime and wait for it from any runtime.
async fn on_harness_runtime<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    match harness_runtime().spawn(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

fn remember(item: Created) {
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).push(item);
}

fn forget(item: &Created) {
    CREATED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|created| created != item);
}

fn register_exit_hook() {
    HOOK.get_or_init(|| {
        // SAFETY: `drop_everything` is an `extern "C" fn()` that never unwinds across FFI.
        unsafe {
            libc::atexit(drop_everything);
        }
    });
}

/// `atexit` hook: drop every database and directory this process created and still has.
extern "C" fn drop_everything() {
    // No more spares; then the background work first: what it creates goes on the list,
    // what it drops comes off it.
    EXITING.store(true, Ordering::SeqCst);
    for run in RunDatabase::started() {
        // A spare started before EXITING was set is counted in IN_FLIGHT by the time its
        // starter lets go of this lock.
        drop(run.spares.lock().unwrap_or_else(|e| e.into_inner()));
    }
    let waiting = std::time::Instant::now();
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && waiting.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let created = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
    if created.is_empty() {
        return;
    }
    let outcome = std::panic::catch_unwind(move || {
        // A runtime of its own on a thread of its own: the harness runtime's thread may be
        // gone or busy at exit.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for dropping the test databases")
                .block_on(drop_all(created))
        })
        .join()
    });
    if !matches!(outcome, Ok(Ok(()))) {
        eprintln!("test harness: dropping the test databases failed");
    }
}

/// Drop `created`, a few at a time (PostgreSQL drops that run together share checkpoints).
async fn drop_all(created: Vec<Created>) {
    use futures_util::StreamExt;
    futures_util::stream::iter(created)
        .for_each_concurrent(4, |item| async move {
            match item {
                Created::Database { admin_url, name } => {
                    let dropped = tokio::time::timeout(
                        Duration::from_secs(30),
                        drop_database(&admin_url, &name),
                    )
                    .await;
                    match dropped {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => eprintln!("test harness: {e}"),
                        Err(_) => eprintln!("test harness: dropping {name} hung"),
                    }
                }
                Created::Directory(dir) => {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        })
        .await;
}
