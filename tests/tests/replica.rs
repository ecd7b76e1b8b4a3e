//! Reads on a PostgreSQL streaming replica (`DATABASE_READ_URL`), against a real replica
//! that lags: `scripts/pg-replica.sh up 2s` makes one on 127.0.0.1:5433 and `.ci/run` runs
//! these tests with `TEST_POSTGRES_REPLICA_URL` pointing at it. With PostgreSQL configured
//! and no replica, these tests fail (under `TEST_ALL_BACKENDS=1`) or say they skipped.
//!
//! - read-your-writes through two instances, whatever the lag (the written-position cookie);
//! - reads that need nothing fresh are served by the replica;
//! - a lagging replica is bypassed; a replica that stops is bypassed with no failed read, and
//!   used again once it is back; revocation stays immediate (the token check is on the
//!   primary).

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use serde_json::{Value, json};
use tests::{
    Backend, REPLICA, SignedIn, TEST_PASSWORD, TestDb, backends, http::TestServer, proxy::Proxy,
    replica_url, unique_email,
};

/// The client's cookie jar: the one cookie this server sets.
#[derive(Default)]
struct Client {
    http: Option<awc::Client>,
    cookie: Option<String>,
}

impl Client {
    fn new() -> Self {
        Self {
            http: Some(
                awc::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .finish(),
            ),
            cookie: None,
        }
    }

    /// Send `method path` (with `body` as JSON) to `server` with `token`, keeping the cookie
    /// the server sets, as an ordinary HTTP client does.
    async fn send(
        &mut self,
        server: &TestServer,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let http = self.http.as_ref().unwrap();
        let mut request = http
            .request(method.parse().unwrap(), server.url(path))
            .bearer_auth(token);
        if let Some(cookie) = &self.cookie {
            request = request.insert_header(("cookie", cookie.as_str()));
        }
        let mut reply = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        if let Some(set) = reply.headers().get("set-cookie") {
            let set = set.to_str().unwrap();
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        let status = reply.status();
        let body = reply.body().limit(1 << 20).await.unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, json)
    }

    /// `GET path` with `token`: the body of its 200 (anything else fails, naming `what`).
    async fn get(&mut self, server: &TestServer, path: &str, token: &str, what: &str) -> Value {
        let (status, body) = self.send(server, "GET", path, token, None).await;
        assert_eq!(status, StatusCode::OK, "{what}: {body}");
        body
    }
}

/// Wait until the replica has this test's database and answers its checks.
async fn wait_for_replica(db: &TestDb) {
    let replica = db.replica().expect("a replica");
    let started = Instant::now();
    while !replica.is_up() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the replica never answered for this test's database"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sign up and in through `server` (writes: on the primary).
async fn sign_up(client: &mut Client, server: &TestServer) -> SignedIn {
    let email = unique_email("replica");
    let body = json!({"email": email, "password": TEST_PASSWORD});
    let (status, user) = client.send(server, "POST", "/users", "", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let credentials = json!({"email": email, "password": TEST_PASSWORD});
    let (status, session) = client
        .send(server, "POST", "/sessions", "", Some(credentials))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    SignedIn {
        id: user["id"].as_i64().unwrap(),
        email,
        password: TEST_PASSWORD.to_owned(),
        token: session["token"].as_str().unwrap().to_owned(),
    }
}

/// Once `db`'s replica is up: a server on `db`, and a user `client` signed up through it.
async fn serve_with_user(db: &TestDb, client: &mut Client) -> (TestServer, SignedIn) {
    wait_for_replica(db).await;
    let server = db.spawn_server().await;
    let user = sign_up(client, &server).await;
    (server, user)
}

/// The replica's configured apply delay: the tests need a real one.
async fn apply_delay(db: &TestDb) -> Duration {
    use sea_orm::{ConnectionTrait, Statement};
    let settings = db.settings();
    let url = settings.database_read_url.as_ref().unwrap().expose();
    let conn = sea_orm::Database::connect(url).await.unwrap();
    let row = conn
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT setting::bigint FROM pg_settings WHERE name = 'recovery_min_apply_delay'",
        ))
        .await
        .unwrap()
        .unwrap();
    let ms: i64 = row.try_get_by_index(0).unwrap();
    conn.close().await.unwrap();
    Duration::from_millis(ms as u64)
}

