//! The `migration` binary: concurrent runs, clean errors.
//!
//! The server cases are `#[backends]` tests: ignored, saying why, when `TEST_POSTGRES_URL` /
//! `TEST_MYSQL_URL` is not set (with `TEST_ALL_BACKENDS=1` they run, and fail without it).
//! The binary is the workspace's (`tests::fixtures::workspace_binary`): build it with
//! `cargo build --release --bin migration`, or run `cargo test --workspace`.

use std::process::{Command, Output};

use migration::{
    Migrator, MigratorTrait,
    database::{connect_for_tool, redact},
};
use sea_orm::{ConnectionTrait, Statement};
use tests::{Backend, RunDatabase, backends, fixtures::workspace_binary};

/// The `migration` binary (checked to be built from the sources as they are).
fn bin() -> std::path::PathBuf {
    workspace_binary("migration", &["migration/src"])
}

/// How many migrations the crate has.
fn migration_count() -> usize {
    Migrator::migrations().len()
}

fn run(url: &str, args: &[&str]) -> std::process::Child {
    Command::new(bin())
        .args(args)
        .env("DATABASE_URL", url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the migration binary")
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
#[backends(sqlite, postgres, mysql)]
async fn concurrent_up_applies_each_migration_once(backend: Backend) {
    let database = RunDatabase::get(backend).empty_database().await;
    let url = database.url();
    let first = run(url, &["up"]);
    let second = run(url, &["up"]);
    assert_ok(&first.wait_with_output().unwrap());
    assert_ok(&second.wait_with_output().unwrap());
    let rows = applied(url).await;
    assert_eq!(rows.len(), migration_count(), "{rows:?}");
    assert!(rows.iter().all(|(_, n)| *n == 1), "{rows:?}");
    database.drop_now().await;
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

#[backends(mysql)]
async fn wrong_password_is_one_clean_line(backend: Backend) {
    let configured = backend
        .configured_url()
        .expect("TEST_MYSQL_URL is set (TEST_ALL_BACKENDS=1 requires it)");
    let mut url = url::Url::parse(&configured).unwrap();
    url.set_username("nobody_here").unwrap();
    url.set_password(Some("hunter2secret")).unwrap();
    assert_clean_failure(url.as_str(), 1);
}
