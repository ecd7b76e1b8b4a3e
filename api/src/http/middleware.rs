//! The middleware every request goes through, outermost first: its context (id, span,
//! metrics, common headers), the limits, the unit of work, and the panic guard — so a panic
//! is turned into a 500 inside the unit of work, which then rolls the request's transaction
//! back explicitly.
//!
//! The four stages are composed in one `from_fn` layer ([`stack`]): each layer boxes two
//! futures and adds two dynamic calls per request (bench/PERFORMANCE.md, "middleware").

use std::{
    borrow::Cow,
    panic::AssertUnwindSafe,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{
    FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError,
    body::{EitherBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{
        Method, StatusCode,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
    middleware::Next,
    web,
};
use futures_util::FutureExt;
use tracing::Instrument;

use crate::{
    db::{RequestDb, UnitOfWork, replica},
    http::error::ApiError,
    state::AppState,
};

/// The request id header: the client's, when sensible, or a new UUID; on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The longest client-supplied request id that is kept; longer or odd ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Every stage, in order (wrap the app with `from_fn(stack)`).
pub async fn stack(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    request_context(req, async |req| {
        limits(req, async |req| {
            unit_of_work(req, async |req| catch_panic(next.call(req)).await).await
        })
        .await
    })
    .await
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

/// Middleware stage: request id, one span per request around `inner`, metrics, the common
/// headers, and a log line when the response is ready. Hand-written rather than
/// `tracing-actix-web` + `DefaultHeaders`: those neither keep the client's request id nor reach
/// error responses (bench/PERFORMANCE.md, "request context, headers and metrics": 5.3 k
/// instructions per request in all).
async fn request_context<B: MessageBody + 'static>(
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
    super::metrics::record_request(&method, route, status.as_u16(), elapsed);
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
/// (routes name their resources by their path), else the pattern actix matched.
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

/// The policy of an HTML page that does not set its own (the docs page): scripts, styles and
/// everything else from this origin only, no framing. Swagger UI draws its icons as `data:`
/// images and sets inline styles, so those two are allowed here — not on the notes page.
const HTML_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
    style-src 'self' 'unsafe-inline'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// The headers every response carries. `Cache-Control: no-store` unless the response set
/// its own: answers carry users' notes and accounts, which no shared cache may keep. An HTML
/// page without a Content-Security-Policy of its own gets one of this origin alone.
fn add_headers(headers: &mut HeaderMap, request_id: HeaderValue) {
    headers.insert(REQUEST_ID, request_id);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let html = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().starts_with(b"text/html"));
    if html && !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(HTML_CONTENT_SECURITY_POLICY),
        );
    }
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
        .get(header::CONTENT_LENGTH)
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

/// Give the request a lazy [`UnitOfWork`], run `inner` (the handler), and settle the unit of
/// work once the response is ready: commit when the status is below 400, roll back otherwise
/// — before the response head is sent, so a failed commit becomes a 503/500 problem instead
/// of a 2xx for data that was not stored.
async fn unit_of_work<B: MessageBody>(
    req: ServiceRequest,
    inner: impl AsyncFnOnce(ServiceRequest) -> Result<ServiceResponse<B>, actix_web::Error>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Err(ApiError::Internal("application state is missing".into()).into());
    };
    // A request that only reads may read on the replica, if its client's last write is there.
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    let uow = if read_only && let Some(replica) = state.db.replica() {
        let written = req
            .headers()
            .get(header::COOKIE)
            .and_then(|cookie| replica::written_by_client(cookie.as_bytes()));
        UnitOfWork::reading(state.db.clone(), Arc::clone(replica), written)
    } else {
        UnitOfWork::new(state.db.clone())
    };
    let uow = Rc::new(uow);
    let cookie_secure = state.settings.cookie_secure;
    let max_lag = state.settings.read_max_lag;
    req.extensions_mut().insert(Rc::clone(&uow));

    let result = inner(req).await;
    let commit = matches!(&result, Ok(response) if response.status().as_u16() < 400);
    let settled = uow.finish(commit).await;
    match (result, settled) {
        (Err(error), _) => Err(error),
        (Ok(mut response), Ok(())) => {
            if response.status().is_success()
                && let Some(position) = uow.written_position().await
            {
                let cookie = written_cookie(position, max_lag, cookie_secure);
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            Ok(response.map_into_left_body())
        }
        (Ok(response), Err(error)) => {
            let (req, _) = response.into_parts();
            let failure = ApiError::from_db(&error, "commit");
            Ok(ServiceResponse::from_err(failure, req).map_into_right_body())
        }
    }
}

/// `Set-Cookie` for a client whose write committed at `position`: kept long enough for any
/// replica still in use to replay it (one lagging more than `max_lag` is bypassed anyway).
fn written_cookie(position: u64, max_lag: Duration, secure: bool) -> HeaderValue {
    let max_age = max_lag.as_secs() + 60;
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{}={position}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        replica::WRITTEN_COOKIE
    );
    HeaderValue::from_str(&cookie).expect("a cookie of digits is a valid header value")
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

/// The request's database handle, attached by the unit-of-work stage.
impl FromRequest for RequestDb {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let uow = req.extensions().get::<Rc<UnitOfWork>>().cloned();
        std::future::ready(
            uow.map(RequestDb::new)
                .ok_or_else(|| ApiError::Internal("the unit-of-work middleware is missing".into())),
        )
    }
}
