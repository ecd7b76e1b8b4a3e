//! The per-request unit of work: every request's writes are all-or-nothing, and its pooled
//! connection comes back clean on every path — success, error, panic, a client that goes
//! away, an exhausted pool.
//!
//! Every test runs the app on the pool over a database of its own, as production runs it,
//! and can look at the pool itself (what is checked out, whether a transaction leaked).

use std::{
    future::Future,
    io::Write,
    net::{SocketAddr, TcpStream},
    rc::Rc,
    time::Duration,
};

use actix_web::{
    http::{Method, StatusCode},
    test::TestRequest,
};
use api::db::{RequestDb, UnitOfWork};
use entity::note;
use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    sqlx::{self, Row},
};
use serde_json::json;
use tests::{
    Backend, Reply, TestApp, TestDb, assert_problem, backends,
    fixtures::{
        HANG, client, notes_with_text, pool_in_use, wait_for_connections_in_use,
        wait_for_idle_pool, within,
    },
    http::{TestServer, get, json_request},
};

fn new_note(text: &str) -> TestRequest {
    json_request(Method::POST, "/notes", &json!({ "text": text }))
}

/// A request's unit of work on the app's pool, and the request's handle on it.
fn request_db(app: &TestApp) -> (Rc<UnitOfWork>, RequestDb) {
    let uow = Rc::new(UnitOfWork::new(app.db().source()));
    let request = RequestDb::new(Rc::clone(&uow));
    (uow, request)
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

/// No transaction was left open on the pool's connection ([`connection_in_transaction`]).
async fn assert_no_transaction_leaked(db: &TestDb) {
    assert!(!connection_in_transaction(db).await, "a transaction leaked");
}

/// [`TestApp::signed_in`], and the answer to `POST path` (a test route).
async fn signed_in_post(backend: Backend, path: &str) -> (TestApp, Reply) {
    let (app, _) = TestApp::signed_in(backend).await;
    let reply = app.post(path).await;
    (app, reply)
}

/// `POST route` (a test route) answers that the transaction it opened midway was rolled back:
/// its note, `marker`, is not stored, and the request's own write is committed.
async fn assert_rolled_back_midway(backend: Backend, route: &str, marker: &str) {
    let (app, reply) = signed_in_post(backend, route).await;

    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json(), json!({"rolled_back": true}));
    assert_eq!(notes_with_text(&app, marker).await, 0);
    assert_eq!(
        notes_with_text(&app, "midway-kept").await,
        1,
        "the request committed"
    );
    app.finish().await;
}

