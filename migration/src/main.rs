//! `migration`: the SeaORM migration CLI over `DATABASE_URL`, with clean errors and the
//! migration lock held for every command that touches the database.

use std::process::ExitCode;

use clap::Parser;
use migration::{
    Migrator,
    database::{DEFAULT_DATABASE_URL, connect_for_tool, redact, scrub},
    with_migration_lock,
};
use sea_orm_cli::{MigrateSubcommands, run_migrate_generate};
use sea_orm_migration::cli::run_migrate;

/// Apply, roll back and inspect the notes service's schema migrations.
///
/// The database is `DATABASE_URL` (read from the environment, or from `.env`), by default
/// the server's SQLite file.
#[derive(Parser)]
#[command(name = "migration", version)]
struct Cli {
    /// Show debug messages.
    #[arg(short, long, global = true)]
    verbose: bool,

    /// What to do; `up` when omitted.
    #[command(subcommand)]
    command: Option<MigrateSubcommands>,
}

fn main() -> ExitCode {
    dotenvy::dotenv().ok();
    let cli = Cli::parse();

    if let Some(MigrateSubcommands::Generate {
        migration_name,
        local_time,
        ..
    }) = &cli.command
    {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/");
        return match run_migrate_generate(dir, migration_name, !*local_time) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("cannot generate the migration: {e}")),
        };
    }

    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        Ok(_) => {
            eprintln!(
                "migration: DATABASE_URL is empty: expected sqlite:, postgres:// or mysql:// URL"
            );
            return ExitCode::from(2);
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            eprintln!("migration: DATABASE_URL is not valid UTF-8");
            return ExitCode::from(2);
        }
        Err(std::env::VarError::NotPresent) => DEFAULT_DATABASE_URL.to_owned(),
    };
    if ![
        "sqlite:",
        "postgres://",
        "postgresql://",
        "mysql://",
        "mariadb://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
    {
        // Not echoed: a malformed value may hold a password anywhere.
        eprintln!(
            "migration: DATABASE_URL is not a database URL: expected sqlite:, postgres:// or mysql://"
        );
        return ExitCode::from(2);
    }

    if let Err(problem) = migration::hosts::Hosts::parse(&url) {
        // The problem names the part, never the value (it may hold a password).
        eprintln!("migration: DATABASE_URL is not a database URL: {problem}");
        return ExitCode::from(2);
    }

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let db = connect_for_tool(&url).await.map_err(|e| {
            // Our own reasons (no host fits, …) without SeaORM's "Custom Error:" prefix.
            let why = match e {
                sea_orm::DbErr::Custom(said) => said,
                other => other.to_string(),
            };
            format!("cannot connect to the database at {}: {why}", redact(&url))
        })?;
        let outcome = with_migration_lock(&db, async || {
            run_migrate(Migrator, &db, cli.command, cli.verbose).await
        })
        .await
        .map_err(|e| e.to_string());
        let _ = db.close().await;
        outcome
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&scrub(&message, &url)),
    }
}

/// Print one line and return the failure exit status.
fn fail(message: &str) -> ExitCode {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("migration: {one_line}");
    ExitCode::FAILURE
}
