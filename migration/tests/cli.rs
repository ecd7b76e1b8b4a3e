//! The `migration` binary: concurrent runs, clean errors.
//!
//! PostgreSQL and MySQL cases run when `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` are set (with
//! `TEST_ALL_BACKENDS=1` they must be).

use std::process::{Command, Output};

use migration::{
    Migrator, MigratorTrait,
    database::{connect_for_tool, redact},
};
use sea_orm::{ConnectionTrait, Statement};

const BIN: &str = env!("CARGO_BIN_EXE_migration");

/// How many migrations the crate has.
fn migration_count() -> usize {
    Migrator::migrations().len()
}

fn run(url: &str, args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the migration binary")
}

fn configured(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if matches!(
            std::env::var("TEST_ALL_BACKENDS").as_deref(),
            Ok("1" | "true")
        ) =>
        {
            panic!("TEST_ALL_BACKENDS=1 but {var} is not set")
        }
        _ => {
            eprintln!("note: skipped; set {var} to run");
            None
        }
    }
}

/// A fresh, empty database on the server of `configured`, named like the test harness's
/// (`test_<name>_<pid>_<nonce>_<kind>`) so leftovers are found and cleaned the same way.
async fn fresh_database(configured: &str) -> (String, String, String) {
    let mut admin = url::Url::parse(configured).unwrap();
    let postgres = configured.starts_with("postgres");
    admin.set_path(if postgres { "/postgres" } else { "/" });
    let name = format!(
        "test_migcli_{}_{:06x}_m",
        std::process::id(),
        uuid::Uuid::new_v4().as_u128() & 0xff_ffff
    );
    let conn = connect_for_tool(admin.as_str()).await.unwrap();
    conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    conn.close().await.unwrap();
    let mut url = admin.clone();
    url.set_path(&format!("/{name}"));
    (admin.to_string(), name, url.to_string())
}

async fn drop_database(admin: &str, name: &str) {
    let conn = connect_for_tool(admin).await.unwrap();
    let force = if admin.starts_with("postgres") {
        " WITH (FORCE)"
    } else {
        ""
    };
    conn.execute_unprepared(&format!("DROP DATABASE {name}{force}"))
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// `(version, count)` of every row in `seaql_migrations`.
async fn applied(url: &str) -> Vec<(String, i64)> {
    let conn = connect_for_tool(url).await.unwrap();
    let backend = conn.get_database_backend();
    let rows = conn
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT version, COUNT(*) AS n FROM seaql_migrations GROUP BY version ORDER BY version",
        ))
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get("", "version").unwrap(),
                r.try_get("", "n").unwrap(),
            )
        })
        .collect()
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "migration failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two `migration up` started at the same moment both end cleanly, and every migration is
/// applied exactly once.
async fn concurrent_up_applies_each_migration_once(url: &str) {
    let first = run(url, &["up"]);
    let second = run(url, &["up"]);
    assert_ok(&first.wait_with_output().unwrap());
    assert_ok(&second.wait_with_output().unwrap());
    let rows = applied(url).await;
    assert_eq!(rows.len(), migration_count(), "{rows:?}");
    assert!(rows.iter().all(|(_, n)| *n == 1), "{rows:?}");
}

#[tokio::test]
async fn concurrent_up_on_postgres() {
    let Some(configured) = configured("TEST_POSTGRES_URL") else {
        return;
    };
    let (admin, name, url) = fresh_database(&configured).await;
    concurrent_up_applies_each_migration_once(&url).await;
    drop_database(&admin, &name).await;
}

#[tokio::test]
async fn concurrent_up_on_mysql() {
    let Some(configured) = configured("TEST_MYSQL_URL") else {
        return;
    };
    let (admin, name, url) = fresh_database(&configured).await;
    concurrent_up_applies_each_migration_once(&url).await;
    drop_database(&admin, &name).await;
}

#[tokio::test]
async fn concurrent_up_on_sqlite() {
    let dir = std::env::temp_dir().join(format!(
        "migcli-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/notes.db?mode=rwc", dir.display());
    concurrent_up_applies_each_migration_once(&url).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn status_down_and_up_again_on_sqlite() {
    let dir = std::env::temp_dir().join(format!(
        "migcli-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let url = format!("sqlite://{}/sub/notes.db?mode=rwc", dir.display());
    let every = migration_count().to_string();
    assert_ok(&run(&url, &["up"]).wait_with_output().unwrap());
    assert_ok(
        &run(&url, &["down", "-n", &every])
            .wait_with_output()
            .unwrap(),
    );
    assert!(applied(&url).await.is_empty());
    let status = run(&url, &["status"]).wait_with_output().unwrap();
    assert_ok(&status);
    assert!(String::from_utf8_lossy(&status.stdout).contains("Pending"));
    assert_ok(&run(&url, &["refresh"]).wait_with_output().unwrap());
    assert_eq!(applied(&url).await.len(), migration_count());
    std::fs::remove_dir_all(dir).unwrap();
}

/// The error of a bad or unreachable URL: one line, non-zero exit, no panic, no password.
fn assert_clean_failure(url: &str, expected_code: i32) -> String {
    let output = run(url, &["up"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(expected_code), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("migration: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("hunter2secret"),
        "password shown: {stderr}"
    );
    stderr.into_owned()
}

#[test]
fn unreachable_database_is_one_clean_line() {
    let url = "postgres://app:hunter2secret@127.0.0.1:1/notes";
    let stderr = assert_clean_failure(url, 1);
    assert!(
        stderr.contains(&redact(url)),
        "names the database: {stderr}"
    );
}

#[test]
fn malformed_database_url_is_one_clean_line() {
    assert_clean_failure("hunter2secret://nowhere", 2);
    assert_clean_failure("not a url with hunter2secret", 2);
}

#[test]
fn wrong_password_is_one_clean_line() {
    let Some(configured) = configured("TEST_MYSQL_URL") else {
        return;
    };
    let mut url = url::Url::parse(&configured).unwrap();
    url.set_username("nobody_here").unwrap();
    url.set_password(Some("hunter2secret")).unwrap();
    assert_clean_failure(url.as_str(), 1);
}