/// After failures, the pool is whole and clean: nothing checked out, its one connection not
/// inside a transaction, and a normal write commits at once.
async fn assert_pool_whole_and_clean(app: &TestApp) {
    wait_for_idle_pool(app.db()).await;
    assert!(
        pool_in_use(app.db()).1 <= 1,
        "the pool grew past DB_POOL_MAX"
    );
    assert_no_transaction_leaked(app.db()).await;
    let reply = within("a write after failures", HANG, app.send(new_note("clean"))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

#[backends(sqlite, postgres, mysql)]
async fn request_below_400_commits_its_writes(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;

    let reply = app.send(new_note("committed")).await;

    assert_eq!(reply.status, StatusCode::CREATED);
    let fresh = migration::database::connect_for_tool(app.db().url())
        .await
        .unwrap();
    let stored = note::Entity::find()
        .filter(note::Column::Text.eq("committed"))
        .count(&fresh)
        .await
        .unwrap();
    assert_eq!(stored, 1, "another connection sees the note");
    fresh.close().await.unwrap();
    app.finish().await;
}

/// On the pool, reads and single-statement writes take the fast paths (the driver's pool
/// directly for `GET /notes/{id}`, autocommit for `POST` and `DELETE /notes/{id}`): the note
/// reads back exactly as created, then is gone, and no transaction is left open.
#[backends(sqlite, postgres, mysql)]
async fn single_row_routes_on_the_pool_round_trip(backend: Backend) {
    let (app, _) = TestApp::with_settings_signed_in(backend, &[("DB_POOL_MAX", "1")]).await;

    let created = app.send(new_note("round trip ✓ 'quoted'")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let location = created.header("location").expect("a Location header");
    let read = app.get(location).await;
    let deleted = app.send(TestRequest::delete().uri(location)).await;
    let gone = app.get(location).await;
    let deleted_again = app.send(TestRequest::delete().uri(location)).await;

    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), created.json());
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_problem(&gone, StatusCode::NOT_FOUND);
    assert_problem(&deleted_again, StatusCode::NOT_FOUND);
    assert_eq!(notes_with_text(&app, "round trip ✓ 'quoted'").await, 0);
    assert_no_transaction_leaked(app.db()).await;
    app.finish().await;
}

/// A request's statements outside a transaction share one pooled connection, taken at the
/// first and kept until the request settles: a signed-in read (token lookup, then the note)
/// takes the pool once, and pays the driver's check of a returned connection once.
#[backends(sqlite, postgres, mysql)]
async fn request_keeps_one_connection_for_its_statements_until_it_settles(backend: Backend) {
    let app = TestApp::with_settings(backend, &[("DB_POOL_MAX", "2")]).await;
    let (uow, request) = request_db(&app);

    request.find_by_id::<note::Entity>(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let held_between = pool_in_use(app.db()).0;
    request.find_by_id::<note::Entity>(2).await.unwrap();
    let held_after_second = pool_in_use(app.db()).0;
    uow.finish(true).await.unwrap();

    assert_eq!(
        held_between, 1,
        "the connection went back between statements"
    );
    assert_eq!(
        held_after_second, 1,
        "a second statement took a second connection"
    );
    wait_for_idle_pool(app.db()).await;
    drop(request);
    app.finish().await;
}

/// A request gives its connection back while it does slow work without the database (password
/// hashing), and before it begins a transaction (which takes its own): it never holds two, so
/// a pool of one serves a read followed by a transaction.
#[backends(sqlite, postgres, mysql)]
async fn request_never_holds_a_connection_it_is_not_using(backend: Backend) {
    let app = TestApp::with_settings(backend, &[("DB_POOL_MAX", "1")]).await;
    let (uow, request) = request_db(&app);

    request.find_by_id::<note::Entity>(1).await.unwrap();
    let while_hashing = request
        .without_connection(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pool_in_use(app.db()).0
        })
        .await;
    request.find_by_id::<note::Entity>(1).await.unwrap();
    let begun = within("BEGIN after a read", HANG, request.transaction())
        .await
        .map(drop);
    uow.finish(false).await.unwrap();

    assert_eq!(while_hashing, 0, "the connection was held while hashing");
    assert!(
        begun.is_ok(),
        "BEGIN after a read on a pool of one: {begun:?}"
    );
    wait_for_idle_pool(app.db()).await;
    drop(request);
    app.finish().await;
}

/// A single-statement write autocommits on the pool (no `BEGIN`/`COMMIT`): an error after it
/// does not undo it — which is why handlers use it only for their last fallible step.
#[backends(sqlite, postgres, mysql)]
async fn single_statement_write_autocommits_on_the_pool(backend: Backend) {
    let (app, reply) = signed_in_post(backend, "/__test/single-statement/alone").await;

    assert_problem(&reply, StatusCode::CONFLICT);
    assert_eq!(notes_with_text(&app, "single-alone").await, 1);
    assert_no_transaction_leaked(app.db()).await;
    app.finish().await;
}

/// Once the request began a transaction, a single statement joins it and is rolled back with
/// it.
#[backends(sqlite, postgres, mysql)]
async fn single_statement_joins_a_transaction_already_begun(backend: Backend) {
    let (app, reply) = signed_in_post(backend, "/__test/single-statement/joined").await;

    assert_problem(&reply, StatusCode::CONFLICT);
    assert_eq!(notes_with_text(&app, "single-joined-first").await, 0);
    assert_eq!(notes_with_text(&app, "single-joined").await, 0);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn error_midway_through_the_request_transaction_rolls_it_back(backend: Backend) {
    let (app, reply) = signed_in_post(backend, "/__test/fail-midway/whole").await;

    assert_problem(&reply, StatusCode::CONFLICT);
    assert_eq!(notes_with_text(&app, "midway-whole").await, 0);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn error_midway_through_a_scoped_transaction_rolls_the_scope_back(backend: Backend) {
    assert_rolled_back_midway(backend, "/__test/fail-midway/scoped", "midway-scoped").await;
}

#[backends(sqlite, postgres, mysql)]
async fn error_midway_through_an_explicit_transaction_rolls_it_back(backend: Backend) {
    assert_rolled_back_midway(backend, "/__test/fail-midway/explicit", "midway-explicit").await;
}

#[backends(sqlite, postgres, mysql)]
async fn panicking_handler_answers_500_problem_without_the_panic_text(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;

    let reply = app.get("/__test/panic").await;
    // `/__test/panic` is the one test route that needs no token.
    let anonymous = app.send_anonymous(get("/__test/panic")).await;

    for reply in [&reply, &anonymous] {
        assert_problem(reply, StatusCode::INTERNAL_SERVER_ERROR);
        let body = String::from_utf8_lossy(&reply.body).to_lowercase();
        assert!(
            !body.contains("panic") && !body.contains("on purpose") && !body.contains(".rs"),
            "{body}"
        );
        assert!(reply.header("x-request-id").is_some());
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn panic_after_a_write_leaves_no_row_and_frees_the_connection(backend: Backend) {
    let (app, _) = TestApp::with_settings_signed_in(backend, &[("DB_POOL_MAX", "1")]).await;

    let reply = within(
        "a panicking request",
        HANG,
        app.post("/__test/panic-after-write"),
    )
    .await;

    assert_problem(&reply, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(notes_with_text(&app, "panic-after-write").await, 0);
    assert_pool_whole_and_clean(&app).await;
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn healthz_answers_while_the_pool_is_exhausted(backend: Backend) {
    let (app, _) = TestApp::with_settings_signed_in(backend, &[("DB_POOL_MAX", "1")]).await;

    wait_for_idle_pool(app.db()).await;
    let hold = app.post("/__test/hold/1000");
    let health = async {
        wait_for_connections_in_use(app.db(), 1).await;
        app.get("/healthz").await
    };
    let (held, health) = within("healthz", HANG, futures_util::future::join(hold, health)).await;

    assert_eq!(health.status, StatusCode::OK, "{:?}", health.body);
    assert_eq!(held.status, StatusCode::OK);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn requests_waiting_for_an_exhausted_pool_get_503_with_retry_after(backend: Backend) {
    let (app, _) = TestApp::with_settings_signed_in(
        backend,
        &[("DB_POOL_MAX", "1"), ("DB_ACQUIRE_TIMEOUT_MS", "200")],
    )
    .await;

    wait_for_idle_pool(app.db()).await;
    let hold = app.post("/__test/hold/1000");
    let waiting = async {
        wait_for_connections_in_use(app.db(), 1).await;
        // The holder took the connection for its token lookup; let it give that back and
        // take it again for its transaction (milliseconds) before the others ask.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let writer = app.send(new_note("waited")).await;
        let reader = app.get("/notes").await;
        let by_id = app.get("/notes/1").await;
        (writer, reader, by_id)
    };
    let (held, (writer, reader, by_id)) = within(
        "requests on an exhausted pool",
        HANG,
        futures_util::future::join(hold, waiting),
    )
    .await;

    assert_eq!(held.status, StatusCode::OK);
    for reply in [&writer, &reader, &by_id] {
        assert_problem(reply, StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = reply.header("retry-after").expect("a Retry-After header");
        assert!(retry_after.parse::<u32>().is_ok(), "{retry_after}");
    }
    assert_eq!(notes_with_text(&app, "waited").await, 0);
    let recovered = app.send(new_note("recovered")).await;
    assert_eq!(recovered.status, StatusCode::CREATED, "the pool recovers");
    app.finish().await;
}

/// SQLite has one writer at a time, whatever the pool size: a writer that waits for the
/// write lock longer than the acquire timeout gets 503 too, instead of waiting for the
/// holder to finish (or failing with a 500 when the busy timeout runs out).
#[backends(sqlite)]
async fn sqlite_writer_waiting_for_the_write_lock_gets_503_after_the_acquire_timeout(
    backend: Backend,
) {
    let (app, _) =
        TestApp::with_settings_signed_in(backend, &[("DB_ACQUIRE_TIMEOUT_MS", "200")]).await;

    wait_for_idle_pool(app.db()).await;
    let hold = app.post("/__test/hold/1000");
    let waiting = async {
        wait_for_connections_in_use(app.db(), 1).await;
        // Let the holder's BEGIN IMMEDIATE take the write lock.
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.send(new_note("waited")).await
    };
    let (held, writer) = within(
        "a writer behind the write lock",
        HANG,
        futures_util::future::join(hold, waiting),
    )
    .await;

    assert_eq!(held.status, StatusCode::OK);
    assert_problem(&writer, StatusCode::SERVICE_UNAVAILABLE);
    assert!(writer.header("retry-after").is_some());
    assert_eq!(notes_with_text(&app, "waited").await, 0);
    app.finish().await;
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

/// `POST path` with no body, signed in with `token`.
fn raw_post(path: &str, token: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[backends(sqlite, postgres, mysql)]
async fn request_after_an_abandoned_one_starts_clean(backend: Backend) {
    let (app, me) = TestApp::with_settings_signed_in(backend, &[("DB_POOL_MAX", "1")]).await;
    let server = app.serve().await;
    let client = client(HANG);
    wait_for_idle_pool(app.db()).await;
    let abandoned = start_raw_request(
        server.address,
        &raw_post("/__test/write-and-hold/20000", &me.token),
    );
    wait_for_connections_in_use(app.db(), 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    reset(abandoned);
    let mut reply = within(
        "a write after an abandoned request",
        HANG,
        client
            .post(server.url("/notes"))
            .bearer_auth(&me.token)
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
    wait_for_idle_pool(app.db()).await;
    assert_no_transaction_leaked(app.db()).await;
    assert_eq!(notes_with_text(&app, "write-and-hold").await, 0);
    assert_eq!(notes_with_text(&app, "after-abandoned").await, 1);
    server.stop().await;
    app.finish().await;
}

/// A request dropped while its `BEGIN` is on the wire (the client went away) gives its
/// connection back outside any transaction: left inside one, the next request's
/// autocommitted statement would run in it and never commit (a 201 for a lost row).
#[backends(sqlite, postgres, mysql)]
async fn request_dropped_during_begin_leaves_no_transaction_open(backend: Backend) {
    let app = TestApp::with_settings(backend, &[("DB_POOL_MAX", "1")]).await;
    // Dropped after one to three polls: after the first, `BEGIN` has been written and its
    // reply is awaited; later ones catch slower paths (acquire, the task's start).
    for attempt in 0..12 {
        let polls = 1 + attempt % 3;
        let (_, request) = request_db(&app);
        let mut begin = Box::pin(request.transaction());
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
        drop(request);
        wait_for_idle_pool(app.db()).await;
        assert!(
            !connection_in_transaction(app.db()).await,
            "attempt {attempt}: dropped after {polls} polls, the pooled connection is still in a transaction"
        );
    }
    app.finish().await;
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

    /// Send this request to `server`, signed in with `token` where the route needs it.
    async fn send(self, client: &awc::Client, server: &TestServer, token: &str) -> Option<u16> {
        let url = |path: &str| server.url(path);
        let request = match self {
            Load::Create => client
                .post(url("/notes"))
                .bearer_auth(token)
                .send_json(&json!({"text": "load"})),
            Load::Read => client.get(url("/notes?limit=5")).bearer_auth(token).send(),
            Load::Missing => client
                .patch(url("/notes/999999999"))
                .bearer_auth(token)
                .send_json(&json!({"completed": true})),
            Load::Invalid => client
                .post(url("/notes"))
                .bearer_auth(token)
                .send_json(&json!({"text": ""})),
            Load::FailMidway => client
                .post(url("/__test/fail-midway/whole"))
                .bearer_auth(token)
                .send(),
            Load::TakenEmail => client
                .post(url("/users"))
                .send_json(&json!({"email": TAKEN_EMAIL.to_uppercase(), "password": "password1"})),
            Load::Panic => client.get(url("/__test/panic")).send(),
            Load::PanicAfterWrite => client
                .post(url("/__test/panic-after-write"))
                .bearer_auth(token)
                .send(),
            Load::Reset => {
                let stream =
                    start_raw_request(server.address, &raw_post("/__test/hold/300", token));
                tokio::time::sleep(Duration::from_millis(20)).await;
                reset(stream);
                return None;
            }
            Load::TruncatedBody => {
                let head = format!(
                    "POST /notes HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                );
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

#[backends(sqlite, postgres, mysql)]
async fn pool_stays_whole_under_mixed_outcomes_and_abandoned_clients(backend: Backend) {
    let (app, me) = TestApp::with_settings_signed_in(
        backend,
        &[("DB_POOL_MAX", "1"), ("DB_ACQUIRE_TIMEOUT_MS", "10000")],
    )
    .await;
    let taken = json!({"email": TAKEN_EMAIL, "password": "password1"});
    let reply = app.post_json("/users", &taken).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let server = app.serve().await;
    let client = client(HANG);

    let workers = (0..WORKERS).map(|worker| {
        let (client, server, token) = (&client, &server, me.token.as_str());
        async move {
            let mut outcomes = Vec::new();
            for i in 0..REQUESTS_PER_WORKER {
                let load = MIX[(worker * 5 + i) % MIX.len()];
                outcomes.push((load, load.send(client, server, token).await));
            }
            outcomes
        }
    });
    let outcomes: Vec<(Load, Option<u16>)> = within(
        "the mixed load",
        HANG,
        futures_util::future::join_all(workers),
    )
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
    assert_pool_whole_and_clean(&app).await;
    assert_eq!(notes_with_text(&app, "load").await, created as u64);
    for marker in ["midway-whole", "panic-after-write"] {
        assert_eq!(notes_with_text(&app, marker).await, 0, "{marker}");
    }
    server.stop().await;
    app.finish().await;
}
