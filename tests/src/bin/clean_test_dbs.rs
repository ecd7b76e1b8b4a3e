//! `clean-test-dbs`: drop test databases left by runs that did not finish.
//!
//! Looks at the servers named by `TEST_POSTGRES_URL` and `TEST_MYSQL_URL`, and drops every
//! `test_…` database whose owning process is gone (with `--all`: every one, also those of
//! running tests). Prints what it dropped.

use std::process::ExitCode;

use tests::{Backend, admin_url, drop_database, is_leftover, list_test_databases};

fn main() -> ExitCode {
    let all = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--all") => true,
        Some(other) => {
            eprintln!("clean-test-dbs: unknown argument {other:?}: expected nothing or --all");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut failed = false;
    for backend in [Backend::Postgres, Backend::MySql] {
        let Some(url) = backend.configured_url() else {
            continue;
        };
        let outcome: Result<(), String> = runtime.block_on(async {
            let admin = admin_url(&url)?;
            for name in list_test_databases(&admin, "test_").await? {
                if all || is_leftover(&name) {
                    drop_database(&admin, &name).await?;
                    println!("dropped {name} ({backend:?})");
                }
            }
            Ok(())
        });
        if let Err(message) = outcome {
            eprintln!("clean-test-dbs: {message}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
