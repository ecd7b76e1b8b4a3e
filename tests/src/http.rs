//! Helpers for calling the app: in-process requests and a server on a real port.

use std::{net::TcpListener, sync::Arc};

use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    http::{StatusCode, header::HeaderMap},
    test,
};
use api::{config::Settings, db::DbSource};
use serde_json::Value;

/// A finished response: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: actix_web::web::Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "body is not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `reply` has `status` (panics with the reply otherwise); its body as JSON.
pub fn assert_json(reply: &Reply, status: StatusCode) -> Value {
    assert_eq!(reply.status, status, "{reply:?}");
    reply.json()
}

/// An RFC 9457 problem answered with `status`: the status, `application/problem+json`, the
/// headers every response carries, `type`, `title`, `status` (equal to the status) and
/// `detail`, and for a 422 an `errors` list naming each field. Returns the problem.
pub fn assert_problem(reply: &Reply, status: StatusCode) -> Value {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{reply:?}"
    );
    assert_common_headers(reply);
    let problem = reply.json();
    for key in ["type", "title", "detail"] {
        assert!(problem[key].is_string(), "{key} is not a string: {problem}");
    }
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        let errors = problem["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("a 422 lists its errors: {problem}"));
        assert!(!errors.is_empty(), "a 422 names its fields: {problem}");
        for error in errors {
            assert!(error["field"].is_string(), "{error}");
            assert!(error["message"].is_string(), "{error}");
        }
    }
    problem
}

/// [`assert_problem`] for one case of many: a status other than `status` fails naming `case`.
pub fn assert_case_problem(reply: &Reply, status: StatusCode, case: &str) -> Value {
    assert_eq!(reply.status, status, "{case}: {reply:?}");
    assert_problem(reply, status)
}

/// The headers every response carries: a non-empty `x-request-id` and
/// `x-content-type-options: nosniff`.
pub fn assert_common_headers(reply: &Reply) {
    let request_id = reply.header("x-request-id").unwrap_or_default();
    assert!(!request_id.is_empty(), "no x-request-id: {reply:?}");
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{reply:?}"
    );
}

/// Send `req` through `app` and read the whole response.
pub async fn send<S, B>(app: &S, req: test::TestRequest) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    call(app, req.to_request()).await
}

/// The client address of in-process requests that name none (`TestRequest::peer_addr`), as
/// every request over TCP has one: the sign-in throttle keys on it.
pub const DEFAULT_PEER: &str = "127.0.0.1:40000";

async fn call<S, B>(app: &S, mut request: actix_http::Request) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    if request.head().peer_addr.is_none() {
        request.head_mut().peer_addr = Some(DEFAULT_PEER.parse().expect("a socket address"));
    }
    let response = match app.call(request).await {
        Ok(response) => response,
        Err(error) => {
            let response = error.error_response();
            return Reply {
                status: response.status(),
                headers: response.headers().clone(),
                body: actix_web::body::to_bytes(response.into_body())
                    .await
                    .unwrap_or_default(),
            };
        }
    };
    let status = response.status();
    let headers = response.headers().clone();
    let body = test::read_body(response).await;
    Reply {
        status,
        headers,
        body,
    }
}

/// Send `req` with `Authorization: Bearer <token>`, unless it has an `Authorization` already.
pub async fn send_with_token<S, B>(app: &S, req: test::TestRequest, token: &str) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let mut request = req.to_request();
    let headers = request.headers_mut();
    if !headers.contains_key(actix_web::http::header::AUTHORIZATION) {
        let value = actix_web::http::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .expect("a token is a valid header value");
        headers.insert(actix_web::http::header::AUTHORIZATION, value);
    }
    call(app, request).await
}

/// `POST`/`PATCH`… with a JSON body.
pub fn json_request(
    method: actix_web::http::Method,
    path: &str,
    body: &Value,
) -> test::TestRequest {
    test::TestRequest::default()
        .method(method)
        .uri(path)
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_string())
}

/// `GET path`.
pub fn get(path: &str) -> test::TestRequest {
    test::TestRequest::get().uri(path)
}

/// The app served on 127.0.0.1 on a port of its own; stopped when dropped.
pub struct TestServer {
    pub base_url: String,
    pub address: std::net::SocketAddr,
    handle: actix_web::dev::ServerHandle,
    feed: Arc<api::feed::Feed>,
    db: sea_orm::DatabaseConnection,
    /// The instance's change watcher, once started ([`TestServer::watch_changes`]).
    watcher: Option<(
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl TestServer {
    pub(crate) fn start(db: DbSource, settings: Settings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
        let address = listener.local_addr().expect("test port address");
        let state = api::state::AppState::new(db, Arc::new(settings));
        let feed = Arc::clone(&state.feed);
        let db = state.db.primary().clone();
        let server = api::startup::serve(listener, state).expect("start test server");
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            base_url: format!("http://{address}"),
            address,
            handle,
            feed,
            db,
            watcher: None,
        }
    }

    /// Watch the database for the changes the instance's event streams follow, as every
    /// instance does ([`api::feed::watch`]). Stopped by [`TestServer::stop`] (a PostgreSQL
    /// listener must go before the test's runtime does).
    pub fn watch_changes(&mut self) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = actix_web::rt::spawn(api::feed::watch(
            Arc::clone(&self.feed),
            self.db.clone(),
            stopped,
        ));
        self.watcher = Some((stop, task));
    }

    /// End the instance's event streams, as SIGTERM does first.
    pub fn close_streams(&self) {
        self.feed.close();
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stop gracefully and wait (the change watcher too).
    pub async fn stop(self) {
        self.feed.close();
        self.handle.stop(true).await;
        if let Some((stop, task)) = self.watcher {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}
