//! Operational routes: liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::{
    http::error::{ApiError, Unavailable},
    state::AppState,
};

/// How long `/readyz` waits for `SELECT 1`.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

pub fn routes(cfg: &mut web::ServiceConfig) {
    for (path, route) in [
        ("/healthz", crate::routes::get().to(healthz)),
        ("/readyz", crate::routes::get().to(readyz)),
        ("/metrics", crate::routes::get().to(metrics)),
    ] {
        cfg.service(
            super::resource(path)
                .route(route)
                .default_service(super::allow("GET, HEAD")),
        );
    }
}

/// Liveness
///
/// 200 while the process serves requests; never touches the database.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process is up", body = Object)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness
///
/// 200 when the database answers within 1 s, 503 otherwise: route traffic on it.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "the database answers", body = Object),
        Unavailable,
    ))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.db.ping()).await {
        Ok(Ok(_)) => Ok(HttpResponse::Ok().json(json!({ "status": "ready" }))),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            Err(ApiError::Unavailable)
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            Err(ApiError::Unavailable)
        }
    }
}

/// Metrics
///
/// Request counts and latencies by route and status, and the database pool's state, in
/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    crate::http::metrics::record_pool(&state.db, state.settings.db_pool_max);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::http::metrics::handle().render())
}
