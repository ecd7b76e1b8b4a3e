//! Operational routes: liveness and readiness.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::{db::RequestDb, error::ApiError};

/// How long `/readyz` waits for `SELECT 1`.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// Liveness: 200 while the process serves requests. Touches no database.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: 200 when the database answers `SELECT 1` in time, 503 otherwise.
async fn readyz(db: RequestDb) -> Result<HttpResponse, ApiError> {
    let reader = db.reader();
    match tokio::time::timeout(READY_TIMEOUT, reader.execute_unprepared("SELECT 1")).await {
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
