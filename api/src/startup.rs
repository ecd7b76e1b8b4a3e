//! Building the app, binding the server, and the process's life: connect, migrate, serve,
//! drain on SIGTERM/SIGINT, close the pool.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{
    App, HttpServer,
    body::MessageBody,
    dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse},
    middleware::from_fn,
    web,
};
use sea_orm::{DatabaseConnection, DbErr};

use crate::{
    config::Settings,
    db::{self, DbSource},
    feed,
    http::{self, middleware},
    jobs,
    mail::Delivery,
    openapi, routes,
    state::AppState,
};

/// Connection attempts at start-up before giving up.
const CONNECT_ATTEMPTS: u32 = 5;

/// The whole application: routes and middleware. Tests build exactly this.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let body_limit = state.settings.body_limit_bytes;
    let testing = state.settings.testing;
    http::metrics::handle();
    App::new()
        .app_data(web::Data::new(state))
        .app_data(web::PayloadConfig::new(body_limit))
        // actix tries resources in the order they are registered: the busiest first.
        .configure(routes::notes::routes)
        .configure(routes::sessions::routes)
        .configure(routes::users::routes)
        .configure(routes::recovery::routes)
        .configure(routes::ops::routes)
        .configure(openapi::routes)
        .configure(routes::web::routes)
        .configure(|cfg| {
            if testing {
                routes::testing::routes(cfg);
            }
        })
        .default_service(web::to(routes::not_found))
        .wrap(from_fn(middleware::stack))
}

/// Start serving `state` on `listener`. The returned server runs until stopped.
///
/// One state for the process: every HTTP worker shares its limits (hashing slots, export
/// slots, the sign-in throttle) and its job worker's wake-up.
pub fn serve(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    let shutdown_timeout = state.settings.shutdown_timeout.as_secs();
    let server = HttpServer::new(move || app(state.clone()))
        // Signals are handled in `run`, so SIGINT drains like SIGTERM instead of stopping at once.
        .disable_signals()
        .shutdown_timeout(shutdown_timeout)
        .listen(listener)?
        .run();
    Ok(server)
}

/// Connect, retrying with back-off so a database that starts a little after the server
/// does not stop it.
pub async fn connect_with_retry(settings: &Settings) -> Result<DatabaseConnection, DbErr> {
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match db::connect(settings).await {
            Ok(conn) => return Ok(conn),
            Err(error) if attempt < CONNECT_ATTEMPTS => {
                tracing::warn!(
                    attempt,
                    database = %settings.database_url,
                    %error,
                    "database connection failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Run the server until SIGTERM or SIGINT, then drain and close the pool.
pub async fn run(settings: Settings) -> Result<(), String> {
    let settings = Arc::new(settings);
    if settings.testing {
        tracing::warn!(
            "TESTING is on: test-only routes are mounted under /__test/; never run it so in production"
        );
    }
    let url = settings.database_url.expose();
    let db = connect_with_retry(&settings).await.map_err(|e| {
        format!(
            "cannot connect to the database at {}: {}",
            settings.database_url,
            migration::database::scrub(&e.to_string(), url)
        )
    })?;
    if settings.auto_migrate {
        migration::migrate_up(&db).await.map_err(|e| {
            format!(
                "migration failed: {}",
                migration::database::scrub(&e.to_string(), url)
            )
        })?;
        tracing::info!("database schema is up to date");
    }
    let address = settings.listen_address();
    let listener =
        TcpListener::bind(&address).map_err(|e| format!("cannot listen on {address}: {e}"))?;
    tracing::info!(
        address = %listener.local_addr().map_or(address, |a| a.to_string()),
        database = %settings.database_url,
        "serving"
    );
    let mut source = DbSource::pool(db.clone(), settings.db_acquire_timeout);
    if let Some(url) = &settings.database_read_url {
        let replica = db::Replica::start(&settings, db.clone())
            .await
            .map_err(|e| {
                format!(
                    "cannot set up the read replica's pool: {}",
                    migration::database::scrub(&e.to_string(), url.expose())
                )
            })?;
        tracing::info!(replica = %url, "requests that only read use the replica when it is fit");
        source = source.with_replica(replica);
    }
    let delivery = Delivery::new(settings.mail.smtp_url.as_deref(), &settings.mail.dir)
        .map_err(|e| format!("cannot set up mail delivery: {e}"))?;
    let state = AppState::new(source, Arc::clone(&settings));
    let worker = jobs::Worker::new(db.clone(), delivery, &settings, state.jobs.clone());
    let (stop_background, background_stopped) = tokio::sync::watch::channel(false);
    let jobs = actix_web::rt::spawn(worker.run(background_stopped.clone()));
    let feed = Arc::clone(&state.feed);
    let watcher = actix_web::rt::spawn(feed::watch(
        Arc::clone(&feed),
        db.clone(),
        background_stopped,
    ));
    let server = serve(listener, state).map_err(|e| format!("cannot start the server: {e}"))?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        wait_for_shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        // Event streams never end by themselves: end them, so draining does not wait for them.
        feed.close();
        handle.stop(true).await;
    });
    server.await.map_err(|e| format!("server error: {e}"))?;
    // The job worker finishes the job it runs and hands the rest of its batch back.
    let _ = stop_background.send(true);
    if let Err(error) = jobs.await {
        tracing::error!(%error, "the job worker failed");
    }
    let _ = watcher.await;
    db.close()
        .await
        .map_err(|e| format!("closing the pool failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
