//! Building the app, binding the server, and the process's life: connect, migrate, serve,
//! drain on SIGTERM/SIGINT, close the pool.

use std::{net::TcpListener, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use actix_web::{
    App, HttpServer,
    body::MessageBody,
    dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse},
    middleware::{Next, from_fn},
    web,
};
use futures_util::FutureExt;
use sea_orm::{DatabaseConnection, DbErr};

use crate::{
    config::Settings,
    db::{self, DbSource},
    error::ApiError,
    routes, telemetry,
};

/// Connection attempts at start-up before giving up.
const CONNECT_ATTEMPTS: u32 = 5;

/// What every handler can reach.
pub struct AppState {
    pub db: DbSource,
    pub settings: Arc<Settings>,
}

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
    crate::metrics::handle();
    App::new()
        .app_data(web::Data::new(state))
        .app_data(web::PayloadConfig::new(body_limit))
        // actix tries resources in the order they are registered: the busiest first.
        .configure(routes::notes::routes)
        .configure(routes::users::routes)
        .configure(routes::ops::routes)
        .configure(crate::openapi::routes)
        .configure(|cfg| {
            if testing {
                routes::testing::routes(cfg);
            }
        })
        .default_service(web::to(routes::not_found))
        .wrap(from_fn(middleware))
}

/// What every request goes through, outermost first: its context (id, span, metrics, common
/// headers), the limits, the unit of work, and the panic guard — so a panic is turned into a
/// 500 inside the unit of work, which then rolls the request's transaction back explicitly.
///
/// The four are composed in one `from_fn` layer: each layer boxes two futures and adds two
/// dynamic calls per request, which showed in the benchmark's profile.
async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    telemetry::request_context(req, async |req| {
        limits(req, async |req| {
            db::unit_of_work(req, async |req| catch_panic(next.call(req)).await).await
        })
        .await
    })
    .await
}

/// The limits every request is held to.
///
/// - a declared body larger than `BODY_LIMIT_BYTES` is refused with 413 before anything reads
///   it, whatever its type or route (bodies without a length are cut by the extractors);
/// - a handler that runs longer than `REQUEST_TIMEOUT_S` is dropped — which rolls back its
///   transaction and returns its connection — and the client gets a 503. Streamed bodies are
///   not cut: the client and the database bound them.
async fn limits<B>(
    req: ServiceRequest,
    inner: impl AsyncFnOnce(ServiceRequest) -> Result<ServiceResponse<B>, actix_web::Error>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let (limit, timeout) =
        req.app_data::<web::Data<AppState>>()
            .map_or((usize::MAX, Duration::MAX), |state| {
                (
                    state.settings.body_limit_bytes,
                    state.settings.request_timeout,
                )
            });
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit).into());
    }
    match tokio::time::timeout(timeout, inner(req)).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(?timeout, "request timed out");
            Err(ApiError::Timeout.into())
        }
    }
}

/// A panicking handler answers a 500 problem instead of closing the connection.
///
/// The panic becomes an error, not a response: the request cannot be cloned before routing,
/// and the outer stages (unit of work, request context) handle errors anyway.
async fn catch_panic<B>(
    handled: impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    match AssertUnwindSafe(handled).catch_unwind().await {
        Ok(result) => result,
        Err(_) => Err(ApiError::Internal("the handler panicked".into()).into()),
    }
}

/// Start serving `state` on `listener`. The returned server runs until stopped.
pub fn serve(
    listener: TcpListener,
    db: DbSource,
    settings: Arc<Settings>,
) -> std::io::Result<Server> {
    let shutdown_timeout = settings.shutdown_timeout.as_secs();
    let server = HttpServer::new(move || {
        app(AppState {
            db: db.clone(),
            settings: Arc::clone(&settings),
        })
    })
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
    let server = serve(
        listener,
        DbSource::pool(db.clone(), settings.db_acquire_timeout),
        Arc::clone(&settings),
    )
    .map_err(|e| format!("cannot start the server: {e}"))?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        wait_for_shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        handle.stop(true).await;
    });
    server.await.map_err(|e| format!("server error: {e}"))?;
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
