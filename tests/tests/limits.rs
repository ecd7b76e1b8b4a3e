//! Abuse limits, through a real server: exports cannot starve the pool (at most
//! `EXPORT_MAX_CONCURRENT` at once, one per user, a stalled stream cut after
//! `EXPORT_IDLE_TIMEOUT_S`), and password hashing is bounded (`HASH_CONCURRENCY`; a wait longer
//! than `DB_ACQUIRE_TIMEOUT_MS` answers 503) while a sign-in for an unknown e-mail address
//! costs the same hashing work as a wrong password.
//!
//! The tests of this file measure times and load the machine: they take [`SERIAL`] so they do
//! not run at the same time as each other.

use std::{
    cell::Cell,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use actix_web::http::{
    StatusCode,
    header::{HeaderMap, HeaderName, HeaderValue},
};
use entity::user;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use tests::{
    Backend, Reply, SignedIn, TEST_PASSWORD, TestApp, assert_problem, backends,
    fixtures::{
        HANG, assert_retry_after, client, export_lines, pool_in_use, reply_of, seed_notes,
        wait_for_idle_pool, within,
    },
    http::TestServer,
    unique_email,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::MutexGuard,
};

/// One timing-sensitive test at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Deadline of the steps without one of their own (setting up, seeding, stopping).
const STEP: Duration = Duration::from_secs(4 * HANG.as_secs());

/// Notes of a user whose export is to stall: about 10.6 MB of NDJSON, more than loopback
/// socket buffers hold (4 MiB send buffer at most here), so a client that stops reading
/// really leaves the server waiting.
const STALL_NOTES: usize = 5000;
const NOTE_TEXT_CHARS: usize = 2000;

/// The app with `settings` on a new database, once no other test of this file runs: the
/// guard on [`SERIAL`] keeps it so until dropped.
async fn app_with(
    backend: Backend,
    settings: &[(&str, &str)],
) -> (MutexGuard<'static, ()>, TestApp) {
    let serial = SERIAL.lock().await;
    let app = within(
        "setting up the app",
        STEP,
        TestApp::with_settings(backend, settings),
    )
    .await;
    (serial, app)
}

/// A new user, signed in, owning `notes` notes.
async fn user_with_notes(app: &TestApp, tag: &str, notes: usize) -> SignedIn {
    within("signing up and seeding", STEP, async {
        let user = app.sign_up_and_in(tag).await;
        let filler = "x".repeat(NOTE_TEXT_CHARS);
        Box::pin(seed_notes(app.conn(), user.id, notes, |i| {
            format!("{i:05} {filler}")
        }))
        .await;
        user
    })
    .await
}

/// Stop the server, then end the test (drop its database).
async fn end(server: TestServer, app: TestApp) {
    within("stopping the server", STEP, server.stop()).await;
    within("ending the test", STEP, app.finish()).await;
}

/// A response read over a raw socket only as far as its head (and its body when it has a
/// `Content-Length`): a streamed body is left unread, as a client that stopped reading
/// leaves it.
struct RawResponse {
    reply: Reply,
    stream: TcpStream,
    /// Bytes read so far (head included).
    read: usize,
    /// When the client last read from the socket.
    last_read: Instant,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Read more of a response into `buffer`, waiting at most [`HANG`]; `part` (its head, its
/// body) names what the server must not close before.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>, part: &str) {
    let mut chunk = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(HANG, stream.read(&mut chunk))
        .await
        .unwrap_or_else(|_| panic!("the response {part} within the deadline"))
        .unwrap_or_else(|e| panic!("read the response {part}: {e}"));
    assert!(
        n > 0,
        "the server closed before the response {part} was read"
    );
    buffer.extend_from_slice(&chunk[..n]);
}

/// `GET path` as `token`'s user on a socket of its own, reading the head only (see
/// [`RawResponse`]).
async fn raw_get(address: SocketAddr, path: &str, token: &str) -> RawResponse {
    let mut stream = TcpStream::connect(address)
        .await
        .expect("connect to the test server");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut buffer = Vec::new();
    let head_end = loop {
        read_more(&mut stream, &mut buffer, "head").await;
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').expect("a header line");
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("a header name"),
            HeaderValue::from_str(value.trim()).expect("a header value"),
        );
    }
    let length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(length) = length {
        while buffer.len() < head_end + length {
            read_more(&mut stream, &mut buffer, "body").await;
        }
    }
    let last_read = Instant::now();
    RawResponse {
        reply: Reply {
            status: StatusCode::from_u16(status).expect("a status code"),
            headers,
            body: actix_web::web::Bytes::copy_from_slice(&buffer[head_end..]),
        },
        stream,
        read: buffer.len(),
        last_read,
    }
}

impl RawResponse {
    /// A 200 export whose body is streaming.
    fn assert_export_started(&self) {
        assert_eq!(self.reply.status, StatusCode::OK, "{:?}", self.reply);
        assert_eq!(
            self.reply.header("content-type"),
            Some("application/x-ndjson"),
            "{:?}",
            self.reply.headers
        );
    }

    /// Read what is left until the server closes the connection (at most [`HANG`]); the
    /// bytes read in all, and whether the body ended as a complete chunked body does.
    async fn read_to_close(mut self) -> (usize, bool) {
        let mut chunk = vec![0u8; 256 * 1024];
        let mut tail = Vec::new();
        loop {
            let n = tokio::time::timeout(HANG, self.stream.read(&mut chunk))
                .await
                .expect("the server closes the connection")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            self.read += n;
            tail.extend_from_slice(&chunk[..n]);
            let keep = tail.len().saturating_sub(16);
            tail.drain(..keep);
        }
        (self.read, tail.ends_with(b"\r\n0\r\n\r\n"))
    }
}

/// `GET /notes/export` as `user`, read whole: its notes, checked to be `user`'s.
async fn full_export(server: &TestServer, user: &SignedIn) -> Vec<Value> {
    let reply = reply_of(
        client(HANG)
            .get(server.url("/notes/export"))
            .bearer_auth(&user.token)
            .send()
            .await,
        "export",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let lines = export_lines(&reply);
    for line in &lines {
        assert_eq!(line["user_id"], user.id, "only the caller's notes: {line}");
    }
    lines
}

/// What the rest of the API answered while exports were stalled.
#[derive(Default)]
struct Traffic {
    requests: usize,
    failures: Vec<String>,
    slowest: Duration,
}

impl Traffic {
    /// Send `request` (a `GET`) and record its answer as `what`'s, expecting 200.
    async fn get(&mut self, what: &str, request: awc::ClientRequest) {
        let started = Instant::now();
        let status = request
            .send()
            .await
            .map(|r| r.status())
            .map_err(|e| e.to_string());
        self.record(what, status, 200, started.elapsed());
    }

    fn record(
        &mut self,
        what: &str,
        status: Result<StatusCode, String>,
        expected: u16,
        took: Duration,
    ) {
        self.requests += 1;
        self.slowest = self.slowest.max(took);
        match status {
            Ok(status) if status.as_u16() == expected => {}
            Ok(status) => self
                .failures
                .push(format!("{what}: {status} after {took:?}")),
            Err(error) => self
                .failures
                .push(format!("{what}: {error} after {took:?}")),
        }
    }
}

/// `POST /notes`, `GET /notes` and `GET /notes/{id}` as `token`'s user, round after round,
/// until `stop` is set.
async fn ordinary_traffic(base: String, token: String, stop: Rc<Cell<bool>>) -> Traffic {
    let client = client(Duration::from_secs(10));
    let mut traffic = Traffic::default();
    let mut round = 0;
    while !stop.get() {
        round += 1;
        let started = Instant::now();
        let created = client
            .post(format!("{base}/notes"))
            .bearer_auth(&token)
            .send_json(&json!({"text": format!("while exports stall {round}")}))
            .await;
        let mut id = None;
        let status = match created {
            Ok(mut response) => {
                if response.status() == StatusCode::CREATED {
                    id = response
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_i64());
                }
                Ok(response.status())
            }
            Err(error) => Err(error.to_string()),
        };
        traffic.record("POST /notes", status, 201, started.elapsed());

        let listed = client.get(format!("{base}/notes?limit=5"));
        traffic.get("GET /notes", listed.bearer_auth(&token)).await;

        if let Some(id) = id {
            let got = client.get(format!("{base}/notes/{id}"));
            traffic
                .get("GET /notes/{id}", got.bearer_auth(&token))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    traffic
}

/// Clients that ask for an export and stop reading hold at most `EXPORT_MAX_CONCURRENT`
/// connections: exports beyond that answer 503, a second export of the same user 429, both
/// with `Retry-After`; every other request keeps answering; and after
/// `EXPORT_IDLE_TIMEOUT_S` without a read the stalled streams are cut, their connections
/// back in the pool and their slots free for new exports.
#[backends(sqlite, postgres, mysql)]
async fn stalled_exports_cannot_starve_the_rest_of_the_api(backend: Backend) {
    let _serial = SERIAL.lock().await;
    const IDLE: Duration = Duration::from_secs(2);
    let (app, me) = within(
        "setting up the app",
        STEP,
        TestApp::with_settings_signed_in(
            backend,
            &[
                // Two exports may hold two of the four connections; without the limit the four
                // stalled clients below would hold all of them.
                ("DB_POOL_MAX", "4"),
                ("DB_POOL_MIN", "0"),
                ("EXPORT_MAX_CONCURRENT", "2"),
                ("EXPORT_IDLE_TIMEOUT_S", "2"),
                ("DB_ACQUIRE_TIMEOUT_MS", "1000"),
            ],
        ),
    )
    .await;
    let mut stallers = Vec::new();
    for _ in 0..4 {
        stallers.push(user_with_notes(&app, "staller", STALL_NOTES).await);
    }
    let prober = user_with_notes(&app, "prober", 10).await;
    let server = app.serve().await;
    wait_for_idle_pool(app.db()).await;

    let stop = Rc::new(Cell::new(false));
    let traffic = actix_web::rt::spawn(ordinary_traffic(
        server.base_url.clone(),
        me.token.clone(),
        Rc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Two users' exports take both slots; their clients read the first bytes, then nothing.
    let first = raw_get(server.address, "/notes/export", &stallers[0].token).await;
    first.assert_export_started();
    let second = raw_get(server.address, "/notes/export", &stallers[1].token).await;
    second.assert_export_started();
    let last_read = first.last_read.max(second.last_read);

    // Beyond the overall limit: 503 for every other user, who also stops reading whatever
    // they get.
    let mut refused = Vec::new();
    for user in &stallers[2..] {
        let third = raw_get(server.address, "/notes/export", &user.token).await;
        assert_retry_after(&third.reply, StatusCode::SERVICE_UNAVAILABLE);
        refused.push(third);
    }
    // A second export of a user whose export is running: 429.
    let again = raw_get(server.address, "/notes/export", &stallers[0].token).await;
    assert_retry_after(&again.reply, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        pool_in_use(app.db()).0 >= 2,
        "the two running exports hold their connections"
    );

    // Cut after the idle timeout: both stalled connections are back (nothing in use but,
    // now and then, the ordinary traffic's one request). Seen idle three samples running,
    // so a count read while a connection changes hands is not taken for the cut.
    let mut idle_since = None;
    let cut = loop {
        let since_read = last_read.elapsed();
        if pool_in_use(app.db()).0 == 0 {
            let (first_seen, samples) = idle_since.get_or_insert((since_read, 0));
            *samples += 1;
            if *samples == 3 {
                break *first_seen;
            }
        } else {
            idle_since = None;
        }
        assert!(
            since_read < IDLE + Duration::from_secs(3),
            "the stalled exports still hold {} connections {since_read:?} after their clients' last read",
            pool_in_use(app.db()).0
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "{backend:?}: stalled exports cut {cut:?} after their clients' last read (EXPORT_IDLE_TIMEOUT_S=2)"
    );
    // The stalled streams were cut short and closed, not completed.
    let full_size = STALL_NOTES * NOTE_TEXT_CHARS;
    for stalled in [first, second] {
        let (read, complete) = stalled.read_to_close().await;
        assert!(
            !complete && read < full_size,
            "a stalled export was cut short, not finished: {read} bytes of more than \
             {full_size}, complete: {complete}"
        );
    }
    assert!(
        cut >= IDLE.mul_f64(0.9),
        "cut before the idle timeout: {cut:?}"
    );

    // Their slots are free: a new export of a refused user and of the user who got 429 run
    // to the end.
    assert_eq!(full_export(&server, &prober).await.len(), 10);
    let after = Instant::now();
    assert_eq!(
        full_export(&server, &stallers[0]).await.len(),
        STALL_NOTES,
        "the cut user exports again"
    );
    eprintln!(
        "{backend:?}: a full export of {STALL_NOTES} notes took {:?}",
        after.elapsed()
    );

    stop.set(true);
    let traffic = traffic.await.expect("the traffic task");
    eprintln!(
        "{backend:?}: the rest of the API answered {} requests during the stall, slowest {:?}, failures {:?}",
        traffic.requests, traffic.slowest, traffic.failures
    );
    assert!(
        traffic.failures.is_empty(),
        "while exports stalled: {:?}",
        traffic.failures
    );
    assert!(
        traffic.requests >= 30,
        "the traffic ran throughout: {} requests",
        traffic.requests
    );

    drop((refused, again));
    end(server, app).await;
}

/// The one-export-per-user limit is per user: while one user's export is running, another
/// user's export runs to the end (the overall limit allowing two), and the first user's
/// second export is the one refused.
#[backends(sqlite, postgres, mysql)]
async fn one_users_running_export_does_not_stop_another_users(backend: Backend) {
    let (_serial, app) = app_with(
        backend,
        &[
            ("DB_POOL_MAX", "4"),
            ("EXPORT_MAX_CONCURRENT", "2"),
            // Long enough that the stalled export is still running at the end.
            ("EXPORT_IDLE_TIMEOUT_S", "60"),
        ],
    )
    .await;
    let busy = user_with_notes(&app, "busy", STALL_NOTES).await;
    let other = user_with_notes(&app, "other", 50).await;
    let server = app.serve().await;

    let running = raw_get(server.address, "/notes/export", &busy.token).await;
    running.assert_export_started();

    let exported = full_export(&server, &other).await;
    assert_eq!(exported.len(), 50, "the other user's export is whole");

    let second = raw_get(server.address, "/notes/export", &busy.token).await;
    assert_retry_after(&second.reply, StatusCode::TOO_MANY_REQUESTS);

    // The client goes away: its export ends and gives its connection back before the server
    // stops (an export still running at shutdown is dropped outside the runtime).
    drop((running, second));
    within(
        "the abandoned export's end",
        STEP,
        wait_for_idle_pool(app.db()),
    )
    .await;
    end(server, app).await;
}

/// Idle means idle: a client that keeps reading, in bursts with pauses shorter than
/// `EXPORT_IDLE_TIMEOUT_S`, gets the whole export even though it takes several times as long.
#[backends(sqlite, postgres, mysql)]
async fn an_export_whose_client_keeps_reading_is_not_cut(backend: Backend) {
    let (_serial, app) = app_with(backend, &[("EXPORT_IDLE_TIMEOUT_S", "1")]).await;
    let reader = user_with_notes(&app, "reader", STALL_NOTES).await;
    let server = app.serve().await;

    let started = Instant::now();
    let mut export = raw_get(server.address, "/notes/export", &reader.token).await;
    export.assert_export_started();
    let mut body = export.reply.body.to_vec();
    let mut chunk = vec![0u8; 64 * 1024];
    let complete = loop {
        // About 1 MB, then a pause of 400 ms: the server waits on the client, never 1 s.
        let burst_start = body.len();
        while body.len() - burst_start < 1 << 20 {
            let n = tokio::time::timeout(HANG, export.stream.read(&mut chunk))
                .await
                .expect("the export keeps coming")
                .expect("read the export");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
            if body.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
        if body.ends_with(b"\r\n0\r\n\r\n") {
            break true;
        }
        if body.len() == burst_start {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    };
    let took = started.elapsed();
    eprintln!("{backend:?}: a slowly read export took {took:?}");
    assert!(complete, "the export was cut while its client kept reading");
    let rows = body.windows(10).filter(|w| w == b"\"user_id\":").count();
    assert_eq!(rows, STALL_NOTES, "every note arrived");
    assert!(
        took > Duration::from_secs(2),
        "the export lasted longer than the idle timeout: {took:?}"
    );
    end(server, app).await;
}

/// Sign-ups beyond `HASH_CONCURRENCY` wait at most `DB_ACQUIRE_TIMEOUT_MS` for a hashing
/// slot: every answer of a burst is 201 or 503 with `Retry-After` (some are 503: the bound
/// holds), a refused sign-up wrote nothing and may be retried, the accounts created can sign
/// in, and `/healthz` answers within a second throughout.
#[backends(sqlite, postgres, mysql)]
async fn password_hashing_is_bounded_and_the_server_stays_responsive(backend: Backend) {
    let (_serial, app) = app_with(
        backend,
        &[("HASH_CONCURRENCY", "2"), ("DB_ACQUIRE_TIMEOUT_MS", "300")],
    )
    .await;
    let server = app.serve().await;

    // Enough sign-ups that two slots cannot serve them all within the 300 ms wait, twice
    // over, however fast this machine hashes (at least 60).
    let mut one_sign_up = Duration::MAX;
    for _ in 0..2 {
        let started = Instant::now();
        let reply = reply_of(
            client(HANG)
                .post(server.url("/users"))
                .send_json(&json!({"email": unique_email("timed"), "password": TEST_PASSWORD}))
                .await,
            "a single sign-up",
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        one_sign_up = one_sign_up.min(started.elapsed());
    }
    let served_within_the_wait = 2.0 * 0.3 / one_sign_up.as_secs_f64();
    let burst = ((2.0 * served_within_the_wait).ceil() as usize).clamp(60, 400);

    let done = Rc::new(Cell::new(false));
    let health = {
        let url = server.url("/healthz");
        let done = Rc::clone(&done);
        actix_web::rt::spawn(async move {
            let client = client(Duration::from_secs(5));
            let mut probes = Vec::new();
            while !done.get() {
                let started = Instant::now();
                let status = client.get(&url).send().await.map(|r| r.status().as_u16());
                probes.push((started.elapsed(), status.map_err(|e| e.to_string())));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            probes
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let emails: Vec<String> = (0..burst).map(|_| unique_email("burst")).collect();
    let started = Instant::now();
    let sign_ups: Vec<_> = emails
        .iter()
        .map(|email| {
            let request = client(HANG)
                .post(server.url("/users"))
                .send_json(&json!({"email": email, "password": TEST_PASSWORD}));
            actix_web::rt::spawn(async move { reply_of(request.await, "sign-up").await })
        })
        .collect();
    let mut replies = Vec::new();
    for sign_up in sign_ups {
        replies.push(sign_up.await.expect("a sign-up task"));
    }
    let burst_took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    done.set(true);
    let probes = health.await.expect("the health probe");

    let mut created = Vec::new();
    let mut refused = Vec::new();
    for (email, reply) in emails.iter().zip(&replies) {
        match reply.status {
            StatusCode::CREATED => {
                let user = reply.json();
                assert_eq!(user["email"], email.as_str(), "{user}");
                assert_eq!(user["is_admin"], false, "{user}");
                created.push(email.clone());
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_retry_after(reply, StatusCode::SERVICE_UNAVAILABLE);
                refused.push(email.clone());
            }
            other => panic!("a sign-up answered {other}: {reply:?}"),
        }
    }
    let slowest_health = probes
        .iter()
        .map(|(took, _)| *took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{backend:?}: {burst} concurrent sign-ups with HASH_CONCURRENCY=2 (one alone: {one_sign_up:?}) in {burst_took:?}: {} × 201, {} × 503; {} /healthz probes, slowest {slowest_health:?}",
        created.len(),
        refused.len(),
        probes.len()
    );
    assert!(
        !refused.is_empty(),
        "with 2 hashing slots and a 300 ms wait, {burst} sign-ups at once cannot all be served"
    );
    assert!(!created.is_empty(), "some sign-ups are served");
    assert!(probes.len() >= 3, "/healthz was probed during the burst");
    for (took, status) in &probes {
        assert_eq!(status.as_ref().ok(), Some(&200), "{status:?}");
        assert!(
            *took < Duration::from_secs(1),
            "/healthz took {took:?} during the burst"
        );
    }

    // A refused sign-up wrote nothing: no account, and the same e-mail can sign up now.
    let left_behind = user::Entity::find()
        .filter(user::Column::Email.is_in(refused.iter().map(String::as_str)))
        .count(app.conn())
        .await
        .unwrap();
    assert_eq!(left_behind, 0, "a refused sign-up created no account");
    let retried = reply_of(
        client(HANG)
            .post(server.url("/users"))
            .send_json(&json!({"email": refused[0], "password": TEST_PASSWORD}))
            .await,
        "retried sign-up",
    )
    .await;
    assert_eq!(retried.status, StatusCode::CREATED, "{retried:?}");

    // The accounts created are whole: each signs in.
    for email in &created {
        let signed_in = reply_of(
            client(HANG)
                .post(server.url("/sessions"))
                .send_json(&json!({"email": email, "password": TEST_PASSWORD}))
                .await,
            "sign-in",
        )
        .await;
        assert_eq!(
            signed_in.status,
            StatusCode::CREATED,
            "{email}: {signed_in:?}"
        );
    }
    end(server, app).await;
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// A sign-in for an e-mail address nobody has costs the hashing work of a wrong password: its
/// time is of the same order (a skipped hash would answer in a database round trip, tens of
/// times faster), and its answer is the same 401.
#[backends(sqlite, postgres, mysql)]
async fn sign_in_for_an_unknown_email_costs_a_full_hash(backend: Backend) {
    // Enough failures allowed that the throttle never answers 429 here.
    let (_serial, app) = app_with(backend, &[("SIGNIN_MAX_FAILURES", "1000")]).await;
    let known = user_with_notes(&app, "timing", 0).await;
    let server = app.serve().await;
    let client = client(HANG);
    let attempt = async |email: &str| {
        let started = Instant::now();
        let reply = reply_of(
            client
                .post(server.url("/sessions"))
                .send_json(&json!({"email": email, "password": "not the password"}))
                .await,
            "sign-in",
        )
        .await;
        let took = started.elapsed();
        assert_problem(&reply, StatusCode::UNAUTHORIZED);
        (took, reply.json())
    };

    // Warm up both paths (connections, caches).
    let (_, wrong_problem) = attempt(&known.email).await;
    let (_, unknown_problem) = attempt(&unique_email("nobody")).await;
    for key in ["type", "title", "detail", "status"] {
        assert_eq!(
            wrong_problem[key], unknown_problem[key],
            "an unknown e-mail and a wrong password answer alike"
        );
    }
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        unknown.push(attempt(&unique_email("nobody")).await.0);
        wrong.push(attempt(&known.email).await.0);
    }
    let (unknown, wrong) = (median(unknown), median(wrong));
    eprintln!("{backend:?}: sign-in median: unknown e-mail {unknown:?}, wrong password {wrong:?}");
    assert!(
        unknown * 2 >= wrong,
        "an unknown e-mail is answered without the hashing work: {unknown:?} vs {wrong:?}"
    );
    end(server, app).await;
}
