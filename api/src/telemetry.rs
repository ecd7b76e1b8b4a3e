//! Logging set-up and the per-request context: request id, span, access log line.

use std::time::Instant;

use actix_web::{
    HttpMessage, HttpResponse, ResponseError,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{
        StatusCode,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
    middleware::Next,
};
use tracing::Instrument;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogFormat, Settings};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The longest client-supplied request id that is kept; longer or odd ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Install the global subscriber: logs to stderr, pretty or JSON, filtered by `RUST_LOG`
/// (default `info`).
pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The request's id, from `x-request-id` or newly made.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn client_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let valid = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| value.to_owned())
}

/// Middleware: request id, one span per request, and a log line when the response is ready.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = client_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = tracing::field::Empty,
        request_id = %request_id,
    );
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    if let Ok(response) = &result {
        let route = response.request().match_pattern();
        span.record("route", route.as_deref().unwrap_or("unmatched"));
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| tracing::info!(status = status.as_u16(), latency_ms, "request finished"));
    match result {
        Ok(mut response) => {
            add_headers(response.headers_mut(), &request_id);
            Ok(response)
        }
        Err(error) => Err(WithHeaders { error, request_id }.into()),
    }
}

/// The headers every response carries.
fn add_headers(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// An error on its way out, which still gets the headers every response carries.
#[derive(Debug)]
struct WithHeaders {
    error: actix_web::Error,
    request_id: String,
}

impl std::fmt::Display for WithHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for WithHeaders {
    fn status_code(&self) -> StatusCode {
        self.error.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = self.error.error_response();
        add_headers(response.headers_mut(), &self.request_id);
        response
    }
}
