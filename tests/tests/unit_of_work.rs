//! The per-request unit of work: every request's writes are all-or-nothing, and its pooled
//! connection comes back clean on every path — success, error, panic, a client that goes
//! away, an exhausted pool.
//!
//! Tests that depend on real commits or on the pool use committed mode (a private database
//! with a pool of its own); the others run in rollback mode.

use std::{
    future::Future,
    io::Write,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use actix_web::{
    http::{Method, StatusCode},
    test::TestRequest,
};
use entity::note;
use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    sqlx::{self, Row},
};
use serde_json::json;
use tests::{
    Backend, TestDb, each_backend,
    http::{Reply, TestServer, get, json_request, send},
};

/// Longest a test waits for something that should take milliseconds; reaching it means the
/// code under test hung.
const HANG: Duration = Duration::from_secs(30);

/// Fail with `what` instead of hanging when `future` does not finish within [`HANG`].
async fn within_deadline<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {HANG:?}"))
}

fn post(path: &str) -> TestRequest {
    TestRequest::post().uri(path)
}

fn new_note(text: &str) -> TestRequest {
    json_request(Method::POST, "/notes", &json!({ "text": text }))
}

async fn notes_with_text(db: &TestDb, text: &str) -> u64 {
    note::Entity::find()
        .filter(note::Column::Text.eq(text))
        .count(&db.conn())
        .await
        .unwrap()
}

fn assert_problem(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let problem = reply.json();
    for key in ["type", "title", "status", "detail"] {
        assert!(problem.get(key).is_some(), "{key} missing: {problem}");
    }
    assert_eq!(problem["status"], status.as_u16());
}

