//! One error type for the whole API, written as RFC 9457 `application/problem+json` in one place.
//!
//! Internal details (SQL, driver messages, panics) are logged — inside the request's span, so
//! with its request id — and never sent to the client.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use sea_orm::{DbErr, SqlErr};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    account::HashError,
    db::error::{is_lost_race, is_pool_timeout, is_unavailable},
};

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_S: &str = "1";

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Where: a JSON path into the body (`text`, `[3].text`) or a query parameter (`limit`).
    #[schema(example = "text")]
    pub field: String,
    /// Why, in words for people.
    #[schema(example = "must not be empty")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON, a bad query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid bearer token.
    #[error("sign in first: send `Authorization: Bearer <token>` with a valid token")]
    Unauthorized,
    /// 401 from a sign-in: the same for an unknown e-mail, a wrong password and an
    /// inactive account, so the answer does not tell which.
    #[error("the e-mail address or the password is wrong, or the account is inactive")]
    BadCredentials,
    /// 403: signed in, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("the requested resource was not found")]
    NotFound,
    /// 405.
    #[error("the method is not allowed on this resource")]
    MethodNotAllowed(&'static str),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 409: the first request with this `Idempotency-Key` is still being answered.
    #[error("a request with this Idempotency-Key is still in progress; retry shortly")]
    InProgress,
    /// 412: `If-Match` names no current tag of the resource; nothing was changed.
    #[error("the resource has changed since the tag in If-Match; read it again")]
    PreconditionFailed,
    /// 413.
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 415.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// 410: what was asked for is no longer kept.
    #[error("{0}")]
    Gone(&'static str),
    /// 422 with the bad fields.
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    /// 429: too many attempts; retry after the given seconds.
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_s: u64 },
    /// 503: a bounded resource (password hashing, export slots) stayed busy.
    #[error("{0}; retry shortly")]
    Busy(&'static str),
    /// 503: the database is down or every pooled connection is busy.
    #[error("the database is unavailable; retry shortly")]
    Unavailable,
    /// 503: the request took longer than the server allows.
    #[error("the request took too long; retry shortly")]
    Timeout,
    /// Any other error status, for responses that came without a body of their own.
    #[error("{}", .0.canonical_reason().unwrap_or("error"))]
    Status(StatusCode),
    /// 500: anything else. The text is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// Classify a database error. `context` says what was being done, for the log.
    pub fn from_db(error: &DbErr, context: &str) -> Self {
        if is_pool_timeout(error) {
            metrics::counter!("db_pool_acquire_timeouts_total").increment(1);
        }
        match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                return Self::Conflict("a resource with this unique value already exists".into());
            }
            // The row written refers to one deleted meanwhile (a note whose owner was just
            // deleted): a race, not a fault.
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                return Self::Conflict("a resource this one refers to no longer exists".into());
            }
            _ => {}
        }
        if is_lost_race(error) {
            tracing::info!(%error, context, "a concurrent transaction won");
            return Self::Conflict("a concurrent change got in the way; retry".into());
        }
        if is_unavailable(error) {
            tracing::warn!(%error, context, "database unavailable");
            return Self::Unavailable;
        }
        Self::Internal(format!("database error during {context}: {error}"))
    }

    /// A single-field validation error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "Bad Request",
            Self::Unauthorized | Self::BadCredentials => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed(_) => "Method Not Allowed",
            Self::Conflict(_) | Self::InProgress => "Conflict",
            Self::PreconditionFailed => "Precondition Failed",
            Self::PayloadTooLarge(_) => "Payload Too Large",
            Self::UnsupportedMediaType => "Unsupported Media Type",
            Self::Gone(_) => "Gone",
            Self::Validation(_) => "Unprocessable Content",
            Self::TooManyRequests { .. } => "Too Many Requests",
            Self::Unavailable | Self::Busy(_) => "Service Unavailable",
            Self::Internal(_) => "Internal Server Error",
            Self::Status(status) => status.canonical_reason().unwrap_or("Error"),
            Self::Timeout => "Service Unavailable",
        }
    }
}

impl From<DbErr> for ApiError {
    fn from(error: DbErr) -> Self {
        Self::from_db(&error, "query")
    }
}

/// An RFC 9457 problem: the body of every error response (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub struct Problem<'a> {
    /// Always `about:blank`: the status and title say what happened.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'static str,
    /// The status's standard reason phrase.
    #[schema(example = "Not Found")]
    pub title: &'static str,
    /// The HTTP status, repeated.
    #[schema(example = 404)]
    pub status: u16,
    /// What went wrong, in a sentence for people.
    pub detail: String,
    /// Every invalid field (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub errors: Option<&'a [FieldError]>,
}

