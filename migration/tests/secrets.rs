//! The `migration` binary never prints a database password given as `?password=` in
//! `DATABASE_URL`: not when the database is unreachable, not in its verbose output while it
//! migrates (PostgreSQL, when `TEST_POSTGRES_URL` is set; with `TEST_ALL_BACKENDS=1` it must
//! be).

use std::process::{Command, Output};

use migration::database::connect_for_tool;
use sea_orm::ConnectionTrait;

const BIN: &str = env!("CARGO_BIN_EXE_migration");
const SECRET: &str = "s3cretpw";

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the migration binary")
}

fn shown(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
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

#[test]
fn verbose_migration_on_postgres_does_not_show_a_query_string_password() {
    let configured = match std::env::var("TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if matches!(
            std::env::var("TEST_ALL_BACKENDS").as_deref(),
            Ok("1" | "true")
        ) =>
        {
            panic!("TEST_ALL_BACKENDS=1 but TEST_POSTGRES_URL is not set")
        }
        _ => {
            eprintln!("note: skipped; set TEST_POSTGRES_URL to run");
            return;
        }
    };
    let mut admin = url::Url::parse(&configured).unwrap();
    admin.set_path("/postgres");
    let name = format!(
        "test_migcli_{}_{:06x}_s",
        std::process::id(),
        uuid::Uuid::new_v4().as_u128() & 0xff_ffff
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let conn = connect_for_tool(admin.as_str()).await.unwrap();
        conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    let mut url = admin.clone();
    url.set_path(&format!("/{name}"));
    // The test server trusts local connections: any password connects.
    url.set_query(Some(&format!("password={SECRET}")));

    let outputs: Vec<Output> = [&["-v", "up"][..], &["-v", "status"], &["-v", "down"]]
        .iter()
        .map(|args| run(url.as_str(), args))
        .collect();

    runtime.block_on(async {
        let conn = connect_for_tool(admin.as_str()).await.unwrap();
        conn.execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    for output in &outputs {
        let text = shown(output);
        assert!(output.status.success(), "{text}");
        assert!(!text.contains(SECRET), "the password shows: {text}");
    }
}