#[backends(postgres_replica)]
async fn every_write_is_read_back_through_two_instances_while_the_replica_lags(backend: Backend) {
    let db = TestDb::private(backend, &[("DATABASE_READ_URL", REPLICA)]).await;
    let delay = apply_delay(&db).await;
    assert!(
        delay >= Duration::from_secs(1),
        "the replica replays at once ({delay:?}): run scripts/pg-replica.sh up 2s"
    );
    wait_for_replica(&db).await;
    let servers = [db.spawn_server().await, db.spawn_other_server().await];
    let mut client = Client::new();
    let user = sign_up(&mut client, &servers[0]).await;
    let replica = db.replica().unwrap();

    let rounds = 60;
    let mut seen = 0;
    for round in 0..rounds {
        let (writer, reader) = (&servers[round % 2], &servers[(round + 1) % 2]);
        let text = format!("round {round} marker{round:03}");
        let (status, note) = client
            .send(
                writer,
                "POST",
                "/notes",
                &user.token,
                Some(json!({"text": text})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{note}");
        let id = note["id"].as_i64().unwrap();
        let path = format!("/notes/{id}");
        let what = format!("round {round}: the write is not seen");
        let read = client.get(reader, &path, &user.token, &what).await;
        assert_eq!(read["text"], text);
        let newest = client
            .get(reader, "/notes?order=desc&limit=1", &user.token, "newest")
            .await;
        assert_eq!(
            newest[0]["id"], id,
            "round {round}: the list misses the write"
        );
        let search = format!("/notes?q=marker{round:03}");
        let found = client.get(reader, &search, &user.token, "search").await;
        assert_eq!(
            found[0]["id"], id,
            "round {round}: the search misses the write"
        );
        seen += 1;
    }
    let (replica_reads_during, _) = replica.reads();

    // Once the replica has replayed the last write, the same reads are served by it.
    tokio::time::sleep(delay + Duration::from_millis(500)).await;
    let (before, _) = replica.reads();
    for server in &servers {
        for (path, what) in [
            ("/notes?limit=1000", "every note, from the replica"),
            ("/notes?q=round&limit=100", "found on the replica"),
        ] {
            let notes = client.get(server, path, &user.token, what).await;
            assert_eq!(notes.as_array().unwrap().len(), rounds, "{what}");
        }
    }
    let (after, _) = replica.reads();

    eprintln!(
        "{rounds} write-then-read rounds, {seen} seen; replica reads while lagging \
         {replica_reads_during}, afterwards {}",
        after - before
    );
    assert_eq!(seen, rounds);
    assert!(after > before, "caught up, the replica serves the reads");
    for server in servers {
        server.stop().await;
    }
    db.finish().await;
}

#[backends(postgres_replica)]
async fn a_lagging_replica_is_bypassed_and_revocation_stays_immediate(backend: Backend) {
    let db = TestDb::private(
        backend,
        &[("DATABASE_READ_URL", REPLICA), ("READ_MAX_LAG_MS", "500")],
    )
    .await;
    let mut writer = Client::new();
    let (server, user) = serve_with_user(&db, &mut writer).await;
    let replica = db.replica().unwrap();

    // Writes every 50 ms for 3 s keep the replica (2 s behind) lagging past 500 ms; another
    // client's reads, with no write of its own, are then sent to the primary.
    let mut reader = Client::new();
    let mut lag_seen = Duration::ZERO;
    let mut bypassed_while_lagging = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let body = Some(json!({"text": "keeps the replica busy"}));
        let (status, _) = writer
            .send(&server, "POST", "/notes", &user.token, body)
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, lag) = replica.position();
        let (_, bypassed_before) = replica.reads();
        reader
            .get(&server, "/notes?limit=1", &user.token, "a read")
            .await;
        let (_, bypassed_after) = replica.reads();
        if lag > Duration::from_millis(500) {
            lag_seen = lag_seen.max(lag);
            bypassed_while_lagging += bypassed_after - bypassed_before;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        lag_seen > Duration::from_millis(500),
        "the replica never lagged: {lag_seen:?}"
    );
    assert!(bypassed_while_lagging > 0, "a lagging replica served reads");

    // Revocation: sign out, and the token is refused at once on a read-only route, however
    // far behind the replica is (the token check runs on the primary).
    let (status, _) = writer
        .send(&server, "DELETE", "/sessions/current", &user.token, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = reader
        .send(&server, "GET", "/notes", &user.token, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    eprintln!("lag up to {lag_seen:?}; {bypassed_while_lagging} reads bypassed the replica");
    server.stop().await;
    db.finish().await;
}

#[backends(postgres_replica)]
async fn a_replica_that_stops_costs_no_read_and_serves_again_when_back(backend: Backend) {
    let target =
        url::Url::parse(&replica_url().expect("TEST_POSTGRES_REPLICA_URL is not set")).unwrap();
    let proxy = Proxy::start(format!(
        "{}:{}",
        target.host_str().unwrap(),
        target.port().unwrap_or(5432)
    ))
    .await;
    let read_url = format!("{REPLICA}:{}", proxy.port);
    let db = TestDb::private(backend, &[("DATABASE_READ_URL", &read_url)]).await;
    let (server, user) = serve_with_user(&db, &mut Client::new()).await;
    let replica = db.replica().unwrap();
    let mut reader = Client::new();
    let read = async |reader: &mut Client| {
        reader
            .get(&server, "/notes", &user.token, "a read failed")
            .await;
    };

    for _ in 0..20 {
        read(&mut reader).await;
    }
    let (served_before_cut, _) = replica.reads();
    proxy.cut();
    let cut = Instant::now();
    while cut.elapsed() < Duration::from_secs(2) {
        read(&mut reader).await;
    }
    assert!(!replica.is_up(), "the replica is seen down");
    proxy.restore();
    let restored = Instant::now();
    let (served_while_down, _) = replica.reads();
    loop {
        read(&mut reader).await;
        if replica.reads().0 > served_while_down {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(5),
            "the replica did not serve again within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "replica served {served_before_cut} reads before the cut; back in {:?}",
        restored.elapsed()
    );
    assert!(served_before_cut > 0);
    server.stop().await;
    drop(proxy);
    db.finish().await;
}
