//! The `migration` binary never prints a database password given as `?password=` in
//! `DATABASE_URL`: not when the database is unreachable, not in its verbose output while it
//! migrates (PostgreSQL: a `#[backends(postgres)]` test, ignored with the reason when
//! `TEST_POSTGRES_URL` is not set; with `TEST_ALL_BACKENDS=1` it must be).
//!
//! The binary is the workspace's (`tests::fixtures::workspace_binary`).

use std::process::{Command, Output};

use tests::{
    Backend, RunDatabase, backends,
    fixtures::{shown, workspace_binary},
};

const SECRET: &str = "s3cretpw";

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(workspace_binary("migration", &["migration/src"]))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the migration binary")
}

#[test]
fn unreachable_database_errors_do_not_show_a_query_string_password() {
    for url in [
        format!("postgres://app@127.0.0.1:1/notes?password={SECRET}"),
        format!("mysql://app@127.0.0.1:1/notes?password={SECRET}"),
        format!("postgres://app@127.0.0.1:1/notes?sslmode=disable&password={SECRET}%21"),
    ] {
        for args in [&["status"][..], &["-v", "up"][..]] {
            let output = run(&url, args);
            let text = shown(&output);
            assert!(!output.status.success(), "{url} {args:?}: {text}");
            assert!(
                !text.contains(SECRET),
                "{url} {args:?}: the password shows: {text}"
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                stderr.trim_end().lines().count(),
                1,
                "{url} {args:?}: {text}"
            );
            assert!(!text.contains("panicked"), "{text}");
        }
    }
}

#[test]
fn malformed_or_refused_urls_do_not_show_a_query_string_password() {
    let dir = std::env::temp_dir().join(format!("migration-secret-{}", uuid::Uuid::new_v4()));
    for url in [
        format!("ftp://app@db.internal/notes?password={SECRET}"),
        format!(
            "sqlite://{}/notes.db?mode=rwc&password={SECRET}",
            dir.display()
        ),
    ] {
        let output = run(&url, &["status"]);
        let text = shown(&output);
        assert!(!output.status.success(), "{url}: {text}");
        assert!(!text.contains(SECRET), "{url}: the password shows: {text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[backends(postgres)]
async fn verbose_migration_does_not_show_a_query_string_password(backend: Backend) {
    let database = RunDatabase::get(backend).empty_database().await;
    let mut url = url::Url::parse(database.url()).unwrap();
    // The test server trusts local connections: any password connects.
    url.set_query(Some(&format!("password={SECRET}")));

    let outputs: Vec<Output> = [&["-v", "up"][..], &["-v", "status"], &["-v", "down"]]
        .iter()
        .map(|args| run(url.as_str(), args))
        .collect();

    database.drop_now().await;
    for output in &outputs {
        let text = shown(output);
        assert!(output.status.success(), "{text}");
        assert!(!text.contains(SECRET), "the password shows: {text}");
    }
}

/// A list of hosts (libpq's multi-host URL): malformed, it is exit 2 naming the variable and
/// the part that is wrong; well formed but with no host answering, a one-line failure naming
/// each host and what it said. Never the password (the `url` crate cannot parse such a URL,
/// so a redaction built on it alone would print it whole).
#[test]
fn host_lists_do_not_show_the_password() {
    for (url, status, says) in [
        (
            format!("postgres://u:{SECRET}@127.0.0.1:1,127.0.0.1:2/db"),
            1,
            "127.0.0.1:1: connection refused; 127.0.0.1:2: connection refused",
        ),
        (
            format!("postgres://u:{SECRET}@127.0.0.1:1,,127.0.0.1:2/db"),
            2,
            "DATABASE_URL is not a database URL: host 2 of the list is empty",
        ),
        (
            format!("postgres://u:{SECRET}@h1:5432,h2:5433/db?target_session_attrs=leader"),
            2,
            "DATABASE_URL is not a database URL: target_session_attrs is not one of",
        ),
    ] {
        let output = run(&url, &["status"]);
        let text = shown(&output);
        assert_eq!(output.status.code(), Some(status), "{url}: {text}");
        assert!(!text.contains(SECRET), "{url}: the password shows: {text}");
        assert!(text.contains(says), "{url}: {text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{url}: {text}");
    }
}