/// Connections of the app's pool that are checked out (the app and the test share it in
/// committed mode), and the pool's size.
fn pool_in_use(db: &TestDb) -> (u32, u32) {
    let conn = db.pool();
    let (size, idle) = match db.backend() {
        Backend::Sqlite => {
            let pool = conn.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        Backend::Postgres => {
            let pool = conn.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        Backend::MySql => {
            let pool = conn.get_mysql_connection_pool();
            (pool.size(), pool.num_idle())
        }
    };
    (size - idle as u32, size)
}

/// Wait until no connection is checked out: every request has given its connection back (a
/// connection seen in use next is then the one the test's holding request took).
async fn wait_for_idle_pool(db: &TestDb) {
    wait_for_connections_in_use(db, 0).await;
}

/// Wait until `in_use` connections are checked out (a held request has its connection).
async fn wait_for_connections_in_use(db: &TestDb, in_use: u32) {
    within_deadline("waiting for the pool", async {
        while pool_in_use(db).0 != in_use {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Whether the pool's connection is inside a transaction left open by an earlier request.
/// With `DB_POOL_MAX=1` there is only one connection, the one every request used.
async fn connection_in_transaction(db: &TestDb) -> bool {
    let conn = db.pool();
    match db.backend() {
        // BEGIN fails inside a transaction.
        Backend::Sqlite => {
            let mut c = conn.get_sqlite_connection_pool().acquire().await.unwrap();
            match sqlx::query("BEGIN").execute(&mut *c).await {
                Ok(_) => {
                    sqlx::query("ROLLBACK").execute(&mut *c).await.unwrap();
                    false
                }
                Err(_) => true,
            }
        }
        // SAVEPOINT fails outside a transaction block.
        Backend::Postgres => {
            let mut c = conn.get_postgres_connection_pool().acquire().await.unwrap();
            match sqlx::query("SAVEPOINT probe").execute(&mut *c).await {
                Ok(_) => {
                    sqlx::query("RELEASE SAVEPOINT probe")
                        .execute(&mut *c)
                        .await
                        .unwrap();
                    true
                }
                Err(_) => false,
            }
        }
        Backend::MySql => {
            let mut c = conn.get_mysql_connection_pool().acquire().await.unwrap();
            let row = sqlx::query("SELECT CAST(@@in_transaction AS SIGNED)")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            row.get::<i64, _>(0) != 0
        }
    }
}

/// After failures, the pool is whole and clean: nothing checked out, its one connection not
/// inside a transaction, and a normal write commits at once.
async fn assert_pool_whole_and_clean<S, B>(db: &TestDb, app: &S)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    wait_for_idle_pool(db).await;
    assert!(pool_in_use(db).1 <= 1, "the pool grew past DB_POOL_MAX");
    assert!(!connection_in_transaction(db).await, "a transaction leaked");
    let reply = within_deadline("a write after failures", send(app, new_note("clean"))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

async fn request_below_400_commits_its_writes(backend: Backend) {
    let db = TestDb::committed(backend, &[]).await;
    let app = db.app().await;

    let reply = send(&app, new_note("committed")).await;

    assert_eq!(reply.status, StatusCode::CREATED);
    let fresh = migration::database::connect_for_tool(db.url())
        .await
        .unwrap();
    let stored = note::Entity::find()
        .filter(note::Column::Text.eq("committed"))
        .count(&fresh)
        .await
        .unwrap();
    assert_eq!(stored, 1, "another connection sees the note");
    fresh.close().await.unwrap();
    drop(app);
    db.finish().await;
}

/// On the pool, reads and single-statement writes take the fast paths (the driver's pool
/// directly for `GET /notes/{id}`, autocommit for `POST` and `DELETE /notes/{id}`): the note
/// reads back exactly as created, then is gone, and no transaction is left open.
async fn single_row_routes_on_the_pool_round_trip(backend: Backend) {
    let db = TestDb::committed(backend, &[("DB_POOL_MAX", "1")]).await;
    let app = db.app().await;

    let created = send(&app, new_note("round trip ✓ 'quoted'")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let location = created.header("location").expect("a Location header");
    let read = send(&app, get(location)).await;
    let deleted = send(&app, TestRequest::delete().uri(location)).await;
    let gone = send(&app, get(location)).await;
    let deleted_again = send(&app, TestRequest::delete().uri(location)).await;

    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), created.json());
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_problem(&gone, StatusCode::NOT_FOUND);
    assert_problem(&deleted_again, StatusCode::NOT_FOUND);
    assert_eq!(notes_with_text(&db, "round trip ✓ 'quoted'").await, 0);
    assert!(
        !connection_in_transaction(&db).await,
        "a transaction leaked"
    );
    drop(app);
    db.finish().await;
}

/// A single-statement write autocommits on the pool (no `BEGIN`/`COMMIT`): an error after it
/// does not undo it — which is why handlers use it only for their last fallible step.
async fn single_statement_write_autocommits_on_the_pool(backend: Backend) {
    let db = TestDb::committed(backend, &[]).await;
    let app = db.app().await;

    let reply = send(&app, post("/__test/single-statement/alone")).await;

    assert_problem(&reply, StatusCode::CONFLICT);
    assert_eq!(notes_with_text(&db, "single-alone").await, 1);
    assert!(
        !connection_in_transaction(&db).await,
        "a transaction leaked"
    );
    drop(app);
    db.finish().await;
}

/// Once the request began a transaction, a single statement joins it and is rolled back with
/// it.
async fn single_statement_joins_a_transaction_already_begun(backend: Backend) {
    let db = TestDb::committed(backend, &[]).await;
    let app = db.app().await;

    let reply = send(&app, post("/__test/single-statement/joined")).await;

    assert_problem(&reply, StatusCode::CONFLICT);
    assert_eq!(notes_with_text(&db, "single-joined-first").await, 0);
    assert_eq!(notes_with_text(&db, "single-joined").await, 0);
    drop(app);
    db.finish().await;
}

async fn error_midway_through_the_request_transaction_rolls_it_back(backend: Backend) {
    let db = TestDb::committed(backend, &[]).await;
    let app = db.app().await;

    let reply = send(&app, post("/__test/fail-midway/whole")).await;

    assert_problem(&reply, StatusCode::CONFLICT);
    assert_eq!(notes_with_text(&db, "midway-whole").await, 0);
    drop(app);
    db.finish().await;
}

async fn error_midway_through_a_scoped_transaction_rolls_the_scope_back(backend: Backend) {
    let db = TestDb::committed(backend, &[]).await;
    let app = db.app().await;

    let reply = send(&app, post("/__test/fail-midway/scoped")).await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json(), json!({"rolled_back": true}));
    assert_eq!(notes_with_text(&db, "midway-scoped").await, 0);
    assert_eq!(
        notes_with_text(&db, "midway-kept").await,
        1,
        "the request committed"
    );
    drop(app);
    db.finish().await;
}

async fn error_midway_through_an_explicit_transaction_rolls_it_back(backend: Backend) {
    let db = TestDb::committed(backend, &[]).await;
    let app = db.app().await;

    let reply = send(&app, post("/__test/fail-midway/explicit")).await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json(), json!({"rolled_back": true}));
    assert_eq!(notes_with_text(&db, "midway-explicit").await, 0);
    assert_eq!(
        notes_with_text(&db, "midway-kept").await,
        1,
        "the request committed"
    );
    drop(app);
    db.finish().await;
}

async fn panicking_handler_answers_500_problem_without_the_panic_text(backend: Backend) {
    let db = TestDb::rollback(backend).await;
    let app = db.app().await;

    let reply = send(&app, get("/__test/panic")).await;

    assert_problem(&reply, StatusCode::INTERNAL_SERVER_ERROR);
    let body = String::from_utf8_lossy(&reply.body).to_lowercase();
    assert!(
        !body.contains("panic") && !body.contains("on purpose") && !body.contains(".rs"),
        "{body}"
    );
    assert!(reply.header("x-request-id").is_some());
    drop(app);
    db.finish().await;
}

async fn panic_after_a_write_leaves_no_row_and_frees_the_connection(backend: Backend) {
    let db = TestDb::committed(backend, &[("DB_POOL_MAX", "1")]).await;
    let app = db.app().await;

    let reply = within_deadline(
        "a panicking request",
        send(&app, post("/__test/panic-after-write")),
    )
    .await;

    assert_problem(&reply, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(notes_with_text(&db, "panic-after-write").await, 0);
    assert_pool_whole_and_clean(&db, &app).await;
    drop(app);
    db.finish().await;
}

async fn healthz_answers_while_the_pool_is_exhausted(backend: Backend) {
    let db = TestDb::committed(backend, &[("DB_POOL_MAX", "1")]).await;
    let app = db.app().await;

    wait_for_idle_pool(&db).await;
    let hold = send(&app, post("/__test/hold/1000"));
    let health = async {
        wait_for_connections_in_use(&db, 1).await;
        send(&app, get("/healthz")).await
    };
    let (held, health) = within_deadline("healthz", futures_util::future::join(hold, health)).await;

    assert_eq!(health.status, StatusCode::OK, "{:?}", health.body);
    assert_eq!(held.status, StatusCode::OK);
    drop(app);
    db.finish().await;
}

async fn requests_waiting_for_an_exhausted_pool_get_503_with_retry_after(backend: Backend) {
    let db = TestDb::committed(
        backend,
        &[("DB_POOL_MAX", "1"), ("DB_ACQUIRE_TIMEOUT_MS", "200")],
    )
    .await;
    let app = db.app().await;

    wait_for_idle_pool(&db).await;
    let hold = send(&app, post("/__test/hold/1000"));
    let waiting = async {
        wait_for_connections_in_use(&db, 1).await;
        let writer = send(&app, new_note("waited")).await;
        let reader = send(&app, get("/notes")).await;
        let by_id = send(&app, get("/notes/1")).await;
        (writer, reader, by_id)
    };
    let (held, (writer, reader, by_id)) = within_deadline(
        "requests on an exhausted pool",
        futures_util::future::join(hold, waiting),
    )
    .await;

    assert_eq!(held.status, StatusCode::OK);
    for reply in [&writer, &reader, &by_id] {
        assert_problem(reply, StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = reply.header("retry-after").expect("a Retry-After header");
        assert!(retry_after.parse::<u32>().is_ok(), "{retry_after}");
    }
    assert_eq!(notes_with_text(&db, "waited").await, 0);
    let recovered = send(&app, new_note("recovered")).await;
    assert_eq!(recovered.status, StatusCode::CREATED, "the pool recovers");
    drop(app);
    db.finish().await;
}

/// SQLite has one writer at a time, whatever the pool size: a writer that waits for the
/// write lock longer than the acquire timeout gets 503 too, instead of waiting for the
/// holder to finish (or failing with a 500 when the busy timeout runs out).
#[actix_web::test]
async fn sqlite_writer_waiting_for_the_write_lock_gets_503_after_the_acquire_timeout() {
    let db = TestDb::committed(Backend::Sqlite, &[("DB_ACQUIRE_TIMEOUT_MS", "200")]).await;
    let app = db.app().await;

    wait_for_idle_pool(&db).await;
    let hold = send(&app, post("/__test/hold/1000"));
    let waiting = async {
        wait_for_connections_in_use(&db, 1).await;
        // Let the holder's BEGIN IMMEDIATE take the write lock.
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&app, new_note("waited")).await
    };
    let (held, writer) = within_deadline(
        "a writer behind the write lock",
        futures_util::future::join(hold, waiting),
    )
    .await;

    assert_eq!(held.status, StatusCode::OK);
    assert_problem(&writer, StatusCode::SERVICE_UNAVAILABLE);
    assert!(writer.header("retry-after").is_some());
    assert_eq!(notes_with_text(&db, "waited").await, 0);
    drop(app);
    db.finish().await;
}

/// Open a connection and send `request` on it, without reading the answer.
fn start_raw_request(address: SocketAddr, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).expect("connect to the test server");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    stream
}

/// Close `stream` with a reset, as a client that crashed or timed out does; the server sees
/// an error on the socket and drops the request in flight.
fn reset(stream: TcpStream) {
    stream.set_nonblocking(true).expect("a non-blocking socket");
    let stream = tokio::net::TcpStream::from_std(stream).expect("a tokio socket");
    stream.set_zero_linger().expect("SO_LINGER 0");
    drop(stream);
}

fn raw_post(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
}

async fn request_after_an_abandoned_one_starts_clean(backend: Backend) {
    let db = TestDb::committed(backend, &[("DB_POOL_MAX", "1")]).await;
    let server = db.spawn_server().await;
    let client = awc::Client::builder().timeout(HANG).finish();
    wait_for_idle_pool(&db).await;
    let abandoned = start_raw_request(server.address, &raw_post("/__test/write-and-hold/20000"));
    wait_for_connections_in_use(&db, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    reset(abandoned);
    let mut reply = within_deadline(
        "a write after an abandoned request",
        client
            .post(server.url("/notes"))
            .send_json(&json!({"text": "after-abandoned"})),
    )
    .await
    .expect("the next request is answered");

    assert_eq!(
        reply.status(),
        StatusCode::CREATED,
        "{:?}",
        reply.body().await
    );
    wait_for_idle_pool(&db).await;
    assert!(
        !connection_in_transaction(&db).await,
        "a transaction leaked"
    );
    assert_eq!(notes_with_text(&db, "write-and-hold").await, 0);
    assert_eq!(notes_with_text(&db, "after-abandoned").await, 1);
    server.stop().await;
    db.finish().await;
}

/// A request dropped while its `BEGIN` is on the wire (the client went away) gives its
/// connection back outside any transaction: left inside one, the next request's
/// autocommitted statement would run in it and never commit (a 201 for a lost row).
async fn request_dropped_during_begin_leaves_no_transaction_open(backend: Backend) {
    let db = TestDb::committed(backend, &[("DB_POOL_MAX", "1")]).await;
    let source = db.source();
    // Dropped after one to three polls: after the first, `BEGIN` has been written and its
    // reply is awaited; later ones catch slower paths (acquire, the task's start).
    for attempt in 0..12 {
        let polls = 1 + attempt % 3;
        let mut begin = Box::pin(source.begin_write());
        for _ in 0..polls {
            let ready = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(begin.as_mut().poll(cx).is_ready())
            })
            .await;
            if ready {
                break;
            }
        }
        drop(begin);
        wait_for_idle_pool(&db).await;
        assert!(
            !connection_in_transaction(&db).await,
            "attempt {attempt}: dropped after {polls} polls, the pooled connection is still in a transaction"
        );
    }
    db.finish().await;
}

/// One kind of request in the mixed load, and the status it must get (`None`: the client
/// goes away before the answer).
#[derive(Clone, Copy, Debug)]
enum Load {
    Create,
    Read,
    Missing,
    Invalid,
    FailMidway,
    TakenEmail,
    Panic,
    PanicAfterWrite,
    /// The client resets the connection while the request holds the pool's connection.
    Reset,
    /// The client sends half a body and closes the connection.
    TruncatedBody,
}

const MIX: [Load; 12] = [
    Load::Create,
    Load::Read,
    Load::Missing,
    Load::Create,
    Load::Invalid,
    Load::FailMidway,
    Load::Panic,
    Load::Reset,
    Load::PanicAfterWrite,
    Load::TakenEmail,
    Load::TruncatedBody,
    Load::Missing,
];
const WORKERS: usize = 8;
const REQUESTS_PER_WORKER: usize = 40;
const TAKEN_EMAIL: &str = "taken@example.com";

impl Load {
    fn expected(self) -> Option<u16> {
        match self {
            Load::Create => Some(201),
            Load::Read => Some(200),
            Load::Missing => Some(404),
            Load::Invalid => Some(422),
            Load::FailMidway | Load::TakenEmail => Some(409),
            Load::Panic | Load::PanicAfterWrite => Some(500),
            Load::Reset | Load::TruncatedBody => None,
        }
    }

    async fn send(self, client: &awc::Client, server: &TestServer) -> Option<u16> {
        let url = |path: &str| server.url(path);
        let request = match self {
            Load::Create => client
                .post(url("/notes"))
                .send_json(&json!({"text": "load"})),
            Load::Read => client.get(url("/notes?limit=5")).send(),
            Load::Missing => client
                .patch(url("/notes/999999999"))
                .send_json(&json!({"completed": true})),
            Load::Invalid => client.post(url("/notes")).send_json(&json!({"text": ""})),
            Load::FailMidway => client.post(url("/__test/fail-midway/whole")).send(),
            Load::TakenEmail => client
                .post(url("/users"))
                .send_json(&json!({"email": TAKEN_EMAIL.to_uppercase(), "password": "password1"})),
            Load::Panic => client.get(url("/__test/panic")).send(),
            Load::PanicAfterWrite => client.post(url("/__test/panic-after-write")).send(),
            Load::Reset => {
                let stream = start_raw_request(server.address, &raw_post("/__test/hold/300"));
                tokio::time::sleep(Duration::from_millis(20)).await;
                reset(stream);
                return None;
            }
            Load::TruncatedBody => {
                let head = "POST /notes HTTP/1.1\r\nHost: localhost\r\n\
                            Content-Type: application/json\r\nContent-Length: 100\r\n\r\n";
                drop(start_raw_request(
                    server.address,
                    &format!("{head}{{\"text\":"),
                ));
                return None;
            }
        };
        let response = request
            .await
            .unwrap_or_else(|e| panic!("{self:?} failed: {e}"));
        Some(response.status().as_u16())
    }
}

async fn pool_stays_whole_under_mixed_outcomes_and_abandoned_clients(backend: Backend) {
    let db = TestDb::committed(
        backend,
        &[("DB_POOL_MAX", "1"), ("DB_ACQUIRE_TIMEOUT_MS", "10000")],
    )
    .await;
    let app = db.app().await;
    let taken = json!({"email": TAKEN_EMAIL, "password": "password1"});
    let reply = send(&app, json_request(Method::POST, "/users", &taken)).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let server = db.spawn_server().await;
    let client = awc::Client::builder().timeout(HANG).finish();

    let workers = (0..WORKERS).map(|worker| {
        let (client, server) = (&client, &server);
        async move {
            let mut outcomes = Vec::new();
            for i in 0..REQUESTS_PER_WORKER {
                let load = MIX[(worker * 5 + i) % MIX.len()];
                outcomes.push((load, load.send(client, server).await));
            }
            outcomes
        }
    });
    let outcomes: Vec<(Load, Option<u16>)> =
        within_deadline("the mixed load", futures_util::future::join_all(workers))
            .await
            .into_iter()
            .flatten()
            .collect();

    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|(load, status)| *status != load.expected())
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    let created = outcomes
        .iter()
        .filter(|(load, _)| matches!(load, Load::Create))
        .count();
    assert_pool_whole_and_clean(&db, &app).await;
    assert_eq!(notes_with_text(&db, "load").await, created as u64);
    for marker in ["midway-whole", "panic-after-write"] {
        assert_eq!(notes_with_text(&db, marker).await, 0, "{marker}");
    }
    server.stop().await;
    drop(app);
    db.finish().await;
}

each_backend!(
    request_below_400_commits_its_writes,
    single_row_routes_on_the_pool_round_trip,
    single_statement_write_autocommits_on_the_pool,
    single_statement_joins_a_transaction_already_begun,
    error_midway_through_the_request_transaction_rolls_it_back,
    error_midway_through_a_scoped_transaction_rolls_the_scope_back,
    error_midway_through_an_explicit_transaction_rolls_it_back,
    panicking_handler_answers_500_problem_without_the_panic_text,
    panic_after_a_write_leaves_no_row_and_frees_the_connection,
    healthz_answers_while_the_pool_is_exhausted,
    requests_waiting_for_an_exhausted_pool_get_503_with_retry_after,
    request_after_an_abandoned_one_starts_clean,
    request_dropped_during_begin_leaves_no_transaction_open,
    pool_stays_whole_under_mixed_outcomes_and_abandoned_clients,
);
