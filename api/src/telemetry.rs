//! Logging set-up and the per-request context: request id, span, access log line.

use std::{borrow::Cow, time::Instant};

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{
        StatusCode,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
};
use tracing::Instrument;
use tracing_subscriber::{EnvFilter, fmt};

use crate::{
    config::{LogFormat, Settings},
    error::ApiError,
};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The longest client-supplied request id that is kept; longer or odd ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Install the global subscriber: logs to stderr, pretty or JSON, filtered by `RUST_LOG`
/// (default `info`).
pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing::subscriber::set_global_default(subscriber(
        settings.log_format,
        filter,
        std::io::stderr,
    ));
}

/// The subscriber `init` installs, writing to `writer` (tests capture the output with it).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(
            builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .finish(),
        ),
    }
}

/// The request's id: the client's `x-request-id` when it is a sensible one, else a new UUID.
///
/// It is kept as the header value it goes out as: the client's is shared with the request's
/// buffer, a new one is one allocation, and neither is copied again for the response.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    let client = req.headers().get(&REQUEST_ID).filter(|value| {
        let id = value.as_bytes();
        !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(u8::is_ascii_graphic)
    });
    match client {
        Some(id) => id.clone(),
        None => {
            let mut buffer = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
            HeaderValue::from_str(id).expect("a UUID is a valid header value")
        }
    }
}

/// Middleware stage: request id, one span per request around `inner`, metrics, and a log line
/// when the response is ready.
pub async fn request_context<B: MessageBody + 'static>(
    req: ServiceRequest,
    inner: impl AsyncFnOnce(ServiceRequest) -> Result<ServiceResponse<B>, actix_web::Error>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let request_id = request_id(&req);
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = tracing::field::Empty,
        // Checked above: printable ASCII.
        request_id = request_id.to_str().unwrap_or_default(),
    );
    let started = Instant::now();
    // A span the log filter turns off (`RUST_LOG=warn`) needs no entering at every poll.
    let result = if span.is_disabled() {
        inner(req).await
    } else {
        inner(req).instrument(span.clone()).await
    };
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    let route = match &result {
        Ok(response) => route_template(response.request()),
        Err(_) => None,
    };
    let route = route.as_deref().unwrap_or("unmatched");
    span.record("route", route);
    let elapsed = started.elapsed().as_secs_f64();
    crate::metrics::record_request(&method, route, status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed * 1000.0,
            "request finished"
        )
    });
    match result {
        Ok(response) => {
            let mut response = problem_if_bare(response);
            add_headers(response.headers_mut(), request_id);
            Ok(response)
        }
        Err(error) => Err(WithHeaders {
            error,
            request_id,
            span,
        }
        .into()),
    }
}

/// The template of the route that served `req` (`/notes/{id}`): the name our resources carry
/// (see [`crate::routes::resource`]), else the pattern actix matched.
fn route_template(req: &HttpRequest) -> Option<Cow<'_, str>> {
    req.match_name()
        .map(Cow::Borrowed)
        .or_else(|| req.match_pattern().map(Cow::Owned))
}

/// An error response that came without a body of its own (from a component that is not
/// ours, such as the docs page's asset server) gets a problem+json body, like every error.
fn problem_if_bare<B: MessageBody + 'static>(
    response: ServiceResponse<B>,
) -> ServiceResponse<EitherBody<B>> {
    let status = response.status();
    let bare = (status.is_client_error() || status.is_server_error())
        && !response.headers().contains_key(header::CONTENT_TYPE);
    if !bare {
        return response.map_into_left_body();
    }
    let (req, _) = response.into_parts();
    let error = ApiError::Status(status);
    ServiceResponse::from_err(error, req).map_into_right_body()
}

/// The headers every response carries.
fn add_headers(headers: &mut HeaderMap, request_id: HeaderValue) {
    headers.insert(REQUEST_ID, request_id);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// An error on its way out, which still gets the headers every response carries. actix
/// turns it into a response after the middleware is done, so it keeps the request's span:
/// what is logged then (a 500's details) still names the request.
#[derive(Debug)]
struct WithHeaders {
    error: actix_web::Error,
    request_id: HeaderValue,
    span: tracing::Span,
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
        let _entered = self.span.enter();
        let mut response = self.error.error_response();
        add_headers(response.headers_mut(), self.request_id.clone());
        response
    }
}
