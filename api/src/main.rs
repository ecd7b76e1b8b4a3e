//! `api` — serve the notes API; `api seed-demo` — insert the demo data; `api create-admin
//! EMAIL` — create an admin (or make a user one) with the password read from standard input.

use std::{io::IsTerminal, process::ExitCode};

use api::{
    account::{
        parse_email,
        password::{self, Hasher, Password},
    },
    config::Settings,
    seed, startup, telemetry,
};
use sea_orm::DatabaseConnection;

/// What the command line asks for.
enum Command {
    Serve,
    SeedDemo,
    CreateAdmin(String),
}

const USAGE: &str = "expected no argument (serve), seed-demo, or create-admin EMAIL";

fn main() -> ExitCode {
    password::return_hash_memory_to_the_system();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("api: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(url) = &settings.mail.smtp_url
        && let Err(error) = api::mail::check_smtp_url(url)
    {
        eprintln!("api: invalid SMTP_URL: {error}");
        return ExitCode::from(2);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => Command::Serve,
        ["seed-demo"] => Command::SeedDemo,
        ["create-admin", email] => Command::CreateAdmin((*email).to_owned()),
        _ => {
            eprintln!("api: unknown arguments {args:?}: {USAGE}");
            return ExitCode::from(2);
        }
    };
    // Input errors are found before anything connects.
    let admin = match &command {
        Command::CreateAdmin(email) => match read_admin(email) {
            Ok(admin) => Some(admin),
            Err(message) => {
                eprintln!("api: {message}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    telemetry::init(&settings);
    let result = actix_web::rt::System::new().block_on(async move {
        match (command, admin) {
            (Command::Serve, _) => startup::run(settings).await,
            (Command::SeedDemo, _) => run_seed(settings).await,
            (Command::CreateAdmin(_), Some((email, password))) => {
                run_create_admin(settings, email, password).await
            }
            (Command::CreateAdmin(_), None) => unreachable!("read above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("api: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The e-mail address from the command line and the password from standard input: one
/// line, asked for without echo on a terminal.
fn read_admin(email: &str) -> Result<(String, Password), String> {
    let email = parse_email(email).map_err(|why| format!("invalid e-mail address: {why}"))?;
    let line = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("password for {email}: "))
            .map_err(|e| format!("cannot read the password: {e}"))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        line
    };
    let raw = line.strip_suffix('\n').unwrap_or(&line);
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let chars = raw.chars().count();
    if !(password::MIN_CHARS..=password::MAX_CHARS).contains(&chars) {
        return Err(format!(
            "invalid password: must be {} to {} characters long (one line on standard input)",
            password::MIN_CHARS,
            password::MAX_CHARS
        ));
    }
    Ok((email, Password::new(raw.to_owned())))
}

/// Connect and bring the schema up to date, for the one-shot commands.
async fn connect(settings: &Settings) -> Result<DatabaseConnection, String> {
    let url = settings.database_url.expose().to_owned();
    let db = startup::connect_with_retry(settings).await.map_err(|e| {
        format!(
            "cannot connect to the database at {}: {}",
            settings.database_url,
            migration::database::scrub(&e.to_string(), &url)
        )
    })?;
    migration::migrate_up(&db).await.map_err(|e| {
        format!(
            "migration failed: {}",
            migration::database::scrub(&e.to_string(), &url)
        )
    })?;
    Ok(db)
}

fn hasher(settings: &Settings) -> Hasher {
    Hasher::new(settings.hash_concurrency, settings.db_acquire_timeout)
}

async fn run_seed(settings: Settings) -> Result<(), String> {
    let db = connect(&settings).await?;
    let password = seed::seed_demo(&db, &hasher(&settings))
        .await
        .map_err(|e| format!("seeding failed: {e}"))?;
    db.close()
        .await
        .map_err(|e| format!("closing the pool failed: {e}"))?;
    println!("demo data is in place");
    println!("e-mail:   {}", seed::DEMO_EMAIL);
    println!("password: {}", password.expose());
    Ok(())
}

async fn run_create_admin(
    settings: Settings,
    email: String,
    password: Password,
) -> Result<(), String> {
    let db = connect(&settings).await?;
    let outcome = seed::create_admin(&db, &hasher(&settings), &email, password)
        .await
        .map_err(|e| format!("creating the admin failed: {e}"))?;
    db.close()
        .await
        .map_err(|e| format!("closing the pool failed: {e}"))?;
    match outcome {
        seed::Outcome::Created => println!("admin {email} created"),
        seed::Outcome::Updated => println!("{email} is an admin, with the new password"),
    }
    Ok(())
}
