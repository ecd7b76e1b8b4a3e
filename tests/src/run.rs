//! The run's databases: created and migrated once per test process, dropped at its exit.

use std::{
    path::PathBuf,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::{Backend, naming};

/// Everything this process created, dropped by the `atexit` hook.
static CREATED: Mutex<Vec<Created>> = Mutex::new(Vec::new());
static HOOK: OnceLock<()> = OnceLock::new();
static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

enum Created {
    Database { admin_url: String, name: String },
    Directory(PathBuf),
}

/// A backend's database for this run.
pub struct RunDatabase {
    backend: Backend,
    admin_url: String,
    base: String,
    nonce: String,
    /// SQLite: the directory holding the migrated template file.
    sqlite_dir: Option<PathBuf>,
    /// PostgreSQL/MySQL: the URL of the run's database.
    url: String,
}

impl RunDatabase {
    /// The run's database for `backend`, created and migrated on first use.
    pub fn get(backend: Backend) -> &'static RunDatabase {
        static SQLITE: OnceLock<RunDatabase> = OnceLock::new();
        static POSTGRES: OnceLock<RunDatabase> = OnceLock::new();
        static MYSQL: OnceLock<RunDatabase> = OnceLock::new();
        let cell = match backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
            Backend::MySql => &MYSQL,
        };
        // Set-up runs on a thread of its own with its own runtime: each test has its own
        // runtime, and connections must not outlive the runtime that opened them.
        cell.get_or_init(|| {
            std::thread::spawn(move || block_on(RunDatabase::create(backend)))
                .join()
                .unwrap_or_else(|_| std::process::abort())
                .unwrap_or_else(|message| panic!("{message}"))
        })
    }

    async fn create(backend: Backend) -> Result<Self, String> {
        let configured = backend
            .configured_url()
            .ok_or_else(|| format!("{backend:?} is not configured"))?;
        let base = naming::base_name(&configured);
        let nonce = format!("{:06x}", uuid::Uuid::new_v4().as_u128() & 0xff_ffff);
        register_exit_hook();
        if backend == Backend::Sqlite {
            let dir = std::env::temp_dir().join(format!(
                "{}{}_{}",
                naming::prefix(&base),
                std::process::id(),
                nonce
            ));
            if dir.exists() {
                return Err(format!(
                    "the test directory {} already exists; remove it (rm -r) and run again",
                    dir.display()
                ));
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
            CREATED
                .lock()
                .unwrap()
                .push(Created::Directory(dir.clone()));
            let url = sqlite_url(&dir.join("template.db"));
            migrate(&url).await?;
            return Ok(Self {
                backend,
                admin_url: String::new(),
                base,
                nonce,
                sqlite_dir: Some(dir),
                url,
            });
        }
        let admin_url = admin_url(&configured)?;
        check_leftovers(&admin_url, &base).await?;
        let mut run = Self {
            backend,
            admin_url,
            base,
            nonce,
            sqlite_dir: None,
            url: String::new(),
        };
        run.url = run.create_database("r").await?;
        Ok(run)
    }

    /// The URL a rollback-mode test connects to.
    pub fn url_for_test(&self) -> String {
        match &self.sqlite_dir {
            // Each SQLite test gets its own copy of the migrated file: SQLite has one writer
            // per file, and tests holding transactions on one file would queue behind each other.
            Some(dir) => self.copy_template(dir),
            None => self.url.clone(),
        }
    }

    /// A new, migrated database for one committed-mode test; dropped at exit.
    pub async fn create_private_database(&self) -> String {
        match &self.sqlite_dir {
            Some(dir) => self.copy_template(dir),
            None => {
                let kind = format!("c{}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
                // Created on its own thread and runtime, like the run's database.
                let this: &'static RunDatabase = RunDatabase::get(self.backend);
                std::thread::spawn(move || block_on(this.create_database(&kind)))
                    .join()
                    .unwrap_or_else(|_| std::process::abort())
                    .unwrap_or_else(|message| panic!("{message}"))
            }
        }
    }

    fn copy_template(&self, dir: &std::path::Path) -> String {
        let file = dir.join(format!("t{}.db", SEQUENCE.fetch_add(1, Ordering::Relaxed)));
        std::fs::copy(dir.join("template.db"), &file)
            .unwrap_or_else(|e| panic!("cannot copy the SQLite template: {e}"));
        sqlite_url(&file)
    }

    /// Create `test_<base>_<pid>_<nonce>_<kind>` and migrate it. Refuses if it exists.
    async fn create_database(&self, kind: &str) -> Result<String, String> {
        let name = naming::database_name(&self.base, std::process::id(), &self.nonce, kind);
        let admin = connect(&self.admin_url).await?;
        let existing = list_on(&admin, &name).await?;
        if existing.iter().any(|n| n == &name) {
            return Err(refusal(&name));
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
        CREATED.lock().unwrap().push(Created::Database {
            admin_url: self.admin_url.clone(),
            name: name.clone(),
        });
        let _ = admin.close().await;
        let url = with_database(&self.admin_url, &name)?;
        migrate(&url).await?;
        Ok(url)
    }
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

fn sqlite_url(path: &std::path::Path) -> String {
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
    let sql = match admin.get_database_backend() {
        DbBackend::MySql => {
            kill_mysql_sessions(&admin, name).await;
            format!("DROP DATABASE IF EXISTS `{name}`")
        }
        _ => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    };
    let result = admin.execute_unprepared(&sql).await;
    let _ = admin.close().await;
    result
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

fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for test database set-up")
        .block_on(future)
}

fn register_exit_hook() {
    HOOK.get_or_init(|| {
        // SAFETY: `drop_everything` is an `extern "C" fn()` that never unwinds across FFI.
        unsafe {
            libc::atexit(drop_everything);
        }
    });
}

/// `atexit` hook: drop every database and directory this process created.
extern "C" fn drop_everything() {
    let created = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
    if created.is_empty() {
        return;
    }
    let outcome = std::panic::catch_unwind(move || {
        std::thread::spawn(move || {
            block_on(async move {
                for item in created {
                    match item {
                        Created::Database { admin_url, name } => {
                            if let Err(e) = drop_database(&admin_url, &name).await {
                                eprintln!("test harness: {e}");
                            }
                        }
                        Created::Directory(dir) => {
                            let _ = std::fs::remove_dir_all(dir);
                        }
                    }
                }
            })
        })
        .join()
    });
    if !matches!(outcome, Ok(Ok(()))) {
        eprintln!("test harness: dropping the test databases failed");
    }
}
