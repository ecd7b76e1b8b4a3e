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
