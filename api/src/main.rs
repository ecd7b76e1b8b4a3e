//! `api` — serve the notes API; `api seed-demo` — insert the demo data.

use std::process::ExitCode;

use api::{config::Settings, seed, startup, telemetry};

fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("api: {error}");
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed_demo = match args.as_slice() {
        [] => false,
        [command] if command == "seed-demo" => true,
        _ => {
            eprintln!("api: unknown arguments {args:?}: expected no argument (serve) or seed-demo");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings);
    let result = actix_web::rt::System::new().block_on(async move {
        if seed_demo {
            run_seed(settings).await
        } else {
            startup::run(settings).await
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

async fn run_seed(settings: Settings) -> Result<(), String> {
    let url = settings.database_url.expose().to_owned();
    let db = startup::connect_with_retry(&settings).await.map_err(|e| {
        format!(
            "cannot connect to the database at {}: {}",
            settings.database_url,
            migration::database::scrub(&e.to_string(), &url)
        )
    })?;
    migration::migrate_up(&db)
        .await
        .map_err(|e| format!("migration failed: {e}"))?;
    seed::seed_demo(&db)
        .await
        .map_err(|e| format!("seeding failed: {e:?}"))?;
    db.close()
        .await
        .map_err(|e| format!("closing the pool failed: {e}"))?;
    println!("demo data is in place ({})", seed::DEMO_EMAIL);
    Ok(())
}