impl From<HashError> for ApiError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Busy => Self::Busy("every password hashing slot is busy"),
            HashError::Failed(_) => Self::Internal(error.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::BadCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::InProgress => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Gone(_) => StatusCode::GONE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Status(status) => *status,
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(details) = self {
            tracing::error!(error = %details, "request failed");
        }
        let status = self.status_code();
        let problem = Problem {
            kind: "about:blank",
            title: self.title(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match self {
                Self::Validation(errors) => Some(errors),
                _ => None,
            },
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        if let Self::MethodNotAllowed(allowed) = self {
            response.insert_header((header::ALLOW, *allowed));
        }
        match self {
            Self::Unavailable | Self::Timeout | Self::Busy(_) | Self::InProgress => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_S));
            }
            Self::TooManyRequests { retry_after_s, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            Self::Unauthorized | Self::BadCredentials => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        response.body(body)
    }
}

/// What a client reads for each error status, in the OpenAPI document.
fn problem_description(status: u16) -> &'static str {
    match status {
        400 => "The body is not JSON, or the query string is malformed or longer than 2 KiB.",
        401 => {
            "No valid bearer token: `Authorization: Bearer <token>` is missing, malformed, \
                unknown, expired or revoked. Sign in with `POST /sessions`."
        }
        403 => "Signed in, but not allowed to do this.",
        404 => "No such resource: the id is unknown, or is not a positive 64-bit integer.",
        409 => {
            "A conflict: the e-mail address belongs to another user, a request with the same \
                `Idempotency-Key` is still in progress (retry after `Retry-After`), or a \
                concurrent change got in the way (retry)."
        }
        410 => {
            "The changes after `since` are no longer kept (`CHANGES_RETENTION_S`): start over \
                with `since=0` and a full list of the notes."
        }
        412 => "`If-Match` names no current `ETag` of the resource; nothing was changed.",
        429 => "Too many attempts; retry after the `Retry-After` seconds.",
        413 => "The body is larger than the server's limit (BODY_LIMIT_BYTES, 1 MiB by default).",
        415 => "The body is not `application/json`.",
        422 => {
            "The input is well-formed but invalid, or the `Idempotency-Key` was used for a \
                different request; `errors` names every bad field (or the header) and why. \
                Nothing was written."
        }
        503 => {
            "The database, password hashing or export slots are busy or unavailable, or the \
                request took too long; nothing was written. Retry after the `Retry-After` \
                seconds."
        }
        _ => "Error.",
    }
}

/// The responses of `statuses`, each a [`Problem`], for an operation's document.
fn problem_responses(
    statuses: &[u16],
) -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>> {
    use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, ResponseBuilder, Type};
    statuses
        .iter()
        .map(|&status| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            let mut response = ResponseBuilder::new()
                .description(problem_description(status))
                .content("application/problem+json", body);
            if status == 401 {
                response = response.header("www-authenticate", super::string_header("`Bearer`"));
            }
            if matches!(status, 409 | 429 | 503) {
                let wait = super::response_header(
                    ObjectBuilder::new().schema_type(Type::Integer),
                    "seconds to wait before retrying",
                );
                response = response.header("retry-after", wait);
            }
            (status.to_string(), response.build().into())
        })
        .collect()
}

/// Declares a named set of error responses for the OpenAPI document: each operation lists
/// the sets it can answer with (`responses((status = 200, …), NotFound)`).
macro_rules! error_set {
    ($($(#[$doc:meta])* $name:ident = [$($status:literal),+];)+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::Response>,
            > {
                problem_responses(&[$($status),+])
            }
        }
    )+};
}

error_set! {
    /// Any route that reads or writes the database.
    Unavailable = [503];
    /// A route that names one resource by its id.
    NotFound = [404, 503];
    /// A route that pages through a collection.
    BadListQuery = [400, 422, 503];
    /// A route that takes a JSON body.
    BadBody = [400, 413, 415, 422, 503];
    /// A route that takes a JSON body and names one resource.
    BadBodyOrNotFound = [400, 404, 413, 415, 422, 503];
    /// A user's e-mail address must be unique.
    EmailTaken = [409];
    /// A write that honours `If-Match`.
    Conditional = [412];
    /// A `POST` that honours `Idempotency-Key` (400: a malformed key).
    Idempotent = [400, 409, 422];
    /// A route for signed-in users only (the token is looked up in the database).
    SignedIn = [401, 503];
    /// A route that refuses some signed-in users.
    Refused = [403];
    /// A route that refuses callers who try too often.
    Throttled = [429];
    /// A route that reads the change log, which forgets old changes.
    Forgotten = [410];
}
