//! The HTTP routes, one module per resource.

pub mod notes;
pub mod ops;
pub mod recovery;
pub mod sessions;
pub mod testing;
pub mod users;
pub mod web;

use crate::{
    db::RequestDb,
    http::error::ApiError,
    throttle::{Key, Throttle},
};

/// A resource at `path`, named by its path. The access log and the metrics label a request
/// by its route template: a named resource's is a lookup (`HttpRequest::match_name`), where
/// `match_pattern` rebuilds the template into a new `String` for every request.
pub fn resource(path: &'static str) -> actix_web::Resource {
    actix_web::web::resource(path).name(path)
}

/// A route for `GET`, which answers `HEAD` too (RFC 9110 §9.3.2): the same handler, status
/// and headers; the server sends no body for `HEAD`.
pub fn get() -> actix_web::Route {
    use actix_web::guard;
    actix_web::web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

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

/// 429 with `Retry-After` and `detail` when `key` has used up `throttle`'s attempts; else
/// how many attempts the window holds.
pub async fn within(
    throttle: &Throttle,
    db: &RequestDb,
    key: &Key,
    detail: &str,
) -> Result<usize, ApiError> {
    let standing = throttle.check(db, key).await?;
    match standing.wait {
        Some(wait) => Err(ApiError::TooManyRequests {
            detail: detail.to_owned(),
            retry_after_s: wait.as_secs().max(1),
        }),
        None => Ok(standing.attempts),
    }
}
