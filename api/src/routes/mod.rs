//! The HTTP routes, one module per resource.

pub mod notes;
pub mod ops;
pub mod testing;
pub mod users;

use crate::error::ApiError;

/// Fallback for paths no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// Fallback for a known path with a method it does not serve: 405 with `Allow: <allowed>`.
pub fn allow(allowed: &'static str) -> actix_web::Route {
    actix_web::web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed(allowed))
    })
}
